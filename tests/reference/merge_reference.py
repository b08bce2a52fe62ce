"""Checks a merged LoRA export (`swift export --adapters CKPT --merge_lora true`) with
transformers and peft, and prints what tests/export_merge.rs compares.

Usage: python merge_reference.py BASE_DIR CHECKPOINT_DIR MERGED_DIR GREEDY_TOKENS IDS [IDS ...]
(each IDS comma-separated).

Prints one JSON object:
* `greedy`: for each prompt, the greedy continuation (GREEDY_TOKENS tokens, EOS does not stop it)
  of transformers' AutoModelForCausalLM loaded from MERGED_DIR;
* `max_weight_diff`: the largest absolute difference between MERGED_DIR's weights and those of
  peft's own `merge_and_unload()` of CHECKPOINT_DIR on BASE_DIR (tied weights compared once);
* `missing` / `unexpected`: weights one side has and the other lacks.
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    base_dir, ckpt, merged_dir, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    prompts = [[int(x) for x in p.split(",")] for p in sys.argv[5:]]
    torch.manual_seed(0)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    merged.eval()
    merged.generation_config.eos_token_id = None
    greedy = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = merged.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
            greedy.append(out[0, ids.shape[1]:].tolist())

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, ckpt).merge_and_unload()
    ours = merged.state_dict()
    theirs = reference.state_dict()
    diff = 0.0
    for k, v in theirs.items():
        if k in ours:
            diff = max(diff, (ours[k] - v).abs().max().item())
    print(
        json.dumps(
            {
                "greedy": greedy,
                "max_weight_diff": diff,
                "missing": sorted(set(theirs) - set(ours)),
                "unexpected": sorted(set(ours) - set(theirs)),
            }
        )
    )


if __name__ == "__main__":
    main()
