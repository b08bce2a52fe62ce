#!/usr/bin/env python3
"""Side-by-side inference benchmark: swift-rs `swift infer` and ms-swift's `swift infer`
(transformers backend, its own virtualenv: scripts/peer-venv.sh) on the same 8 prompts, greedy,
float32, at batch 1 and batch 8, on the default model (SmolLM2-135M-Instruct).

Both sides are measured the same way from outside: each run is timed twice, once generating up
to N tokens and once generating 1, so start-up, model loading and prefill cancel out:
generated tok/s = (tokens(N) - tokens(1)) / (wall(N) - wall(1)), with tokens counted by the
model's own tokenizer on the answers written to the result file. Peak RSS is /usr/bin/time's.
Each figure is the median of --repeats runs; the machine is shared, so read the ratios.

A second table compares the prefill: prompt tokens/s and time to the first token, which cannot
be told apart from start-up from outside, so each side is timed in-process, warm: swift-rs by its
own summary of `swift infer --max_new_tokens 1` over the prompts twice (each batch's time from its
start to its first token; the second pass's batches count), ms-swift by timing its
TransformersEngine's `infer(..., max_tokens=1)` on the same prompts and batches after one warm-up
call (its time includes applying the template; prompt tokens from its usage).

    python3 scripts/bench_infer_peer.py [--repeats 3] [--new-tokens 128] [--dtypes float32]
                                        [--prefill-only]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchlib import cpu_model, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct")
QUESTIONS = [
    "Write a short poem about the sea.", "Explain what a neural network is.",
    "Give me three tips for learning Rust.", "What is the capital of Italy?",
    "Describe a sunset in two sentences.", "Why is the sky blue?", "List five fruits.",
    "Tell me a fun fact about cats.",
]
PEER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "USE_HF": "1", "CUDA_VISIBLE_DEVICES": ""}


def count_tokens(result_path, tokenizer):
    total = 0
    with open(result_path) as f:
        for line in f:
            row = json.loads(line)
            total += len(tokenizer.encode(row["response"]).ids)
    return total


def ours(prompts, out, new_tokens, batch, dtype):
    return [os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target/release/swift")), "infer", "--model", MODEL,
            "--template", "chatml", "--temperature", "0", "--max_new_tokens", str(new_tokens),
            "--torch_dtype", dtype, "--device", "cpu", "--val_dataset", prompts,
            "--result_path", out, "--max_batch_size", str(batch), "--log-level", "warn"]


def peer(peer_bin, prompts, out, new_tokens, batch, dtype):
    return [peer_bin, "infer", "--model", MODEL, "--model_type", "llama", "--template", "chatml",
            "--infer_backend", "pt", "--torch_dtype", dtype, "--temperature", "0",
            "--max_new_tokens", str(new_tokens), "--max_batch_size", str(batch),
            "--val_dataset", prompts, "--val_dataset_shuffle", "false", "--result_path", out]


def measure(make_cmd, env, work, new_tokens, batch, dtype, repeats, tokenizer):
    """Generated tok/s (the run with `new_tokens` less the run with 1, so start-up and prefill
    cancel), and the longer run's peak RSS, cores busy and voluntary context switches per
    generated token: medians of `repeats`."""
    rates, rsses, busy, vcsw = [], [], [], []
    for r in range(repeats):
        walls, toks = {}, {}
        for n in (new_tokens, 1):
            out = os.path.join(work, f"out-{n}-{r}.jsonl")
            if os.path.exists(out):
                os.remove(out)
            _, st = timed(make_cmd(out, n, batch, dtype), env)
            walls[n], toks[n] = st["wall_s"], count_tokens(out, tokenizer)
            if n == new_tokens:
                rsses.append(st["rss_mib"])
                busy.append(st["cores_busy"])
                vcsw.append(st["voluntary_switches"] / max(toks[n], 1))
        rates.append((toks[new_tokens] - toks[1]) / max(walls[new_tokens] - walls[1], 1e-9))
    med = statistics.median
    return med(rates), med(rsses), med(busy), med(vcsw)


PEER_PREFILL = r"""
import json, statistics, sys, time
import torch
from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine
model, dtype, batch, repeats, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l)["messages"] for l in open(prompts)]
engine = TransformersEngine(model, torch_dtype=getattr(torch, dtype), model_type="llama",
                            template_type="chatml", max_batch_size=batch)
cfg = RequestConfig(max_tokens=1, temperature=0)
engine.infer([InferRequest(messages=rows[0])], cfg, use_tqdm=False)  # warm-up
ttfts, rates = [], []
for _ in range(repeats):
    total_s, tokens, batches = 0.0, 0, 0
    for i in range(0, len(rows), batch):
        reqs = [InferRequest(messages=m) for m in rows[i:i + batch]]
        t0 = time.perf_counter()
        out = engine.infer(reqs, cfg, use_tqdm=False)
        total_s += time.perf_counter() - t0
        tokens += sum(r.usage.prompt_tokens for r in out)
        batches += 1
    ttfts.append(total_s / batches)
    rates.append(tokens / total_s)
