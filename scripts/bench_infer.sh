#!/usr/bin/env bash
# Inference benchmark of `swift infer` on the default model (SmolLM2-135M-Instruct): 8 prompts,
# up to 128 greedy tokens each, at batch 1 and batch 8, in float32 and bfloat16. Prints prompt
# tokens/s (prefill), generated tokens/s (end to end) and decode tokens/s (after the first
# token), time to first token and peak RSS. The ms-swift side of the comparison (PEER.md) is a
# separate step; its published figures here are 21.5 (batch 1) and 53 (batch 8) generated tok/s.
#
#   scripts/bench_infer.sh [MODEL_DIR]        (SWIFT=path/to/swift, DTYPES="float32 bfloat16")
set -euo pipefail
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="${1:-$CACHE/models/SmolLM2-135M-Instruct}"
SWIFT="${SWIFT:-target/release/swift}"
DTYPES="${DTYPES:-float32 bfloat16}"
NEW_TOKENS="${NEW_TOKENS:-128}"
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (run make setup)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
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
# libtorch's OpenMP threads spin: with other work on the machine, figures collapse (use an idle
# machine, or OMP_NUM_THREADS=1 when sharing it).
load="$(cut -d' ' -f1 /proc/loadavg)"
echo "load average before the run: $load (threads: ${OMP_NUM_THREADS:-libtorch default})"
printf '%-9s %5s %10s %10s %10s %8s %9s\n' dtype batch prompt/s gen/s decode/s ttft_s rss_MiB
for dtype in $DTYPES; do
  for bs in 1 8; do
    /usr/bin/time -f '%M' -o "$work/rss" "$SWIFT" infer --model "$MODEL" --template chatml \
      --temperature 0 --max_new_tokens "$NEW_TOKENS" --torch_dtype "$dtype" --device cpu \
      --val_dataset "$work/prompts.jsonl" --result_path "$work/out.jsonl" --max_batch_size "$bs" \
      2> "$work/log" || { cat "$work/log" >&2; exit 1; }
    python3 - "$work/log" "$work/rss" "$dtype" "$bs" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
s = json.loads(re.findall(r"(\{\"decode_tokens_per_s.*\}|\{.*\"rows\".*\})", log)[-1])
rss = int(open(sys.argv[2]).read().split()[-1]) / 1024
print(f"{sys.argv[3]:<9} {sys.argv[4]:>5} {s['prompt_tokens_per_s']:10.1f} {s['generated_tokens_per_s']:10.1f} "
      f"{s['decode_tokens_per_s']:10.1f} {s['time_to_first_token_s']:8.3f} {rss:9.0f}")
PY
  done
done
