//! `swift export --to_ollama true`: an Ollama `Modelfile` next to the GGUF file, whose
//! `TEMPLATE` (Go template syntax), `SYSTEM` and `PARAMETER stop` lines come from the model's
//! swift template.
//!
//! Any template (declarative or the tokenizer's jinja chat_template) is turned into Ollama's
//! form the same way: the swift template renders probe conversations (one turn, two turns, with
//! a system message, with an answer), and the pieces between the probes' marker texts are the
//! prefix, system prefix, user-turn text, separator and suffix. The result is checked by
//! re-assembling the probes from those pieces; a template that cannot be expressed this way is
//! an error. A default system message the template inserts becomes the `SYSTEM` line.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use swift_plugin_tensors::{Message, StandardRow};
use swift_template::{RenderOptions, Template, Tokenizer};

use crate::bundle::resolve_family;
use swift_registry::PluginSettings;

const SYS: &str = "SWIFTPROBESYSTEM";
const Q1: &str = "SWIFTPROBEQUERYONE";
const A1: &str = "SWIFTPROBEANSWERONE";
const Q2: &str = "SWIFTPROBEQUERYTWO";

/// The declarative pieces of a chat format, as the probes revealed them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPieces {
    /// Starts a conversation with no system message (may hold a default system message).
    pub prefix: String,
    /// Starts a conversation with a system message: (before the system text, after it).
    pub system: (String, String),
    /// One user turn: (before the query, after it, up to where the answer starts).
    pub user: (String, String),
    /// After an answer that another round follows.
    pub sep: String,
    /// After the final answer.
    pub suffix: String,
    /// The system message the template uses when a conversation has none.
    pub default_system: Option<String>,
    /// Whether message contents are stripped of surrounding whitespace (Llama-3).
    pub trim: bool,
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
        tool_calls: None,
        tool_call_id: None,
        name: None,
    }
}

fn render(
    t: &Template,
    tok: &Tokenizer,
    msgs: &[(&str, &str)],
    generation: bool,
) -> Result<String> {
    let row = StandardRow {
        messages: msgs.iter().map(|(r, c)| msg(r, c)).collect(),
        ..Default::default()
    };
    let opts = RenderOptions {
        generation_prompt: generation,
        ..Default::default()
    };
    let pieces = t.render(&row, &opts, tok)?;
    Ok(pieces.into_iter().map(|p| p.text).collect())
}

/// Splits `s` at the only occurrence of `marker`.
fn split1<'a>(s: &'a str, marker: &str, what: &str) -> Result<(&'a str, &'a str)> {
    let mut parts = s.split(marker);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Ok((a, b)),
        _ => bail!("the template does not render {what} once, as Ollama's template needs"),
    }
}

fn common_suffix_len(a: &str, b: &str) -> usize {
    let n = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum();
    n
}

