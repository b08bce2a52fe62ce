"""Writes the tiny random-weight models the model tests pin, and transformers' outputs for them.

Run with the project's virtualenv (torch + transformers, see scripts/setup.sh):

    ~/.cache/swift-rs/venv/bin/python tests/reference/make_tiny_models.py

For each family (llama, qwen2, qwen3, mistral, and gpt2 for the example plugin) it writes
tests/fixtures/models/<family>/ with config.json, model.safetensors (float32), a small byte-level
BPE tokenizer.json + tokenizer_config.json, and expected.json: transformers' float32 logits at
the last position of fixed input ids, and a 32-token greedy continuation (argmax at every step,
EOS ignored). The weights are random but seeded, so rerunning reproduces the same files.

It also writes tests/fixtures/models/rope_expected.json: the inverse frequencies and attention
factor of each supported rope_scaling type (default, linear, dynamic, llama3, yarn).

With --smollm DIR (default: $SWIFT_RS_CACHE/models/SmolLM2-135M-Instruct, when present) it also
records tests/fixtures/models/smollm2_expected.json: the last-position logits' top 20 for the
ChatML prompt of ASSETS.md, the greedy answer, and the mean negative log-likelihood of the first
192 tokens of LLaMA-Factory's wiki_demo.txt.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "models"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "What is the capital of France? Hello world, this is a tiny model.",
    "system user assistant You are a helpful assistant.",
    "Once upon a time there was a small language model that liked numbers 0123456789.",
    "Rust and Python and C++ are programming languages; tensors, weights, tokens.",
]
PROMPT = "Hello world, this is a tiny model. What is the capital"


def make_tokenizer(out: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}, indent=2)
    )
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights with std 0.2 (peaked logits, so argmax is robust), norms near 1, non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name or ".ln_" in name or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def record(model, ids, out: Path, extra=None) -> None:
    model.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        logits = model(x).logits[0, -1].float()
        seq = list(ids)
        for _ in range(32):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
    expected = {"input_ids": ids, "last_logits": logits.tolist(), "greedy": seq[len(ids):]}
    expected.update(extra or {})
    (out / "expected.json").write_text(json.dumps(expected))


def tiny(family: str, seed: int):
    out = ROOT / family
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|im_end|>")
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        eos_token_id=eos,
        bos_token_id=None,
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(
            **common,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        model = LlamaForCausalLM(cfg)
    elif family == "qwen2":
        cfg = Qwen2Config(**common, tie_word_embeddings=False, rope_theta=1000000.0)
        model = Qwen2ForCausalLM(cfg)
    elif family == "qwen3":
        cfg = Qwen3Config(**common, head_dim=32, tie_word_embeddings=True, rope_theta=1000000.0)
        model = Qwen3ForCausalLM(cfg)
    elif family == "mistral":
        cfg = MistralConfig(**common, tie_word_embeddings=False, sliding_window=None, rope_theta=10000.0)
        model = MistralForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=128,
            activation_function="gelu_new",
            eos_token_id=eos,
            bos_token_id=eos,
        )
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(family)
    randomize(model, seed)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    ids = tok.encode(PROMPT).ids
    record(model, ids, out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{family}: {size // 1024} KiB, vocab {vocab}, prompt {len(ids)} tokens")


ROPE_CASES = [
    {"name": "default", "rope_theta": 10000.0, "rope_scaling": None, "seq_len": 10},
    {"name": "linear", "rope_theta": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0}, "seq_len": 10},
    {"name": "dynamic_short", "rope_theta": 10000.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "seq_len": 100},
    {"name": "dynamic_long", "rope_theta": 10000.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "seq_len": 1000},
    {
        "name": "llama3",
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "seq_len": 10,
    },
    {
        "name": "yarn",
        "rope_theta": 1000000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        "seq_len": 10,
    },
    {
        "name": "yarn_mscale",
        "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16},
        "seq_len": 10,
    },
]


def rope_reference():
    """inv_freq and attention factor of each rope_scaling type, as transformers computes them."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    out = []
    for case in ROPE_CASES:
        cfg = LlamaConfig(
            hidden_size=256,
            num_attention_heads=4,
            max_position_embeddings=256,
            rope_theta=case["rope_theta"],
            rope_scaling=case["rope_scaling"],
        )
        kind = (case["rope_scaling"] or {}).get("rope_type", "default")
        inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", case["seq_len"])
        out.append(dict(case, config=cfg.to_dict(), inv_freq=inv_freq.tolist(), attention_factor=float(factor)))
    (ROOT / "rope_expected.json").write_text(json.dumps(out))
    print(f"rope: {len(out)} cases")


def smollm(folder: Path, assets: Path):
    from transformers import AutoTokenizer
    from tokenizers import Tokenizer as T

    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    tok = T.from_file(str(folder / "tokenizer.json"))
    prompt = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()
        top = torch.topk(logits, 20)
        seq = list(prompt)
        for _ in range(32):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == 2:
                break
    answer = seq[len(prompt):]
    text = (assets / "wiki_demo.txt").read_text()
    ids = tok.encode(text[:4000]).ids[:192]
    with torch.no_grad():
        lg = model(torch.tensor([ids])).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(lg, torch.tensor(ids[1:])).item()
    expected = {
        "prompt_ids": prompt,
        "top_ids": top.indices.tolist(),
        "top_logits": top.values.tolist(),
        "greedy_ids": answer,
        "greedy_text": tok.decode(answer, skip_special_tokens=False),
        "nll_tokens": len(ids),
        "nll": nll,
    }
    (ROOT / "smollm2_expected.json").write_text(json.dumps(expected, indent=1))
    print(f"smollm2: greedy {expected['greedy_text']!r}, nll {nll:.4f} over {len(ids)} tokens")


def main():
    cache = Path(os.environ.get("SWIFT_RS_CACHE", Path.home() / ".cache" / "swift-rs"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default="llama,qwen2,qwen3,mistral,gpt2")
    ap.add_argument("--smollm", default=str(cache / "models" / "SmolLM2-135M-Instruct"))
    ap.add_argument("--assets", default=str(cache / "assets" / "llamafactory" / "data"))
    args = ap.parse_args()
    for i, fam in enumerate(f for f in args.families.split(",") if f):
        tiny(fam, 1234 + i)
    rope_reference()
    folder = Path(args.smollm)
    if (folder / "model.safetensors").is_file():
        smollm(folder, Path(args.assets))
    else:
        print(f"skipped SmolLM2: {folder} has no model.safetensors")


if __name__ == "__main__":
    main()
