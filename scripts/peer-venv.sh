#!/usr/bin/env bash
# The peer for benchmarks: ms-swift from PyPI in its own virtualenv (shared/PEER.md), created once
# in the cache and reused. Prints the venv's python. About 3 minutes and 5 GB the first time.
set -euo pipefail
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
PEER="$CACHE/peer-venv"
if ! "$PEER/bin/python" -c 'import swift, torch' 2>/dev/null; then
    echo "peer: installing ms-swift==4.6.0 and torch==2.13.0 into $PEER" >&2
    python3 -m venv "$PEER"
    "$PEER/bin/pip" install --quiet --upgrade pip >&2
    "$PEER/bin/pip" install --quiet torch==2.13.0 ms-swift==4.6.0 >&2
fi
echo "$PEER/bin/python"
