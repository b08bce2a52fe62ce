#!/usr/bin/env bash
# lm-evaluation-harness for `make bench` (scripts/bench_eval_peer.py): lm-eval from PyPI, pinned,
# in its own virtualenv in the cache, created once and reused; `make setup` (and so `make test`)
# never builds it. It reuses the reference venv's torch 2.13.0 through a .pth line instead of a
# second 5 GB torch: only lm-eval and its own dependencies (transformers 5.25.0 among them, its
# own, not the reference venv's 4.57.6) are installed (about 800 MB, a few minutes).
# Prints the venv's python.
set -euo pipefail
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
REF="$CACHE/venv"
VENV="$CACHE/lmeval-venv"
LM_EVAL=0.4.13
TRANSFORMERS=5.25.0
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('lm_eval') != '$LM_EVAL')" 2>/dev/null; then
    [[ -x "$REF/bin/python" ]] || { echo "lm-eval venv: $REF is missing: run make setup first" >&2; exit 1; }
    echo "lm-eval venv: installing lm-eval==$LM_EVAL into $VENV (over $REF's torch)" >&2
    "$REF/bin/python" -m venv "$VENV"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$REF/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/swift-rs-reference-venv.pth"
    "$VENV/bin/python" -m pip install --quiet "lm-eval[hf]==$LM_EVAL" "transformers==$TRANSFORMERS" >&2
fi
echo "$VENV/bin/python"
