//! Tool formats: how a template writes the tool schemas (into the system text), an assistant's tool
//! calls and the tools' results as plain text.
//!
//! * `hermes` is the format of Qwen2.5/Qwen3's own chat templates (`<tools>` in the system,
//!   `<tool_call>` JSON in the answer, `<tool_response>` wrapping results); rendered byte for byte
//!   as those templates do.
//! * `react` is the ReAct format (`Action:` / `Action Input:` / `Observation:`), which any
//!   template can carry.
//!
//! JSON is written the way Python's `json.dumps(ensure_ascii=False)` writes it (`", "` and `": "`
//! separators, keys in their original order), which is what Hugging Face's `tojson` does.

use serde_json::Value;
use swift_plugin_api::{Message, ToolCall};

/// A tool format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    React,
}

const HERMES_HEAD: &str =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const HERMES_TAIL: &str =
    "\n</tools>\n\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \
\"arguments\": <args-json-object>}\n</tool_call>";

impl ToolFormat {
    /// The names [`ToolFormat::parse`] accepts.
    pub const NAMES: [&'static str; 2] = ["hermes", "react"];

    /// `hermes` or `react`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hermes" => Some(Self::Hermes),
            "react" | "react_en" => Some(Self::React),
            _ => None,
        }
    }

    /// The system text when `tools` are offered: the conversation's system (if any) followed by
    /// the tool descriptions.
    pub fn system_text(&self, system: Option<&str>, tools: &[Value]) -> String {
        let mut out = String::new();
        if let Some(s) = system.filter(|s| !s.is_empty()) {
            out.push_str(s);
            out.push_str("\n\n");
        }
        match self {
            Self::Hermes => {
                out.push_str(HERMES_HEAD);
                for t in tools {
                    out.push('\n');
                    out.push_str(&py_json(t));
                }
                out.push_str(HERMES_TAIL);
            }
            Self::React => {
                out.push_str(
                    "Answer the following questions as best you can. You have access to the following tools:\n\n",
                );
                let mut names = Vec::new();
                for t in tools {
                    let f = function_of(t);
                    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                    names.push(name.to_string());
                    let desc = f.get("description").and_then(Value::as_str).unwrap_or("");
                    let params = f
                        .get("parameters")
                        .map(py_json)
                        .unwrap_or_else(|| "{}".into());
                    out.push_str(&format!(
                        "{name}: Call this tool to interact with the {name} API. What is the {name} API useful for? \
                         {desc} Parameters: {params} Format the arguments as a JSON object.\n\n"
                    ));
                }
                out.push_str(&format!(
                    "Use the following format:\n\nQuestion: the input question you must answer\nThought: you \
                     should always think about what to do\nAction: the action to take, should be one of [{}]\n\
                     Action Input: the input to the action\nObservation: the result of the action\n... (this \
                     Thought/Action/Action Input/Observation can be repeated zero or more times)\nThought: I now \
                     know the final answer\nFinal Answer: the final answer to the original input question\n\n\
                     Begin!",
                    names.join(",")
                ));
            }
        }
        out
    }

    /// An assistant turn's text: its content followed by its tool calls.
    pub fn assistant_text(&self, content: &str, calls: &[ToolCall]) -> String {
        let mut out = content.to_string();
        for (k, call) in calls.iter().enumerate() {
            let args = match &call.function.arguments {
                Value::String(s) => s.clone(),
                other => py_json(other),
            };
            match self {
                Self::Hermes => {
                    if k > 0 || !content.is_empty() {
                        out.push('\n');
                    }
                    out.push_str("<tool_call>\n{\"name\": \"");
                    out.push_str(&call.function.name);
                    out.push_str("\", \"arguments\": ");
                    out.push_str(&args);
                    out.push_str("}\n</tool_call>");
                }
                Self::React => {
                    if k > 0 || !content.is_empty() {
                        out.push('\n');
                    }
                    out.push_str("Action: ");
                    out.push_str(&call.function.name);
                    out.push_str("\nAction Input: ");
                    out.push_str(&args);
                }
            }
        }
        out
    }

    /// The text of one run of consecutive `tool` messages (placed where a user query goes).
    pub fn tool_results_text(&self, results: &[&Message]) -> String {
        let parts: Vec<String> = results
            .iter()
            .map(|m| match self {
                Self::Hermes => format!("<tool_response>\n{}\n</tool_response>", m.content),
                Self::React => format!("Observation: {}", m.content),
            })
            .collect();
        parts.join("\n")
    }
}

/// The `function` object of an OpenAI tool (`{"type": "function", "function": {...}}`), or the
/// tool itself when it is a bare function schema.
fn function_of(tool: &Value) -> &Value {
    tool.get("function")
        .filter(|f| f.is_object())
        .unwrap_or(tool)
}

/// JSON as Python's `json.dumps(value, ensure_ascii=False)` writes it.
pub fn py_json(value: &Value) -> String {
    let mut out = String::new();
    write_py_json(value, &mut out);
    out
}

fn write_py_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&py_number(n)),
        Value::String(s) => write_py_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json(v, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_str(k, out);
                out.push_str(": ");
                write_py_json(v, out);
            }
            out.push('}');
        }
    }
}

fn py_number(n: &serde_json::Number) -> String {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        py_float(f)
    } else {
        n.to_string()
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` for integral values, exponent form
/// (`1e+16`) outside [1e-4, 1e16).
pub(crate) fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Rust writes `1e16` / `1.5e-5`; Python writes `1e+16` / `1.5e-05`.
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        return format!("{m}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// A JSON string literal as Python writes it with `ensure_ascii=False`.
pub(crate) fn write_py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_written_like_python() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": [1.5, "x\"y\n", null, true], "c": {"é": 2.0}}"#)
                .unwrap();
        assert_eq!(
            py_json(&v),
            r#"{"b": 1, "a": [1.5, "x\"y\n", null, true], "c": {"é": 2.0}}"#
        );
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1.5e-5), "1.5e-05");
        assert_eq!(py_float(3.0), "3.0");
        assert_eq!(py_json(&json!("\u{1}")), "\"\\u0001\"");
    }

    #[test]
    fn hermes_calls_and_results() {
        let call = ToolCall {
            id: None,
            kind: "function".into(),
            function: swift_plugin_api::FunctionCall {
                name: "f".into(),
                arguments: json!({"x": 1}),
            },
        };
        let t = ToolFormat::Hermes.assistant_text("", std::slice::from_ref(&call));
        assert_eq!(
            t,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>"
        );
        let t = ToolFormat::Hermes.assistant_text("ok", &[call.clone(), call]);
        assert!(t.starts_with("ok\n<tool_call>") && t.contains("</tool_call>\n<tool_call>"));
        let m = Message::new("tool", "42");
        assert_eq!(
            ToolFormat::Hermes.tool_results_text(&[&m, &m]),
            "<tool_response>\n42\n</tool_response>\n<tool_response>\n42\n</tool_response>"
        );
        assert_eq!(
            ToolFormat::React.tool_results_text(&[&m]),
            "Observation: 42"
        );
    }
}
