//! Templates: a registered [`TemplateRecord`] made executable.
//!
//! A declarative record renders as described on `TemplateRecord` (prefix or system prefix, then
//! per round the prompt, the answer and `chat_sep`, and `suffix` after the last answer). Template
//! strings may also use `{{BOS}}` and `{{EOS}}`, replaced by the tokenizer's `bos_token` and
//! `eos_token` (from tokenizer_config.json). The record's `options` select engine behaviour:
//!
//! | option | value | effect |
//! |---|---|---|
//! | `engine` | `"jinja"` | render the tokenizer's own `chat_template` (see [`crate::jinja`]) |
//! | `thinking` | `"qwen3"` | Qwen3 thinking blocks: `<think>` kept only after the last user query, an empty block before the final answer (never trained) |
//! | `enable_thinking` | bool (default true) | when false, the generation prompt ends with an empty think block |
//! | `tool_prompt` | string with `{{QUERY}}` | how a run of tool results is wrapped (default: `prompt`) |
//! | `strip_content` | bool | strip whitespace around every message's content (Llama-3 templates `trim`) |
//! | `system_preamble` | string, may use `{{DATE}}` | text put before the system message and a blank line, so a system block is always written (Llama-3.2's knowledge/today dates) |
//! | `date` | string | the `{{DATE}}` value (default: today, as `26 Jul 2024`) |
//!
//! Tools (`tools` in the row) are written by the record's `tool_format` (`hermes`, `react`;
//! `react` when the record names none) into the system text; assistant `tool_calls` and `tool`
//! results are written by the same format.

use std::sync::Arc;

use swift_plugin_api::{Message, StandardRow, TemplateRecord};

use crate::jinja::JinjaTemplate;
use crate::tokenizer::Tokenizer;
use crate::tools::ToolFormat;
use crate::TemplateError;

/// What a piece of rendered text is, which decides whether and how it is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// Template text and system/user/tool content: not trained (except with loss scale `all`).
    Prompt,
    /// Assistant text: content, reasoning, tool calls. `last`: the final assistant turn.
    Answer { last: bool },
    /// Template text that closes an assistant turn (`chat_sep`, `suffix`): trained with it.
    EndOfTurn { last: bool },
    /// An empty `<think>\n\n</think>\n\n` block before an answer: never trained.
    EmptyThink,
}

/// One run of rendered text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub kind: PieceKind,
}

impl Piece {
    pub(crate) fn new(text: impl Into<String>, kind: PieceKind) -> Self {
        Self {
            text: text.into(),
            kind,
        }
    }
}

/// Per-call rendering choices.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Render an inference prompt: drop a final assistant answer, end with the assistant header.
    pub generation_prompt: bool,
    /// Replace the row's system message (and the template's default system).
    pub system: Option<String>,
    /// Override the template's `enable_thinking` (qwen3, jinja).
    pub enable_thinking: Option<bool>,
}

/// The empty thinking block Qwen3 writes before an answer without reasoning.
pub const EMPTY_THINK: &str = "<think>\n\n</think>\n\n";

#[derive(Debug, Clone)]
struct Declarative {
    rec: TemplateRecord,
    tool_format: ToolFormat,
    tool_prompt: Option<String>,
    qwen3_thinking: bool,
    enable_thinking: bool,
    strip_content: bool,
    system_preamble: Option<String>,
    date: Option<String>,
}

#[derive(Debug, Clone)]
enum Engine {
    Declarative(Box<Declarative>),
    /// The tokenizer's chat_template; `None` until bound to a tokenizer.
    Jinja {
        compiled: Option<Arc<JinjaTemplate>>,
        enable_thinking: Option<bool>,
    },
}

/// An executable template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The record's name (or `jinja`).
    pub name: String,
    /// Strings that end generation besides EOS.
    pub stop_words: Vec<String>,
    /// How `<image>`, `<ref-object>` and `<bbox>` tags are written (crate::vision).
    pub vision: crate::vision::VisionOptions,
    engine: Engine,
}

