//! Encoding: rendered pieces become `input_ids`, `labels` and per-token `loss_scale`.
//!
//! Pieces that share a training state are joined and tokenized together; pieces with different
//! states are tokenized separately and their ids concatenated, so a label boundary is always a
//! token boundary (and the answer's tokens are the ones the model produces after the prompt).
//! Special tokens written in template text tokenize as their single ids.

use swift_plugin_api::StandardRow;

use crate::loss_scale::{BaseStrategy, LossScale};
use crate::template::{PieceKind, RenderOptions, Template};
use crate::tokenizer::Tokenizer;
use crate::TemplateError;

/// The label of a token that is not trained.
pub const IGNORE_INDEX: i64 = -100;

/// What to do with a row longer than `max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Drop the row (the caller counts it).
    #[default]
    Delete,
    /// Keep the last `max_length` tokens.
    Left,
    /// Keep the first `max_length` tokens.
    Right,
}

impl std::str::FromStr for Truncation {
    type Err = TemplateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delete" => Ok(Self::Delete),
            "left" => Ok(Self::Left),
            "right" => Ok(Self::Right),
            other => Err(TemplateError::UnknownTruncation(other.into())),
        }
    }
}

/// How rows are encoded.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    pub render: RenderOptions,
    pub max_length: Option<usize>,
    pub truncation: Truncation,
    pub loss_scale: LossScale,
}

/// One run of text with its training state (for `swift encode --show`).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub text: String,
    /// 0 when not trained.
    pub loss_scale: f32,
    /// How many tokens it became.
    pub tokens: usize,
}

/// An encoded row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// The token id where trained, -100 elsewhere.
    pub labels: Vec<i64>,
    /// The weight of each token's loss (0 where not trained).
    pub loss_scale: Vec<f32>,
    /// The text runs the ids came from (before truncation).
    #[serde(skip)]
    pub spans: Vec<Span>,
    /// Tokens removed by truncation.
    #[serde(skip)]
    pub truncated: usize,
}

impl Encoded {
    /// How many tokens are trained.
    pub fn trained_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// A template bound to a tokenizer, with encoding options.
pub struct Encoder {
    pub template: Template,
    pub tokenizer: Tokenizer,
    pub options: EncodeOptions,
}

impl Encoder {
    /// Binds a template (a `jinja` one takes the tokenizer's chat_template) to a tokenizer.
    pub fn new(
        template: Template,
        tokenizer: Tokenizer,
        options: EncodeOptions,
    ) -> Result<Self, TemplateError> {
        let template = template.bind(&tokenizer)?;
        Ok(Self {
            template,
            tokenizer,
            options,
        })
    }

    /// The training state of each text run of a row, before tokenization.
    pub fn spans(&self, row: &StandardRow) -> Result<Vec<(String, f32)>, TemplateError> {
        let pieces = self
            .template
            .render(row, &self.options.render, &self.tokenizer)?;
        let ls = &self.options.loss_scale;
        let mut runs: Vec<(String, f32)> = Vec::new();
        for p in pieces {
            let trained_turn = |last: bool| match ls.base {
                BaseStrategy::Default | BaseStrategy::All => true,
                BaseStrategy::LastRound => last,
            };
            match p.kind {
                PieceKind::Prompt | PieceKind::EmptyThink => runs.push((
                    p.text,
                    if ls.base == BaseStrategy::All {
                        1.0
                    } else {
                        0.0
                    },
                )),
                PieceKind::EndOfTurn { last } => {
                    runs.push((p.text, if trained_turn(last) { 1.0 } else { 0.0 }))
                }
                PieceKind::Answer { last } => {
                    if trained_turn(last) {
                        runs.extend(ls.split_answer(&p.text));
                    } else {
                        runs.push((p.text, 0.0));
                    }
                }
            }
        }
        // Join neighbours with the same state, so only real boundaries split the text.
        let mut joined: Vec<(String, f32)> = Vec::new();
        for (text, w) in runs {
            match joined.last_mut() {
                Some((t, lw)) if *lw == w => t.push_str(&text),
                _ => joined.push((text, w)),
            }
        }
        joined.retain(|(t, _)| !t.is_empty());
        Ok(joined)
    }

    /// Encodes a row; `None` when it is longer than `max_length` and truncation is `delete`.
    pub fn encode(&self, row: &StandardRow) -> Result<Option<Encoded>, TemplateError> {
        let enc = self.encode_whole(row)?;
        self.truncate(enc, None).transpose()
    }

