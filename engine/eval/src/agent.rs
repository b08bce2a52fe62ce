//! Tool calling scored as EvalScope's `tool_bench` scores it (`evalscope/benchmarks/tool_bench/
//! utils.py`: the SWIFT paper's agent metrics), and LLaMA-Factory's tool-calling conversations
//! read into ToolBench steps.
//!
//! Each answer and each reference is one ToolBench step in text: a call is `Action: NAME` and
//! `Action Input: ARGS` (JSON), the final answer `Action: Finish` with `{"return_type":
//! "give_answer", "final_answer": TEXT}` ([`step_text`]: a model's first tool call, else its
//! text). Per sample ([`sample_metrics`], `calculate_metrics`): the plan (`call`, `finish` or
//! `give up`) matches (`plan_em`); for a reference call, the action's name matches (`act_em`)
//! and its arguments' F1 over the reference's keys (a key with the same value counts 1, with
//! another value 0.5; `avg_f1`, split into `easy_f1` for references without arguments and
//! `hard_f1` for the others); for a reference answer, ROUGE-L F of the answers as the `rouge`
//! package computes it ([`rouge_l_summary`]: sentences split at `.`, words at spaces, sets of
//! words); `hallu_rate` is 1 when the answer calls a function that was not offered. EvalScope
//! averages each metric over the samples it scores, with its quirks kept here: a metric that
//! does not apply to a sample (`act_em` and the F1s for a reference answer, `rouge_l` for a
//! reference call) counts 0 for it; a sample whose reference names a tool not offered is left
//! out. The tools are the row's and ToolBench's `Finish`.

use std::path::Path;

use serde_json::{json, Map, Value};
use swift_plugin_api::row::{FunctionCall, Message, ToolCall};

use crate::bench::EvalError;
use crate::rows::{file_err, EvalRow, ToolRow};

/// `parse_action`: the text after the last `Action:` (up to `Action Input:`) and after the last
/// `Action Input:`; `none` and `{}` when absent.
pub fn parse_action(text: &str) -> (String, String) {
    let input = match text.rfind("Action Input:") {
        Some(i) => text[i + "Action Input:".len()..].trim().to_string(),
        None => "{}".to_string(),
    };
    let action = match text.rfind("Action:") {
        Some(i) => {
            let a = text[i + "Action:".len()..].trim();
            match a.find("Action Input:") {
                Some(j) => a[..j].trim().to_string(),
                None => a.to_string(),
            }
        }
        None => "none".to_string(),
    };
    (action, input)
}

/// A step's plan, action, action input and final answer (`parse_output`).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `call`, `finish` or `give up`.
    pub plan: &'static str,
    /// None when the plan is `give up`.
    pub action: Option<String>,
    /// The action input as text (a call's), None for `give up`; a `finish`'s is parsed.
    pub input: Option<String>,
    pub answer: Option<String>,
}

/// `parse_output`.
pub fn parse_output(text: &str) -> Step {
    let (action, input) = parse_action(text);
    let give_up = Step {
        plan: "give up",
        action: None,
        input: None,
        answer: None,
    };
    if action != "Finish" {
        return Step {
            plan: "call",
            action: Some(action),
            input: Some(input),
            answer: None,
        };
    }
    let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(&input) else {
        return give_up;
    };
    match parsed.get("return_type") {
        Some(Value::String(r)) if r == "give_answer" => {}
        Some(_) => return give_up,
        None => return give_up,
    }
    let answer = match parsed.get("final_answer") {
        Some(a) => {
            let s = py_str(a);
            if ["", ".", ","].contains(&s.trim()) {
                "None".to_string()
            } else {
                s
            }
        }
        None => "None".to_string(),
    };
    Step {
        plan: "finish",
        action: Some(action),
        input: Some(Value::Object(parsed).to_string()),
        answer: Some(answer),
    }
}

