#!/usr/bin/env python3
"""Side-by-side LoRA SFT benchmark: swift-rs `swift sft` and ms-swift's `swift sft` (its own
virtualenv: scripts/peer-venv.sh) on the workload of the training issue and shared/PEER.md:
SmolLM2-135M-Instruct in float32, the first 128 alpaca_en_demo rows as messages, max_length 256
right-truncated, batch 4, gradient accumulation 1, 16 steps, LoRA rank 8 / alpha 32 / dropout
0.05 on all linear layers, gradient checkpointing off on both sides, fixed order.

Trained tokens/s = non-padding input tokens of the 64 rows the 16 steps see (counted with
`swift encode`, the same chatml rendering both sides use) / the training loop's own time (swift-rs:
the sum of `step_time` in logging.jsonl; ms-swift: `train_runtime`). Peak RSS is /usr/bin/time's
for the whole command. Figures are medians of --repeats runs; the machine is shared, so read the
ratios.

    python3 scripts/bench_train_peer.py [--repeats 3]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct")
ALPACA = os.path.join(CACHE, "assets", "llamafactory", "data", "alpaca_en_demo.json")
# SWIFT_BIN times another build (scripts/bench_before_after.sh).
SWIFT = os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target", "release", "swift"))
STEPS, BATCH, MAX_LEN = 16, 4, 256
PEER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "USE_HF": "1", "CUDA_VISIBLE_DEVICES": ""}


def write_dataset(path):
    rows = json.load(open(ALPACA))[:128]
    with open(path, "w") as f:
        for r in rows:
            query = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
            f.write(json.dumps({"messages": [{"role": "user", "content": query},
                                             {"role": "assistant", "content": r["output"]}]}) + "\n")


def trained_tokens(dataset):
    out = subprocess.run([SWIFT, "encode", "--model", MODEL, "--template", "chatml", "--dataset",
                          dataset, "--max_length", str(MAX_LEN), "--truncation_strategy", "right",
                          "--json", "--log-level", "warn"],
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    lengths = [len(json.loads(line)["input_ids"]) for line in out.splitlines() if line.startswith("{")]
    return sum(lengths[:STEPS * BATCH])


def run(cmd, env, work):
    rss = os.path.join(work, "rss")
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss] + cmd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return int(open(rss).read().split()[-1]) / 1024


def ours(dataset, out):
    return [SWIFT, "sft", "--model", MODEL, "--template", "chatml", "--dataset", dataset,
            "--tuner_type", "lora", "--lora_rank", "8", "--lora_alpha", "32", "--lora_dropout", "0.05",
            "--target_modules", "all-linear", "--max_length", str(MAX_LEN),
            "--truncation_strategy", "right", "--per_device_train_batch_size", str(BATCH),
            "--gradient_accumulation_steps", "1", "--max_steps", str(STEPS), "--torch_dtype", "float32",
            "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
            "--save_steps", "1000", "--output_dir", out, "--add_version", "false", "--log-level", "warn"]


def peer(peer_bin, dataset, out):
    return [peer_bin, "sft", "--model", MODEL, "--model_type", "llama", "--template", "chatml",
            "--dataset", dataset, "--tuner_type", "lora", "--lora_rank", "8", "--lora_alpha", "32",
            "--lora_dropout", "0.05", "--target_modules", "all-linear", "--max_length", str(MAX_LEN),
            "--truncation_strategy", "right", "--per_device_train_batch_size", str(BATCH),
            "--gradient_accumulation_steps", "1", "--max_steps", str(STEPS), "--torch_dtype", "float32",
            "--fp16", "false", "--bf16", "false", "--gradient_checkpointing", "false",
            "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false",
            "--split_dataset_ratio", "0", "--save_strategy", "no", "--logging_steps", "1",
            "--output_dir", out]


def our_seconds(out):
    recs = [json.loads(l) for l in open(os.path.join(out, "logging.jsonl")) if l.strip()]
    return sum(r["step_time"] for r in recs if "step_time" in r)


def peer_seconds(out):
    for path in sorted(glob.glob(os.path.join(out, "**", "logging.jsonl"), recursive=True)):
        for line in open(path):
            rec = json.loads(line)
            if "train_runtime" in rec:
                return float(str(rec["train_runtime"]).split()[0])
    sys.exit(f"no train_runtime in ms-swift's logging.jsonl under {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ours-only", action="store_true", help="skip ms-swift (before/after checks)")
    args = ap.parse_args()
    if not args.ours_only:
        peer_python = subprocess.run(["bash", os.path.join(ROOT, "scripts/peer-venv.sh")],
                                     stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        peer_bin = os.path.join(os.path.dirname(peer_python), "swift")
    with tempfile.TemporaryDirectory() as work:
        dataset = os.path.join(work, "alpaca128.jsonl")
        write_dataset(dataset)
        tokens = trained_tokens(dataset)
        results = {"swift-rs": ([], []), "ms-swift": ([], [])}
        for r in range(args.repeats):
            out = os.path.join(work, f"ours{r}")
            rss = run(ours(dataset, out), dict(os.environ), work)
            results["swift-rs"][0].append(tokens / our_seconds(out))
            results["swift-rs"][1].append(rss)
            if args.ours_only:
                continue
            out = os.path.join(work, f"peer{r}")
            rss = run(peer(peer_bin, dataset, out), dict(os.environ, **PEER_ENV), work)
            results["ms-swift"][0].append(tokens / peer_seconds(out))
            results["ms-swift"][1].append(rss)
        if args.ours_only:
            print(f"swift-rs LoRA SFT: {statistics.median(results['swift-rs'][0]):.1f} tok/s, "
                  f"peak {statistics.median(results['swift-rs'][1]):.0f} MiB "
                  f"(medians of {args.repeats}; runs {results['swift-rs'][0]})")
            return
        a, p = (statistics.median(results[k][0]) for k in ("swift-rs", "ms-swift"))
        ar, pr = (statistics.median(results[k][1]) for k in ("swift-rs", "ms-swift"))
        print(f"LoRA SFT, {STEPS} steps x {BATCH} rows, {tokens} trained tokens, medians of {args.repeats}")
        print(f"{'':10} {'tok/s':>8} {'peak MiB':>9}")
        print(f"{'swift-rs':10} {a:>8.1f} {ar:>9.0f}")
        print(f"{'ms-swift':10} {p:>8.1f} {pr:>9.0f}")
        print(f"{'ratio':10} {a / p:>8.2f} {ar / pr:>9.2f}")


if __name__ == "__main__":
    main()
