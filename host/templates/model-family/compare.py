"""__NAME__ against Hugging Face transformers on one model folder.

    python tests/compare.py --swift SWIFT --plugin PLUGIN.so --model DIR

Runs transformers (float32) and `swift infer --model_type __NAME__ --plugin-dir PLUGIN.so` on the
same input ids, and compares the last position's logits (within 1e-4 of their scale) and a
16-token greedy continuation (identical). Exit status 0 when both match.

DIR is a checkpoint of your architecture with a tokenizer. Use a tiny random one: for example

    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, vocab_size=320)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(DIR)

and copy a tokenizer.json (and tokenizer_config.json) whose vocabulary fits into DIR.
Needs: torch, transformers (swift-rs's reference virtualenv has them).
"""

import argparse
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--swift", default="swift", help="the swift binary")
    ap.add_argument("--plugin", required=True, help="this plugin's built .so")
    ap.add_argument("--model", required=True, help="a (tiny) checkpoint folder")
    ap.add_argument("--tokens", type=int, default=16, help="greedy tokens to compare")
    args = ap.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = [(7 * i + 3) % vocab for i in range(12)]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1]
        seq = list(ids)
        for _ in range(args.tokens):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    greedy = seq[len(ids):]

    out = subprocess.run(
        [args.swift, "--plugin-dir", args.plugin, "infer", "--model", args.model,
         "--model_type", "__NAME__", "--debug_input_ids", ",".join(map(str, ids)),
         "--debug_greedy_tokens", str(args.tokens)],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"swift failed:\n{out.stderr}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    have = torch.tensor(got["last_logits"])
    scale = float(want.abs().max())
    worst = float((have - want).abs().max())
    ok_logits = worst <= 1e-4 * max(scale, 1e-6)
    ok_greedy = got["greedy"] == greedy
    print(f"logits: max difference {worst:.3g} (scale {scale:.3g}) {'ok' if ok_logits else 'MISMATCH'}")
    print(f"greedy: {'ok' if ok_greedy else 'MISMATCH'} ({len(greedy)} tokens)")
    if not ok_greedy:
        print(f"  transformers {greedy}\n  swift        {got['greedy']}")
    sys.exit(0 if ok_logits and ok_greedy else 1)


if __name__ == "__main__":
    main()
