#!/usr/bin/env python3
"""The matrix-product ceiling of a LoRA SFT step (issue 23): libtorch's `torch.mm` in float32 at
the step's shapes on SmolLM2-135M (one row of --rows tokens per pass: the frozen base linears'
forward x·Wᵀ and input gradient g·W for q/o 576×576, k/v 192×576, gate/up 1536×576 and down
576×1536), and a 2048² product for reference, at --threads threads; the best of --calls calls
each (the figure least hurt by other work on shared cores). Prints the CPU model and the load
average. Run it with the venv's python (torch):

    ~/.cache/swift-rs/venv/bin/python scripts/bench_gemm.py [--threads 2] [--rows 163]

`perf record` on it names the MKL kernel that runs (on AMD CPUs MKL takes its `def`/`zen` AVX2
paths, on Intel its AVX-512 ones).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_model  # noqa: E402

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]  # (out, in) of the base linears


def best(a, b, calls):
    t_best = float("inf")
    for r in range(calls + 5):
        t = time.perf_counter()
        torch.mm(a, b)
        d = time.perf_counter() - t
        if r >= 5:
            t_best = min(t_best, d)
    return t_best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=163, help="tokens per pass (the workload's mean)")
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    if args.threads < 1 or args.rows < 1 or args.calls < 1:
        sys.exit("--threads, --rows and --calls take 1 or more")
    torch.set_num_threads(args.threads)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"torch.mm float32, {args.threads} threads, {args.rows} rows, best of {args.calls}; "
          f"{cpu_model()}; load average {' '.join(load)}")
    flops = seconds = 0.0
    for out, inp in SHAPES:
        x, w, g = torch.randn(args.rows, inp), torch.randn(out, inp), torch.randn(args.rows, out)
        f = 2 * args.rows * out * inp
        tf, tg = best(x, w.t(), args.calls), best(g, w, args.calls)
        flops, seconds = flops + 2 * f, seconds + tf + tg
        print(f"{args.rows}x{inp} · ({out}x{inp})ᵀ: forward {f / tf / 1e9:.1f} GFLOP/s, "
              f"input gradient {f / tg / 1e9:.1f} GFLOP/s")
    print(f"the step's base-linear products together: {flops / seconds / 1e9:.1f} GFLOP/s")
    x = torch.randn(2048, 2048)
    print(f"2048²: {2 * 2048 ** 3 / best(x, x, 10) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