impl Template {
    /// Builds a template from a registered record, checking its options.
    pub fn from_record(rec: &TemplateRecord) -> Result<Self, TemplateError> {
        let bad = |option: &str, reason: &str| TemplateError::BadOption {
            template: rec.name.clone(),
            option: option.into(),
            reason: reason.into(),
        };
        let mut qwen3_thinking = false;
        let mut enable_thinking = true;
        let mut strip_content = false;
        let mut tool_prompt = None;
        let mut system_preamble = None;
        let mut date = None;
        let mut jinja = false;
        let mut vision = crate::vision::VisionOptions::default();
        for (key, value) in &rec.options {
            let as_str = || {
                value
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| bad(key, "must be a string"))
            };
            let as_bool = || {
                value
                    .as_bool()
                    .ok_or_else(|| bad(key, "must be true or false"))
            };
            match key.as_str() {
                "engine" => match value.as_str() {
                    Some("jinja") => jinja = true,
                    Some("declarative") => {}
                    _ => return Err(bad(key, "must be \"jinja\" or \"declarative\"")),
                },
                "thinking" => match value.as_str() {
                    Some("qwen3") => qwen3_thinking = true,
                    Some("none") => {}
                    _ => return Err(bad(key, "must be \"qwen3\" or \"none\"")),
                },
                "enable_thinking" => enable_thinking = as_bool()?,
                "strip_content" => strip_content = as_bool()?,
                "tool_prompt" => {
                    let s = as_str()?;
                    if !s.contains("{{QUERY}}") {
                        return Err(bad(key, "must contain {{QUERY}}"));
                    }
                    tool_prompt = Some(s);
                }
                "system_preamble" => system_preamble = Some(as_str()?),
                "date" => date = Some(as_str()?),
                other => match vision.set(other, value) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(bad(
                            key,
                            "is unknown; known: engine, thinking, enable_thinking, strip_content, tool_prompt, \
                             system_preamble, date, image, ref_format, bbox_format, norm_bbox",
                        ))
                    }
                    Err(reason) => return Err(bad(key, &reason)),
                },
            }
        }
        if jinja {
            return Ok(Self {
                name: rec.name.clone(),
                stop_words: rec.stop_words.clone(),
                vision,
                engine: Engine::Jinja {
                    compiled: None,
                    enable_thinking: rec.options.get("enable_thinking").and_then(|v| v.as_bool()),
                },
            });
        }
        let tool_format = match rec.tool_format.as_deref() {
            None => ToolFormat::React,
            Some(f) => ToolFormat::parse(f).ok_or_else(|| TemplateError::UnknownToolFormat {
                template: rec.name.clone(),
                format: f.into(),
            })?,
        };
        if !rec.prompt.contains("{{QUERY}}") {
            return Err(bad("prompt", "must contain {{QUERY}}"));
        }
        if let Some(sp) = &rec.system_prefix {
            if !sp.contains("{{SYSTEM}}") {
                return Err(bad("system_prefix", "must contain {{SYSTEM}}"));
            }
        }
        Ok(Self {
            name: rec.name.clone(),
            stop_words: rec.stop_words.clone(),
            vision,
            engine: Engine::Declarative(Box::new(Declarative {
                rec: rec.clone(),
                tool_format,
                tool_prompt,
                qwen3_thinking,
                enable_thinking,
                strip_content,
                system_preamble,
                date,
            })),
        })
    }

    /// A template that renders the given Hugging Face `chat_template` source.
    pub fn from_chat_template(name: &str, source: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            name: name.into(),
            stop_words: Vec::new(),
            vision: crate::vision::VisionOptions::default(),
            engine: Engine::Jinja {
                compiled: Some(Arc::new(JinjaTemplate::new(source)?)),
                enable_thinking: None,
            },
        })
    }

    /// Whether this template renders a chat_template (the `jinja` engine).
    pub fn is_jinja(&self) -> bool {
        matches!(self.engine, Engine::Jinja { .. })
    }

    /// Makes a `jinja` template concrete with the tokenizer's chat_template (no-op otherwise).
    pub fn bind(mut self, tok: &Tokenizer) -> Result<Self, TemplateError> {
        if let Engine::Jinja {
            compiled: compiled @ None,
            ..
        } = &mut self.engine
        {
            let source =
                tok.chat_template
                    .as_deref()
                    .ok_or_else(|| TemplateError::NoChatTemplate {
                        what: tok.path.display().to_string(),
                    })?;
            *compiled = Some(Arc::new(JinjaTemplate::new(source)?));
        }
        Ok(self)
    }

    /// Renders a row into pieces of text, each marked with what it is.
    pub fn render(
        &self,
        row: &StandardRow,
        opts: &RenderOptions,
        tok: &Tokenizer,
    ) -> Result<Vec<Piece>, TemplateError> {
        match &self.engine {
            Engine::Declarative(d) => d.render(row, opts, tok),
            Engine::Jinja {
                compiled,
                enable_thinking,
            } => {
                let j = match compiled {
                    Some(j) => j.clone(),
                    None => self.clone().bind(tok)?.jinja_arc(),
                };
                let mut opts = opts.clone();
                opts.enable_thinking = opts.enable_thinking.or(*enable_thinking);
                j.render_pieces(row, &opts, tok)
            }
        }
    }

    fn jinja_arc(&self) -> Arc<JinjaTemplate> {
        match &self.engine {
            Engine::Jinja {
                compiled: Some(j), ..
            } => j.clone(),
            _ => unreachable!("bind() compiles jinja templates"),
        }
    }
}

