#!/usr/bin/env bash
# DPO with LoRA on SmolLM2-135M-Instruct and dpo-en-demo#64 (2 epochs of 16 steps x 4 pairs,
# max_length 128 left-truncated, lr 2e-4): prints rewards/accuracies and rewards/margins per step
# and checks what the rlhf issue asks: accuracies above 0.5 and margins rising over the run
# (mean of the last 8 steps against the first 8). A long run: a benchmark, never a test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$ROOT/target/release/swift" rlhf --rlhf_type dpo --model "$CACHE/models/SmolLM2-135M-Instruct" \
    --dataset 'dpo-en-demo#64' --tuner_type lora --lora_rank 8 --lora_alpha 32 \
    --max_length 128 --truncation_strategy left --per_device_train_batch_size 4 \
    --num_train_epochs 2 --learning_rate 2e-4 --lr_scheduler_type constant --beta 0.1 \
    --rlhf_chunk_size 0 --logging_steps 1 --save_steps 1000 --output_dir "$OUT/run" --add_version false --log-level warn >/dev/null
python3 - "$OUT/run/logging.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l]
for r in steps:
    print(f"step {r['step']:>3}  loss {r['loss']:.4f}  rewards/accuracies {r['rewards/accuracies']:.2f}  "
          f"rewards/margins {r['rewards/margins']:+.4f}  rewards/chosen {r['rewards/chosen']:+.4f}  "
          f"rewards/rejected {r['rewards/rejected']:+.4f}  {r['step_time']:.1f}s")
acc = [r["rewards/accuracies"] for r in steps]
mar = [r["rewards/margins"] for r in steps]
k = min(8, len(steps) // 2)
first, last = sum(mar[:k]) / k, sum(mar[-k:]) / k
mean_acc = sum(acc) / len(acc)
late_acc = sum(acc[-k:]) / k
print(f"mean rewards/accuracies {mean_acc:.3f} (last {k} steps {late_acc:.3f}); "
      f"mean rewards/margins first {k} steps {first:+.4f}, last {k} steps {last:+.4f}")
ok = late_acc > 0.5 and last > first
print("PASS" if ok else "FAIL", "(accuracies above 0.5 and margins rising)")
sys.exit(0 if ok else 1)
PY
