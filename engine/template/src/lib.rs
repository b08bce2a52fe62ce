//! # swift-template: chat templates, tokenization, labels and loss scale
//!
//! The template stage of the data path (ARCHITECTURE.md §4): a [`StandardRow`] is rendered by a
//! [`Template`] into pieces of text that know what they are (prompt, answer, end of turn, empty
//! think block), weighted by a [`LossScale`], tokenized by a Hugging Face [`Tokenizer`], and
//! truncated, giving an [`Encoded`] row (`input_ids`, `labels`, `loss_scale`).
//!
//! ```no_run
//! use swift_template::{EncodeOptions, Encoder, Template, Tokenizer};
//! # fn demo(record: &swift_plugin_api::TemplateRecord, row: &swift_plugin_api::StandardRow) -> Result<(), swift_template::TemplateError> {
//! let tok = Tokenizer::from_file("tokenizer.json".as_ref())?;
//! let enc = Encoder::new(Template::from_record(record)?, tok, EncodeOptions::default())?;
//! let encoded = enc.encode(row)?; // None: deleted by truncation
//! # Ok(()) }
//! ```
//!
//! Templates are registered records ([`swift_plugin_api::TemplateRecord`]); the record options
//! this crate understands are listed in [`template`]. The `jinja` engine ([`jinja`]) renders the
//! tokenizer's own `chat_template`.
//!
//! [`StandardRow`]: swift_plugin_api::StandardRow

mod encode;
mod error;
pub mod jinja;
pub mod loss_scale;
pub mod template;
mod tokenizer;
pub mod tools;
pub mod vision;

pub use encode::{EncodeOptions, Encoded, Encoder, Span, Truncation, IGNORE_INDEX};
pub use error::TemplateError;
pub use loss_scale::{BaseStrategy, LossScale};
pub use template::{Piece, PieceKind, RenderOptions, Template, EMPTY_THINK};
pub use tokenizer::Tokenizer;
pub use tools::ToolFormat;
pub use vision::{NormBbox, VisionOptions};
