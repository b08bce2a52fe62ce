#!/usr/bin/env bash
# The tuner table (issue 16), like table 4 of the SWIFT paper: every tuner trains
# SmolLM2-135M-Instruct on the same data, split and steps, and the table gives the last step's
# and the mean train loss, the eval loss at the end, the trainable parameters (count and share of
# all, from the run's log; the count is checked against args.json), the lr used (each tuner's
# default: 1e-4 for adapters, 1e-5 for full training, as logged at step 1: no warm-up), peak RSS (/usr/bin/time, whole command),
# samples/s (steps x batch / train_runtime) and the command's wall time.
#
# Workload: alpaca-en-demo#ROWS (default 60), SPLIT (0.2) of it held out for eval (the same rows
# for every tuner: one seed), batch BATCH (4), max_length MAX_LENGTH (128, right-truncated),
# EPOCHS (1) epochs: 12 steps of 4 rows, one eval of 12 rows at the end. Each tuner's defaults,
# except where the model needs another value (EXTRA below: SmolLM2's 30 layers take 3 or 5
# LLaMA-Pro blocks, not the default 4). galore and q_galore are
# `--tuner_type full --optimizer NAME`. A name the binary does not know fails the script, naming
# it, before anything runs; a run that fails stops the script with its log's tail.
#
#   scripts/bench_tuners.sh [TUNER...]        (default: the list below)
#   OUT=dir (default target/bench-tuners: tuners.json, tuners.md and each run's logging.jsonl
#   and args.json), SWIFT=path/to/swift, MODEL=dir, ROWS, SPLIT, BATCH, MAX_LENGTH, EPOCHS
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct}"
SWIFT="${SWIFT:-target/release/swift}"
OUT="${OUT:-target/bench-tuners}"
ROWS="${ROWS:-60}"
SPLIT="${SPLIT:-0.2}"
BATCH="${BATCH:-4}"
MAX_LENGTH="${MAX_LENGTH:-128}"
EPOCHS="${EPOCHS:-1}"
DEFAULT_TUNERS="full lora rslora dora lora_plus pissa adalora ia3 vera boft fourierft llamapro lisa longlora galore q_galore"
# Flags a row needs on SmolLM2 beyond the tuner's defaults.
declare -A EXTRA=([llamapro]="--llamapro_num_new_blocks 3")
if [ $# -gt 0 ]; then TUNERS=("$@"); else read -r -a TUNERS <<<"$DEFAULT_TUNERS"; fi
[ -x "$SWIFT" ] || { echo "build first: cargo build --release -p swift-host -p swift-runtime" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (run make setup)" >&2; exit 1; }
check_tuners "$SWIFT" "${TUNERS[@]}"

mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
machine="$(machine_line)"
echo "$machine"
echo "workload: SmolLM2-135M-Instruct, alpaca-en-demo#$ROWS (split_dataset_ratio $SPLIT), batch $BATCH," \
    "max_length $MAX_LENGTH, $EPOCHS epoch(s), seed 42; tuners: ${TUNERS[*]}"
# The rows as they finish (kept if a later run fails).
rows="$OUT/rows.jsonl"
: >"$rows"
for t in "${TUNERS[@]}"; do
    # shellcheck disable=SC2046 # tuner_flags gives several words
    if ! timed "$work/$t.time" nice "$SWIFT" sft --model "$MODEL" $(tuner_flags "$t") ${EXTRA[$t]:-} \
        --dataset "alpaca-en-demo#$ROWS" --split_dataset_ratio "$SPLIT" \
        --per_device_train_batch_size "$BATCH" --max_length "$MAX_LENGTH" --truncation_strategy right \
        --num_train_epochs "$EPOCHS" --logging_steps 1 --seed 42 --device cpu \
        --output_dir "$work/$t" --add_version false >"$work/$t.out" 2>"$work/$t.log"; then
        echo "FAIL: tuner $t: swift sft failed; the end of its log:" >&2
        tail -5 "$work/$t.log" >&2
        exit 1
    fi
    mkdir -p "$OUT/$t"
    cp "$work/$t/logging.jsonl" "$work/$t/args.json" "$OUT/$t/"
    python3 - "$t" "$work/$t" "$work/$t.log" "$work/$t.time" "${EXTRA[$t]:-}" >>"$rows" <<'PY'
import json, re, sys
name, run, log, timing = sys.argv[1:5]
records = [json.loads(l) for l in open(f"{run}/logging.jsonl")]
steps = [r for r in records if "loss" in r and "step" in r]
evals = [r for r in records if "eval_loss" in r]
end = next(r for r in records if "train_runtime" in r)
args = json.load(open(f"{run}/args.json"))
m = re.search(r"(\d+) trainable parameters of (\d+) \(([\d.]+)%\)", open(log).read())
if not m or not steps or not evals:
    sys.exit(f"FAIL: tuner {name}: no trainable-parameter line, step loss or eval loss in its run ({log})")
trainable, total = int(m.group(1)), int(m.group(2))
if args["trainable_parameters"] != trainable:
    sys.exit(f"FAIL: tuner {name}: args.json says {args['trainable_parameters']} trainable parameters, the log {trainable}")
rss_kib, wall = open(timing).read().split()[-2:]
samples = end["train_steps"] * args["per_device_train_batch_size"] * args["gradient_accumulation_steps"]
print(json.dumps({
    "tuner": name, "learning_rate": steps[0]["learning_rate"],
    "steps": end["train_steps"], "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
    "mean_loss": end["train_loss"], "eval_loss": evals[-1]["eval_loss"],
    "trainable_parameters": trainable, "total_parameters": total, "trainable_percent": 100 * trainable / total,
    "peak_rss_mib": int(rss_kib) / 1024, "trainer_peak_rss_mib": end.get("memory_mib"),
    "extra_flags": sys.argv[5], "samples_per_s": samples / end["train_runtime"],
    "train_runtime_s": end["train_runtime"], "wall_s": float(wall),
}))
PY
    echo "  $t: $(cut -d' ' -f2 "$work/$t.time") s"
    rm -rf "${work:?}/$t"
done
python3 - "$rows" "$OUT" "$machine" "$ROWS" "$SPLIT" "$BATCH" "$MAX_LENGTH" "$EPOCHS" <<'PY'
import json, sys
rows_file, out, machine, n, split, batch, max_length, epochs = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_file)]
lines = [
    "| tuner | lr | trainable params | trainable % | loss (last step) | loss (mean) | eval loss | peak RSS MiB | samples/s | wall s |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['tuner']}{' (' + r['extra_flags'] + ')' if r.get('extra_flags') else ''} | {r['learning_rate']:g} | {r['trainable_parameters']:,} | {r['trainable_percent']:.3f} | "
        f"{r['last_loss']:.4f} | {r['mean_loss']:.4f} | {r['eval_loss']:.4f} | {r['peak_rss_mib']:.0f} | "
        f"{r['samples_per_s']:.3f} | {r['wall_s']:.0f} |")
table = "\n".join(lines)
print(table)
workload = {"model": "SmolLM2-135M-Instruct", "dataset": f"alpaca-en-demo#{n}", "split_dataset_ratio": float(split),
            "per_device_train_batch_size": int(batch), "max_length": int(max_length),
            "num_train_epochs": float(epochs), "seed": 42}
after = open("/proc/loadavg").read().split()[:3]
machine += f" (at the start; at the end {' '.join(after)})"
json.dump({"machine": machine, "workload": workload, "rows": rows}, open(f"{out}/tuners.json", "w"), indent=1)
open(f"{out}/tuners.md", "w").write(f"{machine}\n\n{table}\n")
print(f"written: {out}/tuners.json, {out}/tuners.md")
PY
