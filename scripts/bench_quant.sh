#!/usr/bin/env bash
# Quantization benchmark on the default model (SmolLM2-135M-Instruct, float32 weights converted
# from a Q4_1 GGUF): every quantizer exported with `swift export --quant_method`, calibrated on
# LLaMA-Factory's c4_demo.jsonl (gptq, awq), and its perplexity measured with `swift infer` on the
# first NLL_TOKENS tokens of wiki_demo.txt, next to float32; then QLoRA (bnb NF4 base) beside plain
# LoRA on the same workload: loss of the same batch at the first and last step, and peak RSS.
# Prints tables; asserts nothing about timings (the machine is shared).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct}"
C4="$(find "$CACHE/assets" -name c4_demo.jsonl | head -1)"
WIKI="$(find "$CACHE/assets" -name wiki_demo.txt | head -1)"
NLL_TOKENS="${NLL_TOKENS:-2048}"
N_SAMPLES="${QUANT_N_SAMPLES:-32}"
CALIB_LEN="${QUANT_MAX_LENGTH:-256}"
GROUP="${GROUP_SIZE:-128}"
# SWIFT=BIN measures another build (its libswift_runtime.so beside it) and builds nothing;
# QLORA=0 leaves out the QLoRA/LoRA table; ROWS="rtn hqq ..." runs only the rows named (by the
# first word of their name).
S="${SWIFT:-target/release/swift}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
[ -n "${SWIFT:-}" ] || cargo build --release --quiet -p swift-host -p swift-runtime

nll() { "$S" infer --model "$1" --nll_file "$WIKI" --nll_tokens "$NLL_TOKENS" --device cpu 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])'; }
f32_bytes=$(du -b "$MODEL/model.safetensors" | cut -f1)
base=$(nll "$MODEL")
echo "perplexity on the first $NLL_TOKENS tokens of wiki_demo.txt; gptq/awq calibrated on $N_SAMPLES c4_demo texts of up to $CALIB_LEN tokens"
echo
echo "| method | bits | group | weights MB | × float32 size | NLL | perplexity | Δ NLL vs float32 | export s |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 -c "import math; print(f'| float32 | 32 | – | {$f32_bytes/1e6:.1f} | 1.00 | {$base:.4f} | {math.exp($base):.2f} | 0 | – |')"
run() { # name method bits group [extra flags...]
    local name=$1 method=$2 bits=$3 group=$4; shift 4
    if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" ${name%% *} "* ]]; then return; fi
    local dir="$OUT/$name" t0 t1
    t0=$(date +%s.%N)
    # bnb has no groups (its 4-bit blocks are 64 elements): it refuses --group_size.
    local g=(--group_size "$group"); [ "$method" = bnb ] && g=()
    "$S" export --model "$MODEL" --quant_method "$method" --quant_bits "$bits" "${g[@]}" \
        --output_dir "$dir" --device cpu "$@" >/dev/null 2>"$OUT/$name.log" || { echo "| $name | failed: $(tail -1 "$OUT/$name.log") |"; return; }
    t1=$(date +%s.%N)
    local v bytes
    v=$(nll "$dir")
    bytes=$(du -b "$dir/model.safetensors" | cut -f1)
    python3 -c "import math; print(f'| $name | $bits | $group | {$bytes/1e6:.1f} | {$bytes/$f32_bytes:.3f} | {$v:.4f} | {math.exp($v):.2f} | {$v-$base:+.4f} | {$t1-$t0:.0f} |')"
    rm -rf "$dir"
}
CAL=(--dataset "$C4" --quant_n_samples "$N_SAMPLES" --max_length "$CALIB_LEN")
run "rtn (lossless check)" rtn 4 32
run rtn rtn 4 "$GROUP"
run "bnb nf4 (blocks of 64)" bnb 4 0 --bnb_4bit_quant_type nf4
run "bnb fp4 (blocks of 64)" bnb 4 0 --bnb_4bit_quant_type fp4
run "bnb int8 (row absmax)" bnb 8 0
run hqq hqq 4 "$GROUP"
run gptq gptq 4 "$GROUP" "${CAL[@]}"
run awq awq 4 "$GROUP" "${CAL[@]}"
run "gptq 8-bit" gptq 8 "$GROUP" "${CAL[@]}"
# The output projection (tied: with the token embedding) quantized too (--quant_lm_head).
run "rtn+lm_head (lossless check)" rtn 4 32 --quant_lm_head
run "rtn+lm_head" rtn 4 "$GROUP" --quant_lm_head
run "hqq+lm_head" hqq 4 "$GROUP" --quant_lm_head

[ "${QLORA:-1}" = 0 ] && exit 0
echo
echo "QLoRA (bnb NF4 base, bfloat16 compute) beside LoRA (float32 base): alpaca-en-demo#8, max_length 256,"
echo "batch 4, 7 steps without shuffling (steps 1 and 7 see the same batch), LoRA r8/α32 all-linear, lr 1e-3"
echo
echo "| run | loss step 1 | loss step 7 | s/step | peak RSS MiB |"
echo "|---|---|---|---|---|"
train() { # name [extra flags...]
    local name=$1; shift
    /usr/bin/time -f "%M" -o "$OUT/rss" "$S" sft --model "$MODEL" --dataset alpaca-en-demo#8 --max_length 256 \
        --truncation_strategy right --per_device_train_batch_size 4 --max_steps 7 --logging_steps 1 \
        --lora_dropout 0 --learning_rate 1e-3 --dataset_shuffle false --train_dataloader_shuffle false \
        --device cpu --output_dir "$OUT/$name" "$@" >"$OUT/$name.out" 2>&1
    local line rss
    line=$(grep -E "^sft: " "$OUT/$name.out" | tail -1)
    rss=$(cat "$OUT/rss")
    python3 - "$line" "$rss" "$name" <<'PY'
import re, sys
line, rss, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = re.search(r"\(([\d.]+) s/step.*loss ([\d.]+) -> ([\d.]+)", line)
print(f"| {name} | {m.group(2)} | {m.group(3)} | {m.group(1)} | {rss/1024:.0f} |")
PY
}
train lora
train qlora --quant_method bnb --quant_bits 4
