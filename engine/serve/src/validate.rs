//! The one check of a chat request's `messages` and `tools` (the JSON as the client sent it),
//! done before anything reaches the template or the batcher: each failure is a 400 in OpenAI's
//! shape whose `param` names the offending field (`messages[2].role`,
//! `messages[0].content[1].type`, `tools[0].function.name`).
//!
//! What OpenAI's chat API accepts, per role:
//!
//! | role | `content` | other fields |
//! |---|---|---|
//! | `system`, `developer` | a string or a non-empty list of `text` parts | `name` |
//! | `user` | a string or a non-empty list of parts (`text`; `image_url` with a data URL, an `<image>` tag where it stands, for a vision-language model; remote URLs, `input_audio` and `file` are refused) | `name` |
//! | `assistant` | a string, a list of `text`/`refusal` parts, or null/absent when it carries `tool_calls` (or the older `function_call`) | `name`, `tool_calls`, `function_call`, `refusal` (null), `audio` (null) |
//! | `tool` | a string or a non-empty list of `text` parts | `tool_call_id` (required) |
//! | `function` (deprecated) | a string or null | `name` (required) |
//!
//! A field another role owns (`tool_calls` on a user turn), or one OpenAI does not define, is
//! refused by name rather than ignored. `developer` is rendered as `system` and `function` as
//! `tool`, the roles chat templates know.

use serde_json::{Map, Value};
use swift_plugin_tensors::{FunctionCall, Message, ToolCall};

use crate::api::ApiError;

/// Part types OpenAI defines that carry something other than text.
const MEDIA_PARTS: [&str; 3] = ["image_url", "input_audio", "file"];

/// Checks `messages` (the request's field, as sent) and returns the messages the template
/// renders and the images of their `image_url` parts (data URLs), in order; each image part
/// becomes an `<image>` tag where it stood in its message.
pub fn messages_and_images(value: Option<&Value>) -> Result<(Vec<Message>, Vec<String>), ApiError> {
    let mut images = Vec::new();
    let messages = messages_into(value, &mut images)?;
    Ok((messages, images))
}

/// Checks `messages` (the request's field, as sent) and returns the messages the template renders
/// (`image_url` parts refused: this entry point serves text only).
pub fn messages(value: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    let mut images = Vec::new();
    let messages = messages_into(value, &mut images)?;
    if !images.is_empty() {
        return Err(bad(
            "messages",
            "content parts of type `image_url` are not supported here",
        ));
    }
    Ok(messages)
}

fn messages_into(
    value: Option<&Value>,
    images: &mut Vec<String>,
) -> Result<Vec<Message>, ApiError> {
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(bad(
                "messages",
                "`messages` is required: a non-empty list of {\"role\", \"content\"} objects",
            ))
        }
        Some(other) => {
            return Err(bad(
                "messages",
                format!(
                    "`messages` must be a list of {{\"role\", \"content\"}} objects, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| message(&format!("messages[{i}]"), m, images))
        .collect()
}

/// Checks `tools`: absent, null, or a list of `{"type": "function", "function": {"name", ...}}`
/// (a bare function schema, as dataset rows write it, is accepted too and wrapped).
pub fn tools(value: Option<&Value>) -> Result<Option<Vec<Value>>, ApiError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(bad(
                "tools",
                format!("`tools` must be a list of tools, got {}", type_name(other)),
            ))
        }
    };
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let obj = object(&at, tool)?;
        // A bare function schema: no `type`, no `function`.
        let bare = !obj.contains_key("type") && !obj.contains_key("function");
        let (function, fat) = if bare {
            (obj, at.clone())
        } else {
            let kind = obj.get("type");
            if kind.and_then(Value::as_str) != Some("function") {
                return Err(bad(
                    &format!("{at}.type"),
                    format!(
                        "{at}.type must be \"function\", got {}",
                        kind.map_or("nothing".into(), short)
                    ),
                ));
            }
            let fat = format!("{at}.function");
            (
                object(&fat, obj.get("function").unwrap_or(&Value::Null))?,
                fat,
            )
        };
        match function.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            _ => {
                return Err(bad(
                    &format!("{fat}.name"),
                    format!("{fat}.name is required: the function's name, a non-empty string"),
                ))
            }
        }
        out.push(if bare {
            serde_json::json!({"type": "function", "function": tool})
        } else {
            tool.clone()
        });
    }
    Ok(Some(out))
}

