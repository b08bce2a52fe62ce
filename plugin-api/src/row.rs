//! The standard row: what every dataset preprocessor produces and every template consumes.
//!
//! It follows OpenAI's chat format (`messages` with `system`/`user`/`assistant`/`tool` roles,
//! assistant `tool_calls`), plus the fields preference and KTO training need.

use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (empty for an assistant turn that only calls tools).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// Tool calls made by an assistant turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `tool` messages: the id of the call this answers, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `tool` messages: the tool's name, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with a role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// One tool call of an assistant turn (OpenAI shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_string()
}

/// The function a tool call invokes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as the model writes them (a JSON object, or a string holding JSON).
    pub arguments: serde_json::Value,
}

/// A preprocessed dataset row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StandardRow {
    /// The conversation; the last assistant message is the answer (absent for inference rows).
    pub messages: Vec<Message>,
    /// Preference data: the rejected final answer (same prompt as `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_response: Option<String>,
    /// Preference data: a whole rejected conversation, when it differs beyond the final answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_messages: Option<Vec<Message>>,
    /// KTO: whether the final answer is desirable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<bool>,
    /// Tool schemas available in the conversation (OpenAI `tools` shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Image paths or URLs, in order of appearance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Grounding: what the messages' `<ref-object>` and `<bbox>` tags stand for (ms-swift's
    /// `objects`). Serde data with a default, so rows from plugins built before it still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Box<Objects>>,
}

/// ms-swift's grounding `objects`: the `i`-th `<ref-object>` tag becomes `refs[i]`, the `i`-th
/// `<bbox>` tag `bbox[i]`, written in the template's box convention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Objects {
    /// The objects' descriptions.
    #[serde(rename = "ref", default)]
    pub refs: Vec<String>,
    /// Boxes `[x1, y1, x2, y2]` (or points `[x, y]`).
    #[serde(default)]
    pub bbox: Vec<Vec<f64>>,
    /// `real` (pixels of the image as stored; the default) or `norm1` (fractions of its sides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox_type: Option<String>,
    /// Which of the row's images each box is on (0 when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_id: Vec<usize>,
}
