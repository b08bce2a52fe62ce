#!/usr/bin/env bash
# `make demo`: the main job on the bundled default. The default model (SmolLM2-135M-Instruct,
# converted from its GGUF by `make setup`) is asked "Who are you?", LoRA-fine-tuned on the
# `identity` dataset (with a new name and author) mixed with part of `alpaca-en-demo`, and asked
# again with the trained adapter. About 5-10 minutes on 2 cores after set-up.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
SWIFT="$ROOT/target/release/swift"
MODEL="$CACHE/models/SmolLM2-135M-Instruct"
NAME="${DEMO_NAME:-Rusty}"
AUTHOR="${DEMO_AUTHOR:-the swift-rs team}"
# The parent of the run folders: each demo run writes a new v<N>-<timestamp>/ inside it.
OUTPUT="${DEMO_OUTPUT:-$ROOT/output/demo}"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT

QUESTIONS="$WORK/questions.jsonl"
printf '%s\n' '{"query": "Who are you?"}' '{"query": "What is your name, and who made you?"}' \
    '{"query": "What is the capital of France?"}' > "$QUESTIONS"

show() {
    python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"  Q: {r['messages'][-1]['content']}\n  A: {r['response']}\n")
PY
}

echo "== 1. the default model before training ($MODEL)"
"$SWIFT" infer --model "$MODEL" --template chatml --temperature 0 --max_new_tokens 48 \
    --val_dataset "$QUESTIONS" --result_path "$WORK/before.jsonl" --log-level warn
show "$WORK/before.jsonl"

echo "== 2. LoRA fine-tuning on identity (name: $NAME, author: $AUTHOR) + alpaca-en-demo#64"
# sft prints its last checkpoint on stdout; the run folder is the checkpoint's parent.
CKPT="$("$SWIFT" sft --model "$MODEL" --template chatml \
    --dataset identity --dataset 'alpaca-en-demo#64' \
    --model_name "$NAME" --model_author "$AUTHOR" \
    --tuner_type lora --lora_rank 8 --lora_alpha 32 --learning_rate 1e-3 \
    --num_train_epochs 2 --per_device_train_batch_size 4 --max_length 256 \
    --truncation_strategy right --logging_steps 10 --save_steps 1000 --output_dir "$OUTPUT" | tail -1)"
RUN="$(dirname "$CKPT")"
echo "   run folder: $RUN"
echo "   checkpoint: $CKPT"
ls "$CKPT"

echo "== 3. the same questions with the trained adapter"
"$SWIFT" infer --adapters "$CKPT" --temperature 0 --max_new_tokens 48 \
    --val_dataset "$QUESTIONS" --result_path "$WORK/after.jsonl" --log-level warn
show "$WORK/after.jsonl"

if grep -q "$NAME" "$WORK/after.jsonl" && ! grep -q "$NAME" "$WORK/before.jsonl"; then
    echo "== done: the model now introduces itself as $NAME (run folder: $RUN)"
else
    echo "== the answers above do not show the new name: see $RUN/logging.jsonl" >&2
    exit 1
fi