/// Python's `str()` of a JSON value, for the values final answers hold.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// Python's `==` on values `json.loads` returns (`1 == 1.0`, `True == 1`).
fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// The argument F1s of one sample whose actions match (`evaluate_action_input_f1` on one pair):
/// (easy, hard, f1), each None where EvalScope appends nothing.
fn input_f1(reference: &str, candidate: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Ok(r) = serde_json::from_str::<Value>(reference) else {
        return (None, None, None);
    };
    let empty_ref = r.as_object().is_some_and(|o| o.is_empty());
    let failed = || {
        if empty_ref {
            (Some(0.0), None, Some(0.0))
        } else {
            (None, Some(0.0), Some(0.0))
        }
    };
    let Ok(c) = serde_json::from_str::<Value>(candidate) else {
        return failed();
    };
    if empty_ref {
        let empty_c = c.as_object().is_some_and(|o| o.is_empty());
        let v = if empty_c { 1.0 } else { 0.0 };
        return (Some(v), None, Some(v));
    }
    // `ref.items()` on a non-object, `cand.keys()` on a non-object: Python raises.
    let (Some(r), Some(c)) = (r.as_object(), c.as_object()) else {
        return failed();
    };
    let (mut full, mut half) = (0.0, 0.0);
    for (k, v) in r {
        if let Some(w) = c.get(k) {
            if py_eq(w, v) {
                full += 1.0;
            } else {
                half += 1.0;
            }
        }
    }
    let recall = (0.5 * half + full) / (r.len() as f64 + 1e-30);
    let precision = (0.5 * half + full) / (c.len() as f64 + 1e-30);
    if recall + precision == 0.0 {
        // ZeroDivisionError, caught.
        return failed();
    }
    let f = 2.0 * recall * precision / (recall + precision);
    (None, Some(f), Some(f))
}

/// ROUGE-L F of `hyp` against `reference` as the `rouge` package's `Rouge().get_scores`
/// computes it (`rouge_l_summary_level`, exclusive): sentences at `.`, words at single spaces
/// after collapsing whitespace, the union of the words of each sentence pair's reconstructed
/// LCS over the distinct words of each side. None where the package raises (no sentence).
pub fn rouge_l_summary(hyp: &str, reference: &str) -> Option<f64> {
    let sentences = |t: &str| -> Vec<Vec<String>> {
        t.split('.')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split(' ')
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    };
    let (h, r) = (sentences(hyp), sentences(reference));
    if h.is_empty() || r.is_empty() {
        return None;
    }
    let distinct = |s: &[Vec<String>]| {
        s.iter()
            .flatten()
            .collect::<std::collections::HashSet<_>>()
            .len() as f64
    };
    let (m, n) = (distinct(&r), distinct(&h));
    let mut union: std::collections::HashSet<String> = Default::default();
    for rs in &r {
        for hs in &h {
            union.extend(recon_lcs(rs, hs));
        }
    }
    let llcs = union.len() as f64;
    let (rl, pl) = (llcs / m, llcs / n);
    Some(2.0 * (pl * rl) / (pl + rl + 1e-8))
}

