#!/usr/bin/env bash
# Interleaved A/B (A/B/C …) of `swift deploy` builds: scripts/bench_deploy.py --no-peer
# --no-single (64 chat requests, 16 openai clients, then `swift infer`'s offline batches of 16
# with the same build) for each build in turn, ROUNDS times (A, B, A, B …), each server's
# per-step log summarised (--server-log), so that builds measured in the same minutes compare.
# Copy a build's `swift` and `libswift_runtime.so` into a folder of their own first (the host
# opens the runtime next to its executable).
#
#     scripts/bench_deploy_ab.sh ROUNDS BIN_A BIN_B [BIN_C …]
#
# Logs go to ${TMPDIR:-/tmp}/bench-deploy-ab-ROUND-INDEX.log; extra bench_deploy.py flags in
# $BENCH_DEPLOY_FLAGS.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
rounds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
py=${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python
for r in $(seq 1 "$rounds"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    echo "== round $r, build $i: $bin ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
    # shellcheck disable=SC2086
    "$py" "$root/scripts/bench_deploy.py" --no-peer --no-single --swift "$bin" \
      --server-log "${TMPDIR:-/tmp}/bench-deploy-ab-$r-$i.log" ${BENCH_DEPLOY_FLAGS:-} | tail -n +2
  done
done
