//! Conversations: the `messages` (OpenAI roles), `sharegpt` (`conversations` with from/value)
//! and `kto` preprocessors, and the conversation parser the preference preprocessor reuses.
//!
//! One parser reads every message shape the demo sets and ms-swift accept:
//! * keys `role`/`content` or `from`/`value` (ShareGPT), or a `{"user": .., "assistant": ..}`
//!   pair per entry (old ms-swift ShareGPT);
//! * roles `system`; `user`/`human`; `assistant`/`gpt`/`bot`/`model`; `tool`/`observation`/
//!   `observations`/`function_response`/`tool_response`/`ipython`; and `function_call`/`tool_call`,
//!   whose content (`{"name", "arguments"}` as JSON text or an object, or a list of them) becomes
//!   `tool_calls` of an assistant turn (merged into the assistant turn right before it, if any);
//! * content as text, `null`, or typed parts (LLaMA-Factory v1, OpenAI): `text` parts are joined,
//!   `image`/`image_url` parts become an `<image>` tag in the text and a path in `images`,
//!   `reasoning` parts become a `<think>\n...\n</think>\n\n` prefix, `tool_call` parts become
//!   `tool_calls`;
//! * OpenAI `tool_calls`, `tool_call_id` and `name` on messages. A `tool` message without a name
//!   takes the name of the call it answers (the k-th tool message after an assistant turn answers
//!   its k-th call). Per-message `loss_weight`/`loss` keys are ignored (the standard row has no
//!   per-message loss yet).

use serde_json::{Map, Value};
use swift_plugin_api::prelude::*;

use crate::common::{
    extras, first, first_text, kind, structured, with_system, MESSAGES_KEYS, SYSTEM_KEYS,
};

/// A parsed conversation and the images its typed content parts named.
#[derive(Debug, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub images: Vec<String>,
}

const USER_ROLES: &[&str] = &["user", "human"];
const ASSISTANT_ROLES: &[&str] = &["assistant", "gpt", "bot", "model"];
const TOOL_ROLES: &[&str] = &[
    "tool",
    "observation",
    "observations",
    "function_response",
    "tool_response",
    "ipython",
];
const CALL_ROLES: &[&str] = &["function_call", "tool_call"];

/// Parses a conversation column (`key` names it in errors); `system` is put in front unless the
/// conversation has its own system message.
pub fn parse_conversation(
    key: &str,
    v: &Value,
    system: Option<String>,
) -> Result<Conversation, String> {
    let v = structured(key, v)?;
    let Value::Array(items) = v else {
        return Err(format!(
            "column `{key}` should be a list of messages, found {}",
            kind(&v)
        ));
    };
    let mut conv = Conversation::default();
    for (i, item) in items.iter().enumerate() {
        let at = || format!("`{key}` message {}", i + 1);
        let Value::Object(m) = item else {
            return Err(format!(
                "{} should be an object with role/content (or from/value), found {}",
                at(),
                kind(item)
            ));
        };
        let role = match m.get("role").or_else(|| m.get("from")) {
            Some(Value::String(r)) => r.trim().to_ascii_lowercase().replace('-', "_"),
            Some(other) => return Err(format!("{}: the role should be text, found {other}", at())),
            None => {
                pair_entry(&at(), m, &mut conv)?;
                continue;
            }
        };
        let content = m.get("content").or_else(|| m.get("value"));
        push_message(&at(), &role, content, m, &mut conv)?;
    }
    conv.messages = with_system(conv.messages, system);
    Ok(conv)
}

/// Old ms-swift ShareGPT entries: `{"human": q, "assistant": a}` (either side may be missing).
fn pair_entry(at: &str, m: &Map<String, Value>, conv: &mut Conversation) -> Result<(), String> {
    let user = first(m, &["user", "human"]);
    let tool = first(m, &["tool", "observation"]);
    let assistant = first(m, &["assistant", "gpt", "bot"]);
    if user.is_none() && tool.is_none() && assistant.is_none() {
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        return Err(format!(
            "{at} has no `role`/`from` key (keys found: {}); messages look like \
             {{\"role\": \"user\", \"content\": \"...\"}} or {{\"from\": \"human\", \"value\": \"...\"}}",
            keys.join(", ")
        ));
    }
    if let Some((_, v)) = user {
        push_message(at, "user", Some(v), &Map::new(), conv)?;
    }
    if let Some((_, v)) = tool {
        push_message(at, "tool", Some(v), &Map::new(), conv)?;
    }
    if let Some((_, v)) = assistant {
        push_message(at, "assistant", Some(v), &Map::new(), conv)?;
    }
    Ok(())
}

