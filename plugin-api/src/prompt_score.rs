//! Prompt scoring, the backend contract's optional part (`Capabilities::prompt_logprobs`): the
//! log-probability of each token of a prompt given the tokens before it, as OpenAI's legacy
//! completions return them with `echo: true, logprobs: N, max_tokens: 0` (and vLLM does), which
//! is what log-likelihood benchmarks need from a server.

use serde::{Deserialize, Serialize};

/// What a backend without prompt scoring answers.
pub const NO_PROMPT_LOGPROBS: &str =
    "this backend does not score prompts (its record does not declare `prompt_logprobs`)";

/// A prompt to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptScore {
    /// At least one token; the first has no log-probability.
    pub prompt: Vec<i64>,
    /// Index into the loaded adapters (None: the base model).
    #[serde(default)]
    pub adapter: Option<usize>,
    /// The most likely alternatives to report at each position (0: none).
    #[serde(default)]
    pub top: usize,
}

/// Token `i + 1` of the prompt given tokens `0..=i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogprob {
    pub logprob: f64,
    /// The most likely tokens at that position with their log-probabilities, most likely first.
    #[serde(default)]
    pub top: Vec<(i64, f64)>,
}