/// The words of `_recon_lcs(x, y)`: the LCS table's backtrack, preferring `i - 1` only when its
/// entry is strictly larger.
fn recon_lcs(x: &[String], y: &[String]) -> Vec<String> {
    let (n, m) = (x.len(), y.len());
    let mut t = vec![vec![0usize; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            t[i][j] = if x[i - 1] == y[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    let (mut i, mut j) = (n, m);
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.push(x[i - 1].clone());
            i -= 1;
            j -= 1;
        } else if t[i - 1][j] > t[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// One sample's metrics (`calculate_metrics`); None where EvalScope returns `{}` (the sample is
/// not scored).
pub fn sample_metrics(
    target: &str,
    prediction: &str,
    tools: &[String],
) -> Option<Map<String, Value>> {
    let r = parse_output(target);
    let p = parse_output(prediction);
    let offered = |a: &str| tools.iter().any(|t| t == a);
    if r.action.as_deref() == Some("invalid_hallucination_function_name") {
        return None;
    }
    if p.action.is_some() && r.action.as_deref() != Some("none") {
        match &r.action {
            Some(a) if offered(a) => {}
            _ => return None,
        }
    }
    let hallu = match &p.action {
        Some(a) if a != "none" && !offered(a) => 1.0,
        _ => 0.0,
    };
    let plan_em = if p.plan == r.plan { 1.0 } else { 0.0 };
    let (mut rouge, mut act_em) = (0.0, 0.0);
    let (mut easy, mut hard, mut f1) = (None, None, None);
    match r.plan {
        "give up" => {}
        "finish" => {
            let pred = p.answer.clone().unwrap_or_else(|| "none".into());
            let reference = r.answer.clone().unwrap_or_default();
            rouge = rouge_l_summary(&pred, &reference)?;
        }
        _ => {
            let ra = r.action.clone().unwrap_or_default();
            let pa = p.action.clone().unwrap_or_else(|| "none".into());
            act_em = if pa == ra { 1.0 } else { 0.0 };
            if pa != ra {
                (easy, hard, f1) = (Some(0.0), Some(0.0), Some(0.0));
            } else {
                let ri = r.input.clone().unwrap_or_default();
                let pi = p.input.clone().unwrap_or_else(|| "{}".into());
                (easy, hard, f1) = input_f1(&ri, &pi);
            }
        }
    }
    let mut m = Map::new();
    m.insert("rouge_l".into(), json!(rouge));
    m.insert("plan_em".into(), json!(plan_em));
    m.insert("act_em".into(), json!(act_em));
    m.insert("easy_f1".into(), json!(easy.unwrap_or(0.0)));
    m.insert("hard_f1".into(), json!(hard.unwrap_or(0.0)));
    m.insert("avg_f1".into(), json!(f1.unwrap_or(0.0)));
    m.insert("hallu_rate".into(), json!(hallu));
    Some(m)
}

/// A ToolBench step from an assistant turn: its first tool call, else its text as the final
/// answer.
pub fn step_text(content: &str, calls: &[ToolCall]) -> String {
    match calls.first() {
        Some(c) => {
            let args = match &c.function.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("Action: {}\nAction Input: {args}", c.function.name)
        }
        None => format!(
            "Action: Finish\nAction Input: {}",
            json!({"return_type": "give_answer", "final_answer": content})
        ),
    }
}

/// LLaMA-Factory's tool-calling conversations (a JSON array or JSON lines): one [`ToolRow`] per
/// assistant turn, numbered by the row (1-based).
pub fn read_tool_rows(path: &Path) -> Result<Vec<(u64, EvalRow)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let rows: Vec<(u64, Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| file_err(path, format!("not a JSON array of rows: {e}")))?;
        all.into_iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, v))
            .collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line).map_err(|e| EvalError::Row {
                path: path.to_path_buf(),
                line: i as u64 + 1,
                reason: format!("not a JSON object: {e}"),
            })?;
            out.push((i as u64 + 1, v));
        }
        out
    };
    let mut out = Vec::new();
    for (line, v) in rows {
        let steps = tool_steps(&v).map_err(|reason| EvalError::Row {
            path: path.to_path_buf(),
            line,
            reason,
        })?;
        out.extend(steps.into_iter().map(|s| (line, EvalRow::Tool(s))));
    }
    if out.is_empty() {
        return Err(file_err(path, "has no assistant turn to score"));
    }
    Ok(out)
}

