//! Loss scale: which tokens are trained and with what weight.
//!
//! A loss-scale spec is one or more names joined with `+`:
//!
//! * at most one base strategy: `default` (every assistant turn, with its end-of-turn text),
//!   `last_round` (only the final assistant turn), `all` (every token, prompts included);
//!   `default` when none is named;
//! * any number of agent tables: `react`, `hermes`, `qwen`, or a path to a JSON file of the same
//!   shape. A table maps a pattern to weights, as ms-swift's loss-scale configs do:
//!   `"Action:": [2.0, 2.0]` gives the literal key weight 2 and the text after it (up to the next
//!   key) weight 2; `"<tool_call>.+?</tool_call>": [2.0]` gives every regex match weight 2.
//!   Tables apply inside trained assistant text only; text no table covers keeps weight 1, and a
//!   weight of 0 means "not trained" (label -100).

use std::path::Path;

use regex::Regex;

use crate::TemplateError;

/// Which turns a base strategy trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseStrategy {
    /// Every assistant turn.
    Default,
    /// Only the final assistant turn.
    LastRound,
    /// Every token.
    All,
}

#[derive(Debug, Clone)]
enum Rule {
    Key {
        key: String,
        key_weight: f32,
        content_weight: f32,
    },
    Pattern {
        re: Regex,
        weight: f32,
    },
}

/// One pattern -> weights table.
#[derive(Debug, Clone)]
pub struct AgentTable {
    pub name: String,
    rules: Vec<Rule>,
}

const REACT: &str = r#"{"Action:": [2.0, 2.0], "Action Input:": [2.0, 2.0], "Thought:": [1.0, 1.0],
 "Final Answer:": [1.0, 1.0], "Observation:": [2.0, 0.0]}"#;
const HERMES: &str = r#"{"<tool_call>.+?</tool_call>": [2.0]}"#;
const QWEN: &str = r#"{"✿FUNCTION✿:": [2.0, 2.0], "✿ARGS✿:": [2.0, 2.0], "✿RETURN✿:": [1.0, 1.0],
 "✿RESULT✿:": [2.0, 0.0]}"#;

impl AgentTable {
    /// Parses a table from its JSON text.
    pub fn from_json(name: &str, text: &str) -> Result<Self, String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for (pattern, weights) in map {
            let w: Vec<f32> = weights
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default();
            match w.as_slice() {
                [weight] => {
                    let re = Regex::new(&format!("(?s){pattern}"))
                        .map_err(|e| format!("pattern `{pattern}`: {e}"))?;
                    rules.push(Rule::Pattern {
                        re,
                        weight: *weight,
                    });
                }
                [k, c] => rules.push(Rule::Key {
                    key: pattern,
                    key_weight: *k,
                    content_weight: *c,
                }),
                _ => {
                    return Err(format!(
                        "`{pattern}`: expected one or two weights, got {weights}"
                    ))
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            rules,
        })
    }

    fn builtin(name: &str) -> Option<Self> {
        let text = match name {
            "react" => REACT,
            "hermes" => HERMES,
            "qwen" => QWEN,
            _ => return None,
        };
        Some(Self::from_json(name, text).expect("built-in loss-scale tables parse"))
    }

    /// Splits `text` into (piece, weight) runs; `None` marks text this table does not cover.
    fn split(&self, text: &str) -> Vec<(String, Option<f32>)> {
        let keys: Vec<(&str, f32, f32)> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Key {
                    key,
                    key_weight,
                    content_weight,
                } => Some((key.as_str(), *key_weight, *content_weight)),
                _ => None,
            })
            .collect();
        // Keys first: key text, then the content up to the next key.
        let mut out: Vec<(String, Option<f32>)> = Vec::new();
        if keys.is_empty() {
            out.push((text.to_string(), None));
        } else {
            let mut content_weight: Option<f32> = None;
            let mut start = 0;
            let mut i = 0;
            while i < text.len() {
                let found = keys
                    .iter()
                    .filter(|(k, _, _)| !k.is_empty() && text[i..].starts_with(k))
                    .max_by_key(|(k, _, _)| k.len());
                if let Some((k, kw, cw)) = found {
                    if start < i {
                        out.push((text[start..i].to_string(), content_weight));
                    }
                    out.push((k.to_string(), Some(*kw)));
                    content_weight = Some(*cw);
                    i += k.len();
                    start = i;
                } else {
                    i += text[i..].chars().next().map_or(1, char::len_utf8);
                }
            }
            if start < text.len() {
                out.push((text[start..].to_string(), content_weight));
            }
        }
        // Then patterns, inside what keys left uncovered.
        for rule in &self.rules {
            let Rule::Pattern { re, weight } = rule else {
                continue;
            };
            let mut next = Vec::new();
            for (piece, w) in out {
                if w.is_some() {
                    next.push((piece, w));
                    continue;
                }
                let mut last = 0;
                for m in re.find_iter(&piece) {
                    if m.start() > last {
                        next.push((piece[last..m.start()].to_string(), None));
                    }
                    next.push((m.as_str().to_string(), Some(*weight)));
                    last = m.end();
                }
                if last < piece.len() {
                    next.push((piece[last..].to_string(), None));
                }
            }
            out = next;
        }
        out.retain(|(p, _)| !p.is_empty());
        out
    }
}

