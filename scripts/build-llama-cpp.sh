#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` (the peer of every decoding benchmark) and `llama-quantize`
# (which writes the BF16 file from the F32 one) from one pinned source: the llama.cpp that the
# llama-cpp-python 0.3.36 sdist on PyPI vendors (checksum below; `make setup` downloads it).
# Prints the folder holding the binaries (bin/llama-bench, bin/llama-quantize) on stdout.
#
# Build flags, and why: never GGML_NATIVE / -march=native (a cache may move between AMD and Intel
# machines), and never AMX (its instructions fault on these Intel Xeon VMs even where cpuid lists
# them). The instruction sets are chosen explicitly from what this CPU reports (/proc/cpuinfo):
# AVX, AVX2, FMA, F16C, BMI2, AVX-VNNI and AVX-512 (F, VBMI, VNNI, BF16) where present. The build
# folder is keyed by that set, so a machine of the other vendor builds its own.
#
# Usage: scripts/build-llama-cpp.sh            -> prints the build folder (builds if needed)
#        scripts/build-llama-cpp.sh --info     -> prints the source, its sha256 and the flags
#        scripts/build-llama-cpp.sh --commit   -> prints the llama.cpp commit the source is
# Needs cmake and a C++ compiler (`make setup` installs cmake from Debian).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
SDIST="$CACHE/assets/downloads/llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SRC="$CACHE/llama.cpp-src-0.3.36"
say() { echo "build-llama-cpp: $*" >&2; }
die() { echo "build-llama-cpp: error: $*" >&2; exit 1; }

command -v cmake >/dev/null || die "cmake is missing: run \`make setup\` (or apt-get install cmake)"
[[ -f "$SDIST" ]] || die "$SDIST is missing: run \`make setup\`"
[[ "$(sha256sum "$SDIST" | cut -d' ' -f1)" == "$SDIST_SHA" ]] || die "$SDIST: sha256 mismatch"

# CPU features -> explicit ggml options (AMX always off).
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
has() { [[ " $flags " == *" $1 "* ]]; }
opts=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
key=""
for pair in avx:GGML_AVX avx2:GGML_AVX2 fma:GGML_FMA f16c:GGML_F16C bmi2:GGML_BMI2 \
            avx_vnni:GGML_AVX_VNNI avx512f:GGML_AVX512 avx512vbmi:GGML_AVX512_VBMI \
            avx512_vnni:GGML_AVX512_VNNI avx512_bf16:GGML_AVX512_BF16; do
    feat="${pair%%:*}" opt="${pair#*:}"
    if has "$feat"; then opts+=("-D$opt=ON"); key+="-$feat"; else opts+=("-D$opt=OFF"); fi
done
BUILD="$CACHE/llama.cpp-build/0.3.36${key}"

# The llama.cpp commit the sdist vendors (it has no git metadata, so llama.cpp's build info says
# "unknown"): the first `update llama.cpp to ggml-org/llama.cpp@COMMIT` of its CHANGELOG's 0.3.36.
COMMIT="$(tar -xzf "$SDIST" -O llama_cpp_python-0.3.36/CHANGELOG.md 2>/dev/null \
    | sed -n '/^## \[0.3.36\]/,/^## \[0.3.35\]/p' \
    | grep -o -m1 'ggml-org/llama.cpp@[0-9a-f]*' | cut -d@ -f2 || true)"
if [[ "${1:-}" == "--commit" ]]; then
    echo "${COMMIT:-unknown}"
    exit 0
fi
if [[ "${1:-}" == "--info" ]]; then
    echo "source: llama.cpp vendored by llama-cpp-python 0.3.36 (sdist sha256 $SDIST_SHA), llama.cpp commit ${COMMIT:-unknown}"
    echo "cmake: ${opts[*]}"
    echo "build: $BUILD"
    exit 0
fi

if [[ ! -d "$SRC/ggml" ]]; then
    say "extracting llama.cpp from $(basename "$SDIST")"
    tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
    tar -xzf "$SDIST" -C "$tmp" llama_cpp_python-0.3.36/vendor/llama.cpp
    rm -rf "$SRC" && mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$SRC" && rm -rf "$tmp"
fi

if [[ ! -x "$BUILD/bin/llama-bench" || ! -x "$BUILD/bin/llama-quantize" ]]; then
    say "building llama-bench into $BUILD (a few minutes on 2 cores)"
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DGGML_OPENMP=ON -DLLAMA_BUILD_COMMIT="${COMMIT:-unknown}" "${opts[@]}" >&2
    cmake --build "$BUILD" --config Release -j "$(nproc)" --target llama-bench llama-quantize >&2
fi
echo "$BUILD"