/// Finds the pieces of `t` by rendering probe conversations.
pub fn probe(t: &Template, tok: &Tokenizer) -> Result<ChatPieces> {
    let r1 = render(t, tok, &[("user", Q1)], true)?;
    let (before1, after1) = split1(&r1, Q1, "a user message")?;
    let r2 = render(
        t,
        tok,
        &[("user", Q1), ("assistant", A1), ("user", Q2)],
        true,
    )?;
    let (_, rest) = split1(&r2, A1, "an answer")?;
    let (between, after2) = split1(rest, Q2, "a second user message")?;
    if after1 != after2 {
        bail!("the template ends the first and second user turns differently");
    }
    let r4 = render(t, tok, &[("user", Q1), ("assistant", A1)], false)?;
    let (_, suffix) = split1(&r4, A1, "a final answer")?;
    // The text between an answer and the next query is (separator, next user turn's start);
    // the user turn's start also ends the first render. Of the splits that fit, prefer the one
    // whose separator begins with the final answer's closing text (`<|im_end|>`), the natural
    // turn boundary; else the longest user-turn start.
    let k = common_suffix_len(before1, between);
    let split_after = |closing: &str| {
        (0..=k)
            .rev()
            .filter(|&n| between.is_char_boundary(between.len() - n))
            .find(|&n| !closing.is_empty() && between[..between.len() - n].starts_with(closing))
    };
    let mut fits = split_after(suffix)
        .or_else(|| split_after(suffix.trim()))
        .unwrap_or(k);
    // Line breaks that close a turn belong to the separator, not to the next turn's start.
    while let Some(c) = between[between.len() - fits..].chars().next() {
        if !c.is_whitespace() {
            break;
        }
        fits -= c.len_utf8();
    }
    let user_before = &before1[before1.len() - fits..];
    let prefix = &before1[..before1.len() - fits];
    let sep = &between[..between.len() - fits];
    let r3 = render(t, tok, &[("system", SYS), ("user", Q1)], true)?;
    let (sys_before, sys_rest) = split1(&r3, SYS, "a system message")?;
    let (sys_after_user, _) = split1(sys_rest, Q1, "a user message after a system message")?;
    let Some(sys_after) = sys_after_user.strip_suffix(user_before) else {
        bail!("the template's first user turn differs with and without a system message");
    };
    let default_system = prefix
        .strip_prefix(sys_before)
        .and_then(|p| p.strip_suffix(sys_after))
        .filter(|d| !d.is_empty())
        .map(String::from);
    let padded = render(t, tok, &[("user", &format!(" {Q1} "))], true)?;
    let trim = !padded.contains(&format!(" {Q1} "));
    let pieces = ChatPieces {
        prefix: prefix.into(),
        system: (sys_before.into(), sys_after.into()),
        user: (user_before.into(), after1.into()),
        sep: sep.into(),
        suffix: suffix.into(),
        default_system,
        trim,
    };
    // The pieces must reproduce the probes.
    let (ub, ua) = &pieces.user;
    let want2 = format!("{prefix}{ub}{Q1}{ua}{A1}{sep}{ub}{Q2}{ua}");
    let want3 = format!("{sys_before}{SYS}{sys_after}{ub}{Q1}{ua}");
    if want2 != r2 || want3 != r3 {
        bail!("the template is not a fixed per-turn format (its turns depend on their position)");
    }
    Ok(pieces)
}

/// Literal text inside a Go template: `{{` must come from an action.
fn go_literal(s: &str) -> String {
    s.replace("{{", "{{ \"{{\" }}")
}

/// The Ollama `TEMPLATE` body (Go template syntax over `.System` and `.Messages`).
pub fn ollama_template(p: &ChatPieces, strip_bos: Option<&str>) -> String {
    let strip = |s: &str| -> String {
        match strip_bos {
            Some(b) if !b.is_empty() => s.strip_prefix(b).unwrap_or(s).to_string(),
            _ => s.to_string(),
        }
    };
    let (sb, sa) = &p.system;
    let (ub, ua) = &p.user;
    format!(
        "{{{{ if .System }}}}{}{{{{ .System }}}}{}{{{{ else }}}}{}{{{{ end }}}}\
         {{{{ range .Messages }}}}{{{{ if eq .Role \"user\" }}}}{}{{{{ .Content }}}}{}\
         {{{{ else if eq .Role \"assistant\" }}}}{{{{ .Content }}}}{}{{{{ end }}}}{{{{ end }}}}",
        go_literal(&strip(sb)),
        go_literal(sa),
        go_literal(&strip(&p.prefix)),
        go_literal(ub),
        go_literal(ua),
        go_literal(&p.sep),
    )
}

/// Literal text inside a Jinja template, as a string expression: chat templates are rendered
/// with `trim_blocks` and `lstrip_blocks`, which would eat newlines and indentation next to
/// block tags if the text were written as is.
fn jinja_literal(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut out = String::from("{{ '");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push_str("' }}");
    out
}

/// A Hugging Face / llama.cpp `chat_template` (Jinja) with the same pieces, for GGUF files of
/// models whose swift template is not the tokenizer's own. The assistant header is part of each
/// user turn, so it is written whether or not `add_generation_prompt` is set.
pub fn jinja_template(p: &ChatPieces) -> String {
    let (sb, sa) = &p.system;
    let (ub, ua) = &p.user;
    let content = |v: &str| {
        if p.trim {
            format!("{{{{ {v}['content'] | trim }}}}")
        } else {
            format!("{{{{ {v}['content'] }}}}")
        }
    };
    format!(
        "{{% if messages[0]['role'] == 'system' %}}{}{}{}{{% else %}}{}{{% endif %}}\
         {{% for m in messages %}}{{% if m['role'] == 'user' %}}{}{}{}\
         {{% elif m['role'] == 'assistant' %}}{}{{% if loop.last %}}{}{{% else %}}{}{{% endif %}}\
         {{% endif %}}{{% endfor %}}",
        jinja_literal(sb),
        content("messages[0]"),
        jinja_literal(sa),
        jinja_literal(&p.prefix),
        jinja_literal(ub),
        content("m"),
        jinja_literal(ua),
        content("m"),
        jinja_literal(&p.suffix),
        jinja_literal(&p.sep),
    )
}

