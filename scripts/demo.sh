#!/usr/bin/env bash
# `make demo`: the main job on the bundled default, as far as it is built.
# Today: the registries (built-ins plus the example plugin), the default model folder that
# `make setup` converted from the SmolLM2-135M-Instruct GGUF, and a question to it through
# `swift infer`. Fine-tuning it on a new identity joins this script with the training issue.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
SWIFT="$ROOT/target/release/swift"
MODEL="$CACHE/models/SmolLM2-135M-Instruct"

echo "== building the example plugin (a third-party-style .so)"
(cd "$ROOT" && cargo build --release --quiet -p swift-example-plugin)
PLUGINS="$(mktemp -d)"; trap 'rm -rf "$PLUGINS"' EXIT
cp "$ROOT/target/release/libswift_example_plugin.so" "$PLUGINS/"

echo "== swift --plugin-dir $PLUGINS list"
"$SWIFT" --plugin-dir "$PLUGINS" list

echo "== the default model, converted from GGUF by make setup: $MODEL"
ls -l "$MODEL"
python3 - "$MODEL/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print({k: c[k] for k in ("architectures", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")})
PY

echo "== swift infer: asking the default model two questions"
QUESTIONS="$PLUGINS/questions.jsonl"
printf '%s\n' '{"query": "What is the capital of France?"}' '{"query": "Who are you?"}' > "$QUESTIONS"
"$SWIFT" infer --model "$MODEL" --template chatml --temperature 0 --max_new_tokens 48 \
    --val_dataset "$QUESTIONS" --result_path "$PLUGINS/answers.jsonl" --log-level warn
python3 - "$PLUGINS/answers.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"Q: {r['messages'][-1]['content']}\nA: {r['response']}\n")
PY
