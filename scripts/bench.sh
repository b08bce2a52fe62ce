#!/usr/bin/env bash
# `make bench`: every benchmark, printing figures (never asserting timings). The machine is shared
# and noisy: each benchmark reports medians or side-by-side ratios.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

echo "== start-up: swift --help, swift list (no libtorch) and the tensor engine's load (medians of 5)"
bash scripts/bench_startup.sh

echo "== property tests of the file parsers, 20000 cases each (scripts/fuzz.sh)"
bash scripts/fuzz.sh

echo "== data: preprocessing + streaming of generated JSONL/JSON files (rows/s, peak RSS)"
cargo run --release --quiet -p swift-data --example stream_bench

if [[ -x scripts/bench_infer.sh ]]; then
    echo "== inference: swift infer on the default model (SmolLM2-135M-Instruct)"
    bash scripts/bench_infer.sh
fi

echo "== batch-1 decoding: the model folder (float32, bfloat16), GGUF F32/F16/BF16/Q8_0/Q4_0/Q4_1 and the own 4-bit folder; backends pt and llama_cpp beside llama-bench -t 2 (interleaved, medians of 3)"
make --no-print-directory llama-cpp
"${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python" scripts/bench_decode.py --repeats 3 \
    --inputs "float32 bfloat16 f32 f16 bf16 q8_0 q4_0 q4_1 rtn4" --backends "pt llama_cpp"

echo "== deploy: 64 requests from 16 concurrent clients against one client (SmolLM2, temperature 0)"
"${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python" scripts/bench_deploy.py

echo "== inference side by side with ms-swift (its own virtualenv; medians of 3 runs)"
"${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python" scripts/bench_infer_peer.py --repeats 3 --dtypes "float32 bfloat16"

echo "== LoRA SFT side by side with ms-swift (PEER.md workload; medians of 3 runs)"
"${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python" scripts/bench_train_peer.py --repeats 3

echo "== LoRA DPO side by side with ms-swift (rlhf issue workload)"
"${SWIFT_RS_CACHE:-$HOME/.cache/swift-rs}/venv/bin/python" scripts/bench_rlhf_peer.py --repeats 1

echo "== LoRA DPO on SmolLM2 and dpo-en-demo#64: accuracies and margins"
bash scripts/bench_rlhf_dpo.sh
echo "== quantization: every quantizer's perplexity on SmolLM2 next to float32; QLoRA beside LoRA (peak RSS)"
bash scripts/bench_quant.sh

echo "== tuners (issue 16): every tuner on SmolLM2 with the same data and steps: losses, trainable parameters, peak RSS, samples/s"
bash scripts/bench_tuners.sh
echo "== tuners against Python peft on SmolLM2: the loss falls, peft loads the checkpoint with the same logits, merged = unmerged"
bash scripts/bench_tuners_peft.sh ia3 vera adalora boft fourierft
