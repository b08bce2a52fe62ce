//! Text-only plugins: a `*.toml` or `*.json` file in a plugin directory that registers templates,
//! datasets and benchmarks with no compiler involved. The schema is
//! [`swift_plugin_api::records::TextPlugin`] (`[[template]]`, `[[dataset]]` and `[[benchmark]]`
//! tables; the README documents every field).

use std::path::Path;

use swift_plugin_api::records::TextPlugin;

/// Parses a text plugin file. Relative dataset paths are made absolute against the file's
/// directory, so the plugin's data can ship beside it.
pub fn parse_text_plugin(path: &Path) -> Result<TextPlugin, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut plugin: TextPlugin = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).map_err(|e| format!("invalid TOML plugin: {e}"))?,
        Some("json") => {
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON plugin: {e}"))?
        }
        _ => return Err("text plugins end in .toml or .json".to_string()),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let paths = plugin.datasets.iter_mut().map(|d| &mut d.path);
    for path in paths.chain(plugin.benchmarks.iter_mut().map(|b| &mut b.path)) {
        let p = Path::new(path.as_str());
        if !path.starts_with("asset:") && p.is_relative() {
            *path = dir.join(p).to_string_lossy().into_owned();
        }
    }
    if plugin.templates.is_empty() && plugin.datasets.is_empty() && plugin.benchmarks.is_empty() {
        return Err("declares no [[template]], no [[dataset]] and no [[benchmark]]".to_string());
    }
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_plugin_with_template_and_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.toml");
        std::fs::write(
            &path,
            r#"
[[template]]
name = "acme-chat"
description = "ACME's private chat format"
prompt = "<|user|>{{QUERY}}<|assistant|>"
suffix = "<|end|>"
stop_words = ["<|end|>"]

[[dataset]]
name = "acme-faq"
path = "faq.jsonl"
columns = { question = "query", answer = "response" }
"#,
        )
        .unwrap();
        let p = parse_text_plugin(&path).unwrap();
        assert_eq!(p.templates[0].name, "acme-chat");
        assert_eq!(p.templates[0].suffix, "<|end|>");
        assert_eq!(
            p.datasets[0].path,
            dir.path().join("faq.jsonl").to_string_lossy()
        );
        assert_eq!(p.datasets[0].preprocessor, "auto");
        assert_eq!(p.datasets[0].columns["question"], "query");
    }

    #[test]
    fn typos_are_errors_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(
            &path,
            r#"{"template": [{"name": "x", "prompt": "{{QUERY}}", "sufix": ""}]}"#,
        )
        .unwrap();
        let err = parse_text_plugin(&path).unwrap_err();
        assert!(err.contains("sufix"), "{err}");
    }
}
