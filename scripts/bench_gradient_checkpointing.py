#!/usr/bin/env python3
"""swift-rs with and without `--gradient_checkpointing`, on the workloads of the side-by-side
benchmarks (scripts/bench_train_peer.py: LoRA SFT of SmolLM2, 128 alpaca rows, max_length 256,
batch 4, 16 steps; scripts/bench_rlhf_peer.py: LoRA DPO, 64 pairs of dpo_en_demo, max_length 256
left-truncated, batch 2, 8 steps), measured the same way (the loop's own time from
logging.jsonl; peak RSS from /usr/bin/time for the whole command). ms-swift is not rerun: its
figures from the same workloads are printed from the README's tables (SFT 5333 MiB, DPO
2816 MiB) for the ratio.

    python3 scripts/bench_gradient_checkpointing.py [--repeats 1] [--only sft|dpo]
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rlhf_peer as dpo  # noqa: E402
import bench_train_peer as sft  # noqa: E402

PEER_RSS = {"sft": 5333.0, "dpo": 2816.0}


def measure(kind, work, dataset, tokens, flag, r):
    out = os.path.join(work, f"{kind}-{flag}-{r}")
    if kind == "sft":
        cmd = sft.ours(dataset, out) + ["--gradient_checkpointing", flag]
        rss = sft.run(cmd, dict(os.environ), work)
        return tokens / sft.our_seconds(out), rss
    cmd = dpo.ours(dataset, out) + ["--gradient_checkpointing", flag]
    rss = dpo.run(cmd, dict(os.environ), work)
    return dpo.STEPS * dpo.BATCH / dpo.our_seconds(out), rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", choices=["sft", "dpo"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for kind in ["sft", "dpo"]:
            if args.only and kind != args.only:
                continue
            if kind == "sft":
                dataset = os.path.join(work, "alpaca128.jsonl")
                sft.write_dataset(dataset)
                tokens = sft.trained_tokens(dataset)
                unit = "tok/s"
            else:
                dataset = os.path.join(work, "dpo64.jsonl")
                dpo.write_dataset(dataset)
                tokens = None
                unit = "pairs/s"
            print(f"{kind.upper()} (load average {os.getloadavg()[0]:.1f}), medians of {args.repeats}")
            print(f"{'checkpointing':14} {unit:>8} {'peak MiB':>9} {'vs ms-swift RSS':>16}")
            for flag in ["false", "true"]:
                runs = [measure(kind, work, dataset, tokens, flag, r) for r in range(args.repeats)]
                speed = statistics.median(s for s, _ in runs)
                rss = statistics.median(m for _, m in runs)
                print(f"{flag:14} {speed:>8.3f} {rss:>9.0f} {rss / PEER_RSS[kind]:>15.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
