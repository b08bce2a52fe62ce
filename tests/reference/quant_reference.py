"""Reference logits for tests/quant.rs, computed independently of swift-quant.

bitsandbytes needs a GPU, so its formats are re-implemented here in numpy from their definitions
(the NF4 / FP4 code books of bitsandbytes, nearest value per block-absmax-normalised element,
double-quantized absmax as swift-quant documents it), and so is round-to-nearest with a float16
min and scale per group. The tiny llama's linear weights are quantized and dequantized with
numpy, every other tensor is rounded to float16 (as the export stores it), and Hugging Face
transformers computes the last-position logits of a fixed prompt.

Run once: ~/.cache/swift-rs/venv/bin/python tests/reference/quant_reference.py
(writes tests/fixtures/quant/expected.json).
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "tests/fixtures/models/llama")
OUT = os.path.join(ROOT, "tests/fixtures/quant/expected.json")
IDS = [1, 5, 9, 20, 33, 7]
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
FP4_POS = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3], dtype=np.float32) / np.float32(12)
FP4 = np.concatenate([FP4_POS, -FP4_POS]).astype(np.float32)


def nearest(x, book):
    """Nearest code-book value (ties to the lower value), as values."""
    values = np.unique(book)  # sorted, -0 and 0 merged
    mids = ((values[:-1] + values[1:]) / np.float32(2)).astype(np.float32)
    return values[np.searchsorted(mids, x, side="left")]


def bnb4(w, book, block=64, double=True):
    flat = w.reshape(-1).astype(np.float32)
    n = flat.size
    nb = -(-n // block)
    flat = np.concatenate([flat, np.zeros(nb * block - n, np.float32)]).reshape(nb, block)
    absmax = np.abs(flat).max(axis=1)
    x = flat / np.maximum(absmax, np.float32(1e-12))[:, None]
    vals = nearest(x, book)
    if double:
        offset = absmax.mean(dtype=np.float32)
        c = absmax - offset
        nb2 = -(-nb // 256)
        c2 = np.concatenate([c, np.zeros(nb2 * 256 - nb, np.float32)]).reshape(nb2, 256)
        scale = np.abs(c2).max(axis=1)
        q = np.round(c2 / np.maximum(scale, np.float32(1e-12))[:, None] * np.float32(127))
        absmax = ((q * scale[:, None]) / np.float32(127)).reshape(-1)[:nb] + offset
    return (vals * absmax[:, None]).reshape(-1)[:n].reshape(w.shape).astype(np.float32)


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def rtn(w, bits=4, group=32):
    out, n = w.shape
    res = np.empty_like(w)
    maxq = np.float32(2**bits - 1)
    for g0 in range(0, n, group):
        g = w[:, g0:g0 + group]
        lo, hi = g.min(axis=1), g.max(axis=1)
        scale = f16(np.maximum((hi - lo) / maxq, np.float32(1e-5)))
        mn = f16(lo)
        q = np.clip(np.round((g - mn[:, None]) / scale[:, None]), 0, maxq)
        res[:, g0:g0 + group] = q * scale[:, None] + mn[:, None]
    return res


def logits(state):
    config = AutoConfig.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    model.tie_weights()
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([IDS]))
    return out.logits[0, -1].tolist()


def main():
    weights = load_file(os.path.join(MODEL, "model.safetensors"))
    results = {"input_ids": IDS}
    variants = {
        "bnb_nf4": lambda w: bnb4(w, NF4),
        "bnb_fp4": lambda w: bnb4(w, FP4, double=False),
        "rtn4_g32": lambda w: rtn(w, 4, 32),
    }
    for name, quant in variants.items():
        state = {}
        for k, v in weights.items():
            v = v.astype(np.float32)
            if k.endswith(".weight") and k.split(".")[-2] in LINEAR:
                state[k] = quant(v)
            else:
                state[k] = f16(v)
        results[name] = logits(state)
    results["float32"] = logits({k: v.astype(np.float32) for k, v in weights.items()})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