fn push_message(
    at: &str,
    role: &str,
    content: Option<&Value>,
    m: &Map<String, Value>,
    conv: &mut Conversation,
) -> Result<(), String> {
    if role == "system" {
        let c = parse_content(at, content, conv)?;
        conv.messages.push(Message::new("system", c.text));
    } else if USER_ROLES.contains(&role) {
        let c = parse_content(at, content, conv)?;
        conv.messages.push(Message::new("user", c.text));
    } else if ASSISTANT_ROLES.contains(&role) {
        let c = parse_content(at, content, conv)?;
        let mut calls = c.calls;
        if let Some(v) = m.get("tool_calls").filter(|v| !v.is_null()) {
            let openai: Vec<ToolCall> = serde_json::from_value(v.clone()).map_err(|e| {
                format!("{at}: `tool_calls` is not a list of OpenAI tool calls: {e}")
            })?;
            calls.splice(0..0, openai);
        }
        let mut msg = Message::new("assistant", c.text);
        msg.tool_calls = (!calls.is_empty()).then_some(calls);
        conv.messages.push(msg);
    } else if CALL_ROLES.contains(&role) {
        let v = content.unwrap_or(&Value::Null);
        let calls = tool_calls(at, v)?;
        match conv.messages.last_mut() {
            Some(last) if last.role == "assistant" => {
                last.tool_calls.get_or_insert_with(Vec::new).extend(calls)
            }
            _ => {
                let mut msg = Message::new("assistant", "");
                msg.tool_calls = Some(calls);
                conv.messages.push(msg);
            }
        }
    } else if TOOL_ROLES.contains(&role) {
        let text = match content {
            // A structured observation (not typed parts) is kept as the JSON text it is.
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(Value::Array(a)) if !a.iter().all(|p| p.get("type").is_some()) => {
                Value::Array(a.clone()).to_string()
            }
            other => parse_content(at, other, conv)?.text,
        };
        let mut msg = Message::new("tool", text);
        // Which call does this answer? The k-th tool message after an assistant turn answers its
        // k-th call.
        let k = conv
            .messages
            .iter()
            .rev()
            .take_while(|m| m.role == "tool")
            .count();
        let call = conv
            .messages
            .iter()
            .rev()
            .find(|m| m.role != "tool")
            .filter(|m| m.role == "assistant")
            .and_then(|m| m.tool_calls.as_ref())
            .and_then(|calls| calls.get(k));
        msg.name = match m.get("name") {
            Some(Value::String(n)) => Some(n.clone()),
            _ => call.map(|c| c.function.name.clone()),
        };
        msg.tool_call_id = match m.get("tool_call_id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => call.and_then(|c| c.id.clone()),
        };
        conv.messages.push(msg);
    } else {
        return Err(format!(
            "{at}: unknown role `{role}` (known: system; {}; {}; tool roles {}; tool-call roles {})",
            USER_ROLES.join("/"),
            ASSISTANT_ROLES.join("/"),
            TOOL_ROLES.join("/"),
            CALL_ROLES.join("/")
        ));
    }
    Ok(())
}

/// A message's content, flattened.
#[derive(Default)]
struct Content {
    text: String,
    calls: Vec<ToolCall>,
}

