#!/usr/bin/env bash
# Before/after check of a change's speed: swift-rs alone (no ms-swift), the LoRA SFT, LoRA DPO
# and inference workloads of bench_*_peer.py, timed for two binaries in alternation on the same
# machine in the same run, medians of --repeats. Prints the CPU model and the load average.
#
#   bash scripts/bench_before_after.sh BEFORE_SWIFT_BINARY [AFTER_SWIFT_BINARY] [REPEATS]
#
# Build the "before" binary from a worktree of the earlier commit, e.g.
#   git worktree add --detach ../before REV && (cd ../before && cargo build --release -p swift-host)
# (with `-p swift-runtime` too for revisions that have the tensor engine library, which `swift`
# opens from its own folder).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_lib.sh
source "$ROOT/scripts/bench_lib.sh"
BEFORE="${1:?pass the swift binary built from the earlier commit}"
AFTER="${2:-$ROOT/target/release/swift}"
REPEATS="${3:-3}"
# DPO runs are long (minutes each): DPO_REPEATS=1 keeps a check short.
DPO_REPEATS="${DPO_REPEATS:-$REPEATS}"
PY="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python"
echo "cpu: $(cpu_model), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for what in train rlhf infer; do
    for side in before after; do
        bin="$BEFORE"; [[ $side == after ]] && bin="$AFTER"
        echo "== $what, $side ($bin)"
        case $what in
            train) SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_train_peer.py" --ours-only --repeats "$REPEATS" ;;
            rlhf) SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_rlhf_peer.py" --ours-only --repeats "$DPO_REPEATS" | tail -1 ;;
            infer) SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_infer_peer.py" --ours-only --repeats "$REPEATS" ;;
        esac
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
