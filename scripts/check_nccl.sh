#!/usr/bin/env bash
# On a CUDA host: a one-rank NCCL communicator (libtorch_cuda.so and NCCL opened at run time, so
# the same build runs everywhere) and one data-parallel step of a small MLP on cuda:0, printing
# the timings (engine/dist/examples/check_nccl.rs). Elsewhere it prints "no CUDA device" and
# exits 0.
#
#   scripts/check_nccl.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
nice cargo run --release --quiet -p swift-dist --example check_nccl
