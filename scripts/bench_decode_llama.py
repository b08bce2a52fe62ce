#!/usr/bin/env python3
"""Batch-1 decoding beside llama.cpp: `swift infer` against `llama-bench -t 2` (tg), float32 and
bfloat16, on the default model (SmolLM2-135M-Instruct), interleaved in one run so that both sides
see the same machine load.

* swift-rs: `swift infer` over 8 prompts at batch 1, greedy, up to --new-tokens each, in the given
  dtype; the figure is its own summary's `decode_tokens_per_s` (tokens after each row's first,
  over the time after it: no start-up, loading or prefill).
* llama.cpp: `llama-bench -t 2 -p 0 -n N -r 1` (token generation only) on GGUF files of the same
  weights: F32 written by `swift export --to_gguf --gguf_type f32`, BF16 by llama.cpp's own
  `llama-quantize` from that F32 file (both kept in $SWIFT_RS_CACHE/bench-gguf/). llama-bench
  and llama-quantize come from scripts/build-llama-cpp.sh (built on first use).

Each round runs swift-rs then llama.cpp for each dtype; the figure is the median of --repeats
rounds. Prints the CPU model, the load average before and after, and the ratio swift-rs /
llama.cpp (the decoding target: at least 1).

    python3 scripts/bench_decode_llama.py [--repeats 3] [--new-tokens 128] [--dtypes "float32 bfloat16"]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct")
SWIFT = os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target/release/swift"))
QUESTIONS = [
    "Write a short poem about the sea.", "Explain what a neural network is.",
    "Give me three tips for learning Rust.", "What is the capital of Italy?",
    "Describe a sunset in two sentences.", "Why is the sky blue?", "List five fruits.",
    "Tell me a fun fact about cats.",
]
GGUF_TYPE = {"float32": "F32", "bfloat16": "BF16"}


def sh(cmd, **kw):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


def gguf_files(llama_dir):
    """The F32 and BF16 GGUF files of the model, written once into the cache."""
    folder = os.path.join(CACHE, "bench-gguf")
    os.makedirs(folder, exist_ok=True)
    f32 = os.path.join(folder, "SmolLM2-135M-Instruct-F32.gguf")
    bf16 = os.path.join(folder, "SmolLM2-135M-Instruct-BF16.gguf")
    if not os.path.exists(f32):
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            sh([SWIFT, "export", "--model", MODEL, "--to_gguf", "--gguf_type", "f32",
                "--output_dir", tmp, "--log-level", "warn"])
            made = [f for f in os.listdir(tmp) if f.endswith(".gguf")]
            if len(made) != 1:
                sys.exit(f"swift export wrote {made} into {tmp}, expected one .gguf file")
            os.replace(os.path.join(tmp, made[0]), f32)
    if not os.path.exists(bf16):
        sh([os.path.join(llama_dir, "bin", "llama-quantize"), f32, bf16 + ".tmp", "BF16"])
        os.replace(bf16 + ".tmp", bf16)
    return {"float32": f32, "bfloat16": bf16}


def ours(prompts, work, dtype, new_tokens):
    proc = sh([SWIFT, "infer", "--model", MODEL, "--template", "chatml", "--temperature", "0",
               "--max_new_tokens", str(new_tokens), "--torch_dtype", dtype, "--device", "cpu",
               "--val_dataset", prompts, "--result_path", os.path.join(work, "out.jsonl"),
               "--max_batch_size", "1"])
    found = re.findall(r"\{\"decode_tokens_per_s.*\}|\{.*\"rows\".*\}", proc.stderr)
    if not found:
        sys.exit(f"no summary in swift infer's log:\n{proc.stderr[-3000:]}")
    return json.loads(found[-1])["decode_tokens_per_s"]


def theirs(llama_dir, gguf, new_tokens):
    proc = sh([os.path.join(llama_dir, "bin", "llama-bench"), "-m", gguf, "-t", "2", "-p", "0",
               "-n", str(new_tokens), "-r", "1", "-o", "json"])
    rows = json.loads(proc.stdout)
    return rows[0]["avg_ts"]


def cpu_model():
    for line in sh(["lscpu"]).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtypes", default="float32 bfloat16")
    args = ap.parse_args()
    dtypes = args.dtypes.split()
    for d in dtypes:
        if d not in GGUF_TYPE:
            sys.exit(f"--dtypes takes {' '.join(GGUF_TYPE)}, got {d}")
    if not os.access(SWIFT, os.X_OK):
        sys.exit("build first: cargo build --release -p swift-host -p swift-runtime")
    llama_dir = sh(["bash", os.path.join(ROOT, "scripts/build-llama-cpp.sh")]).stdout.strip()
    ggufs = gguf_files(llama_dir)
    load_before = open("/proc/loadavg").read().split()[0]
    runs = {d: {"swift-rs": [], "llama.cpp": []} for d in dtypes}
    with tempfile.TemporaryDirectory() as work:
        prompts = os.path.join(work, "prompts.jsonl")
        with open(prompts, "w") as f:
            for q in QUESTIONS:
                f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
        for _ in range(args.repeats):
            for d in dtypes:
                runs[d]["swift-rs"].append(ours(prompts, work, d, args.new_tokens))
                runs[d]["llama.cpp"].append(theirs(llama_dir, ggufs[d], args.new_tokens))
    load_after = open("/proc/loadavg").read().split()[0]
    print(f"batch-1 decoding on {cpu_model()}, SmolLM2-135M-Instruct, tok/s, medians of "
          f"{args.repeats} interleaved rounds (load average {load_before} before, {load_after} after)")
    print(f"{'dtype':10}{'swift-rs':>12}{'llama.cpp':>12}{'ratio':>8}")
    for d in dtypes:
        a, b = (statistics.median(runs[d][s]) for s in ("swift-rs", "llama.cpp"))
        print(f"{d:10}{a:>12.1f}{b:>12.1f}{a / b:>8.2f}")
    print(f"runs: {json.dumps(runs)}")


if __name__ == "__main__":
    main()
