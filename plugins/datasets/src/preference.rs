//! Preference pairs (`preference` preprocessor): a chosen and a rejected answer to one prompt.
//!
//! Shapes read (the prompt comes from `messages`/`conversations`, or from a query alias with
//! `history` and `system`):
//! * ShareGPT ranking (LLaMA-Factory's `dpo_en_demo.json`): `conversations` ending with the user's
//!   turn, `chosen` and `rejected` single messages (`{"from": "gpt", "value": ...}`);
//! * text pairs: `prompt`/`question`/... + `chosen` + `rejected` strings;
//! * TRL's conversational pairs: `chosen`/`rejected` as message lists, either the answer only (after
//!   a `prompt` list) or whole conversations;
//! * LLaMA-Factory v1: `chosen_messages` + `rejected_messages` whole conversations.
//!
//! When the two conversations differ only in the final assistant turn the row gets
//! `rejected_response`; otherwise the whole rejected conversation goes to `rejected_messages`.

use serde_json::{Map, Value};
use swift_plugin_api::prelude::*;

use crate::common::{
    first, first_text, history, images, label, maybe_structured, text_of, tools, with_system,
    MESSAGES_KEYS, QUERY_KEYS, SYSTEM_KEYS,
};
use crate::conversation::parse_conversation;

/// Columns that hold the chosen answer or conversation.
pub const CHOSEN_KEYS: &[&str] = &["chosen", "chosen_messages", "chosen_response"];
/// Columns that hold the rejected answer or conversation.
pub const REJECTED_KEYS: &[&str] = &["rejected", "rejected_messages"];

pub struct Preference;

/// One side of a pair: the answer only, or a whole conversation.
fn side(key: &str, v: &Value, images: &mut Vec<String>) -> Result<Vec<Message>, String> {
    match maybe_structured(v) {
        Value::Array(list) => {
            let conv = parse_conversation(key, &Value::Array(list), None)?;
            images.extend(conv.images);
            Ok(conv.messages)
        }
        o @ Value::Object(_) => {
            let conv = parse_conversation(key, &Value::Array(vec![o]), None)?;
            images.extend(conv.images);
            Ok(conv.messages)
        }
        other => match text_of(key, &other)? {
            Some(t) => Ok(vec![Message::new("assistant", t)]),
            None => Err(format!("column `{key}` is empty")),
        },
    }
}

/// True when `messages` is an answer to append to a prompt rather than a whole conversation.
fn is_answer_only(messages: &[Message]) -> bool {
    messages.first().is_some_and(|m| m.role == "assistant")
}

impl DatasetPreprocessor for Preference {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let (Some((ck, chosen)), Some((rk, rejected))) =
            (first(&row, CHOSEN_KEYS), first(&row, REJECTED_KEYS))
        else {
            return Err(format!(
                "preference rows need a chosen ({}) and a rejected ({}) column",
                CHOSEN_KEYS.join("/"),
                REJECTED_KEYS.join("/")
            ));
        };
        let system = first_text(&row, SYSTEM_KEYS)?;
        let mut imgs = images(&row)?;
        let mut prompt = history(&row)?;
        if let Some((key, v)) = first(&row, MESSAGES_KEYS) {
            let conv = parse_conversation(key, v, None)?;
            imgs.extend(conv.images);
            prompt.extend(conv.messages);
        } else if let Some((key, v)) = first(&row, QUERY_KEYS) {
            match maybe_structured(v) {
                v @ Value::Array(_) => {
                    let conv = parse_conversation(key, &v, None)?;
                    imgs.extend(conv.images);
                    prompt.extend(conv.messages);
                }
                v => {
                    if let Some(q) = text_of(key, &v)? {
                        prompt.push(Message::new("user", q));
                    }
                }
            }
        }
        let mut ignored = Vec::new();
        let chosen = side(ck, chosen, &mut imgs)?;
        let rejected = side(rk, rejected, &mut ignored)?;
        let full = |answer: Vec<Message>, which: &str| -> Result<Vec<Message>, String> {
            if is_answer_only(&answer) {
                if prompt.is_empty() {
                    return Err(format!("the {which} answer has no prompt (no messages/conversations or query column)"));
                }
                Ok(prompt.iter().cloned().chain(answer).collect())
            } else if prompt.is_empty() {
                Ok(answer)
            } else {
                Err(format!(
                    "the {which} column holds a whole conversation and the row has a separate prompt too; \
                     keep one of them"
                ))
            }
        };
        let chosen = with_system(full(chosen, "chosen")?, system.clone());
        let rejected = with_system(full(rejected, "rejected")?, system);
        if chosen.last().is_none_or(|m| m.role != "assistant") {
            return Err(format!("column `{ck}` should end with an assistant answer"));
        }
        let same_prompt = chosen.len() == rejected.len()
            && chosen[..chosen.len() - 1] == rejected[..rejected.len() - 1];
        let mut out = StandardRow {
            images: imgs,
            tools: tools(&row)?,
            label: label(&row)?,
            ..Default::default()
        };
        match rejected.last() {
            Some(last) if same_prompt && last.role == "assistant" && last.tool_calls.is_none() => {
                if Some(last) == chosen.last() {
                    return Err("the rejected answer is the same as the chosen one".into());
                }
                out.rejected_response = Some(last.content.clone());
            }
            _ => {
                if rejected == chosen {
                    return Err("the rejected conversation is the same as the chosen one".into());
                }
                out.rejected_messages = Some(rejected);
            }
        }
        out.messages = chosen;
        Ok(PreprocessOutcome::Row(out))
    }
}
