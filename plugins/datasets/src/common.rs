//! Helpers every built-in preprocessor shares: the column alias tables (after ms-swift's), typed
//! column access with errors that name the column, and the optional fields of the standard row
//! (`tools`, `images`, `label`, `rejected_response`, `rejected_messages`) read from any row shape.

use serde_json::{Map, Value};
use swift_plugin_api::{Message, StandardRow};

use crate::conversation::parse_conversation;

/// Columns that hold the user's question (ms-swift's `query` aliases), in the order tried.
pub const QUERY_KEYS: &[&str] = &[
    "query",
    "prompt",
    "question",
    "instruction",
    "input",
    "problem",
];
/// Columns that hold the answer (ms-swift's `response` aliases, minus `text`/`content`, which
/// the plain-text preprocessor owns), in the order tried.
pub const RESPONSE_KEYS: &[&str] = &[
    "response",
    "answer",
    "output",
    "completion",
    "target",
    "targets",
    "answer_key",
    "answers",
    "solution",
];
/// Columns that hold a system prompt.
pub const SYSTEM_KEYS: &[&str] = &["system", "system_prompt"];
/// Columns that hold a whole conversation.
pub const MESSAGES_KEYS: &[&str] = &["messages", "conversations", "conversation"];
/// Columns that hold image paths.
pub const IMAGE_KEYS: &[&str] = &["images", "image"];

/// `a|b|c`: the form `detect_columns` entries take when any one of several columns will do.
pub fn any_of(keys: &[&str]) -> String {
    keys.join("|")
}

/// The first of `keys` present in `row` with a non-null value, with its name.
pub fn first<'a>(
    row: &'a Map<String, Value>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a Value)> {
    keys.iter().find_map(|k| match row.get(*k) {
        None | Some(Value::Null) => None,
        Some(v) => Some((*k, v)),
    })
}

/// A column that must be text when present (`null` counts as absent; numbers and booleans are
/// written out, since CSV and spreadsheet exports often turn short answers into numbers).
pub fn text_of(key: &str, v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(format!(
            "column `{key}` should be text, found {}",
            kind(other)
        )),
    }
}

/// The first of `keys` as text.
pub fn first_text(
    row: &Map<String, Value>,
    keys: &[&'static str],
) -> Result<Option<String>, String> {
    match first(row, keys) {
        None => Ok(None),
        Some((k, v)) => text_of(k, v),
    }
}

/// A JSON value's kind, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A structured column (list or object) that may arrive as a JSON string (CSV files, and
/// datasets such as glaive's `tools`, store JSON inside a string column).
pub fn structured(key: &str, v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('[') || t.starts_with('{') {
                serde_json::from_str(t)
                    .map_err(|e| format!("column `{key}` holds text that is not valid JSON: {e}"))
            } else {
                Ok(v.clone())
            }
        }
        _ => Ok(v.clone()),
    }
}

/// A text column that may hold a list of messages as JSON text (TRL's conversational prompts and
/// answers in CSV files): parsed when it is a JSON list of objects, kept as text otherwise (an
/// answer may well start with `{` or `[`).
pub fn maybe_structured(v: &Value) -> Value {
    if let Value::String(s) = v {
        let t = s.trim();
        if t.starts_with('[') {
            if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(t) {
                if !list.is_empty() && list.iter().all(Value::is_object) {
                    return Value::Array(list);
                }
            }
        }
    }
    v.clone()
}

/// `history`: `[[query, response], ...]` (or that list as a JSON string) → alternating turns.
pub fn history(row: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let Some(v) = row.get("history").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let v = structured("history", v)?;
    let Value::Array(turns) = v else {
        return Err(format!(
            "column `history` should be a list of [query, response] pairs, found {}",
            kind(&v)
        ));
    };
    let mut out = Vec::with_capacity(turns.len() * 2);
    for (i, turn) in turns.iter().enumerate() {
        let pair = turn.as_array().filter(|p| p.len() == 2);
        let Some(pair) = pair else {
            return Err(format!(
                "`history` turn {} should be a [query, response] pair, found {turn}",
                i + 1
            ));
        };
        let q = text_of("history", &pair[0])?.unwrap_or_default();
        let a = text_of("history", &pair[1])?.unwrap_or_default();
        out.push(Message::new("user", q));
        out.push(Message::new("assistant", a));
    }
    Ok(out)
}

/// Puts `system` in front unless the conversation already starts with a system message.
pub fn with_system(mut messages: Vec<Message>, system: Option<String>) -> Vec<Message> {
    if let Some(s) = system.filter(|s| !s.is_empty()) {
        if messages.first().is_none_or(|m| m.role != "system") {
            messages.insert(0, Message::new("system", s));
        }
    }
    messages
}

