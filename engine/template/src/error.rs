//! The errors of this crate. Each message says what went wrong and what the user can do about it.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer, building a template or encoding a row.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot load tokenizer {path}: {reason} (pass a Hugging Face `tokenizer.json`, the fast-tokenizer file)")]
    TokenizerLoad { path: PathBuf, reason: String },
    #[error("cannot read {path}: {reason} (it should be the tokenizer_config.json next to tokenizer.json)")]
    TokenizerConfig { path: PathBuf, reason: String },
    #[error("{what} has no chat_template; choose a built-in template with --template (see `swift list templates`)")]
    NoChatTemplate { what: String },
    #[error(
        "the chat_template does not parse: {reason}; choose a built-in template with --template"
    )]
    JinjaSyntax { reason: String },
    #[error("rendering the tokenizer's chat_template failed: {reason}")]
    JinjaRender { reason: String },
    #[error("cannot find the assistant turn {index} in the chat_template's output ({reason}); use a built-in template (--template) to get labels for this row")]
    JinjaLabels { index: usize, reason: String },
    #[error("template `{template}`: option `{option}` {reason}")]
    BadOption {
        template: String,
        option: String,
        reason: String,
    },
    #[error("template `{template}`: unknown tool format `{format}`; known: hermes, react")]
    UnknownToolFormat { template: String, format: String },
    #[error("template `{template}` uses {placeholder} but the tokenizer declares no {token} (set it in tokenizer_config.json)")]
    MissingSpecialToken {
        template: String,
        placeholder: &'static str,
        token: &'static str,
    },
    #[error("message {index} ({role}): {reason}")]
    Conversation {
        index: usize,
        role: String,
        reason: String,
    },
    #[error("the row has no messages to encode")]
    EmptyRow,
    #[error("unknown loss scale `{name}`; known: {known} (combine with `+`, e.g. `last_round+react`, or give a JSON file of pattern -> weights)")]
    UnknownLossScale { name: String, known: String },
    #[error("loss scale file {path}: {reason} (expected a JSON object of pattern -> [weight] or [key weight, content weight])")]
    LossScaleFile { path: PathBuf, reason: String },
    #[error("images: {0}")]
    Grounding(String),
    #[error("unknown truncation strategy `{0}`; known: delete, left, right")]
    UnknownTruncation(String),
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
}
