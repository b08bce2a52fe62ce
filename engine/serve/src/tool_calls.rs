//! Tool calls in an answer, for requests that offered `tools`: the two formats the templates
//! write tool calls in (engine/template `tools`), read back into OpenAI's `tool_calls`.
//!
//! * hermes (Qwen and most chatml models): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
//!   blocks, any number of them;
//! * react: `Action: NAME\nAction Input: {...}` (the input runs to the end of the line, or to an
//!   `Observation:` line).
//!
//! An answer with no well-formed call is left as it is (plain content).
//!
//! Streamed answers go through a [`Holdback`]: text is sent as content until a call's marker
//! (`<tool_call>`, `Action:`) starts, and an ending that may be the start of one is held back;
//! from the marker on, the text is kept until the answer ends, then parsed whole (as the
//! non-streamed answer is) and sent as `tool_calls` deltas, or as content if it holds no
//! well-formed call.

use serde_json::Value;

/// One parsed call: the function's name and its arguments as a JSON string (OpenAI's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// Where a tool call may start, in the formats [`parse`] reads.
const MARKERS: [&str; 2] = ["<tool_call>", "Action:"];

/// A streamed answer's text, holding back what may be a tool call (see the module's page).
#[derive(Debug, Default)]
pub struct Holdback {
    hold: String,
    /// A marker was seen: everything from it on waits for the end.
    calling: bool,
}

/// What is left to send when a streamed answer ends.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// Text still to send as content (possibly empty).
    Text(String),
    /// The answer's tool calls (its content before the first call was already sent).
    Calls(Vec<ParsedCall>),
}

impl Holdback {
    /// Takes new text; returns what can be sent as content now.
    pub fn push(&mut self, text: &str) -> String {
        self.hold.push_str(text);
        if self.calling {
            return String::new();
        }
        if let Some(pos) = MARKERS.iter().filter_map(|m| self.hold.find(m)).min() {
            self.calling = true;
            let rest = self.hold.split_off(pos);
            return std::mem::replace(&mut self.hold, rest);
        }
        // Hold an ending that may start a marker.
        let mut keep = 0;
        for m in MARKERS {
            for k in (1..m.len()).rev() {
                if k > keep && self.hold.ends_with(&m[..k]) {
                    keep = k;
                    break;
                }
            }
        }
        let cut = self.hold.len() - keep;
        let rest = self.hold.split_off(cut);
        std::mem::replace(&mut self.hold, rest)
    }

    /// The answer ended (`answer`: its whole text): the calls it makes, or the text held back.
    pub fn finish(&mut self, answer: &str) -> Ending {
        let held = std::mem::take(&mut self.hold);
        if self.calling {
            if let Some((_, calls)) = parse(answer) {
                return Ending::Calls(calls);
            }
        }
        Ending::Text(held)
    }
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

    /// Streams `pieces` through a holdback: (content sent, how it ended).
    fn stream(pieces: &[&str]) -> (String, Ending) {
        let mut h = Holdback::default();
        let sent: String = pieces.iter().map(|p| h.push(p)).collect();
        (sent, h.finish(&pieces.concat()))
    }

    #[test]
    fn streamed_calls_are_held_back_and_parsed_whole() {
        let (sent, end) = stream(&[
            "Sure. <tool",
            "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ]);
        assert_eq!(sent, "Sure. ");
        assert_eq!(
            end,
            Ending::Calls(vec![ParsedCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }])
        );
        // Text that only looked like the start of a marker is sent in the end.
        let (sent, end) = stream(&["a <to", "ol> b <tool"]);
        assert_eq!(sent, "a <tool> b ");
        assert_eq!(end, Ending::Text("<tool".into()));
        // A marker without a well-formed call is content after all.
        let (sent, end) = stream(&["x <tool_call>not json"]);
        assert_eq!(sent, "x ");
        assert_eq!(end, Ending::Text("<tool_call>not json".into()));
    }

    #[test]
    fn a_call_split_into_single_characters_is_held_back_whole() {
        let answer = "Sure. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let pieces: Vec<String> = answer.chars().map(String::from).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (sent, end) = stream(&pieces);
        assert_eq!(sent, "Sure. ");
        assert_eq!(
            end,
            Ending::Calls(vec![ParsedCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }])
        );
    }

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
