//! The `jinja` engine: renders a Hugging Face `chat_template` with minijinja (Python-compatible
//! string methods from minijinja-contrib's pycompat, `trim_blocks`/`lstrip_blocks` as
//! transformers sets them, `raise_exception`, `strftime_now`, and a `tojson` that writes JSON as
//! Python's `json.dumps` does), and still derives labels. Each render has a budget of work
//! ([`FUEL`]), so a `chat_template` that loops or allocates without end fails with an error.
//!
//! Labels come from rendering prefixes of the conversation and comparing them with the full
//! rendering R. For assistant message i:
//! * its span starts where `render(messages[..i], add_generation_prompt=true)` stops agreeing
//!   with R (after the assistant header);
//! * its span ends where `render(messages[..=i])` stops agreeing with R. When that render has
//!   text R lacks in the middle (Qwen3 adds a think block to a final answer), the rest of it is
//!   matched against R; when it has a trailer R lacks (Llama-3.0 always appends an assistant
//!   header), an added token that both share at the point of divergence is given back to the
//!   next message.
//!
//! An empty `<think>\n\n</think>\n\n` at the start of a span is never trained.

use indexmap::IndexMap;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use swift_plugin_api::{Message, StandardRow};

use crate::template::{Piece, PieceKind, RenderOptions, EMPTY_THINK};
use crate::tokenizer::Tokenizer;
use crate::tools::{py_float, write_py_str};
use crate::TemplateError;

/// The work one render may do (minijinja's fuel: about one per instruction and one per 64 bytes
/// created): real templates use well under 1% of it on long conversations; it bounds the time
/// (a fraction of a second) and memory (about 128 MB) a hostile `chat_template` can take.
const FUEL: u64 = 2_000_000;

/// A compiled chat_template.
pub struct JinjaTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JinjaTemplate")
    }
}

impl JinjaTemplate {
    /// Compiles a chat_template source.
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::JinjaSyntax {
                reason: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_today(&fmt));
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| TemplateError::JinjaSyntax {
                reason: format!("{e:#}"),
            })?;
        Ok(Self { env })
    }

    /// Renders `messages` (and `tools`) as transformers' `apply_chat_template(tokenize=False)`
    /// does.
    pub fn render(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
        tok: &Tokenizer,
    ) -> Result<String, TemplateError> {
        let tmpl =
            self.env
                .get_template("chat_template")
                .map_err(|e| TemplateError::JinjaRender {
                    reason: e.to_string(),
                })?;
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| json_to_value(&serde_json::to_value(m).unwrap_or(serde_json::Value::Null)))
            .collect();
        let mut ctx: IndexMap<Value, Value> = IndexMap::new();
        ctx.insert("messages".into(), Value::from(msgs));
        let tools = tools.filter(|t| !t.is_empty());
        ctx.insert(
            "tools".into(),
            tools.map_or(Value::from(()), |t| {
                Value::from(t.iter().map(json_to_value).collect::<Vec<_>>())
            }),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert(
            "bos_token".into(),
            Value::from(tok.bos_token.clone().unwrap_or_default()),
        );
        ctx.insert(
            "eos_token".into(),
            Value::from(tok.eos_token.clone().unwrap_or_default()),
        );
        if let Some(t) = enable_thinking {
            ctx.insert("enable_thinking".into(), Value::from(t));
        }
        tmpl.render(Value::from_object(ctx))
            .map_err(|e| TemplateError::JinjaRender {
                reason: if e.kind() == ErrorKind::OutOfFuel {
                    format!(
                        "the chat_template did more work than a chat template needs (a budget of {FUEL} steps, about {} MB of output) and was stopped; check it for endless loops, or use a built-in template (--template)",
                        (FUEL * 64) >> 20
                    )
                } else {
                    format!("{e:#}")
                },
            })
    }

    /// Renders a row and marks its assistant spans (see the module documentation).
    pub fn render_pieces(
        &self,
        row: &StandardRow,
        opts: &RenderOptions,
        tok: &Tokenizer,
    ) -> Result<Vec<Piece>, TemplateError> {
        let mut msgs = row.messages.clone();
        if msgs.is_empty() {
            return Err(TemplateError::EmptyRow);
        }
        if let Some(s) = &opts.system {
            if msgs[0].role == "system" {
                msgs[0].content = s.clone();
            } else {
                msgs.insert(0, Message::new("system", s.clone()));
            }
        }
        if opts.generation_prompt && msgs.last().is_some_and(|m| m.role == "assistant") {
            msgs.pop();
        }
        let tools = row.tools.as_deref();
        let think = opts.enable_thinking;
        let full = self.render(&msgs, tools, opts.generation_prompt, think, tok)?;
        let added: Vec<String> = tok
            .inner()
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .collect();
        let last_assistant = msgs.iter().rposition(|m| m.role == "assistant");

        let mut pieces = Vec::new();
        let mut pos = 0;
        for (i, m) in msgs.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start = match self.render(&msgs[..i], tools, true, think, tok) {
                Ok(p) => snap(&full, common_prefix(&p, &full), &added),
                Err(_) if i == 0 => 0,
                Err(e) => return Err(e),
            };
            let end = if i + 1 == msgs.len() {
                // The final message: look for a trailer the template appends after it (Llama-3.0
                // always appends an assistant header) by letting a user message follow.
                let mut more = msgs.clone();
                more.push(Message::new("user", "\u{1}"));
                match self.render(&more, tools, false, think, tok) {
                    Ok(next) => final_end(&full, &next, &added),
                    Err(_) => full.len(),
                }
            } else {
                let upto = self.render(&msgs[..=i], tools, false, think, tok)?;
                snap(&full, span_end(&upto, &full, &added), &added)
            };
            if start < pos || end < start {
                return Err(TemplateError::JinjaLabels {
                    index: i,
                    reason: format!(
                        "its span {start}..{end} overlaps the previous turn, which ended at {pos}"
                    ),
                });
            }
            pieces.push(Piece::new(&full[pos..start], PieceKind::Prompt));
            let mut span = &full[start..end];
            if let Some(rest) = span.strip_prefix(EMPTY_THINK) {
                pieces.push(Piece::new(EMPTY_THINK, PieceKind::EmptyThink));
                span = rest;
            }
            pieces.push(Piece::new(
                span,
                PieceKind::Answer {
                    last: Some(i) == last_assistant,
                },
            ));
            pos = end;
        }
        pieces.push(Piece::new(&full[pos..], PieceKind::Prompt));
        pieces.retain(|p| !p.text.is_empty());
        Ok(pieces)
    }
}

