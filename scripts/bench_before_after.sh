#!/usr/bin/env bash
# Before/after check of a change's speed: swift-rs alone (no ms-swift), the LoRA SFT, LoRA DPO
# and inference workloads of bench_*_peer.py, timed for two binaries interleaved round by round on the
# same machine in the same run, medians of --repeats rounds. Prints the CPU model and the load average.
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
# WORKLOADS="train" times only the LoRA SFT run; WORKLOADS="decode" batch-1 decoding
# (bench_decode.py, float32 and bfloat16, without llama-bench).
PY="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python"
echo "cpu: $(cpu_model), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# Interleaved: round 1 before, round 1 after, round 2 before, ... so that a change in the
# machine's speed during the run (these are shared virtual machines) falls on both sides alike.
LOG="$(mktemp)"
for what in ${WORKLOADS:-train rlhf infer}; do
    rounds="$REPEATS"; [[ $what == rlhf ]] && rounds="$DPO_REPEATS"
    for round in $(seq "$rounds"); do
        for side in before after; do
            bin="$BEFORE"; [[ $side == after ]] && bin="$AFTER"
            echo "== $what, round $round, $side ($bin), load average $(cut -d' ' -f1 /proc/loadavg)"
            case $what in
                train) out="$(SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_train_peer.py" --ours-only --repeats 1)" ;;
                rlhf) out="$(SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_rlhf_peer.py" --ours-only --repeats 1)" ;;
                infer) out="$(SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_infer_peer.py" --ours-only --repeats 1)" ;;
                # Batch-1 decoding tok/s of the model folder in float32 and bfloat16.
                decode) out="$(SWIFT_BIN="$bin" "$PY" "$ROOT/scripts/bench_decode.py" --inputs "float32 bfloat16" \
                    --repeats 1 --no-llama-bench | awk -F'|' '/swift-rs/ {print "swift-rs" $2 $4}')" ;;
            esac
            # Each run's line to stderr through fd 2 itself (`tee -a /dev/stderr` reopened the file
            # when both streams went to one file, and the next echo overwrote the line).
            lines="$(grep '^swift-rs ' <<<"$out")"
            echo "$lines" >&2
            sed "s|^|$what $side |" <<<"$lines" >>"$LOG"
        done
    done
done
# Medians per workload, side and row: the first number of each `swift-rs ...` line (tok/s for
# training and inference, pairs/s for DPO), keyed by the words before it.
"$PY" - "$LOG" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    words = line.split()
    for i, w in enumerate(words[2:], 2):
        try:
            x = float(w)
        except ValueError:
            continue
        runs[(words[0], " ".join(words[2:i]), words[1])].append(x)
        break
for (what, key, side), xs in sorted(runs.items()):
    print(f"median {what:6} {key:40} {side:6} {statistics.median(xs):10.3f}  runs {xs}")
PY
rm -f "$LOG"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
