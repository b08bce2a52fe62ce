"""Reference packer and unpacker for GPTQ's and AutoAWQ's standard packed layouts, written from
the layouts as GPTQModel / AutoGPTQ (`checkpoint_format: "gptq"`, "v1") and AutoAWQ (GEMM)
document and read them, in numpy, independently of swift-rs (tests/quant_contract.rs runs it).

GPTQ, a [out, in] linear weight with groups ng (bits 4 or 8, pf = 32 // bits codes per int32):
  qweight int32 [in // pf, out]   word [r, o] holds q[o, r*pf + k] at bits k*bits
  qzeros  int32 [ng, out // pf]   word [g, j] holds (z[j*pf + k, g] - 1) at bits k*bits  (v1)
  scales  f16   [ng, out]
  g_idx   int32 [in]              the group of each input column
  W[o, i] = (q[o, i] - z[o, g_idx[i]]) * scales[g_idx[i], o]
AutoAWQ GEMM (4-bit): qweight int32 [in, out // 8] and qzeros int32 [ng, out // 8] hold 8
channels per word in the order [0, 2, 4, 6, 1, 3, 5, 7] (read back with the reverse order
[0, 4, 1, 5, 2, 6, 3, 7]); zeros stored as they are; scales f16 [ng, out];
W[o, i] = (q - z) * s of group i // group_size. swift-rs adds `STEM.input_scale` (f32 [in]):
its weight was multiplied by it and its input is divided by it, so the float weight is W / s.

  python quant_layouts.py unpack QUANT_DIR OUT_DIR
      a GPTQ / AWQ folder (ours or another tool's) -> a float folder of the same model
  python quant_layouts.py pack FLOAT_DIR METHOD OUT_DIR FLOAT_OUT_DIR
      a float folder -> a GPTQ folder (symmetric, act-order g_idx, as GPTQModel writes by
      default) or an AWQ folder (AutoAWQ's zero-point GEMM), and the float folder its codes
      stand for
"""
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def words_to_fields(words, bits):
    """int32 words [..., m] -> unsigned fields [..., m, 32 // bits], lowest bits first."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(0, 32, bits, dtype=np.int64)
    return (w[..., None] >> shifts) & ((1 << bits) - 1)


def fields_to_words(fields, bits):
    """unsigned fields [..., m, 32 // bits] -> int32 words [..., m], field k at bits k*bits."""
    shifts = np.arange(0, 32, bits, dtype=np.int64)
    w = np.bitwise_or.reduce(fields.astype(np.int64) << shifts, axis=-1)
    return w.astype(np.uint32).view(np.int32)


# ---------------------------------------------------------------------------------------------
# GPTQ

def gptq_unpack(t, stem, bits):
    qweight, qzeros = t[stem + ".qweight"], t[stem + ".qzeros"]
    scales = t[stem + ".scales"].astype(np.float32)
    pf = 32 // bits
    q = words_to_fields(qweight.T, bits).reshape(qweight.shape[1], -1)  # [out, in]
    z = words_to_fields(qzeros, bits).reshape(qzeros.shape[0], -1) + 1  # [ng, out], v1
    n_in = q.shape[1]
    g_idx = t.get(stem + ".g_idx")
    if g_idx is None:
        g_idx = np.arange(n_in) // (n_in // scales.shape[0])
    g_idx = g_idx.astype(np.int64)
    assert qweight.shape[0] * pf == n_in
    return ((q - z[g_idx].T) * scales[g_idx].T).astype(np.float32)


def gptq_pack(w, bits, group, rng):
    """Symmetric GPTQ parameters (zero 2^(bits-1)) over act-order groups: the columns taken in a
    random order, `group` at a time; returns the tensors and the dequantized weight."""
    out, n_in = w.shape
    maxq = 2 ** bits - 1
    perm = rng.permutation(n_in)
    g_idx = np.empty(n_in, dtype=np.int64)
    g_idx[perm] = np.arange(n_in) // group
    ng = n_in // group
    scales = np.zeros((ng, out), dtype=np.float32)
    for g in range(ng):
        cols = w[:, g_idx == g]
        amax = np.maximum(np.abs(cols.min(1)), np.abs(cols.max(1)))
        scales[g] = np.maximum(2 * amax / maxq, 1e-5)
    scales = scales.astype(np.float16).astype(np.float32)
    zero = (maxq + 1) // 2
    q = np.clip(np.round(w / scales[g_idx].T) + zero, 0, maxq).astype(np.int64)
    deq = ((q - zero) * scales[g_idx].T).astype(np.float32)
    pf = 32 // bits
    qweight = fields_to_words(q.T.reshape(n_in // pf, pf, out).transpose(0, 2, 1), bits)
    zeros = np.full((ng, out), zero - 1, dtype=np.int64)  # v1 stores z - 1
    qzeros = fields_to_words(zeros.reshape(ng, out // pf, pf), bits)
    tensors = {
        "qweight": qweight,
        "qzeros": qzeros,
        "scales": scales.astype(np.float16),
        "g_idx": g_idx.astype(np.int32),
    }
    config = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": True,
              "sym": True, "checkpoint_format": "gptq", "quantizer": "quant_layouts.py"}
    return tensors, deq, config


# ---------------------------------------------------------------------------------------------
# AWQ

def awq_reverse(fields):
    """[..., m, 8] in packed order -> [..., m * 8] in channel order."""
    return fields[..., AWQ_REVERSE_ORDER].reshape(*fields.shape[:-2], -1)


def awq_unpack(t, stem, group):
    q = awq_reverse(words_to_fields(t[stem + ".qweight"], 4))  # [in, out]
    z = awq_reverse(words_to_fields(t[stem + ".qzeros"], 4))  # [ng, out]
    s = t[stem + ".scales"].astype(np.float32)  # [ng, out]
    g = np.arange(q.shape[0]) // group
    w = ((q - z[g]) * s[g]).T.astype(np.float32)  # [out, in]
    if stem + ".input_scale" in t:
        w = (w / t[stem + ".input_scale"].astype(np.float32)[None, :]).astype(np.float32)
    return w


def awq_pack(w, group):
    """AutoAWQ's zero-point parameters per group of `group` input columns."""
    out, n_in = w.shape
    maxq = 15
    g = w.reshape(out, n_in // group, group)
    lo, hi = g.min(-1), g.max(-1)
    scales = np.maximum((hi - lo) / maxq, 1e-5).astype(np.float16).astype(np.float32)
    zeros = np.clip(-np.round(lo / scales), 0, maxq)
    gi = np.arange(n_in) // group
    q = np.clip(np.round(w / scales[:, gi]) + zeros[:, gi], 0, maxq).astype(np.int64)
    deq = ((q - zeros[:, gi]) * scales[:, gi]).astype(np.float32)
    qt = q.T  # [in, out]
    qweight = fields_to_words(qt.reshape(n_in, out // 8, 8)[..., AWQ_ORDER], 4)
    zt = zeros.T.astype(np.int64)  # [ng, out]
    qzeros = fields_to_words(zt.reshape(zt.shape[0], out // 8, 8)[..., AWQ_ORDER], 4)
    tensors = {"qweight": qweight, "qzeros": qzeros, "scales": scales.T.astype(np.float16)}
    config = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
              "version": "gemm", "quantizer": "quant_layouts.py"}
    return tensors, deq, config


# ---------------------------------------------------------------------------------------------

def save(tensors, path):
    """safetensors writes an array's memory as it lies: every array C-contiguous first."""
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)


def copy_side_files(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if os.path.isfile(p) and not name.endswith(".safetensors") and name != "config.json":
            shutil.copy(p, os.path.join(dst, name))


def unpack(src, dst):
    config = json.load(open(os.path.join(src, "config.json")))
    qc = config.pop("quantization_config")
    method = qc["quant_method"]
    t = load_file(os.path.join(src, "model.safetensors"))
    stems = sorted({k[: -len(".qweight")] for k in t if k.endswith(".qweight")})
    out = {}
    for stem in stems:
        if method == "gptq":
            w = gptq_unpack(t, stem, qc["bits"])
        elif method == "awq":
            w = awq_unpack(t, stem, qc["group_size"])
        else:
            raise SystemExit(f"{src}: quant_method {method} is neither gptq nor awq")
        out[stem + ".weight"] = w
    for k, v in t.items():
        if not any(k.startswith(s + ".") for s in stems) or k.endswith(".bias"):
            out[k] = v.astype(np.float32) if v.dtype in (np.float16, np.float32) else v
    copy_side_files(src, dst)
    json.dump(config, open(os.path.join(dst, "config.json"), "w"), indent=1)
    save(out, os.path.join(dst, "model.safetensors"))


def pack(src, method, dst, float_dst):
    config = json.load(open(os.path.join(src, "config.json")))
    t = load_file(os.path.join(src, "model.safetensors"))
    rng = np.random.default_rng(0)
    packed, floats, qc = {}, {}, None
    for k, v in t.items():
        stem = k[: -len(".weight")] if k.endswith(".weight") else None
        if stem and stem.split(".")[-1] in LINEAR:
            w = v.astype(np.float32)
            if method == "gptq":
                tensors, deq, qc = gptq_pack(w, 4, 16, rng)
            else:
                tensors, deq, qc = awq_pack(w, 16)
            for name, x in tensors.items():
                packed[f"{stem}.{name}"] = x
            floats[k] = deq
        else:
            packed[k] = v
            floats[k] = v
    qc["modules_to_not_convert"] = ["lm_head"]
    for d, tensors, cfg in ((dst, packed, dict(config, quantization_config=qc)),
                            (float_dst, floats, config)):
        copy_side_files(src, d)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
        save(tensors, os.path.join(d, "model.safetensors"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["unpack"] and len(sys.argv) == 4:
        unpack(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["pack"] and len(sys.argv) == 6:
        pack(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(__doc__)