/// Length of the common prefix of `a` and `b`, on a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// `p` moved back to the start of an added token of `text` that it falls inside (two renderings
/// that continue with different added tokens, `<think>` and `<tool_call>`, share their `<`).
fn snap(text: &str, p: usize, added: &[String]) -> usize {
    let mut best = p;
    for t in added.iter().filter(|t| t.len() > 1) {
        let lo = p.saturating_sub(t.len() - 1);
        let hi = (p + t.len() - 1).min(text.len());
        let (Some(lo), Some(hi)) = (floor_boundary(text, lo), ceil_boundary(text, hi)) else {
            continue;
        };
        if let Some(k) = text[lo..hi].find(t.as_str()) {
            let start = lo + k;
            if start < p && p < start + t.len() {
                best = best.min(start);
            }
        }
    }
    best
}

fn floor_boundary(s: &str, mut i: usize) -> Option<usize> {
    while !s.is_char_boundary(i) {
        i = i.checked_sub(1)?;
    }
    Some(i)
}

fn ceil_boundary(s: &str, mut i: usize) -> Option<usize> {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    Some(i)
}

/// Where the rendering `upto` (conversation up to an assistant turn) ends inside `full`.
fn span_end(upto: &str, full: &str, added: &[String]) -> usize {
    let p = common_prefix(upto, full);
    if p == upto.len() {
        return p;
    }
    // Text inserted in the middle: the longest suffix of the rest of `upto` that `full`
    // continues with (holding more than whitespace).
    let tail = &upto[p..];
    let rest = &full[p..];
    for (k, _) in tail.char_indices() {
        let s = &tail[k..];
        if !s.trim().is_empty() && rest.starts_with(s) {
            return p + s.len();
        }
    }
    // A trailer `full` lacks: give back an added token both share right before the divergence.
    if p < full.len() {
        return give_back_added(full, p, added);
    }
    p
}

