//! # swift-pipeline: what every tensor command does
//!
//! The host parses flags into a swift-spec specification and calls one function here; this
//! crate does the work and returns what the host prints. It knows nothing of clap.
//!
//! * [`bundle`]: a model ready to run (folder or GGUF, family resolved in the registry, dtype,
//!   device, a quantized folder's loader, tokenizer, template, EOS ids).
//! * [`adapters`]: checkpoints given with `--adapters` (their `args.json` names model, template
//!   and plugins), attached or merged.
//! * [`tuning`]: a registered tuner attached to a loaded model for training.
//! * [`train`]: `swift sft` / `swift pt` (datasets encoded, tuner attached, run folder opened,
//!   the trainer's loop, checkpoints), and the pieces `rlhf` shares.
//! * [`parallel`]: data parallel: the launch's process group joined for sft/pt/rlhf, refused
//!   where it does not run yet (KTO).
//! * [`preference`]: `swift rlhf` (preference pairs or KTO rows encoded, reference, value head).
//! * [`generate`]: `swift infer` (chat, a dataset answered in batches, diagnostics).
//! * [`eval`]: `swift eval` (benchmarks scored by log-likelihood or generation, on a local model
//!   or a server's by `--eval_url`; a run folder with the report).
//! * [`eval_train`]: benchmarks at each evaluation step of a training run
//!   (`--eval_use_evalscope`).
//! * [`score`]: `swift infer` with a reward model (scores instead of answers).
//! * [`serve`]: `swift deploy` (the model and its adapters handed to swift-serve).
//! * [`quantize`]: `swift export --quant_method`, quantized folders' loader, QLoRA's base.
//! * [`export`]: `swift export` (merge, GGUF both ways, Ollama).
//!
//! Errors are `anyhow` errors whose messages are written for the user (this crate is the
//! orchestration layer right below the binary; the crates it drives have typed errors).

pub mod adapters;
pub mod backend;
pub mod bundle;
pub mod eval;
mod eval_passes;
pub mod eval_train;
pub mod export;
pub mod generate;
pub mod images;
pub mod optimizer;
pub mod parallel;
pub mod preference;
pub mod quantize;
pub mod score;
pub mod serve;
pub mod train;
pub mod training_modes;
pub mod tuning;
pub mod vision_train;

pub use swift_train::TrainSummary;
