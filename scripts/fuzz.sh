#!/usr/bin/env bash
# `make fuzz` (and `make bench`): the property tests of the parsers of files users hand over, run
# longer than `make test` does (proptest's default of 256 cases there): GGUF files, safetensors
# headers and config.json (swift-gguf), chat templates (swift-template), dataset files and rows
# (swift-data), and the server's request checking (swift-serve). PROPTEST_CASES sets the number
# of cases per property (default here 20000: about ten minutes on 2 cores, most of it chat
# templates). A failure prints the smallest input proptest found.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
echo "property tests, $PROPTEST_CASES cases each"
cargo test --release -p swift-gguf --test parser_properties
cargo test --release -p swift-gguf --lib properties
cargo test --release -p swift-template --test jinja_properties
cargo test --release -p swift-data --test row_properties
cargo test --release -p swift-serve --lib validate::tests::properties