/// A parsed loss-scale spec.
#[derive(Debug, Clone)]
pub struct LossScale {
    pub base: BaseStrategy,
    pub tables: Vec<AgentTable>,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            base: BaseStrategy::Default,
            tables: Vec::new(),
        }
    }
}

impl LossScale {
    /// Names a spec may use besides JSON file paths.
    pub const NAMES: [&'static str; 6] =
        ["default", "last_round", "all", "react", "hermes", "qwen"];

    /// Parses `default`, `last_round+react`, `hermes`, `my_table.json`, ...
    pub fn parse(spec: &str) -> Result<Self, TemplateError> {
        let mut ls = Self::default();
        let mut base_set = false;
        for part in spec.split('+').map(str::trim) {
            let base = match part {
                "default" => Some(BaseStrategy::Default),
                "last_round" => Some(BaseStrategy::LastRound),
                "all" => Some(BaseStrategy::All),
                _ => None,
            };
            if let Some(b) = base {
                if base_set && ls.base != b {
                    return Err(TemplateError::UnknownLossScale {
                        name: spec.into(),
                        known: "at most one of default, last_round, all".into(),
                    });
                }
                ls.base = b;
                base_set = true;
            } else if let Some(t) = AgentTable::builtin(part) {
                ls.tables.push(t);
            } else if part.ends_with(".json") {
                let path = Path::new(part);
                let text =
                    std::fs::read_to_string(path).map_err(|e| TemplateError::LossScaleFile {
                        path: path.into(),
                        reason: e.to_string(),
                    })?;
                let t = AgentTable::from_json(part, &text).map_err(|reason| {
                    TemplateError::LossScaleFile {
                        path: path.into(),
                        reason,
                    }
                })?;
                ls.tables.push(t);
            } else {
                return Err(TemplateError::UnknownLossScale {
                    name: part.into(),
                    known: Self::NAMES.join(", "),
                });
            }
        }
        Ok(ls)
    }

    /// Weighted runs of one trained assistant text (weight 1 where no table applies).
    pub fn split_answer(&self, text: &str) -> Vec<(String, f32)> {
        let mut runs: Vec<(String, Option<f32>)> = vec![(text.to_string(), None)];
        for t in &self.tables {
            let mut next = Vec::new();
            for (piece, w) in runs {
                if w.is_some() {
                    next.push((piece, w));
                } else {
                    next.extend(t.split(&piece));
                }
            }
            runs = next;
        }
        runs.into_iter()
            .map(|(p, w)| (p, w.unwrap_or(1.0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn react_keys_split_the_answer() {
        let ls = LossScale::parse("react").unwrap();
        let runs = ls.split_answer("Thought: go\nAction: f\nAction Input: {}\nObservation: 3");
        let want: Vec<(String, f32)> = vec![
            ("Thought:".into(), 1.0),
            (" go\n".into(), 1.0),
            ("Action:".into(), 2.0),
            (" f\n".into(), 2.0),
            ("Action Input:".into(), 2.0),
            (" {}\n".into(), 2.0),
            ("Observation:".into(), 2.0),
            (" 3".into(), 0.0),
        ];
        assert_eq!(runs, want);
    }

    #[test]
    fn hermes_pattern_weights_tool_calls() {
        let ls = LossScale::parse("last_round+hermes").unwrap();
        assert_eq!(ls.base, BaseStrategy::LastRound);
        let runs = ls.split_answer("ok\n<tool_call>\n{}\n</tool_call>");
        assert_eq!(
            runs,
            vec![
                ("ok\n".into(), 1.0),
                ("<tool_call>\n{}\n</tool_call>".into(), 2.0)
            ]
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let e = LossScale::parse("default+nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("last_round"), "{e}");
        assert!(LossScale::parse("all+last_round").is_err());
    }
}