fn message(at: &str, m: &Value, images: &mut Vec<String>) -> Result<Message, ApiError> {
    let obj = object(at, m)?;
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return Err(bad(
                &format!("{at}.role"),
                format!("{at}.role must be a string, got {}", type_name(other)),
            ))
        }
        None => return Err(bad(&format!("{at}.role"), format!("{at}.role is required"))),
    };
    let allowed: &[&str] = match role {
        "system" | "developer" | "user" => &["role", "content", "name"],
        "assistant" => &[
            "role",
            "content",
            "name",
            "tool_calls",
            "function_call",
            "refusal",
            "audio",
            "annotations",
        ],
        "tool" => &["role", "content", "tool_call_id", "name"],
        "function" => &["role", "content", "name"],
        other => {
            return Err(bad(
                &format!("{at}.role"),
                format!(
                    "{at}.role is `{other}`; one of system, developer, user, assistant, tool, function is expected"
                ),
            ))
        }
    };
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        let why = if [
            "role",
            "content",
            "name",
            "tool_calls",
            "function_call",
            "tool_call_id",
        ]
        .contains(&key.as_str())
        {
            format!("a `{role}` message does not take `{key}`")
        } else {
            format!("`{key}` is not a field of a chat message")
        };
        return Err(bad(&format!("{at}.{key}"), format!("{at}: {why}")));
    }
    let name = optional_string(at, obj, "name")?;
    let content_at = format!("{at}.content");
    let content = obj.get("content").filter(|c| !c.is_null());
    let mut out = Message {
        role: role.to_string(),
        content: String::new(),
        tool_calls: None,
        tool_call_id: None,
        name,
    };
    match role {
        "system" | "developer" | "tool" => {
            let c = content.ok_or_else(|| required_content(at, role))?;
            out.content = text_content(&content_at, c, role, &["text"], images)?;
            if role == "developer" {
                out.role = "system".into();
            }
            if role == "tool" {
                out.tool_call_id = match obj.get("tool_call_id") {
                    Some(Value::String(id)) => Some(id.clone()),
                    _ => {
                        return Err(bad(
                            &format!("{at}.tool_call_id"),
                            format!(
                                "{at}.tool_call_id is required on a `tool` message: the id of the call it answers, a string"
                            ),
                        ))
                    }
                };
            }
        }
        "user" => {
            let c = content.ok_or_else(|| required_content(at, role))?;
            out.content = text_content(&content_at, c, role, &["text", "image_url"], images)?;
        }
        "assistant" => {
            out.tool_calls = tool_calls(at, obj)?;
            for key in ["refusal", "audio"] {
                if obj.get(key).is_some_and(|v| !v.is_null()) {
                    return Err(bad(
                        &format!("{at}.{key}"),
                        format!("{at}.{key} is not supported by this server; send it as null or leave it out"),
                    ));
                }
            }
            if obj
                .get("annotations")
                .is_some_and(|v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)))
            {
                return Err(bad(
                    &format!("{at}.annotations"),
                    format!("{at}.annotations is not supported by this server; send it empty or leave it out"),
                ));
            }
            match content {
                Some(c) => {
                    out.content =
                        text_content(&content_at, c, role, &["text", "refusal"], images)?
                }
                None if out.tool_calls.is_some() => {}
                None => {
                    return Err(bad(
                        &content_at,
                        format!(
                            "{content_at} is required on an `assistant` message unless it carries `tool_calls` (or `function_call`)"
                        ),
                    ))
                }
            }
        }
        "function" => {
            if out.name.as_deref().is_none_or(str::is_empty) {
                return Err(bad(
                    &format!("{at}.name"),
                    format!("{at}.name is required on a `function` message: the function's name"),
                ));
            }
            out.role = "tool".into();
            if let Some(c) = content {
                out.content = match c {
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(bad(
                            &content_at,
                            format!(
                            "{content_at} must be a string or null on a `function` message, got {}",
                            type_name(other)
                        ),
                        ))
                    }
                };
            }
        }
        _ => unreachable!("roles are matched above"),
    }
    Ok(out)
}

fn required_content(at: &str, role: &str) -> ApiError {
    bad(
        &format!("{at}.content"),
        format!(
            "{at}.content is required on a `{role}` message: a string or a list of content parts"
        ),
    )
}

