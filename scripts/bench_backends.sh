#!/usr/bin/env bash
# Inference backends side by side, in one run: SmolLM2-135M-Instruct exported by `swift export
# --to_gguf` as F32, F16, Q8_0 and Q4_1; batch-1 greedy `swift infer` (8 prompts x NEW_TOKENS
# tokens) with `--infer_backend pt` and `--infer_backend llama_cpp` on each file (prompt tok/s:
# the prefill; decode tok/s: the tokens after the first), beside llama.cpp's own `llama-bench -t 2`
# (scripts/build-llama-cpp.sh) on the same files. BENCHMARKS.md has the figures.
#
# Usage: bash scripts/bench_backends.sh        (needs `make llama-cpp` and `make setup`)
#        TYPES="f32 q4_1" NEW_TOKENS=64 SKIP_LLAMA_BENCH=1 bash scripts/bench_backends.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct"
SWIFT="${SWIFT:-$ROOT/target/release/swift}"
PLUGIN="$ROOT/target/llama-cpp/release/libswift_backend_llama_cpp.so"
TYPES="${TYPES:-f32 f16 q8_0 q4_1}"
NEW_TOKENS="${NEW_TOKENS:-128}"
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }
[ -f "$PLUGIN" ] || { echo "build the llama_cpp backend first: make llama-cpp" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (run make setup)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/plugins" "$CACHE/bench-backends"
cp "$PLUGIN" "$work/plugins/"
python3 - "$work/prompts.jsonl" <<'PY'
import json, sys
qs = ["Write a short poem about the sea.", "Explain what a neural network is.",
      "Give me three tips for learning Rust.", "What is the capital of Italy?",
      "Describe a sunset in two sentences.", "Why is the sky blue?", "List five fruits.",
      "Tell me a fun fact about cats."]
with open(sys.argv[1], "w") as f:
    for q in qs:
        f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
PY
bench=""
if [ -z "${SKIP_LLAMA_BENCH:-}" ]; then
  bench="$(bash "$ROOT/scripts/build-llama-cpp.sh")/bin/llama-bench"
fi
echo "load average before the run: $(cut -d' ' -f1 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
printf '%-6s %-10s %10s %10s\n' type backend prompt/s decode/s
for ty in $TYPES; do
  gguf="$CACHE/bench-backends/SmolLM2-135M-Instruct-$ty.gguf"
  if [ ! -f "$gguf" ]; then
    out="$("$SWIFT" export --model "$MODEL" --to_gguf --gguf_type "$ty" --output_dir "$work/export-$ty" 2>/dev/null | tail -1)"
    mv "$out" "$gguf"
  fi
  for backend in pt llama_cpp; do
    "$SWIFT" --plugin-dir "$work/plugins" infer --infer_backend "$backend" --model "$gguf" \
      --temperature 0 --max_new_tokens "$NEW_TOKENS" --max_batch_size 1 \
      --val_dataset "$work/prompts.jsonl" --result_path "$work/out.jsonl" 2> "$work/log" \
      || { cat "$work/log" >&2; exit 1; }
    python3 - "$work/log" "$ty" "$backend" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
s = json.loads(re.findall(r"(\{.*\"rows\".*\})", log)[-1])
# The first batch's time to first token includes libtorch's first-call set-up: prefill from the others.
t = s["time_to_first_token_per_batch_s"][1:] or s["time_to_first_token_per_batch_s"]
print(f"{sys.argv[2]:<6} {sys.argv[3]:<10} {s['prompt_tokens'] / len(s['time_to_first_token_per_batch_s']) / (sum(t) / len(t)):10.1f} {s['decode_tokens_per_s']:10.1f}")
PY
  done
  if [ -n "$bench" ]; then
    "$bench" -m "$gguf" -t 2 -p 64 -n "$NEW_TOKENS" -r 2 -o json 2>/dev/null > "$work/bench.json"
    python3 - "$work/bench.json" "$ty" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
print(f"{sys.argv[2]:<6} {'llama-bench':<10} {pp:10.1f} {tg:10.1f}   (commit {rows[0].get('build_commit', '?')})")
PY
  fi
done
