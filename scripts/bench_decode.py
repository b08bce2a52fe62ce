#!/usr/bin/env python3
"""Batch-1 decoding of the default model (SmolLM2-135M-Instruct) in every form swift-rs reads,
beside llama.cpp's own `llama-bench -t 2`, in one run: the one decoding benchmark of the speed,
backends and quantizers issues (23, 17, 18).

Inputs (`--inputs`, any of):
* `float32`, `bfloat16`: the model folder at that `--torch_dtype`; llama.cpp's counterpart is the
  F32 / BF16 GGUF file of the same weights;
* `f32 f16 bf16 q8_0 q4_0 q4_1 q4_k_m q6_k`: GGUF files (written once into
  $SWIFT_RS_CACHE/bench-gguf/ by `swift export --to_gguf --gguf_type T`; BF16, Q4_K_M and Q6_K by
  llama.cpp's `llama-quantize` from the F32 file, so the K-quant files are llama.cpp's own mixes:
  on SmolLM2's 576-wide matrices its Q4_K_M falls back to Q5_0 and Q6_K to Q8_0, with Q4_K/Q6_K
  where rows are whole super-blocks of 256); `swift infer --model FILE.gguf` beside llama-bench
  on the same file;
* `rtn4`: swift-rs's own 4-bit export (`swift export --quant_method rtn --quant_bits 4
  --group_size 32 --quant_lm_head`: every linear slot and the tied embedding/output projection
  at 4 bits; loaded as Q4_1 blocks); its llama.cpp counterpart is the Q4_0 GGUF of the same model
  (llama.cpp's 4-bit type; that file's tied token embedding/output projection is Q8_0, as
  `swift export --to_gguf` writes it and llama-quantize would, so llama.cpp reads 8.5 bits per
  output weight where the rtn4 folder reads 5); a `--baseline` build that cannot read that folder (before `--quant_lm_head`) runs
  `rtn4-float-head` in its place, said in its row;
* `rtn4-float-head`: the same export without `--quant_lm_head` (the output projection and the
  embedding in float16, read as float32), no llama.cpp counterpart.

Backends (`--backends`): `pt` (built in) for every input, and `llama_cpp` (the plugin built by
`make llama-cpp` into target/llama-cpp) for the GGUF inputs.

Each swift-rs run is `swift infer` over --prompts prompts at batch 1, greedy, --new-tokens each:
decode tok/s is its summary's `decode_tokens_per_s` (tokens after each row's first, over the time
after it); prompt tok/s is the prefill (prompt tokens over the time to the first token, without the
first row, which pays libtorch's first-call set-up). llama-bench runs `-p 64 -n NEW_TOKENS -r 1`.
For every process: peak RSS, the cores it kept busy ((user + system) / wall time, the whole
process: start-up and loading included) and its voluntary context switches (GNU time). Rounds are
interleaved (every input and backend, then the next round) so that load on a shared machine hits
both sides alike; the figures are medians of --repeats rounds. Prints the CPU model, the kernels
swift-rs picked, the llama.cpp build and the load average before and after; `--json FILE` writes
every run.

    python3 scripts/bench_decode.py [--repeats 3] [--new-tokens 128] [--prompts 4]
        [--inputs "float32 bfloat16 f32 f16 q8_0 q4_0 q4_1 q4_k_m q6_k rtn4"]
        [--backends "pt llama_cpp"] [--baseline OTHER_SWIFT_BINARY]

`--baseline BIN` runs a second swift build (e.g. main's `target/release/swift`, with its
libswift_runtime.so beside it) in the same rounds, right after this one on every input, rows
"swift-rs pt (baseline)": an A/B comparison interleaved in the same minutes.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import cpu_model, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct")
SWIFT = os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target/release/swift"))
LLAMA_CPP_PLUGIN = os.path.join(ROOT, "target/llama-cpp/release/libswift_backend_llama_cpp.so")
GGUF_DIR = os.path.join(CACHE, "bench-gguf")
QUESTIONS = [
    "Write a short poem about the sea.", "Explain what a neural network is.",
    "Give me three tips for learning Rust.", "What is the capital of Italy?",
    "Describe a sunset in two sentences.", "Why is the sky blue?", "List five fruits.",
    "Tell me a fun fact about cats.",
]
FOLDER_DTYPES = {"float32": "f32", "bfloat16": "bf16"}  # folder input -> llama.cpp's counterpart
GGUF_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k_m", "q6_k"]
# The types llama.cpp's llama-quantize writes from the F32 file (swift export writes no BF16, and
# its K-quants choose plain scales where llama-quantize searches).
BY_LLAMA_QUANTIZE = {"bf16": "BF16", "q4_k_m": "Q4_K_M", "q6_k": "Q6_K"}
OWN = "rtn4"
OWN_FLOAT_HEAD = "rtn4-float-head"


def sh(cmd, **kw):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


def gguf_file(ty, llama_dir):
    """The model as GGUF type `ty`, written once into the cache."""
    os.makedirs(GGUF_DIR, exist_ok=True)
    path = os.path.join(GGUF_DIR, f"SmolLM2-135M-Instruct-{ty}.gguf")
    if os.path.exists(path):
        return path
    if ty in BY_LLAMA_QUANTIZE:
        if llama_dir is None:
            sys.exit(f"the {ty} GGUF is written by llama.cpp's llama-quantize: drop --no-llama-bench")
        f32 = gguf_file("f32", llama_dir)
        sh([os.path.join(llama_dir, "bin", "llama-quantize"), f32, path + ".tmp",
            BY_LLAMA_QUANTIZE[ty]])
        os.replace(path + ".tmp", path)
        return path
    with tempfile.TemporaryDirectory(dir=GGUF_DIR) as tmp:
        sh([SWIFT, "export", "--model", MODEL, "--to_gguf", "--gguf_type", ty,
            "--output_dir", tmp, "--log-level", "warn"])
        made = [f for f in os.listdir(tmp) if f.endswith(".gguf")]
        if len(made) != 1:
            sys.exit(f"swift export wrote {made} into {tmp}, expected one .gguf file")
        os.replace(os.path.join(tmp, made[0]), path)
    return path


def own_folder(lm_head):
    """The own rtn 4-bit export (group 32), with the output projection quantized or not,
    written once into the cache."""
    name = "rtn4-g32-lm-head" if lm_head else "rtn4-g32"
    path = os.path.join(GGUF_DIR, f"SmolLM2-135M-Instruct-{name}")
    if not os.path.exists(os.path.join(path, "config.json")):
        if os.path.exists(path):
            shutil.rmtree(path)
        sh([SWIFT, "export", "--model", MODEL, "--quant_method", "rtn", "--quant_bits", "4",
            "--group_size", "32", "--output_dir", path, "--log-level", "warn"]
           + (["--quant_lm_head"] if lm_head else []))
    return path


def reads_lm_head_folders(swift):
    """Whether a swift build knows `--quant_lm_head` (so reads such folders)."""
    proc = subprocess.run([swift, "export", "--help"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    return "--quant_lm_head" in proc.stdout or "--quant-lm-head" in proc.stdout


def swift_run(work, prompts, model, backend, dtype, new_tokens, plugin_dir, swift=SWIFT):
    cmd = [swift]
    if plugin_dir:
        cmd += ["--plugin-dir", plugin_dir]
    cmd += ["infer", "--model", model, "--infer_backend", backend, "--temperature", "0",
            "--max_new_tokens", str(new_tokens), "--max_batch_size", "1",
            "--val_dataset", prompts, "--result_path", os.path.join(work, "out.jsonl")]
    if dtype:
        cmd += ["--torch_dtype", dtype, "--template", "chatml"]
    if backend == "pt":
        cmd += ["--device", "cpu"]
    proc, res = timed(cmd)
    found = re.findall(r"(\{.*\"rows\".*\})", proc.stderr)
    if not found:
        sys.exit(f"no summary in swift infer's log:\n{proc.stderr[-3000:]}")
    s = json.loads(found[-1])
    ttft = s["time_to_first_token_per_batch_s"]
    rest = ttft[1:] or ttft
    res["decode_tok_s"] = s["decode_tokens_per_s"]
    res["prompt_tok_s"] = s["prompt_tokens"] / len(ttft) / (sum(rest) / len(rest))
    kernel = re.findall(r"swift-kernels' [^\n]*? kernel", proc.stderr)
    return res, (kernel[0] if kernel else None)


def llama_run(work, llama_dir, gguf, new_tokens):
    proc, res = timed([os.path.join(llama_dir, "bin", "llama-bench"), "-m", gguf, "-t", "2",
                       "-p", "64", "-n", str(new_tokens), "-r", "1", "-o", "json"])
    rows = json.loads(proc.stdout)
    res["prompt_tok_s"] = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
    res["decode_tok_s"] = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
    return res, rows[0].get("build_commit", "?")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=4, help=f"1..{len(QUESTIONS)}")
    ap.add_argument("--inputs",
                    default="float32 bfloat16 f32 f16 q8_0 q4_0 q4_1 q4_k_m q6_k rtn4")
    ap.add_argument("--backends", default="pt")
    ap.add_argument("--no-llama-bench", action="store_true")
    ap.add_argument("--json", help="write every run's figures to this file")
    ap.add_argument("--baseline", help="another swift binary run in the same rounds (A/B)")
    args = ap.parse_args()
    inputs, backends = args.inputs.split(), args.backends.split()
    known = list(FOLDER_DTYPES) + GGUF_TYPES + [OWN, OWN_FLOAT_HEAD]
    for i in inputs:
        if i not in known:
            sys.exit(f"--inputs takes {' '.join(known)}; got {i}")
    for b in backends:
        if b not in ("pt", "llama_cpp"):
            sys.exit(f"--backends takes pt llama_cpp; got {b}")
    if not 1 <= args.prompts <= len(QUESTIONS):
        sys.exit(f"--prompts takes 1..{len(QUESTIONS)}; got {args.prompts}")
    if args.repeats < 1:
        sys.exit(f"--repeats takes 1 or more; got {args.repeats}")
    if not os.access(SWIFT, os.X_OK):
        sys.exit("build first: cargo build --release -p swift-host -p swift-runtime")
    swifts = [(SWIFT, "")]
    if args.baseline:
        if not os.access(args.baseline, os.X_OK):
            sys.exit(f"--baseline {args.baseline} is not an executable swift binary")
        swifts.append((args.baseline, " (baseline)"))
    if not os.path.exists(os.path.join(MODEL, "config.json")):
        sys.exit(f"no model at {MODEL}: run make setup")
    plugin_dir = None
    llama_dir = None
    if not args.no_llama_bench:
        llama_dir = sh(["bash", os.path.join(ROOT, "scripts/build-llama-cpp.sh")]).stdout.strip()

    with tempfile.TemporaryDirectory() as work:
        if "llama_cpp" in backends:
            if not os.path.exists(LLAMA_CPP_PLUGIN):
                sys.exit(f"--backends llama_cpp needs {LLAMA_CPP_PLUGIN}: run make llama-cpp")
            plugin_dir = os.path.join(work, "plugins")
            os.makedirs(plugin_dir)
            shutil.copy(LLAMA_CPP_PLUGIN, plugin_dir)
        prompts = os.path.join(work, "prompts.jsonl")
        with open(prompts, "w") as f:
            for q in QUESTIONS[:args.prompts]:
                f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
        # What each input is: (swift-rs model path, dtype flag, llama.cpp's file or None).
        plan = {}
        for i in inputs:
            if i in FOLDER_DTYPES:
                peer = gguf_file(FOLDER_DTYPES[i], llama_dir) if llama_dir else None
                plan[i] = (MODEL, i, peer)
            elif i == OWN:
                peer = gguf_file("q4_0", llama_dir) if llama_dir else None
                plan[i] = (own_folder(True), None, peer)
            elif i == OWN_FLOAT_HEAD:
                plan[i] = (own_folder(False), None, None)
            else:
                f = gguf_file(i, llama_dir)
                plan[i] = (f, None, f)
        # GGUF files convert once into the cache on first use: not timed.
        for i, (model, dtype, _) in plan.items():
            if model.endswith(".gguf"):
                for b in backends:
                    for swift, _ in swifts:
                        swift_run(work, prompts, model, b, dtype, 1, plugin_dir, swift)

        load_before = open("/proc/loadavg").read().split()[:3]
        runs, kernels, commit = [], set(), None
        for r in range(args.repeats):
            for i, (model, dtype, peer) in plan.items():
                for b in backends:
                    if b == "llama_cpp" and not model.endswith(".gguf"):
                        continue
                    for swift, label in swifts:
                        m = model
                        if i == OWN and not reads_lm_head_folders(swift):
                            m, label = own_folder(False), label + " on " + OWN_FLOAT_HEAD
                        res, kernel = swift_run(work, prompts, m, b, dtype, args.new_tokens,
                                                plugin_dir, swift)
                        if kernel:
                            kernels.add(kernel)
                        runs.append(dict(res, input=i, who=f"swift-rs {b}{label}", round=r))
                if peer and llama_dir:
                    res, commit = llama_run(work, llama_dir, peer, args.new_tokens)
                    runs.append(dict(res, input=i, who="llama-bench", round=r))
        load_after = open("/proc/loadavg").read().split()[:3]

    print(f"batch-1 greedy decoding, SmolLM2-135M-Instruct, on {cpu_model()} ({os.cpu_count()} "
          f"cores); medians of {args.repeats} interleaved rounds; load average "
          f"{' '.join(load_before)} before, {' '.join(load_after)} after")
    if kernels:
        print("swift-rs picked: " + "; ".join(sorted(kernels)))
    if args.baseline:
        print(f"baseline: {args.baseline}, run right after each swift-rs run")
    if llama_dir:
        if commit in (None, "?", "unknown"):
            # Built from the sdist, which has no git metadata: the commit its CHANGELOG names.
            commit = sh(["bash", os.path.join(ROOT, "scripts/build-llama-cpp.sh"),
                         "--commit"]).stdout.strip()
        print(f"llama-bench: {llama_dir} (llama.cpp commit {commit}, llama-cpp-python 0.3.36's)")
    if "llama_cpp" in backends:
        # The backend plugin's llama.cpp is the one the binding crate vendors (another commit).
        lock = open(os.path.join(ROOT, "Cargo.lock")).read()
        m = re.search(r'name = "llama-cpp-sys-2"\nversion = "([^"]+)"', lock)
        print(f"swift-rs llama_cpp backend: llama.cpp vendored by llama-cpp-sys-2 "
              f"{m.group(1) if m else '?'} (target/llama-cpp, `make llama-cpp`)")
    print(f"swift-rs: {args.prompts} prompts x {args.new_tokens} new tokens per run; llama-bench: "
          f"-t 2 -p 64 -n {args.new_tokens}")
    print("| input | who | decode tok/s | prompt tok/s | decode vs llama.cpp | peak RSS MiB "
          "| cores busy | voluntary switches |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i in plan:
        if i == OWN and plan[i][2]:
            print(f"| {i} | (llama.cpp's row: its Q4_0 GGUF of the same model) | | | | | | |")
        whos = [w for w in dict.fromkeys(x["who"] for x in runs if x["input"] == i)]
        med = {w: {k: statistics.median(x[k] for x in runs if x["input"] == i and x["who"] == w)
                   for k in ("decode_tok_s", "prompt_tok_s", "rss_mib", "cores_busy",
                             "voluntary_switches")} for w in whos}
        peer = med.get("llama-bench")
        for w in whos:
            m = med[w]
            ratio = "–" if peer is None or w == "llama-bench" else \
                f"{m['decode_tok_s'] / peer['decode_tok_s']:.2f}"
            print(f"| {i} | {w} | {m['decode_tok_s']:.1f} | {m['prompt_tok_s']:.1f} | {ratio} "
                  f"| {m['rss_mib']:.0f} | {m['cores_busy']:.2f} | {m['voluntary_switches']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "llama_cpp_commit": commit, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
