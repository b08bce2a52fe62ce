#!/usr/bin/env python3
"""Side-by-side LoRA SFT benchmark: swift-rs `swift sft` and ms-swift's `swift sft` (its own
virtualenv: scripts/peer-venv.sh) on the workload of the training issue and shared/PEER.md:
SmolLM2-135M-Instruct in float32, the first 128 alpaca_en_demo rows as messages, max_length 256
right-truncated, batch 4, gradient accumulation 1, 16 steps, LoRA rank 8 / alpha 32 / dropout
0.05 on all linear layers, gradient checkpointing off on both sides, fixed order.

Trained tokens/s = non-padding input tokens of the 64 rows the 16 steps see (counted with
`swift encode`, the same chatml rendering both sides use) / the training loop's own time (the
final `train_runtime` in logging.jsonl on both sides). Peak RSS is /usr/bin/time's
for the whole command, as are its wall time, the cores it kept busy ((user+system)/wall) and
its voluntary context switches (per step). Figures are medians of --repeats runs; the machine is shared, so read the
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

from benchlib import cpu_model, timed

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
    """(peak RSS MiB, wall s, cores busy, voluntary context switches) of the whole command."""
    _, st = timed(cmd, env)
    return st["rss_mib"], st["wall_s"], st["cores_busy"], st["voluntary_switches"]


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
    # The final record's train_runtime, as for ms-swift. (Until 2026-12-06 this summed the
    # records' step_time, which is the mean over a logging window of --logging_steps 5: it
    # counted about a third of the steps' time and overstated swift-rs's tok/s about 3x.)
    recs = [json.loads(l) for l in open(os.path.join(out, "logging.jsonl")) if l.strip()]
    runtimes = [r["train_runtime"] for r in recs if "train_runtime" in r]
    if not runtimes:
        sys.exit(f"no train_runtime in {out}/logging.jsonl")
    return runtimes[-1]


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
    before = machine_state()
    with tempfile.TemporaryDirectory() as work:
        dataset = os.path.join(work, "alpaca128.jsonl")
        write_dataset(dataset)
        tokens = trained_tokens(dataset)
        keys = ("tok/s", "peak MiB", "wall s", "cores busy", "vcsw/step")
        results = {"swift-rs": {k: [] for k in keys}, "ms-swift": {k: [] for k in keys}}

        def record(side, seconds, stats):
            rss, wall, busy, vcsw = stats
            for k, v in zip(keys, (tokens / seconds, rss, wall, busy, vcsw / STEPS)):
                results[side][k].append(v)

        for r in range(args.repeats):
            out = os.path.join(work, f"ours{r}")
            stats = run(ours(dataset, out), dict(os.environ), work)
            record("swift-rs", our_seconds(out), stats)
            if args.ours_only:
                continue
            out = os.path.join(work, f"peer{r}")
            stats = run(peer(peer_bin, dataset, out), dict(os.environ, **PEER_ENV), work)
            record("ms-swift", peer_seconds(out), stats)
        sides = ("swift-rs",) if args.ours_only else ("swift-rs", "ms-swift")
        med = {s: {k: statistics.median(results[s][k]) for k in keys} for s in sides}
        print(f"LoRA SFT on {cpu_model()}, {STEPS} steps x {BATCH} rows, {tokens} trained tokens, "
              f"medians of {args.repeats} (wall, cores busy = (user+system)/wall and voluntary "
              f"context switches are the whole command's)")
        print(f"before: {before}; after: {machine_state()} (at 25% CPU pressure or more, swift "
              f"trains with OMP_WAIT_POLICY=PASSIVE: BENCHMARKS.md)")
        print(f"{'':10}" + "".join(f"{k:>12}" for k in keys))
        for s in sides:
            print(f"{s:10}" + "".join(f"{med[s][k]:>12.2f}" for k in keys))
        if not args.ours_only:
            print(f"{'ratio':10}" + "".join(
                f"{med['swift-rs'][k] / max(med['ms-swift'][k], 1e-9):>12.2f}" for k in keys))
        print(f"runs: {json.dumps(results)}")


def machine_state():
    load = open("/proc/loadavg").read().split()[0]
    try:
        some = open("/proc/pressure/cpu").readline().split()
        pressure = next(f.split("=")[1] for f in some if f.startswith("avg10="))
    except (OSError, StopIteration):
        pressure = "not reported"
    return f"load average {load}, CPU pressure {pressure}%"




if __name__ == "__main__":
    main()
