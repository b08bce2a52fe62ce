"""Compares two GGUF files with the Python `gguf` package (llama.cpp's own reader), and prints
what tests/export_gguf.rs asserts on.

Usage: python gguf_compare.py ORIGINAL.gguf EXPORTED.gguf

Prints one JSON object:
* `max_tensor_diff`: the largest absolute difference between a tensor of ORIGINAL, dequantized
  with gguf.quants.dequantize, and the tensor of the same name in EXPORTED (dequantized too);
* `tensors_only_in_original` / `tensors_only_in_exported`: names one file lacks;
* `shape_mismatches`: tensors whose shapes differ;
* `metadata_mismatches`: keys of ORIGINAL (other than general.* naming and file-type keys) whose
  value differs in EXPORTED or is missing there;
* `exported_types`: how many tensors of EXPORTED have each ggml type;
* `architecture`, `n_tensors`: of EXPORTED.
"""

import collections
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# Naming and provenance keys that legitimately differ between the two files.
IGNORED = {
    "general.name",
    "general.type",
    "general.organization",
    "general.finetune",
    "general.basename",
    "general.size_label",
    "general.license",
    "general.languages",
    "general.file_type",
    "general.quantization_version",
    "GGUF.kv_count",
    "GGUF.tensor_count",
}


def value(field):
    try:
        return field.contents()
    except Exception:  # noqa: BLE001 - older gguf versions
        return [bytes(field.parts[i]).hex() for i in field.data]


def tensors(reader):
    out = {}
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        out[t.name] = data.reshape([int(d) for d in reversed(t.shape)])
    return out


def main():
    a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
    mismatches = []
    for key, field in a.fields.items():
        if key in IGNORED:
            continue
        other = b.fields.get(key)
        if other is None:
            mismatches.append(f"{key}: missing")
            continue
        va, vb = value(field), value(other)
        if isinstance(va, float) or isinstance(vb, float):
            same = abs(float(va) - float(vb)) <= 1e-6 * max(1.0, abs(float(va)))
        else:
            same = va == vb
        if not same:
            mismatches.append(f"{key}: {str(va)[:80]!r} != {str(vb)[:80]!r}")
    ta, tb = tensors(a), tensors(b)
    diff = 0.0
    shapes = []
    for name, x in ta.items():
        y = tb.get(name)
        if y is None:
            continue
        if x.shape != y.shape:
            shapes.append(f"{name}: {x.shape} != {y.shape}")
            continue
        diff = max(diff, float(np.abs(x - y).max()))
    print(
        json.dumps(
            {
                "max_tensor_diff": diff,
                "tensors_only_in_original": sorted(set(ta) - set(tb)),
                "tensors_only_in_exported": sorted(set(tb) - set(ta)),
                "shape_mismatches": shapes,
                "metadata_mismatches": mismatches,
                "exported_types": dict(collections.Counter(t.tensor_type.name for t in b.tensors)),
                "architecture": value(b.fields["general.architecture"]),
                "n_tensors": len(b.tensors),
            }
        )
    )


if __name__ == "__main__":
    main()