/// The chat template a GGUF file of `model` should carry for the swift template `name`, or
/// `None` when that is the tokenizer's own (`jinja`).
pub fn chat_template_for(
    model: &Path,
    name: &str,
    plugins: &PluginSettings,
) -> Result<Option<String>> {
    if name == "jinja" {
        return Ok(None);
    }
    let report = plugins.load()?;
    let record = &report.registries.templates.resolve(name)?.record;
    let tok = Tokenizer::from_dir(model)?;
    let t = Template::from_record(record)?.bind(&tok)?;
    let pieces = probe(&t, &tok)
        .with_context(|| format!("template `{name}` cannot be written as a GGUF chat template"))?;
    Ok(Some(jinja_template(&pieces)))
}

fn quoted_block(s: &str, what: &str) -> Result<String> {
    if s.contains("\"\"\"") {
        bail!("the {what} contains \"\"\", which a Modelfile cannot quote");
    }
    Ok(format!("\"\"\"{s}\"\"\""))
}

/// The whole Modelfile.
pub fn modelfile(
    gguf_file: &str,
    pieces: &ChatPieces,
    stop: &[String],
    strip_bos: Option<&str>,
) -> Result<String> {
    let mut out = format!("FROM ./{gguf_file}\n");
    out.push_str(&format!(
        "TEMPLATE {}\n",
        quoted_block(&ollama_template(pieces, strip_bos), "template")?
    ));
    if let Some(s) = &pieces.default_system {
        out.push_str(&format!("SYSTEM {}\n", quoted_block(s, "system message")?));
    }
    for s in stop {
        out.push_str(&format!("PARAMETER stop {}\n", serde_json::to_string(s)?));
    }
    Ok(out)
}

/// Writes `Modelfile` next to `gguf` for the model folder `model`; returns its path.
pub fn run(
    model: &Path,
    gguf: &Path,
    template: Option<&str>,
    plugins: &PluginSettings,
) -> Result<PathBuf> {
    let report = plugins.load()?;
    let regs = &report.registries;
    let config_path = model.join("config.json");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let tok = Tokenizer::from_dir(model)?;
    let recorded = config.get("swift_template").and_then(Value::as_str);
    let name = match template.or(recorded) {
        Some(t) => t.to_string(),
        None if tok.chat_template.is_some() => "jinja".into(),
        None => resolve_family(regs, &config, None)?.1.ok_or_else(|| {
            anyhow!(
                "{} has no chat template: pass --template NAME (`swift list templates`)",
                model.display()
            )
        })?,
    };
    let record = &regs.templates.resolve(&name)?.record;
    let t = Template::from_record(record)?.bind(&tok)?;
    let pieces = probe(&t, &tok)
        .with_context(|| format!("template `{name}` cannot be written as an Ollama TEMPLATE"))?;

    // llama.cpp adds BOS itself when the GGUF says so; the template must not add a second.
    let tc: Value = std::fs::read_to_string(model.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let strip_bos = match tc["add_bos_token"].as_bool() {
        Some(true) => tok.bos_token.as_deref(),
        _ => None,
    };
    let mut stop: Vec<String> = t.stop_words.clone();
    let suffix = pieces.suffix.trim();
    if !suffix.is_empty() {
        stop.push(suffix.to_string());
    }
    if let Some(e) = &tok.eos_token {
        stop.push(e.clone());
    }
    let mut seen = std::collections::HashSet::new();
    stop.retain(|s| !s.is_empty() && seen.insert(s.clone()));

    let file = gguf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = modelfile(&file, &pieces, &stop, strip_bos)?;
    let path = gguf.with_file_name("Modelfile");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!("wrote {} (template `{name}`)", path.display());
    Ok(path)
}
