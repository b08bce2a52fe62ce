#!/usr/bin/env bash
# Start-up time of `swift` (a benchmark, not a test: it prints figures and asserts nothing).
# Medians of 5 runs of `swift --help` and `swift list`, which load no libtorch, and, for
# comparison, of a tensor command that fails right after opening the tensor engine (the cost of
# loading libtorch once). Prints the CPU model and the load average: the machine may be shared.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/bench_lib.sh
source "$ROOT/scripts/bench_lib.sh"
cd "$ROOT"
SWIFT="${SWIFT:-target/release/swift}"
RUNS="${RUNS:-5}"
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }

median_of() { # command...: prints the median wall time of $RUNS runs, in seconds
    local times=() t0 t1
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || true
        t1=$(date +%s.%N)
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'
}

echo "cpu: $(cpu_model)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "swift --help:                  $(median_of "$SWIFT" --help) s (median of $RUNS)"
echo "swift list:                    $(median_of "$SWIFT" list) s (median of $RUNS)"
echo "swift infer, engine load only: $(median_of "$SWIFT" infer --model /nonexistent --log-level error) s (median of $RUNS; opens libswift_runtime.so and libtorch, then fails)"