/// The samples of one conversation.
pub fn tool_steps(v: &Value) -> Result<Vec<ToolRow>, String> {
    let turns = v
        .get("conversations")
        .and_then(Value::as_array)
        .ok_or("no `conversations` list")?;
    let tools: Vec<Value> = match v.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
        Some(Value::String(s)) => serde_json::from_str::<Vec<Value>>(s)
            .map_err(|e| format!("`tools` is not a JSON list: {e}"))?,
        Some(Value::Array(a)) => a.clone(),
        Some(other) => return Err(format!("`tools` should be a JSON list, found {other}")),
    };
    let tools: Vec<Value> = tools
        .into_iter()
        .map(|t| {
            if t.get("type").is_some() {
                t
            } else {
                json!({"type": "function", "function": t})
            }
        })
        .collect();
    let mut messages: Vec<Message> = Vec::new();
    let mut out = Vec::new();
    let mut last_call: Option<String> = None;
    for (i, t) in turns.iter().enumerate() {
        let from = t["from"]
            .as_str()
            .ok_or_else(|| format!("turn {i} has no `from`"))?;
        let value = t["value"]
            .as_str()
            .ok_or_else(|| format!("turn {i} has no `value` string"))?;
        match from {
            "human" | "user" => messages.push(Message::new("user", value)),
            "system" => messages.push(Message::new("system", value)),
            "observation" | "tool" => {
                let mut m = Message::new("tool", value);
                m.tool_call_id = last_call.clone();
                messages.push(m);
            }
            "gpt" | "assistant" | "function_call" => {
                let (msg, target) = if from == "function_call" {
                    let call: Value = serde_json::from_str(value)
                        .map_err(|e| format!("turn {i}: the function call is not JSON: {e}"))?;
                    let name = call["name"]
                        .as_str()
                        .ok_or_else(|| format!("turn {i}: the function call has no `name`"))?;
                    let id = format!("call_{i}");
                    last_call = Some(id.clone());
                    let call = ToolCall {
                        id: Some(id),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: name.to_string(),
                            arguments: call.get("arguments").cloned().unwrap_or(json!({})),
                        },
                    };
                    let target = step_text("", std::slice::from_ref(&call));
                    let mut m = Message::new("assistant", "");
                    m.tool_calls = Some(vec![call]);
                    (m, target)
                } else {
                    (Message::new("assistant", value), step_text(value, &[]))
                };
                if messages.iter().any(|m| m.role == "user") {
                    out.push(ToolRow {
                        messages: messages.clone(),
                        tools: tools.clone(),
                        target,
                    });
                }
                messages.push(msg);
            }
            other => return Err(format!("turn {i}: unknown `from` {other:?}")),
        }
    }
    Ok(out)
}

