#!/usr/bin/env bash
# Per-rank peak RSS of data-parallel full fine-tuning (issue 22): SmolLM2-135M-Instruct,
# `--tuner_type full`, STEPS (default 3) steps of 1 row per rank (alpaca-en-demo#16, max_length
# 128), run as one process, then as 2 ranks (Gloo on loopback, one libtorch thread each) with
# plain data parallel, `--deepspeed zero1` and `--deepspeed zero2`. Each rank is started here
# with RANK / WORLD_SIZE (as torchrun would) under /usr/bin/time, so each gets its own peak RSS
# (whole command); rank 0's peak while training is also given (logging.jsonl's memory_mib at the
# last step, before the final checkpoint, for which rank 0 gathers the whole optimizer state);
# the table also gives the optimizer-state elements per rank rank 0 logged, the mean step time
# and each command's wall time. The configurations alternate ROUNDS times (default 1: A B C D;
# 2: A B C D A B C D) and the table gives the medians, so a loaded machine hurts them alike.
#
#   scripts/bench_zero.sh              (the lead reruns it quietly as is)
#   OUT=dir (default target/bench-zero), SWIFT=path/to/swift, MODEL=dir, STEPS, ROUNDS
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct}"
SWIFT="${SWIFT:-target/release/swift}"
OUT="${OUT:-target/bench-zero}"
STEPS="${STEPS:-3}"
ROUNDS="${ROUNDS:-1}"
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (run make setup)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
machine_line
FLAGS=(sft --model "$MODEL" --tuner_type full --dataset 'alpaca-en-demo#16' --max_length 128
    --learning_rate 1e-5 --max_steps "$STEPS" --logging_steps 1 --save_steps 100000
    --add_version false --log-level info)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run NAME ROUND WORLD [DEEPSPEED]: one configuration; writes OUT/NAME.ROUND.rankR.time and .log.
run() {
    local name=$1 round=$2 world=$3 ds=${4:-}
    local extra=() pids=() port
    [ -n "$ds" ] && extra=(--deepspeed "$ds")
    port=$(free_port)
    local batch=$((2 / world))
    for ((r = 0; r < world; r++)); do
        local env=(OMP_NUM_THREADS=1)
        ((world > 1)) && env+=(RANK=$r LOCAL_RANK=$r WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 MASTER_PORT=$port)
        env "${env[@]}" /usr/bin/time -f '%M %e' -o "$OUT/$name.$round.rank$r.time" \
            "$SWIFT" "${FLAGS[@]}" --per_device_train_batch_size "$batch" "${extra[@]}" \
            --output_dir "$OUT/$name.$round.run" >"$OUT/$name.$round.rank$r.log" 2>&1 &
        pids+=($!)
    done
    local failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    if ((failed)); then
        echo "FAIL: $name (round $round); its logs' tails:" >&2
        tail -n 5 "$OUT/$name.$round".rank*.log >&2
        return 1
    fi
    # The checkpoints (model and optimizer state: about 2 GB) are not needed for the table.
    rm -rf "$OUT/$name.$round.run"/checkpoint-*
}

for ((round = 1; round <= ROUNDS; round++)); do
    run one "$round" 1
    run ddp "$round" 2
    run zero1 "$round" 2 zero1
    run zero2 "$round" 2 zero2
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, re, statistics, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
rows = [("one process (batch 2)", "one", 1), ("2 ranks, data parallel", "ddp", 2),
        ("2 ranks, --deepspeed zero1", "zero1", 2), ("2 ranks, --deepspeed zero2", "zero2", 2)]
print(f"| configuration | peak RSS per rank, whole command (MiB) | rank 0 before the checkpoint (MiB) | optimizer-state elements per rank | step time (s) | wall (s) |")
print("|---|---|---|---|---|---|")
for title, name, world in rows:
    rss = [statistics.median(int((out / f"{name}.{k}.rank{r}.time").read_text().split()[0]) / 1024
                             for k in range(1, rounds + 1)) for r in range(world)]
    wall = statistics.median(max(float((out / f"{name}.{k}.rank{r}.time").read_text().split()[1])
                                 for r in range(world)) for k in range(1, rounds + 1))
    steps = [json.loads(l) for l in open(out / f"{name}.1.run" / "logging.jsonl") if '"step"' in l]
    step_time = statistics.median(r["step_time"] for r in steps[1:] or steps)
    before = statistics.median(
        [json.loads(l) for l in open(out / f"{name}.{k}.run" / "logging.jsonl") if '"step"' in l][-1]["memory_mib"]
        for k in range(1, rounds + 1))
    m = re.search(r"optimizer-state elements per rank \[([0-9, ]+)\]", (out / f"{name}.1.rank0.log").read_text())
    state = f"[{m.group(1)}]" if m else "(not sharded)"
    print(f"| {title} | {', '.join(f'{x:.0f}' for x in rss)} | {before:.0f} | {state} | {step_time:.2f} | {wall:.1f} |")
PY
