"""Checks a GGUF file written by `swift export --to_gguf` against the Hugging Face folder it came
from, with the Python `gguf` package (llama.cpp's reader) and an independent re-implementation of
what llama.cpp's convert_hf_to_gguf.py does (tensor names, the Q/K row permutation of `llama`
models, Llama-3 RoPE factors, the vocabulary order). Prints what tests/export_gguf.rs asserts.

Usage: python gguf_check.py FILE.gguf HF_DIR

Prints one JSON object:
* `metadata`: every scalar metadata value (strings cut to 200 characters); `array_lengths`: the
  length of every array value;
* `max_diff`: per ggml type, the largest |GGUF tensor (dequantized) - expected tensor| over the
  tensors of that type, and `max_abs`: the largest |expected value|;
* `missing` / `unexpected`: tensor names expected but absent / present but not expected;
* `tokens_match`, `merges_match`: whether tokenizer.ggml.tokens / merges equal tokenizer.json's.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file

NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(hf: Path, cfg: dict):
    files = sorted(hf.glob("*.safetensors"))
    st = {}
    for f in files:
        st.update(load_file(str(f)))
    llama = cfg.get("model_type") in ("llama", "mistral")
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    tied = cfg.get("tie_word_embeddings", False)
    out = {}
    for name, w in st.items():
        w = w.astype(np.float32)
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
        elif name == "model.norm.weight":
            out["output_norm.weight"] = w
        elif name == "lm_head.weight":
            if not tied:
                out["output.weight"] = w
        elif name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            module, suffix = rest.rsplit(".", 1)
            if llama and module == "self_attn.q_proj":
                w = permute(w, n_head, n_head)
            if llama and module == "self_attn.k_proj":
                w = permute(w, n_head, n_kv)
            out[f"blk.{layer}.{NAMES[module]}.{suffix}"] = w
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":
        # convert_hf_to_gguf.py LlamaModel.generate_extra_tensors
        base = cfg.get("rope_theta", 10000.0)
        dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        factor = rs.get("factor", 8.0)
        low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        old = rs.get("original_max_position_embeddings", 8192)
        lw, hw = old / low, old / high
        factors = []
        for f in freqs:
            wl = 2 * math.pi / f
            if wl < hw:
                factors.append(1)
            elif wl > lw:
                factors.append(factor)
            else:
                smooth = (old / wl - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        out["rope_freqs.weight"] = np.array(factors, dtype=np.float32)
    return out


def main():
    path, hf = sys.argv[1], Path(sys.argv[2])
    cfg = json.loads((hf / "config.json").read_text())
    r = GGUFReader(path)
    metadata, lengths = {}, {}
    for key, field in r.fields.items():
        v = field.contents()
        if isinstance(v, list):
            lengths[key] = len(v)
        else:
            metadata[key] = v[:200] if isinstance(v, str) else v
    expected = expected_tensors(hf, cfg)
    got = {}
    max_diff, max_abs = {}, 0.0
    for t in r.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        got[t.name] = data.reshape([int(d) for d in reversed(t.shape)])
        e = expected.get(t.name)
        if e is None or e.shape != got[t.name].shape:
            continue
        ty = t.tensor_type.name
        max_diff[ty] = max(max_diff.get(ty, 0.0), float(np.abs(got[t.name] - e).max()))
        max_abs = max(max_abs, float(np.abs(e).max()))
    tj = json.loads((hf / "tokenizer.json").read_text())
    id_to_tok = {i: t for t, i in tj["model"]["vocab"].items()}
    for a in tj.get("added_tokens", []):
        id_to_tok[a["id"]] = a["content"]
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"].get("merges", [])]
    gg_merges = r.fields["tokenizer.ggml.merges"].contents() if "tokenizer.ggml.merges" in r.fields else []
    print(
        json.dumps(
            {
                "metadata": metadata,
                "array_lengths": lengths,
                "max_diff": max_diff,
                "max_abs": max_abs,
                "missing": sorted(set(expected) - set(got)),
                "unexpected": sorted(set(got) - set(expected)),
                "shape_mismatches": sorted(
                    n for n in got if n in expected and got[n].shape != expected[n].shape
                ),
                "tokens_match": all(tokens[i] == t for i, t in id_to_tok.items()),
                "merges_match": gg_merges == merges if merges else None,
            }
        )
    )


if __name__ == "__main__":
    main()
