#!/usr/bin/env bash
# `make demo`: the main job on the bundled default, as far as it is built.
# Today: the registries (built-ins plus the example plugin), and the default model folder that
# `make setup` converted from the SmolLM2-135M-Instruct GGUF. Fine-tuning and chatting with the
# result join this script with the training issue.
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
