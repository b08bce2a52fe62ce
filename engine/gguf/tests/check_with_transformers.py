#!/usr/bin/env python3
"""Independent check of swift-gguf's GGUF -> Hugging Face conversion with `transformers`.

Loads a converted SmolLM2-135M-Instruct folder with AutoModelForCausalLM + AutoTokenizer in
float32 and checks:
  1. the ChatML prompt tokenizes to the reference ids;
  2. apply_chat_template (add_generation_prompt) inserts SmolLM's default system prompt;
  3. greedy generation answers "The capital of France is Paris.<|im_end|>";
  4. mean NLL over the first 192 tokens of LLaMA-Factory's wiki_demo.txt is about 2.94.

Usage (venv with torch + transformers, e.g. ~/.cache/swift-rs/venv):
  cargo run --release -p swift-gguf --example gguf_to_hf -- \
      ~/.cache/swift-rs/assets/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm-hf
  python engine/gguf/tests/check_with_transformers.py /tmp/smollm-hf [--wiki PATH/wiki_demo.txt]

wiki_demo.txt: `python3 -m pip download --no-deps --no-binary llamafactory -d DIR
llamafactory==0.9.5`, then it is llamafactory-0.9.5/data/wiki_demo.txt inside the sdist
(the script also accepts the .tar.gz itself). Without --wiki the NLL check is skipped.
Exits non-zero when a check fails.
"""

import argparse
import sys
import tarfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PROMPT_IDS = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
EXPECTED_ANSWER = "The capital of France is Paris.<|im_end|>"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
EXPECTED_NLL = 2.94


def read_wiki(path):
    if path.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("data/wiki_demo.txt"))
            return tar.extractfile(member).read().decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--wiki", help="wiki_demo.txt or the llamafactory-0.9.5 sdist")
    ap.add_argument("--tokens", type=int, default=192)
    args = ap.parse_args()

    torch.manual_seed(0)
    failures = []

    def check(name, ok, detail):
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")
        if not ok:
            failures.append(name)

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    try:  # transformers >= 4.56 calls it `dtype`
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.float32)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded {type(model).__name__} with {n_params:,} parameters, tokenizer {type(tok).__name__}")

    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    check("prompt ids", ids == PROMPT_IDS, ids)

    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    expected_render = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n" + PROMPT
    check("chat template", rendered == expected_render, repr(rendered))

    with torch.no_grad():
        inp = torch.tensor([PROMPT_IDS])
        out = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    answer = tok.decode(out[0, len(PROMPT_IDS):], skip_special_tokens=False)
    check("greedy answer", answer == EXPECTED_ANSWER, repr(answer))

    if args.wiki:
        text = read_wiki(args.wiki)
        wiki_ids = tok(text[:20000], add_special_tokens=False)["input_ids"][: args.tokens]
        x = torch.tensor([wiki_ids])
        with torch.no_grad():
            logits = model(x).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:]).item()
        check(
            f"wiki NLL over {len(wiki_ids)} tokens",
            abs(nll - EXPECTED_NLL) < 0.01,
            f"{nll:.4f} (expected {EXPECTED_NLL})",
        )
    else:
        print("[skip] wiki NLL: pass --wiki PATH to run it")

    if failures:
        print(f"FAILED: {', '.join(failures)}")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