fn parse_content(at: &str, v: Option<&Value>, conv: &mut Conversation) -> Result<Content, String> {
    let mut out = Content::default();
    let parts = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::String(s)) => {
            out.text = s.clone();
            return Ok(out);
        }
        Some(Value::Number(n)) => {
            out.text = n.to_string();
            return Ok(out);
        }
        Some(Value::Bool(b)) => {
            out.text = b.to_string();
            return Ok(out);
        }
        Some(Value::Array(parts)) => parts.as_slice(),
        Some(o @ Value::Object(_)) => std::slice::from_ref(o),
    };
    let mut reasoning = String::new();
    for (j, part) in parts.iter().enumerate() {
        let pat = || format!("{at} part {}", j + 1);
        let p = match part {
            Value::String(s) => {
                out.text.push_str(s);
                continue;
            }
            Value::Object(p) => p,
            other => {
                return Err(format!(
                    "{} should be a typed part object, found {}",
                    pat(),
                    kind(other)
                ))
            }
        };
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("text");
        let payload = |keys: &[&str]| keys.iter().find_map(|k| p.get(*k).filter(|v| !v.is_null()));
        match ty {
            "text" | "input_text" | "output_text" => match payload(&["text", "value", "content"]) {
                Some(Value::String(s)) => out.text.push_str(s),
                None => {}
                Some(other) => return Err(format!("{}: text should be a string, found {}", pat(), kind(other))),
            },
            "image" | "image_url" | "input_image" => {
                let path = match payload(&["image", "image_url", "url", "path", "value"]) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Object(o)) => match o.get("url").or_else(|| o.get("path")).and_then(Value::as_str) {
                        Some(s) => s.to_string(),
                        None => return Err(format!("{}: image part has no url or path", pat())),
                    },
                    _ => return Err(format!("{}: image part has no url or path", pat())),
                };
                out.text.push_str("<image>");
                conv.images.push(path);
            }
            "reasoning" | "thinking" | "think" => match payload(&["value", "text", "reasoning", "thinking"]) {
                Some(Value::String(s)) => reasoning.push_str(s),
                None => {}
                Some(other) => return Err(format!("{}: reasoning should be a string, found {}", pat(), kind(other))),
            },
            "tool_call" | "function_call" => {
                let v = payload(&["value", "tool_call", "function_call", "function"]).unwrap_or(&Value::Null);
                out.calls.extend(tool_calls(&pat(), v)?);
            }
            other => {
                return Err(format!(
                    "{}: content part type `{other}` is not supported (supported: text, image, image_url, \
                     reasoning, tool_call)",
                    pat()
                ))
            }
        }
    }
    if !reasoning.is_empty() {
        out.text = format!("<think>\n{reasoning}\n</think>\n\n{}", out.text);
    }
    Ok(out)
}

/// A tool call written as `{"name": .., "arguments": ..}` (JSON text or an object), an OpenAI
/// `{"function": {...}}` object, or a list of either.
pub fn tool_calls(at: &str, v: &Value) -> Result<Vec<ToolCall>, String> {
    let v = match v {
        Value::String(s) => serde_json::from_str(s.trim()).map_err(|e| {
            format!("{at}: a tool call should be JSON like {{\"name\": ..., \"arguments\": {{...}}}}: {e}")
        })?,
        other => other.clone(),
    };
    match v {
        Value::Array(list) => list.iter().map(|c| one_call(at, c)).collect(),
        other => Ok(vec![one_call(at, &other)?]),
    }
}

fn one_call(at: &str, v: &Value) -> Result<ToolCall, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "{at}: a tool call should be an object with `name` and `arguments`, found {}",
            kind(v)
        ));
    };
    if o.contains_key("function") {
        return serde_json::from_value(v.clone())
            .map_err(|e| format!("{at}: malformed OpenAI tool call: {e}"));
    }
    let Some(Value::String(name)) = o.get("name") else {
        return Err(format!(
            "{at}: a tool call needs a `name` string, found {v}"
        ));
    };
    let arguments = o
        .get("arguments")
        .or_else(|| o.get("parameters"))
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(ToolCall {
        id: o.get("id").and_then(Value::as_str).map(str::to_string),
        kind: "function".into(),
        function: FunctionCall {
            name: name.clone(),
            arguments,
        },
    })
}

/// `messages` / `conversations` rows (OpenAI or ShareGPT shape); with `require_label`, the KTO
/// variant that insists on a `label`.
pub struct Conversations {
    pub require_label: bool,
}

impl DatasetPreprocessor for Conversations {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let Some((key, v)) = first(&row, MESSAGES_KEYS) else {
            return Err(format!(
                "the row has none of the columns {}",
                MESSAGES_KEYS.join(", ")
            ));
        };
        let system = first_text(&row, SYSTEM_KEYS)?;
        let conv = parse_conversation(key, v, system)?;
        if conv.messages.is_empty() {
            return Ok(PreprocessOutcome::Skip);
        }
        let mut out = StandardRow {
            messages: conv.messages,
            images: conv.images,
            ..Default::default()
        };
        extras(&row, &mut out)?;
        if self.require_label && out.label.is_none() {
            return Err(
                "KTO rows need a `label` column (true for a desirable answer, false otherwise)"
                    .into(),
            );
        }
        Ok(PreprocessOutcome::Row(out))
    }
}