    /// Encodes a row with images (crate::vision): its grounding and `<image>` tags written in the
    /// template's conventions (`sizes`: each image's stored `(width, height)`), then the `i`-th
    /// placeholder `image_token_id` repeated `counts[i]` times. Truncation never cuts an image:
    /// a row whose kept part would is an error naming `--max_length`.
    pub fn encode_with_images(
        &self,
        row: &StandardRow,
        sizes: &[(usize, usize)],
        counts: &[usize],
        image_token_id: u32,
    ) -> Result<Option<Encoded>, TemplateError> {
        let prepared = crate::vision::prepare_row(row, sizes, &self.template.vision)?;
        let mut enc = self.encode_whole(&prepared)?;
        crate::vision::expand_images(&mut enc, image_token_id, counts)?;
        self.truncate(enc, Some(image_token_id)).transpose()
    }

    /// Encodes a row's text runs without truncation.
    fn encode_whole(&self, row: &StandardRow) -> Result<Encoded, TemplateError> {
        let mut enc = Encoded {
            input_ids: Vec::new(),
            labels: Vec::new(),
            loss_scale: Vec::new(),
            spans: Vec::new(),
            truncated: 0,
        };
        for (text, w) in self.spans(row)? {
            let ids = self.tokenizer.encode(&text)?;
            for &id in &ids {
                enc.input_ids.push(id);
                enc.labels
                    .push(if w > 0.0 { i64::from(id) } else { IGNORE_INDEX });
                enc.loss_scale.push(w);
            }
            enc.spans.push(Span {
                text,
                loss_scale: w,
                tokens: ids.len(),
            });
        }
        Ok(enc)
    }

    /// Applies `max_length`: `None` when the row is deleted; with `image_token`, an error when
    /// left/right truncation would cut some of an image's positions.
    fn truncate(
        &self,
        mut enc: Encoded,
        image_token: Option<u32>,
    ) -> Option<Result<Encoded, TemplateError>> {
        if let Some(max) = self.options.max_length {
            let n = enc.input_ids.len();
            if n > max {
                enc.truncated = n - max;
                let cut = match self.options.truncation {
                    Truncation::Delete => return None,
                    Truncation::Right => max..n,
                    Truncation::Left => 0..n - max,
                };
                if let Some(t) = image_token {
                    if enc.input_ids[cut.clone()].contains(&t) {
                        return Some(Err(TemplateError::Grounding(format!(
                            "the row takes {n} tokens with its images' positions and truncating it to --max_length {max} would cut an image; raise --max_length (or lower --max_pixels)"
                        ))));
                    }
                }
                enc.input_ids.drain(cut.clone());
                enc.labels.drain(cut.clone());
                enc.loss_scale.drain(cut);
            }
        }
        Some(Ok(enc))
    }

    /// Encodes a preference row's rejected side: `rejected_messages` when the row has them, else
    /// `messages` with the final assistant answer replaced by `rejected_response`. `Ok(None)` when
    /// the row has neither (or truncation deleted it).
    pub fn encode_rejected(&self, row: &StandardRow) -> Result<Option<Encoded>, TemplateError> {
        match Self::rejected_row(row) {
            Some(rejected) => self.encode(&rejected),
            None => Ok(None),
        }
    }

    /// A preference row's rejected side as a row of its own (same images and objects): its
    /// `rejected_messages`, else `messages` with the final answer replaced by
    /// `rejected_response`; `None` when it has neither.
    pub fn rejected_row(row: &StandardRow) -> Option<StandardRow> {
        let messages = match (&row.rejected_messages, &row.rejected_response) {
            (Some(m), _) => m.clone(),
            (None, Some(answer)) => {
                let mut m = row.messages.clone();
                match m.last_mut() {
                    Some(last) if last.role == "assistant" => {
                        last.content = answer.clone();
                        last.tool_calls = None;
                    }
                    _ => m.push(swift_plugin_api::Message::new("assistant", answer.clone())),
                }
                m
            }
            (None, None) => return None,
        };
        Some(StandardRow {
            messages,
            rejected_messages: None,
            rejected_response: None,
            ..row.clone()
        })
    }

    /// The row rendered for people: trained runs as `[[text]]` followed by `{loss_scale}`.
    pub fn show(&self, enc: &Encoded) -> String {
        let mut out = String::new();
        for s in &enc.spans {
            if s.loss_scale > 0.0 {
                out.push_str("[[");
                out.push_str(&s.text);
                out.push_str(&format!("]]{{{:?}}}", s.loss_scale));
            } else {
                out.push_str(&s.text);
            }
        }
        out
    }
}