/// OpenAI's tool shape: a bare function schema (`{"name", "description", "parameters"}`, as
/// glaive stores them) is wrapped as `{"type": "function", "function": {...}}`.
pub fn wrap_tool(tool: Value) -> Value {
    match tool {
        Value::Object(o) if !o.contains_key("type") && !o.contains_key("function") => {
            let mut w = Map::new();
            w.insert("type".into(), Value::String("function".into()));
            w.insert("function".into(), Value::Object(o));
            Value::Object(w)
        }
        other => other,
    }
}

/// The `tools` column (a list, or a JSON string holding one; empty means none).
pub fn tools(row: &Map<String, Value>) -> Result<Option<Vec<Value>>, String> {
    let Some(v) = row.get("tools").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if v.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    match structured("tools", v)? {
        Value::Array(list) if list.is_empty() => Ok(None),
        Value::Array(list) => Ok(Some(list.into_iter().map(wrap_tool).collect())),
        Value::Object(o) => Ok(Some(vec![wrap_tool(Value::Object(o))])),
        other => Err(format!(
            "column `tools` should be a list of tool schemas, found {}",
            kind(&other)
        )),
    }
}

/// Image paths from `images`/`image`: a path, a list of paths, or `{"path": ...}` objects.
pub fn images(row: &Map<String, Value>) -> Result<Vec<String>, String> {
    let Some((key, v)) = first(row, IMAGE_KEYS) else {
        return Ok(Vec::new());
    };
    let one = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => match o.get("path").and_then(Value::as_str) {
                Some(p) if !p.is_empty() => Ok(p.to_string()),
                _ => Err(format!(
                    "column `{key}`: only image paths are supported (a string or {{\"path\": ...}}); \
                     embedded image bytes are not"
                )),
            },
            other => Err(format!("column `{key}` should hold image paths, found {}", kind(other))),
        }
    };
    match v {
        Value::Array(list) => list.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Grounding `objects` (ms-swift): `{"ref": [...], "bbox": [[x1, y1, x2, y2], ...], "bbox_type":
/// "real"|"norm1", "image_id": [...]}`, or that object as a JSON string; each box has 2 or 4
/// numbers and each `image_id` names one of the row's images.
pub fn objects(
    row: &Map<String, Value>,
    n_images: usize,
) -> Result<Option<Box<swift_plugin_api::Objects>>, String> {
    let v = match row.get("objects") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| format!("column `objects` is a string but not JSON: {e}"))?,
        Some(v) => v.clone(),
    };
    let o: swift_plugin_api::Objects = serde_json::from_value(v).map_err(|e| {
        format!("column `objects` should be {{\"ref\": [text], \"bbox\": [[x1, y1, x2, y2]], \"bbox_type\": \"real\"|\"norm1\", \"image_id\": [n]}}: {e}")
    })?;
    for (i, b) in o.bbox.iter().enumerate() {
        if b.len() != 2 && b.len() != 4 {
            return Err(format!(
                "column `objects`: bbox {i} has {} numbers (expected [x, y] or [x1, y1, x2, y2])",
                b.len()
            ));
        }
    }
    match o.bbox_type.as_deref() {
        None | Some("real") | Some("norm1") => {}
        Some(other) => {
            return Err(format!(
                "column `objects`: bbox_type {other:?} is not real or norm1"
            ))
        }
    }
    if let Some(id) = o.image_id.iter().find(|&&id| id >= n_images.max(1)) {
        return Err(format!(
            "column `objects`: image_id {id} but the row has {n_images} images"
        ));
    }
    Ok((!o.refs.is_empty() || !o.bbox.is_empty()).then(|| Box::new(o)))
}

/// KTO's `label`: a boolean, 0/1, or the text `true`/`false`.
pub fn label(row: &Map<String, Value>) -> Result<Option<bool>, String> {
    match row.get("label") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(Some(false)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(format!(
                "column `label` should be true/false (or 1/0), found {s:?}"
            )),
        },
        Some(other) => Err(format!(
            "column `label` should be true/false (or 1/0), found {other}"
        )),
    }
}

/// Fills the optional fields every row shape may carry: `tools`, `images`, `label`,
/// `rejected_response` and `rejected_messages`.
pub fn extras(row: &Map<String, Value>, out: &mut StandardRow) -> Result<(), String> {
    out.tools = tools(row)?;
    let mut imgs = images(row)?;
    imgs.append(&mut out.images);
    out.images = imgs;
    out.label = label(row)?;
    out.objects = objects(row, out.images.len())?;
    if let Some(r) = first_text(row, &["rejected_response"])? {
        out.rejected_response = Some(r);
    }
    if let Some(v) = row.get("rejected_messages").filter(|v| !v.is_null()) {
        // Images of a rejected conversation are the chosen one's; the row keeps one list.
        out.rejected_messages = Some(parse_conversation("rejected_messages", v, None)?.messages);
    }
    Ok(())
}

/// True when a text is empty or only whitespace.
pub fn blank(s: &str) -> bool {
    s.trim().is_empty()
}
