#!/usr/bin/env bash
# Builds llama.cpp (CPU only) from the llama-cpp-python sdist of ASSETS.md and runs
# gguf_llama_cpp_check.cpp on every GGUF file in WORK, writing WORK/NAME.llama_cpp.json.
# Usage: gguf_llama_cpp_check.sh LLAMA_CPP_SRC WORK [CMAKE_WHEEL]
#   LLAMA_CPP_SRC: the sdist's vendor/llama.cpp (CMakeLists.txt, cmake/, include/, src/, ggml/,
#   vendor/ suffice); CMAKE_WHEEL: a cmake wheel to use when cmake is not installed.
# The comparison with swift's logits and Hugging Face's tokenization is done by the caller
# (see the report in the export work: tiny fixtures, f32 and q8_0).
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