/// Replaces `{{BOS}}` / `{{EOS}}` with the tokenizer's token strings.
fn fill_tokens(s: &str, template: &str, tok: &Tokenizer) -> Result<String, TemplateError> {
    let mut out = s.to_string();
    for (placeholder, token, value) in [
        ("{{BOS}}", "bos_token", &tok.bos_token),
        ("{{EOS}}", "eos_token", &tok.eos_token),
    ] {
        if out.contains(placeholder) {
            let v = value
                .as_deref()
                .ok_or_else(|| TemplateError::MissingSpecialToken {
                    template: template.into(),
                    placeholder,
                    token,
                })?;
            out = out.replace(placeholder, v);
        }
    }
    Ok(out)
}

/// Qwen3's split of an assistant content into (reasoning, answer), as its chat_template does.
fn split_think(content: &str) -> (String, String) {
    match content.find("</think>") {
        Some(_) => {
            let parts: Vec<&str> = content.split("</think>").collect();
            let answer = parts[parts.len() - 1].trim_start_matches('\n').to_string();
            let before = parts[0].trim_end_matches('\n');
            let reasoning = before
                .rsplit("<think>")
                .next()
                .unwrap_or("")
                .trim_start_matches('\n')
                .to_string();
            (reasoning, answer)
        }
        None => (String::new(), content.to_string()),
    }
}

fn is_tool_response_text(s: &str) -> bool {
    s.starts_with("<tool_response>") && s.ends_with("</tool_response>")
}

