"""Independent reference for `swift deploy`'s `/v1/completions` with `echo`: the log-probability
of each prompt token given the tokens before it, computed with transformers on a model folder
(one forward pass, float32, log-softmax of the logits at position i for token i + 1), for a few
fixed texts tokenized without special tokens, as a server scores a raw prompt.

Writes {"texts": [{"text", "ids", "token_logprobs" (first null), "top1_logprob" (the largest
log-probability at each position, first null)}]} to OUT.json.

Usage: python tests/reference/prompt_logprobs_reference.py MODEL_DIR OUT.json
"""

import json
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

TEXTS = [
    "The following are multiple choice questions (with answers).\n\n"
    "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B",
    "Hello world, this is a test of prompt scoring.",
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    # The folder's tokenizer.json through `tokenizers` (its tokenizer_config has no BOS, which
    # transformers' llama tokenizer class refuses).
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    rows = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
        token_logprobs = [None] + [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
        top1 = [None] + [lp[i].max().item() for i in range(len(ids) - 1)]
        rows.append({"text": text, "ids": ids, "token_logprobs": token_logprobs, "top1_logprob": top1})
    with open(out, "w") as f:
        json.dump({"model": "tests/fixtures/models/llama", "texts": rows}, f, indent=1)
    print(json.dumps({"texts": len(rows)}))


if __name__ == "__main__":
    main()