/// The benchmark's metrics: each one's mean over the scored samples (EvalScope's
/// `compute_dict_metric`), and how many were scored.
pub fn aggregate(samples: &[Option<Map<String, Value>>]) -> (Map<String, Value>, usize) {
    let scored: Vec<&Map<String, Value>> = samples.iter().flatten().collect();
    let mut out = Map::new();
    for k in [
        "plan_em",
        "act_em",
        "hallu_rate",
        "avg_f1",
        "easy_f1",
        "hard_f1",
        "rouge_l",
    ] {
        let sum: f64 = scored.iter().filter_map(|m| m[k].as_f64()).sum();
        out.insert(k.into(), json!(sum / scored.len().max(1) as f64));
    }
    (out, scored.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<String> {
        vec!["get_weather".into(), "search".into(), "Finish".into()]
    }

    fn m(target: &str, pred: &str) -> Map<String, Value> {
        sample_metrics(target, pred, &tools()).expect("scored")
    }

    fn f(m: &Map<String, Value>, k: &str) -> f64 {
        m[k].as_f64().unwrap()
    }

    #[test]
    fn calls_are_scored_by_name_and_arguments() {
        let target = "Action: get_weather\nAction Input: {\"city\": \"Paris\", \"unit\": \"C\"}";
        // Same call, one argument right, one with another value, one extra key:
        // recall (1 + 0.5) / 2 = 0.75, precision 1.5 / 3 = 0.5, F1 2*0.75*0.5/1.25 = 0.6.
        let s = m(
            target,
            "Thought: hm\nAction: get_weather\nAction Input: {\"city\": \"Paris\", \"unit\": \"F\", \"x\": 1}",
        );
        assert_eq!(f(&s, "plan_em"), 1.0);
        assert_eq!(f(&s, "act_em"), 1.0);
        assert!((f(&s, "avg_f1") - 0.6).abs() < 1e-12);
        assert!((f(&s, "hard_f1") - 0.6).abs() < 1e-12);
        assert_eq!(f(&s, "easy_f1"), 0.0);
        assert_eq!(f(&s, "rouge_l"), 0.0);
        assert_eq!(f(&s, "hallu_rate"), 0.0);
        // Another offered function: the plan matches, the action does not, F1 0.
        let s = m(
            target,
            "Action: search\nAction Input: {\"city\": \"Paris\"}",
        );
        assert_eq!(
            (f(&s, "plan_em"), f(&s, "act_em"), f(&s, "avg_f1")),
            (1.0, 0.0, 0.0)
        );
        // A function that was not offered: a hallucination.
        let s = m(target, "Action: get_wether\nAction Input: {}");
        assert_eq!((f(&s, "hallu_rate"), f(&s, "act_em")), (1.0, 0.0));
        // 1 == 1.0 in Python: a full match.
        let s = m(
            "Action: search\nAction Input: {\"n\": 1}",
            "Action: search\nAction Input: {\"n\": 1.0}",
        );
        assert_eq!(f(&s, "avg_f1"), 1.0);
        // No arguments on either side: easy F1 1.
        let s = m("Action: search\nAction Input: {}", "Action: search");
        assert_eq!(
            (f(&s, "easy_f1"), f(&s, "avg_f1"), f(&s, "hard_f1")),
            (1.0, 1.0, 0.0)
        );
        // Arguments that are not JSON: 0, counted as hard.
        let s = m(target, "Action: get_weather\nAction Input: city=Paris");
        assert_eq!((f(&s, "avg_f1"), f(&s, "act_em")), (0.0, 1.0));
    }

    #[test]
    fn final_answers_are_scored_by_rouge_l() {
        let finish = |a: &str| step_text(a, &[]);
        // Reference words {the, cat, sat, on, mat} (5 distinct); prediction "the cat sat"
        // (3): LCS words {the, cat, sat}: r 3/5, p 3/3, F 2*0.6/1.6 = 0.75.
        let s = m(&finish("the cat sat on the mat"), &finish("the cat sat"));
        assert!((f(&s, "rouge_l") - 0.75).abs() < 1e-6, "{s:?}");
        assert_eq!(f(&s, "plan_em"), 1.0);
        // A reference answer: act_em and the F1s do not apply and count 0.
        assert_eq!((f(&s, "act_em"), f(&s, "avg_f1")), (0.0, 0.0));
        // Calling a tool instead of answering: plan 0, ROUGE of "none".
        let s = m(&finish("it is sunny"), "Action: search\nAction Input: {}");
        assert_eq!((f(&s, "plan_em"), f(&s, "rouge_l")), (0.0, 0.0));
        // Two sentences: union of each pair's LCS words. Reference "a b. c d" {a,b,c,d};
        // prediction "a c d" {a,c,d}: LCS words {a} with "a b", {c, d} with "c d": 3,
        // r 3/4, p 3/3, F 2*0.75/1.75.
        let rl = rouge_l_summary("a c d", "a b. c d").unwrap();
        assert!((rl - 2.0 * 0.75 / 1.75).abs() < 1e-6, "{rl}");
        // An empty answer becomes "None"; giving up is its own plan.
        assert_eq!(parse_output(&finish(" ")).answer.as_deref(), Some("None"));
        let up = "Action: Finish\nAction Input: {\"return_type\": \"give_up_and_restart\"}";
        assert_eq!(parse_output(up).plan, "give up");
        let s = m(up, up);
        assert_eq!((f(&s, "plan_em"), f(&s, "act_em")), (1.0, 0.0));
        // A reference naming a tool that was not offered is not scored (when the answer names
        // an action at all; one that gives up is).
        let other = "Action: other\nAction Input: {}";
        assert!(sample_metrics(other, "Action: search\nAction Input: {}", &tools()).is_none());
        assert!(sample_metrics(other, up, &tools()).is_some());
    }

    #[test]
    fn glaive_conversations_become_one_step_per_assistant_turn() {
        let v = json!({
            "conversations": [
                {"from": "human", "value": "weather in Paris?"},
                {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},
                {"from": "observation", "value": "{\"t\": 20}"},
                {"from": "gpt", "value": "It is 20 degrees."}
            ],
            "tools": "[{\"name\": \"get_weather\", \"description\": \"d\", \"parameters\": {}}]"
        });
        let steps = tool_steps(&v).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0].target,
            "Action: get_weather\nAction Input: {\"city\":\"Paris\"}"
        );
        assert_eq!(steps[0].messages.len(), 1);
        assert_eq!(steps[1].messages.len(), 3);
        assert_eq!(steps[1].messages[2].role, "tool");
        assert_eq!(steps[1].tool_names(), ["get_weather", "Finish"]);
        assert_eq!(steps[1].tools[0]["type"], "function");
        let (agg, n) = aggregate(&[
            sample_metrics(&steps[0].target, &steps[0].target, &steps[0].tool_names()),
            None,
        ]);
        assert_eq!(n, 1);
        assert_eq!(agg["act_em"], 1.0);
    }
}