/// Where the final message's span ends in `full`, given `next`: the same conversation with one
/// more message. Text of `full` that `next` has later (Qwen3's think block goes away once the
/// answer is not last) is no trailer; text it lacks is, minus an added token both share.
fn final_end(full: &str, next: &str, added: &[String]) -> usize {
    let p = common_prefix(full, next);
    if p == full.len() {
        return p;
    }
    let tail = &full[p..];
    let rest = &next[p..];
    for (k, _) in tail.char_indices() {
        let s = &tail[k..];
        if !s.trim().is_empty() && rest.starts_with(s) {
            return full.len();
        }
    }
    give_back_added(full, p, added)
}

/// `p`, moved back over an added token that ends there (it starts the next message).
fn give_back_added(text: &str, p: usize, added: &[String]) -> usize {
    added
        .iter()
        .filter(|t| !t.is_empty() && text[..p].ends_with(t.as_str()))
        .max_by_key(|t| t.len())
        .map_or(p, |t| p - t.len())
}

fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => {
            let map: IndexMap<Value, Value> = o
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect();
            Value::from_object(map)
        }
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let _: Option<Value> = kwargs.get("separators").ok().flatten();
    let _: Option<Value> = kwargs.get("sort_keys").ok().flatten();
    let _: Option<Value> = kwargs.get("ensure_ascii").ok().flatten();
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(v.as_i64().map(|n| n.max(0) as usize).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be a number",
            )
        })?),
    };
    let mut out = String::new();
    write_value(value, indent, 0, &mut out)?;
    Ok(Value::from(out))
}

fn write_value(
    v: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(v.clone()) {
                out.push_str(&py_float(f));
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => write_py_str(v.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_str(&k.to_string(), out);
                out.push_str(": ");
                write_value(&v.get_item(k)?, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_value(item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        _ => write_py_str(&v.to_string(), out),
    }
    Ok(())
}

/// `strftime_now(fmt)` for the directives chat templates use (%d %m %Y %y %b %B %%).
fn strftime_today(fmt: &str) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let date = crate::template::format_date((secs / 86_400) as i64); // "DD Mon YYYY"
    let mut parts = date.split(' ');
    let (d, mon, y) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const LONG: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mi = MONTHS.iter().position(|m| *m == mon).unwrap_or(0);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(d),
            Some('m') => out.push_str(&format!("{:02}", mi + 1)),
            Some('Y') => out.push_str(y),
            Some('y') => out.push_str(&y[y.len().saturating_sub(2)..]),
            Some('b') => out.push_str(mon),
            Some('B') => out.push_str(LONG[mi]),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{other} is not supported"),
                ))
            }
            None => out.push('%'),
        }
    }
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_matches_python() {
        let v = json_to_value(&serde_json::json!({"b": [1, 2.5, "é\n"], "a": null}));
        let s = tojson(&v, None, Kwargs::from_iter(Vec::<(&str, Value)>::new())).unwrap();
        assert_eq!(
            s.as_str().unwrap(),
            "{\"b\": [1, 2.5, \"é\\n\"], \"a\": null}"
        );
        let s = tojson(
            &v,
            Some(Value::from(2)),
            Kwargs::from_iter(Vec::<(&str, Value)>::new()),
        )
        .unwrap();
        assert_eq!(
            s.as_str().unwrap(),
            "{\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\"\n  ],\n  \"a\": null\n}"
        );
    }

    #[test]
    fn boundaries_snap_to_added_token_starts() {
        let added = vec!["<think>".to_string(), "<tool_call>".to_string()];
        let full = "head\n<tool_call>x";
        assert_eq!(snap(full, "head\n<".len(), &added), "head\n".len());
        assert_eq!(snap(full, "head\n".len(), &added), "head\n".len());
    }

    #[test]
    fn span_end_handles_inserted_text_and_trailers() {
        // Inserted think block: the answer text is found after it.
        let upto = "H<think>\n\n</think>\n\nans<e>\n";
        let full = "Hans<e>\n<u>next";
        assert_eq!(span_end(upto, full, &[]), "Hans<e>\n".len());
        // A trailer that shares an added token with the next message's header.
        let upto = "Hans<eot><sh>assistant";
        let full = "Hans<eot><sh>user";
        assert_eq!(
            span_end(upto, full, &["<sh>".into(), "<eot>".into()]),
            "Hans<eot>".len()
        );
    }
}
