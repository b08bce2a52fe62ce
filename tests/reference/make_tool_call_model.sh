#!/usr/bin/env bash
# Records tests/fixtures/models/llama-tool-call: the tiny random llama (tests/fixtures/models/llama)
# fully fine-tuned by `swift sft` on one chat row that offers a `get_weather` tool, until its
# greedy answer to that prompt is text followed by a hermes tool call:
#   Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
# The streamed tool-call tests (tests/deploy.rs on `pt`, tests/llama_cpp.rs on `llama_cpp`) serve
# it; a random model never emits a call. Run from the workspace root after a release build:
#   bash tests/reference/make_tool_call_model.sh
# (about 20 s; it checks the greedy answer before writing the fixture).
set -euo pipefail
cd "$(dirname "$0")/../.."
SWIFT=target/release/swift
OUT=tests/fixtures/models/llama-tool-call
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

python3 - "$TMP" <<'PY'
import json, sys
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
answer = 'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
user = [{"role": "user", "content": "weather in Paris?"}]
with open(f"{sys.argv[1]}/train.jsonl", "w") as f:
    for _ in range(4):
        row = {"messages": user + [{"role": "assistant", "content": answer}], "tools": tools}
        f.write(json.dumps(row) + "\n")
with open(f"{sys.argv[1]}/query.jsonl", "w") as f:
    f.write(json.dumps({"messages": user, "tools": tools}) + "\n")
with open(f"{sys.argv[1]}/answer.txt", "w") as f:
    f.write(answer)
PY

ckpt=$("$SWIFT" sft --model tests/fixtures/models/llama --dataset "$TMP/train.jsonl" \
    --output_dir "$TMP/run" --train_type full --max_steps 40 --learning_rate 1e-2 \
    --per_device_train_batch_size 4 --save_steps 40 --max_length 1024 --seed 42 | tail -n 1)
"$SWIFT" infer --model "$ckpt" --val_dataset "$TMP/query.jsonl" --result_path "$TMP/r.jsonl" \
    --max_new_tokens 100 --max_length 1024 >/dev/null
python3 - "$TMP" <<'PY'
import json, sys
got = json.loads(open(f"{sys.argv[1]}/r.jsonl").readline())["response"]
want = open(f"{sys.argv[1]}/answer.txt").read()
assert got == want, f"the trained model answers {got!r}, not {want!r}: train longer"
PY
mkdir -p "$OUT"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    cp "$ckpt/$f" "$OUT/$f"
done
echo "wrote $OUT"