/// A string, or a non-empty list of parts whose types are in `kinds`, as one text.
fn text_content(
    at: &str,
    c: &Value,
    role: &str,
    kinds: &[&str],
    images: &mut Vec<String>,
) -> Result<String, ApiError> {
    let parts = match c {
        Value::String(s) => return Ok(s.clone()),
        Value::Array(parts) if !parts.is_empty() => parts,
        Value::Array(_) => {
            return Err(bad(
                at,
                format!("{at} is an empty list; send a string or at least one content part"),
            ))
        }
        other => {
            return Err(bad(
                at,
                format!(
                    "{at} must be a string or a list of content parts, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let pat = format!("{at}[{j}]");
        let obj = object(&pat, part)?;
        let kind = match obj.get("type") {
            Some(Value::String(k)) => k.as_str(),
            _ => {
                return Err(bad(
                    &format!("{pat}.type"),
                    format!("{pat}.type is required: a string such as \"text\""),
                ))
            }
        };
        if !kinds.contains(&kind) {
            let why = if MEDIA_PARTS.contains(&kind) && role == "user" {
                format!("content parts of type `{kind}` are not supported: this server serves text models")
            } else if MEDIA_PARTS.contains(&kind) || kind == "text" || kind == "refusal" {
                format!(
                    "a `{role}` message cannot hold `{kind}` parts (it takes {})",
                    kinds.join(" or ")
                )
            } else {
                format!(
                    "`{kind}` is not a content part type (a `{role}` message takes {} parts)",
                    kinds.join(" or ")
                )
            };
            return Err(bad(&format!("{pat}.type"), format!("{pat}.type: {why}")));
        }
        if kind == "image_url" {
            images.push(image_url(&pat, obj)?);
            text.push_str("<image>");
            continue;
        }
        let field = kind; // `text` parts hold `text`, `refusal` parts hold `refusal`
        match obj.get(field) {
            Some(Value::String(t)) => text.push_str(t),
            _ => {
                return Err(bad(
                    &format!("{pat}.{field}"),
                    format!("{pat}.{field} is required on a `{kind}` part: a string"),
                ))
            }
        }
        if let Some(key) = obj.keys().find(|k| *k != "type" && *k != field) {
            return Err(bad(
                &format!("{pat}.{key}"),
                format!("{pat}: a `{kind}` part does not take `{key}`"),
            ));
        }
    }
    Ok(text)
}

/// An `image_url` part's image: `{"type": "image_url", "image_url": {"url": "data:...",
/// "detail": ...}}`. Only data URLs: the server fetches nothing (remote URLs are refused), and
/// reads no file a client names.
fn image_url(pat: &str, obj: &Map<String, Value>) -> Result<String, ApiError> {
    if let Some(key) = obj.keys().find(|k| *k != "type" && *k != "image_url") {
        return Err(bad(
            &format!("{pat}.{key}"),
            format!("{pat}: an `image_url` part does not take `{key}`"),
        ));
    }
    let at = format!("{pat}.image_url");
    let inner = object(&at, obj.get("image_url").unwrap_or(&Value::Null))?;
    let url_at = format!("{at}.url");
    let url = match inner.get("url") {
        Some(Value::String(u)) => u,
        _ => {
            return Err(bad(
                &url_at,
                format!("{url_at} is required: a data URL (data:image/jpeg;base64,...)"),
            ))
        }
    };
    if let Some(key) = inner.keys().find(|k| *k != "url" && *k != "detail") {
        return Err(bad(
            &format!("{at}.{key}"),
            format!("{at}: `{key}` is not a field of an image URL (url, detail)"),
        ));
    }
    if !url.starts_with("data:") {
        let what = if url.starts_with("http://") || url.starts_with("https://") {
            "remote image URLs are not fetched (this server works offline)"
        } else {
            "only data URLs are accepted"
        };
        return Err(bad(
            &url_at,
            format!("{url_at}: {what}; send the image as a data URL (data:image/jpeg;base64,...)"),
        ));
    }
    Ok(url.clone())
}

/// An assistant message's `tool_calls` (and the older `function_call`, read as one call).
fn tool_calls(at: &str, obj: &Map<String, Value>) -> Result<Option<Vec<ToolCall>>, ApiError> {
    let mut calls = Vec::new();
    match obj.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (k, call) in list.iter().enumerate() {
                let cat = format!("{at}.tool_calls[{k}]");
                let c = object(&cat, call)?;
                if let Some(key) = c
                    .keys()
                    .find(|key| !["id", "type", "function"].contains(&key.as_str()))
                {
                    return Err(bad(
                        &format!("{cat}.{key}"),
                        format!("{cat}: a tool call does not take `{key}`"),
                    ));
                }
                let id = optional_string(&cat, c, "id")?;
                match c.get("type") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(t)) if t == "function" => {}
                    Some(other) => {
                        return Err(bad(
                            &format!("{cat}.type"),
                            format!("{cat}.type must be \"function\", got {}", short(other)),
                        ))
                    }
                }
                let f = c.get("function").unwrap_or(&Value::Null);
                calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: function_call(&format!("{cat}.function"), f)?,
                });
            }
        }
        Some(other) => {
            return Err(bad(
                &format!("{at}.tool_calls"),
                format!(
                    "{at}.tool_calls must be a list of tool calls, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    if let Some(f) = obj.get("function_call").filter(|f| !f.is_null()) {
        calls.push(ToolCall {
            id: None,
            kind: "function".into(),
            function: function_call(&format!("{at}.function_call"), f)?,
        });
    }
    Ok((!calls.is_empty()).then_some(calls))
}

/// `{"name": string, "arguments": string holding JSON, or a JSON object}`.
fn function_call(at: &str, f: &Value) -> Result<FunctionCall, ApiError> {
    let f = object(at, f)?;
    let name = match f.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => {
            return Err(bad(
                &format!("{at}.name"),
                format!("{at}.name is required: the function's name, a non-empty string"),
            ))
        }
    };
    let arguments = match f.get("arguments") {
        Some(a @ (Value::String(_) | Value::Object(_))) => a.clone(),
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(other) => {
            return Err(bad(
                &format!("{at}.arguments"),
                format!(
                    "{at}.arguments must be a string holding a JSON object, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    if let Some(key) = f.keys().find(|k| *k != "name" && *k != "arguments") {
        return Err(bad(
            &format!("{at}.{key}"),
            format!("{at}: a function call does not take `{key}`"),
        ));
    }
    Ok(FunctionCall { name, arguments })
}

fn object<'a>(at: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| bad(at, format!("{at} must be an object, got {}", type_name(v))))
}

/// `obj[key]`: absent or null (None), or a string.
fn optional_string(
    at: &str,
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            &format!("{at}.{key}"),
            format!("{at}.{key} must be a string, got {}", type_name(other)),
        )),
    }
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The `param` a bad `messages` list is refused with (and the refusal's shape).
    fn refused(messages: Value) -> String {
        let e = super::messages(Some(&messages)).expect_err(&messages.to_string());
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"].get("code").is_some());
        assert!(!e.message.is_empty());
        e.param.expect("names a param")
    }

    #[test]
    fn each_bad_message_is_refused_naming_its_field() {
        let user = json!({"role": "user", "content": "hi"});
        let cases = [
            (json!(null), "messages"),
            (json!([]), "messages"),
            (json!("hi"), "messages"),
            (json!([user, 3]), "messages[1]"),
            (
                json!([user, {"role": "wizard", "content": "x"}]),
                "messages[1].role",
            ),
            (json!([{"content": "x"}]), "messages[0].role"),
            (json!([{"role": 1, "content": "x"}]), "messages[0].role"),
            (
                json!([{"role": "user", "content": null}]),
                "messages[0].content",
            ),
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "system", "content": null}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": 5}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": []}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video"}]}]),
                "messages[0].content[1].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "text"}]}]),
                "messages[0].content[0].text",
            ),
            (
                json!([{"role": "user", "content": [{"type": "text", "text": 1}]}]),
                "messages[0].content[0].text",
            ),
            (
                json!([{"role": "user", "content": [{"text": "a"}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": ["a"]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": "x", "tool_calls": []}]),
                "messages[0].tool_calls",
            ),
            (
                json!([{"role": "user", "content": "x", "colour": "red"}]),
                "messages[0].colour",
            ),
            (
                json!([{"role": "user", "content": "x", "name": 3}]),
                "messages[0].name",
            ),
            (
                json!([user, {"role": "assistant", "content": null}]),
                "messages[1].content",
            ),
            (json!([user, {"role": "assistant"}]), "messages[1].content"),
            (
                json!([user, {"role": "assistant", "content": null, "tool_calls": {}}]),
                "messages[1].tool_calls",
            ),
            (
                json!([user, {"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}]),
                "messages[1].tool_calls[0].function.name",
            ),
            (
                json!([user, {"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}]),
                "messages[1].tool_calls[0].type",
            ),
            (
                json!([user, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 1}}]}]),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!([user, {"role": "assistant", "content": "a", "refusal": "no"}]),
                "messages[1].refusal",
            ),
            (
                json!([user, {"role": "tool", "content": "42"}]),
                "messages[1].tool_call_id",
            ),
            (
                json!([user, {"role": "tool", "content": null, "tool_call_id": "c"}]),
                "messages[1].content",
            ),
            (
                json!([user, {"role": "function", "content": "42"}]),
                "messages[1].name",
            ),
            (
                json!([user, {"role": "function", "name": "f", "content": ["x"]}]),
                "messages[1].content",
            ),
        ];
        for (messages, param) in cases {
            assert_eq!(refused(messages.clone()), param, "{messages}");
        }
    }

    #[test]
    fn every_openai_role_and_content_shape_is_accepted() {
        let got = super::messages(Some(&json!([
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}], "name": "ann"},
            {"role": "assistant", "content": null, "refusal": null,
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
            {"role": "assistant", "function_call": {"name": "get_time", "arguments": "{}"}},
            {"role": "function", "name": "get_time", "content": null},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "system", "content": ""},
        ])))
        .unwrap();
        let roles: Vec<&str> = got.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "assistant",
                "tool",
                "assistant",
                "tool",
                "assistant",
                "system"
            ]
        );
        assert_eq!(got[0].content, "be brief");
        assert_eq!(got[1].name.as_deref(), Some("ann"));
        let call = &got[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_deref(), call.function.name.as_str()),
            (Some("c1"), "get_weather")
        );
        assert_eq!(call.function.arguments, json!("{\"city\": \"Paris\"}"));
        assert_eq!(got[2].content, "");
        assert_eq!(got[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(
            got[4].tool_calls.as_ref().unwrap()[0].function.name,
            "get_time"
        );
        assert_eq!(
            (got[5].name.as_deref(), got[5].content.as_str()),
            (Some("get_time"), "")
        );
        assert_eq!(got[6].content, "no");
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// JSON of any shape under the names a chat message uses.
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                proptest::sample::select(
                    &[
                        "system",
                        "developer",
                        "user",
                        "assistant",
                        "tool",
                        "function",
                        "wizard",
                        "text",
                        "image_url",
                        "refusal",
                        "",
                        "x"
                    ][..]
                )
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                let key = proptest::sample::select(
                    &[
                        "role",
                        "content",
                        "type",
                        "text",
                        "refusal",
                        "name",
                        "tool_calls",
                        "tool_call_id",
                        "function",
                        "function_call",
                        "arguments",
                        "id",
                        "audio",
                        "annotations",
                        "image_url",
                        "other",
                    ][..],
                );
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec((key.prop_map(String::from), inner), 0..5)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
            /// Any `messages` or `tools` is accepted or refused with a 400 naming a field; what
            /// is accepted has only the roles templates render.
            #[test]
            fn any_request_is_checked_without_panic(
                messages in prop_oneof![value(), proptest::collection::vec(value(), 1..4).prop_map(Value::Array)],
                tools in prop_oneof![value(), proptest::collection::vec(value(), 1..3).prop_map(Value::Array)],
            ) {
                match super::super::messages(Some(&messages)) {
                    Ok(ms) => {
                        for m in ms {
                            prop_assert!(["system", "user", "assistant", "tool"].contains(&m.role.as_str()));
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e.status.as_u16(), 400);
                        prop_assert!(e.param.as_deref().is_some_and(|p| p.starts_with("messages")));
                    }
                }
                if let Err(e) = super::super::tools(Some(&tools)) {
                    prop_assert!(e.param.as_deref().is_some_and(|p| p.starts_with("tools")));
                }
            }
        }
    }

    #[test]
    fn tools_are_checked_and_bare_schemas_wrapped() {
        let schema = json!({"name": "f", "parameters": {"type": "object"}});
        let got = tools(Some(
            &json!([schema.clone(), {"type": "function", "function": schema}]),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(got[0], json!({"type": "function", "function": schema}));
        assert_eq!(got[0], got[1]);
        assert_eq!(tools(Some(&json!([]))).unwrap(), None);
        for (bad, param) in [
            (json!({}), "tools"),
            (json!([1]), "tools[0]"),
            (json!([{"type": "retrieval"}]), "tools[0].type"),
            (json!([{"type": "function"}]), "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": ""}}]),
                "tools[0].function.name",
            ),
            (json!([{"parameters": {}}]), "tools[0].name"),
        ] {
            let e = tools(Some(&bad)).expect_err(&bad.to_string());
            assert_eq!(e.param.as_deref(), Some(param), "{bad}");
        }
    }
}
