//! Tool calls in an answer, for requests that offered `tools`: the two formats the templates
//! write tool calls in (engine/template `tools`), read back into OpenAI's `tool_calls`.
//!
//! * hermes (Qwen and most chatml models): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
//!   blocks, any number of them;
//! * react: `Action: NAME\nAction Input: {...}` (the input runs to the end of the line, or to an
//!   `Observation:` line).
//!
//! An answer with no well-formed call is left as it is (plain content).

use serde_json::Value;

/// One parsed call: the function's name and its arguments as a JSON string (OpenAI's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// Splits an answer into its text and its tool calls (None when it holds none).
pub fn parse(answer: &str) -> Option<(String, Vec<ParsedCall>)> {
    hermes(answer).or_else(|| react(answer))
}

fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "{}".into(),
    }
}

fn hermes(answer: &str) -> Option<(String, Vec<ParsedCall>)> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut rest = answer;
    while let Some(start) = rest.find(OPEN) {
        text.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        // A last block may lack its closing tag (the stop word cut it off).
        let (body, next) = match after.find(CLOSE) {
            Some(end) => (&after[..end], &after[end + CLOSE.len()..]),
            None => (after, ""),
        };
        let v: Value = serde_json::from_str(body.trim()).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        calls.push(ParsedCall {
            name,
            arguments: arguments_text(v.get("arguments").or_else(|| v.get("parameters"))),
        });
        rest = next;
    }
    text.push_str(rest);
    (!calls.is_empty()).then(|| (text.trim().to_string(), calls))
}

fn react(answer: &str) -> Option<(String, Vec<ParsedCall>)> {
    let mut calls = Vec::new();
    let mut first: Option<usize> = None;
    let mut at = 0;
    while let Some(i) = answer[at..].find("Action:") {
        let start = at + i;
        let line_end = answer[start..]
            .find('\n')
            .map_or(answer.len(), |e| start + e);
        let name = answer[start + "Action:".len()..line_end].trim().to_string();
        let after = &answer[line_end..];
        let Some(j) = after.find("Action Input:") else {
            break;
        };
        let input_start = line_end + j + "Action Input:".len();
        let input_end = answer[input_start..]
            .find("\nObservation:")
            .or_else(|| answer[input_start..].find("\nAction:"))
            .map_or(answer.len(), |e| input_start + e);
        let input = answer[input_start..input_end].trim();
        if name.is_empty() {
            break;
        }
        first.get_or_insert(start);
        calls.push(ParsedCall {
            name,
            arguments: match serde_json::from_str::<Value>(input) {
                Ok(v) => arguments_text(Some(&v)),
                Err(_) => input.to_string(),
            },
        });
        at = input_end;
    }
    let first = first?;
    Some((answer[..first].trim().to_string(), calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_blocks() {
        let a = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let (text, calls) = parse(a).unwrap();
        assert_eq!(text, "Let me check.");
        assert_eq!(
            calls,
            vec![
                ParsedCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                ParsedCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn react_action() {
        let a = "Thought: I need the weather.\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}\nObservation:";
        let (text, calls) = parse(a).unwrap();
        assert_eq!(text, "Thought: I need the weather.");
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
    }

    #[test]
    fn plain_answers_and_broken_calls_stay_text() {
        assert_eq!(parse("Paris is sunny."), None);
        assert_eq!(parse("<tool_call>{not json}</tool_call>"), None);
    }
}