impl Declarative {
    fn render(
        &self,
        row: &StandardRow,
        opts: &RenderOptions,
        tok: &Tokenizer,
    ) -> Result<Vec<Piece>, TemplateError> {
        let rec = &self.rec;
        let name = rec.name.as_str();
        let fill = |s: &str| fill_tokens(s, name, tok);
        let mut msgs: Vec<Message> = row.messages.clone();
        if msgs.is_empty() {
            return Err(TemplateError::EmptyRow);
        }
        let mut system: Option<String> = None;
        if msgs[0].role == "system" {
            system = Some(msgs.remove(0).content);
        }
        if let Some(s) = &opts.system {
            system = Some(s.clone());
        }
        if system.is_none() {
            system = rec.default_system.clone();
        }
        if opts.generation_prompt && msgs.last().is_some_and(|m| m.role == "assistant") {
            msgs.pop();
        }
        if self.strip_content {
            for m in &mut msgs {
                m.content = m.content.trim().to_string();
            }
            system = system.map(|s| s.trim().to_string());
        }
        if let Some(tools) = row.tools.as_ref().filter(|t| !t.is_empty()) {
            system = Some(self.tool_format.system_text(system.as_deref(), tools));
        }
        if let Some(pre) = &self.system_preamble {
            let date = self.date.clone().unwrap_or_else(today);
            let pre = pre.replace("{{DATE}}", &date);
            system = Some(format!("{pre}\n\n{}", system.unwrap_or_default()));
        }

        let mut pieces = Vec::new();
        // A system with no system slot goes in front of the first query.
        let mut system_for_query: Option<String> = None;
        match (&system, &rec.system_prefix) {
            (Some(s), Some(sp)) => pieces.push(Piece::new(
                fill(sp)?.replace("{{SYSTEM}}", s),
                PieceKind::Prompt,
            )),
            (Some(s), None) => {
                pieces.push(Piece::new(fill(&rec.prefix)?, PieceKind::Prompt));
                system_for_query = Some(s.clone());
            }
            (None, _) => pieces.push(Piece::new(fill(&rec.prefix)?, PieceKind::Prompt)),
        }
        let prompt = fill(&rec.prompt)?;
        let tool_prompt = match &self.tool_prompt {
            Some(t) => fill(t)?,
            None => prompt.clone(),
        };
        let last_assistant = msgs.iter().rposition(|m| m.role == "assistant");
        let last_query = msgs
            .iter()
            .rposition(|m| m.role == "user" && !is_tool_response_text(&m.content))
            .unwrap_or(msgs.len().saturating_sub(1));
        let offset = usize::from(row.messages.first().is_some_and(|m| m.role == "system"));
        let conv_err = |i: usize, m: &Message, reason: &str| TemplateError::Conversation {
            index: i + offset,
            role: m.role.clone(),
            reason: reason.into(),
        };

        let mut i = 0;
        let mut prev_role = "";
        while i < msgs.len() {
            let m = &msgs[i];
            match m.role.as_str() {
                "user" | "tool" => {
                    if prev_role == "user" || (prev_role == "tool" && m.role == "user") {
                        return Err(conv_err(
                            i,
                            m,
                            "follows another query with no assistant turn between; merge them or insert an assistant turn",
                        ));
                    }
                    let text = if m.role == "user" {
                        let q = match system_for_query.take() {
                            Some(s) => format!("{s}\n\n{}", m.content),
                            None => m.content.clone(),
                        };
                        prompt.replacen("{{QUERY}}", &q, 1)
                    } else {
                        let end = msgs[i..]
                            .iter()
                            .position(|x| x.role != "tool")
                            .map_or(msgs.len(), |k| i + k);
                        let run: Vec<&Message> = msgs[i..end].iter().collect();
                        let text = tool_prompt.replacen(
                            "{{QUERY}}",
                            &self.tool_format.tool_results_text(&run),
                            1,
                        );
                        prev_role = "tool";
                        i = end;
                        pieces.push(Piece::new(text, PieceKind::Prompt));
                        continue;
                    };
                    pieces.push(Piece::new(text, PieceKind::Prompt));
                }
                "assistant" => {
                    if prev_role == "assistant" {
                        return Err(conv_err(i, m, "follows another assistant turn; merge them"));
                    }
                    let last = Some(i) == last_assistant;
                    let calls = m.tool_calls.as_deref().unwrap_or(&[]);
                    if self.qwen3_thinking {
                        let (reasoning, content) = split_think(&m.content);
                        let is_last_message = i + 1 == msgs.len();
                        if i > last_query && (is_last_message || !reasoning.is_empty()) {
                            let reasoning = reasoning.trim_matches('\n');
                            let body = self
                                .tool_format
                                .assistant_text(content.trim_start_matches('\n'), calls);
                            if reasoning.is_empty() {
                                pieces.push(Piece::new(EMPTY_THINK, PieceKind::EmptyThink));
                                pieces.push(Piece::new(body, PieceKind::Answer { last }));
                            } else {
                                pieces.push(Piece::new(
                                    format!("<think>\n{reasoning}\n</think>\n\n{body}"),
                                    PieceKind::Answer { last },
                                ));
                            }
                        } else {
                            let body = self.tool_format.assistant_text(&content, calls);
                            pieces.push(Piece::new(body, PieceKind::Answer { last }));
                        }
                    } else {
                        let body = self.tool_format.assistant_text(&m.content, calls);
                        pieces.push(Piece::new(body, PieceKind::Answer { last }));
                    }
                    if i + 1 < msgs.len() {
                        let sep = rec.chat_sep.as_deref().ok_or_else(|| {
                            conv_err(i, m, "this template has no chat_sep, so it cannot render more than one round")
                        })?;
                        pieces.push(Piece::new(fill(sep)?, PieceKind::EndOfTurn { last }));
                    } else {
                        pieces.push(Piece::new(
                            fill(&rec.suffix)?,
                            PieceKind::EndOfTurn { last },
                        ));
                    }
                }
                "system" => {
                    return Err(conv_err(
                        i,
                        m,
                        "a system message is only allowed as the first message",
                    ))
                }
                other => {
                    return Err(conv_err(
                        i,
                        m,
                        &format!(
                            "unknown role `{other}`; expected system, user, assistant or tool"
                        ),
                    ))
                }
            }
            prev_role = match m.role.as_str() {
                "user" => "user",
                _ => "assistant",
            };
            i += 1;
        }
        if opts.generation_prompt {
            let thinking = opts.enable_thinking.unwrap_or(self.enable_thinking);
            if self.qwen3_thinking && !thinking {
                pieces.push(Piece::new(EMPTY_THINK, PieceKind::Prompt));
            }
        }
        pieces.retain(|p| !p.text.is_empty());
        Ok(pieces)
    }
}

/// Today's date (UTC) as `26 Jul 2024`, the form Llama-3.2's template writes.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_date((secs / 86_400) as i64)
}

/// Days since 1970-01-01 as `DD Mon YYYY` (Howard Hinnant's civil_from_days).
pub(crate) fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{d:02} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_strftime() {
        assert_eq!(format_date(0), "01 Jan 1970");
        assert_eq!(format_date(19_930), "26 Jul 2024");
    }

    #[test]
    fn think_blocks_split_like_qwen3() {
        assert_eq!(
            split_think("<think>\nr\n</think>\n\nans"),
            ("r".into(), "ans".into())
        );
        assert_eq!(split_think("plain"), (String::new(), "plain".into()));
    }
}
