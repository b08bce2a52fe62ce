#!/usr/bin/env bash
# Batch-1 greedy decoding of SmolLM2-135M-Instruct as GGUF files (F32, F16, Q8_0, Q4_0, Q4_1,
# written by `swift export --to_gguf --gguf_type T`) and as swift-rs's own 4-bit export (rtn,
# groups of 32: `swift export --quant_method rtn --quant_bits 4 --group_size 32`; no llama.cpp
# counterpart, read it beside Q4_1, the same format in blocks), `swift infer` beside llama.cpp's
# `llama-bench -t 2 -p 0 -n 128` (tg128; built by scripts/build-llama-cpp.sh), interleaved in
# one run (llama.cpp, then swift-rs, per type, REPEATS rounds) so that load on a shared machine
# hits both alike. Prints decode tokens/s and peak RSS (medians), the CPU model, the kernels
# swift-rs picked and the load average before and after.
#
#   scripts/bench_quant_decode.sh            (REPEATS=3 TYPES="f32 f16 q8_0 q4_0 q4_1" SWIFT=...)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_lib.sh
source "$ROOT/scripts/bench_lib.sh"
cd "$ROOT"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct"
SWIFT="${SWIFT:-target/release/swift}"
REPEATS="${REPEATS:-3}"
TYPES="${TYPES:-f32 f16 q8_0 q4_0 q4_1}"
NEW_TOKENS=128
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (run make setup)" >&2; exit 1; }
LLAMA="$(bash scripts/build-llama-cpp.sh)/bin/llama-bench"
GGUFS="$CACHE/bench-gguf"
mkdir -p "$GGUFS"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo '{"messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}' > "$work/prompt.jsonl"

for t in $TYPES; do
  f="$GGUFS/SmolLM2-135M-Instruct-$t.gguf"
  if [ ! -f "$f" ]; then
    "$SWIFT" export --model "$MODEL" --to_gguf --gguf_type "$t" --output_dir "$GGUFS" >/dev/null 2>"$work/log" \
      || { cat "$work/log" >&2; exit 1; }
  fi
  # Converts once into the cache (not timed).
  "$SWIFT" infer --model "$f" --device cpu --temperature 0 --max_new_tokens 1 \
    --val_dataset "$work/prompt.jsonl" --result_path "$work/warm.jsonl" 2>"$work/log" >/dev/null \
    || { cat "$work/log" >&2; exit 1; }
done
kernel="$(grep -o "swift-kernels' .* integer kernel" "$work/log" | head -1)"

own="$GGUFS/SmolLM2-135M-Instruct-rtn4-g32"
if [ ! -f "$own/config.json" ]; then
  "$SWIFT" export --model "$MODEL" --quant_method rtn --quant_bits 4 --group_size 32 \
    --output_dir "$own" >/dev/null 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
fi

swift_run() { # FILE LABEL
  /usr/bin/time -f '%M' -o "$work/rss" "$SWIFT" infer --model "$1" --device cpu --temperature 0 \
    --max_new_tokens "$NEW_TOKENS" --max_batch_size 1 --val_dataset "$work/prompt.jsonl" \
    --result_path "$work/out.jsonl" 2>"$work/log" >/dev/null || { cat "$work/log" >&2; exit 1; }
  python3 - "$work/log" "$work/rss" "$2" swift-rs >> "$work/results" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
s = json.loads(re.findall(r"(\{\"rows\".*\})", log)[-1])
rss = int(open(sys.argv[2]).read().split()[-1]) / 1024
print(sys.argv[3], sys.argv[4], s["decode_tokens_per_s"], rss)
PY
}

echo "CPU: $(cpu_model), $(nproc) cores"
echo "swift-rs: the GGUF blocks decode on $kernel"
echo "llama-bench: $LLAMA"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

for r in $(seq "$REPEATS"); do
  for t in $TYPES; do
    f="$GGUFS/SmolLM2-135M-Instruct-$t.gguf"
    /usr/bin/time -f '%M' -o "$work/rss" "$LLAMA" -m "$f" -t 2 -p 0 -n "$NEW_TOKENS" -r 1 -o json \
      > "$work/llama.json" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
    python3 - "$work/llama.json" "$work/rss" "$t" llama.cpp >> "$work/results" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
tps = rows[0]["avg_ts"]
rss = int(open(sys.argv[2]).read().split()[-1]) / 1024
print(sys.argv[3], sys.argv[4], tps, rss)
PY
    swift_run "$f" "$t"
  done
  swift_run "$own" own-rtn4
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/results" "$TYPES" "$REPEATS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"medians of {sys.argv[3]}, batch 1, {128} new tokens")
print("| GGUF | swift-rs tok/s | llama.cpp tok/s | ratio | swift-rs RSS MiB | llama.cpp RSS MiB |")
print("|---|---:|---:|---:|---:|---:|")
for t in sys.argv[2].split():
    def med(who, col):
        return statistics.median(float(r[col]) for r in rows if r[0] == t and r[1] == who)
    s, l = med("swift-rs", 2), med("llama.cpp", 2)
    print(f"| {t.upper()} | {s:.1f} | {l:.1f} | {s / l:.2f} | {med('swift-rs', 3):.0f} | {med('llama.cpp', 3):.0f} |")
s = statistics.median(float(r[2]) for r in rows if r[0] == "own-rtn4")
m = statistics.median(float(r[3]) for r in rows if r[0] == "own-rtn4")
print(f"| swift-rs rtn 4-bit g32 folder | {s:.1f} | – | – | {m:.0f} | – |")
PY
