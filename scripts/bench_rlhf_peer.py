#!/usr/bin/env python3
"""Side-by-side LoRA DPO benchmark: swift-rs `swift rlhf --rlhf_type dpo` and ms-swift's (its own
virtualenv: scripts/peer-venv.sh) on the workload of the rlhf issue: SmolLM2-135M-Instruct in
float32, the first 64 pairs of dpo_en_demo as the dataset (messages + rejected_response, chatml
on both sides), max_length 256 with left truncation, batch 2 pairs, gradient accumulation 1,
8 steps (16 pairs trained), LoRA rank 8 / alpha 32 on all linear layers (dropout 0.05 requested;
both sides switch dropout off for DPO: TRL's `disable_dropout`, swift-rs's `--disable_dropout`),
beta 0.1, fixed order. ms-swift keeps its own defaults otherwise (gradient checkpointing on, as PEER.md's
baseline ran it), and swift-rs runs with `--gradient_checkpointing true` to match; otherwise its
own defaults (the policy's gradient pass one sequence at a time, `--rlhf_chunk_size 1`).

Pairs/s = 16 / the training loop's own time (swift-rs: the sum of `step_time` in logging.jsonl;
ms-swift: `train_runtime`). Peak RSS is /usr/bin/time's for the whole command. Figures are
medians of --repeats runs; the machine is shared, so read the ratios (the load average is printed).

    python3 scripts/bench_rlhf_peer.py [--repeats 1]
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
DPO = os.path.join(CACHE, "assets", "llamafactory", "data", "dpo_en_demo.json")
# SWIFT_BIN times another build (scripts/bench_before_after.sh).
SWIFT = os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target", "release", "swift"))
STEPS, BATCH, MAX_LEN, PAIRS = 8, 2, 256, 64
PEER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "USE_HF": "1", "CUDA_VISIBLE_DEVICES": ""}
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def write_dataset(path):
    rows = json.load(open(DPO))[:PAIRS]
    with open(path, "w") as f:
        for r in rows:
            msgs = [{"role": ROLES[c["from"]], "content": c["value"]} for c in r["conversations"]]
            msgs.append({"role": "assistant", "content": r["chosen"]["value"]})
            f.write(json.dumps({"messages": msgs, "rejected_response": r["rejected"]["value"]}) + "\n")


def run(cmd, env, work):
    """The whole command's figures (benchlib.timed): peak RSS, cores busy, context switches."""
    return timed(cmd, env)[1]


COMMON = ["--rlhf_type", "dpo", "--beta", "0.1", "--tuner_type", "lora", "--lora_rank", "8",
          "--lora_alpha", "32", "--lora_dropout", "0", "--target_modules", "all-linear",
          "--max_length", str(MAX_LEN), "--truncation_strategy", "left",
          "--per_device_train_batch_size", str(BATCH), "--gradient_accumulation_steps", "1",
          "--max_steps", str(STEPS), "--torch_dtype", "float32", "--dataset_shuffle", "false",
          "--train_dataloader_shuffle", "false", "--learning_rate", "1e-4", "--logging_steps", "1"]


def ours(dataset, out):
    return [SWIFT, "rlhf", "--model", MODEL, "--template", "chatml", "--dataset", dataset] + COMMON + [
        "--gradient_checkpointing", "true", "--save_steps", "1000", "--output_dir", out, "--add_version", "false",
        "--log-level", "warn"]


def peer(peer_bin, dataset, out):
    return [peer_bin, "rlhf", "--model", MODEL, "--model_type", "llama", "--template", "chatml",
            "--dataset", dataset] + COMMON + [
        "--fp16", "false", "--bf16", "false", "--split_dataset_ratio", "0", "--save_strategy", "no",
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
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ours-only", action="store_true", help="skip ms-swift (a quick re-check)")
    args = ap.parse_args()
    if not args.ours_only:
        peer_python = subprocess.run(["bash", os.path.join(ROOT, "scripts/peer-venv.sh")],
                                     stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        peer_bin = os.path.join(os.path.dirname(peer_python), "swift")
    pairs = STEPS * BATCH
    with tempfile.TemporaryDirectory() as work:
        dataset = os.path.join(work, "dpo64.jsonl")
        write_dataset(dataset)
        results = {"swift-rs": ([], [], [], []), "ms-swift": ([], [], [], [])}
        loads = []
        for r in range(args.repeats):
            loads.append(os.getloadavg()[0])
            out = os.path.join(work, f"ours{r}")
            st = run(ours(dataset, out), dict(os.environ), work)
            rss = st["rss_mib"]
            results["swift-rs"][0].append(pairs / our_seconds(out))
            results["swift-rs"][1].append(rss)
            results["swift-rs"][2].append(st["cores_busy"])
            results["swift-rs"][3].append(st["voluntary_switches"] / STEPS)
            if args.ours_only:
                print(f"swift-rs {results['swift-rs'][0][-1]:.3f} pairs/s, peak {rss:.0f} MiB")
                continue
            out = os.path.join(work, f"peer{r}")
            st = run(peer(peer_bin, dataset, out), dict(os.environ, **PEER_ENV), work)
            results["ms-swift"][0].append(pairs / peer_seconds(out))
            results["ms-swift"][1].append(st["rss_mib"])
            results["ms-swift"][2].append(st["cores_busy"])
            results["ms-swift"][3].append(st["voluntary_switches"] / STEPS)
        if args.ours_only:
            print(f"swift-rs LoRA DPO: {statistics.median(results['swift-rs'][0]):.3f} pairs/s, "
                  f"peak {statistics.median(results['swift-rs'][1]):.0f} MiB (medians of {args.repeats})")
            return
        print(f"LoRA DPO on {cpu_model()}, {STEPS} steps x {BATCH} pairs, max_length {MAX_LEN} "
              f"left-truncated, medians of {args.repeats} (load average at start "
              f"{', '.join(f'{l:.1f}' for l in loads)}; cores busy and voluntary context switches "
              f"are the whole command's)")
        print(f"{'':10} {'pairs/s':>8} {'peak MiB':>9} {'cores busy':>11} {'vcsw/step':>10}")
        for k in ("swift-rs", "ms-swift"):
            m = [statistics.median(v) for v in results[k]]
            print(f"{k:10} {m[0]:>8.3f} {m[1]:>9.0f} {m[2]:>11.2f} {m[3]:>10.0f}")
        print(f"{'ratio':10} {a / p:>8.2f} {ar / pr:>9.2f}")


if __name__ == "__main__":
    main()
