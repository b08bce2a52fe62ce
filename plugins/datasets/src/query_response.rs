//! Single-answer rows: `alpaca` (instruction/input/output), `response` (query/response with
//! ms-swift's column aliases, `history` and `system`) and `text` (plain text for pre-training).

use serde_json::{Map, Value};
use swift_plugin_api::prelude::*;

use crate::common::{
    blank, extras, first, first_text, history, kind, maybe_structured, text_of, with_system,
    QUERY_KEYS, RESPONSE_KEYS, SYSTEM_KEYS,
};
use crate::conversation::parse_conversation;

/// The user's side of a single-answer row: text, or (TRL's conversational format) messages.
enum Query {
    Text(String),
    Messages(Vec<Message>, Vec<String>),
}

/// Builds `system? + history + query + answer` and the optional fields. A row with no query, no
/// history and no answer carries nothing and is skipped; a row without an answer is a prompt
/// (for inference or generation).
fn single_answer(
    row: &Map<String, Value>,
    query: Option<Query>,
) -> Result<PreprocessOutcome, String> {
    let system = first_text(row, SYSTEM_KEYS)?;
    let mut messages = history(row)?;
    let mut images = Vec::new();
    let has_query = match query {
        Some(Query::Text(q)) => {
            messages.push(Message::new("user", q));
            true
        }
        Some(Query::Messages(mut m, mut imgs)) => {
            messages.append(&mut m);
            images.append(&mut imgs);
            true
        }
        None => false,
    };
    let mut has_answer = false;
    if let Some((key, v)) = first(row, RESPONSE_KEYS) {
        match maybe_structured(v) {
            // Several reference answers: the first is trained (ms-swift picks one at random).
            Value::Array(list) if list.iter().all(Value::is_string) => {
                if let Some(a) = list.first().and_then(Value::as_str) {
                    messages.push(Message::new("assistant", a));
                    has_answer = true;
                }
            }
            // TRL's conversational completion: a list of assistant (and tool) messages.
            v @ Value::Array(_) => {
                let conv = parse_conversation(key, &v, None)?;
                has_answer = !conv.messages.is_empty();
                messages.extend(conv.messages);
                images.extend(conv.images);
            }
            v => {
                if let Some(a) = text_of(key, &v)? {
                    messages.push(Message::new("assistant", a));
                    has_answer = true;
                }
            }
        }
    }
    if !has_query && !has_answer && messages.is_empty() {
        return Ok(PreprocessOutcome::Skip);
    }
    let mut out = StandardRow {
        messages: with_system(messages, system),
        images,
        ..Default::default()
    };
    extras(row, &mut out)?;
    Ok(PreprocessOutcome::Row(out))
}

/// Alpaca rows: `instruction` and `input` joined by a newline (either alone when the other is
/// empty) become the user turn; `output` (or a response alias) the answer; `system` and
/// `history` ([[query, response], ...]) are kept.
pub struct Alpaca;

impl DatasetPreprocessor for Alpaca {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let field = |k: &str| {
            row.get(k)
                .map(|v| text_of(k, v))
                .transpose()
                .map(Option::flatten)
        };
        let instruction = field("instruction")?.unwrap_or_default();
        let input = field("input")?.unwrap_or_default();
        let query = match (blank(&instruction), blank(&input)) {
            (false, false) => format!("{instruction}\n{input}"),
            (false, true) => instruction,
            (true, false) => input,
            (true, true) => {
                if first(&row, RESPONSE_KEYS).is_none() {
                    return Ok(PreprocessOutcome::Skip);
                }
                return Err("alpaca row has an empty `instruction` and `input`".into());
            }
        };
        single_answer(&row, Some(Query::Text(query)))
    }
}

/// Query/response rows, with ms-swift's aliases: the query is the first of
/// `query, prompt, question, instruction, input, problem`, the answer the first of
/// `response, answer, output, completion, target, targets, answer_key, answers, solution`;
/// `system`/`system_prompt` and `history` are kept. A prompt given as a list of messages (TRL's
/// conversational format) is read as a conversation.
pub struct QueryResponse;

impl DatasetPreprocessor for QueryResponse {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let query = match first(&row, QUERY_KEYS) {
            None => None,
            Some((key, v)) => match maybe_structured(v) {
                v @ Value::Array(_) => {
                    let conv = parse_conversation(key, &v, None)?;
                    Some(Query::Messages(conv.messages, conv.images))
                }
                v => text_of(key, &v)?.map(Query::Text),
            },
        };
        single_answer(&row, query)
    }
}

/// Plain text for pre-training: the `text` (or `content`) column becomes a single assistant
/// message, so that every token is trained. Empty text is skipped.
pub struct PlainText;

impl DatasetPreprocessor for PlainText {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let Some((key, v)) = first(&row, &["text", "content"]) else {
            return Err("the row has no `text` column".into());
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => {
                return Err(format!(
                    "column `{key}` should be text, found {}",
                    kind(other)
                ))
            }
        };
        if blank(&text) {
            return Ok(PreprocessOutcome::Skip);
        }
        Ok(PreprocessOutcome::Row(StandardRow {
            messages: vec![Message::new("assistant", text)],
            ..Default::default()
        }))
    }
}
