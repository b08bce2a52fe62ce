#!/usr/bin/env bash
# Builds llama.cpp (CPU only) from the llama-cpp-python sdist of ASSETS.md and runs
# gguf_llama_cpp_check.cpp on every GGUF file in WORK, writing WORK/NAME.llama_cpp.json.
# Usage: gguf_llama_cpp_check.sh LLAMA_CPP_SRC WORK [CMAKE_WHEEL]
#   LLAMA_CPP_SRC: the sdist's vendor/llama.cpp (CMakeLists.txt, cmake/, include/, src/, ggml/,
#   vendor/ suffice); CMAKE_WHEEL: a cmake wheel to use when cmake is not installed.
# The caller compares with `swift infer --debug_input_ids 1,2,3,4,5,6,7 --debug_greedy_tokens 6`
# on the source folder and with the Hugging Face tokenizer's ids for WORK/text.txt.
#
# Recorded 2026-11-28 (llama.cpp of llama-cpp-python 0.3.36, tiny fixtures exported by
# `swift export --to_gguf`): llama.cpp loads mistral/llama(Llama-3 RoPE, rope_freqs)/qwen2 as
# f32 and q8_0; f32 greedy tokens equal swift's, last-position logits within 6e-3 at a logit
# scale of ~5 (llama.cpp keeps its KV cache in f16); llama.cpp's tokenization of the sample text
# equals the Hugging Face tokenizer's for all three; q8_0 greedy tokens equal swift's own q8_0
# re-import (the random tiny models diverge from f32 after two tokens under 8-bit rounding).
set -euo pipefail
src="$1"; work="$2"; wheel="${3:-}"
cmake=cmake
if ! command -v cmake >/dev/null; then
    python3 -m zipfile -e "$wheel" /tmp/cmake-wheel
    chmod +x /tmp/cmake-wheel/cmake/data/bin/*
    cmake=/tmp/cmake-wheel/cmake/data/bin/cmake
fi
build=/tmp/llama-build
"$cmake" -S "$src" -B "$build" -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_MTMD=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
"$cmake" --build "$build" -j"$(nproc)" --target llama >/dev/null
libs=$(find "$build" -name 'libllama.a' -o -name 'libggml*.a' | sort -r)
g++ -O2 -std=c++17 "$(dirname "$0")/gguf_llama_cpp_check.cpp" -I"$src/include" -I"$src/ggml/include" \
    -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -ldl -lm -o /tmp/gguf_llama_cpp_check
text="$(cat "$work/text.txt")"
for f in "$work"/*.gguf; do
    name="$(basename "$f" .gguf)"
    /tmp/gguf_llama_cpp_check "$f" 1,2,3,4,5,6,7 6 "$text" > "$work/$name.llama_cpp.json" \
        2> "$work/$name.llama_cpp.err" || echo "FAILED: $name ($(cat "$work/$name.llama_cpp.err"))"
    echo "ran $name"
done
