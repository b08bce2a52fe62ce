//! What `swift eval` evaluates, without tensors (no libtorch: its tests are cheap).
//!
//! * [`bench`]: `--eval_dataset NAME_OR_PATH` → a [`Benchmark`] (a registered
//!   [`swift_plugin_api::BenchmarkRecord`], or a file in one of ms-swift's custom formats).
//! * [`rows`]: a benchmark's rows read from its file; a malformed row names its file and line.
//! * [`prompt`]: lm-evaluation-harness's plain multiple-choice prompt (header, few-shot
//!   examples, question) and the context/continuation split it scores.
//! * [`agent`]: tool calls scored as EvalScope's `tool_bench` (Plan.EM, Act.EM, hallucination
//!   rate, argument F1, ROUGE-L), and tool-calling conversations read into its steps.
//! * [`remote`]: a model behind an OpenAI-compatible server (`--eval_url`): answers, and
//!   log-likelihoods from the prompt log-probabilities of `echo`.
//! * [`metrics`]: acc and acc_norm from log-likelihoods; ROUGE-1/2/L as `rouge-score`, BLEU-4 as
//!   `sacrebleu`; answer extraction (a letter, a final number) for exact match.

pub mod agent;
pub mod bench;
pub mod metrics;
pub mod prompt;
pub mod remote;
pub mod rows;

pub use bench::{Benchmark, EvalError};
pub use rows::{EvalRow, McqRow, QaRow};