print(json.dumps({"ttft_s": statistics.median(ttfts), "prompt_tokens_per_s": statistics.median(rates)}))
"""


def ours_prefill(prompts, work, batch, dtype, repeats):
    """swift-rs's own summary of `--max_new_tokens 1` runs over the prompts twice: the batches of
    the second pass (the first warms up, as ms-swift's side does), median TTFT and prompt tok/s."""
    twice = os.path.join(work, "prompts-twice.jsonl")
    with open(prompts) as f:
        rows = f.read()
    with open(twice, "w") as f:
        f.write(rows + rows)
    warm = len(QUESTIONS) // batch
    ttfts, rates = [], []
    for _ in range(repeats):
        out = os.path.join(work, "prefill.jsonl")
        cmd = ours(twice, out, 1, batch, dtype)
        cmd[cmd.index("--log-level") + 1] = "info"
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stderr[proc.stderr.rindex('{"'):].splitlines()[0])
        per_batch = summary["time_to_first_token_per_batch_s"][warm:]
        with open(out) as f:
            tokens = [json.loads(line)["prompt_tokens"] for line in f][warm * batch:]
        ttfts.append(statistics.mean(per_batch))
        rates.append(sum(tokens) / sum(per_batch))
    return statistics.median(ttfts), statistics.median(rates)


def peer_prefill(peer_python, prompts, batch, dtype, repeats):
    proc = subprocess.run([peer_python, "-c", PEER_PREFILL, MODEL, dtype, str(batch), str(repeats),
                           prompts], env=dict(os.environ, **PEER_ENV), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"ms-swift prefill timing failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["ttft_s"], r["prompt_tokens_per_s"]


# llama.cpp's batch-1 generation on this model and machine (PEER.md, llama-bench -t 2): the
# memory-bandwidth bound that batch-1 figures are reported against (F16 stands in for bf16).
BOUND = {"float32": 40.4, "bfloat16": 49.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--prefill-only", action="store_true", help="only the prefill table")
    ap.add_argument("--ours-only", action="store_true", help="skip ms-swift (before/after checks)")
    args = ap.parse_args()
    from tokenizers import Tokenizer  # from the reference venv

    tokenizer = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    if args.ours_only:
        with tempfile.TemporaryDirectory() as work:
            prompts = os.path.join(work, "prompts.jsonl")
            with open(prompts, "w") as f:
                for q in QUESTIONS:
                    f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
            for dtype in args.dtypes.split():
                for batch in (1, 8):
                    a, a_rss, _, _ = measure(lambda o, n, b, d: ours(prompts, o, n, b, d),
                                             dict(os.environ), work, args.new_tokens, batch, dtype,
                                             args.repeats, tokenizer)
                    print(f"swift-rs infer {dtype} batch {batch}: {a:.1f} tok/s, peak {a_rss:.0f} MiB "
                          f"(medians of {args.repeats})", flush=True)
        return
    peer_python = subprocess.run(["bash", os.path.join(ROOT, "scripts/peer-venv.sh")],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    peer_bin = os.path.join(os.path.dirname(peer_python), "swift")
    with tempfile.TemporaryDirectory() as work:
        prompts = os.path.join(work, "prompts.jsonl")
        with open(prompts, "w") as f:
            for q in QUESTIONS:
                f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
        env_ours = dict(os.environ)
        env_peer = dict(os.environ, **PEER_ENV)
        if not args.prefill_only:
            print(f"{cpu_model()}; cores busy and voluntary context switches (per generated "
                  f"token) are the whole command's, swift-rs / ms-swift")
            print(f"{'dtype':<9} {'batch':>5} {'swift-rs tok/s':>15} {'ms-swift tok/s':>15} "
                  f"{'ratio':>6} {'swift-rs MiB':>13} {'ms-swift MiB':>13} {'RSS ratio':>9} "
                  f"{'of bound':>8} {'cores busy':>11} {'vcsw/token':>11}")
        for dtype in [] if args.prefill_only else args.dtypes.split():
            for batch in (1, 8):
                a, a_rss, a_busy, a_vcsw = measure(
                    lambda o, n, b, d: ours(prompts, o, n, b, d), env_ours, work,
                    args.new_tokens, batch, dtype, args.repeats, tokenizer)
                p, p_rss, p_busy, p_vcsw = measure(
                    lambda o, n, b, d: peer(peer_bin, prompts, o, n, b, d), env_peer,
                    work, args.new_tokens, batch, dtype, args.repeats, tokenizer)
                share = f"{a / BOUND[dtype]:.0%}" if batch == 1 and dtype in BOUND else "-"
                print(f"{dtype:<9} {batch:>5} {a:>15.1f} {p:>15.1f} {a / p:>6.2f} {a_rss:>13.0f} "
                      f"{p_rss:>13.0f} {a_rss / p_rss:>9.2f} {share:>8} "
                      f"{a_busy:>5.2f}/{p_busy:<5.2f} {a_vcsw:>5.0f}/{p_vcsw:<5.0f}", flush=True)
        print(f"\n{'dtype':<9} {'batch':>5} {'swift-rs prompt tok/s':>22} {'ms-swift prompt tok/s':>22} "
              f"{'ratio':>6} {'swift-rs TTFT ms':>17} {'ms-swift TTFT ms':>17} {'ratio':>6}")
        for dtype in args.dtypes.split():
            for batch in (1, 8):
                a_ttft, a_rate = ours_prefill(prompts, work, batch, dtype, args.repeats)
                p_ttft, p_rate = peer_prefill(peer_python, prompts, batch, dtype, args.repeats)
                print(f"{dtype:<9} {batch:>5} {a_rate:>22.1f} {p_rate:>22.1f} {a_rate / p_rate:>6.2f} "
                      f"{a_ttft * 1e3:>17.1f} {p_ttft * 1e3:>17.1f} {a_ttft / p_ttft:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
