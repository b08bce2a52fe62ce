//! The built-in dataset preprocessors and named datasets, registered through the plugin contract
//! (the same `register` path a third-party plugin uses).

use serde_json::{Map, Value};
use swift_plugin_api::prelude::*;

/// Alpaca rows: `instruction` (+ optional `input`) becomes the user turn, `output` the answer,
/// optional `system` and `history` ([[query, response], ...]) are kept.
struct Alpaca;

fn text<'a>(row: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match row.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("column `{key}` should be a string, found {other}")),
    }
}

impl DatasetPreprocessor for Alpaca {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let instruction = text(&row, "instruction")?.unwrap_or_default();
        let input = text(&row, "input")?.unwrap_or_default();
        let query = match (instruction.is_empty(), input.is_empty()) {
            (false, false) => format!("{instruction}\n{input}"),
            (false, true) => instruction.to_string(),
            (true, _) => input.to_string(),
        };
        if query.is_empty() {
            return Err("alpaca row has an empty `instruction` and `input`".into());
        }
        let mut messages = Vec::new();
        if let Some(system) = text(&row, "system")?.filter(|s| !s.is_empty()) {
            messages.push(Message::new("system", system));
        }
        if let Some(history) = row.get("history").and_then(Value::as_array) {
            for turn in history {
                let pair: Vec<&str> = turn.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let [q, a] = pair[..] else {
                    return Err("`history` turns are [query, response] string pairs".into());
                };
                messages.push(Message::new("user", q));
                messages.push(Message::new("assistant", a));
            }
        }
        messages.push(Message::new("user", query));
        if let Some(output) = text(&row, "output")? {
            messages.push(Message::new("assistant", output));
        }
        Ok(PreprocessOutcome::Row(StandardRow { messages, ..Default::default() }))
    }
}

/// LLaMA-Factory demo datasets that `make setup` fetches into the asset cache.
const DEMO_SETS: &[(&str, &str, &str)] = &[
    ("alpaca-en-demo", "alpaca_en_demo.json", "999 English alpaca instructions (LLaMA-Factory demo)"),
    ("alpaca-zh-demo", "alpaca_zh_demo.json", "1000 Chinese alpaca instructions (LLaMA-Factory demo)"),
    ("identity", "identity.json", "91 self-introduction rows with {{name}}/{{author}} placeholders"),
    ("dpo-en-demo", "dpo_en_demo.json", "300 preference pairs, sharegpt ranking format"),
    ("kto-en-demo", "kto_en_demo.json", "300 messages rows with a boolean KTO label"),
    ("glaive-toolcall-en-demo", "glaive_toolcall_en_demo.json", "300 tool-calling conversations (sharegpt)"),
];

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.preprocessor(
        PreprocessorRecord {
            name: "alpaca".into(),
            aliases: vec![],
            description: "instruction/input/output rows (query = instruction + \"\\n\" + input)".into(),
            detect_columns: vec!["instruction".into(), "output".into()],
            priority: 10,
        },
        Alpaca,
    )?;
    for (name, file, description) in DEMO_SETS {
        r.dataset(DatasetRecord {
            name: (*name).into(),
            aliases: Some(name.replace('-', "_")).filter(|a| a != name).into_iter().collect(),
            description: (*description).into(),
            path: format!("asset:llamafactory/data/{file}"),
            preprocessor: "auto".into(),
            columns: Default::default(),
        })?;
    }
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(row: Value) -> Result<PreprocessOutcome, String> {
        Alpaca.preprocess(row.as_object().unwrap().clone())
    }

    #[test]
    fn alpaca_joins_instruction_and_input() {
        let out = run(json!({"instruction": "Add", "input": "2 and 3", "output": "5"})).unwrap();
        let want = StandardRow {
            messages: vec![Message::new("user", "Add\n2 and 3"), Message::new("assistant", "5")],
            ..Default::default()
        };
        assert_eq!(out, PreprocessOutcome::Row(want));
    }

    #[test]
    fn alpaca_keeps_system_and_history() {
        let out = run(json!({"system": "S", "history": [["q1", "a1"]], "instruction": "q2", "output": "a2"})).unwrap();
        let PreprocessOutcome::Row(v) = out else { panic!() };
        let roles: Vec<_> = v.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    }

    #[test]
    fn alpaca_rejects_wrong_types_and_empty_queries() {
        assert!(run(json!({"instruction": 3, "output": "x"})).unwrap_err().contains("instruction"));
        assert!(run(json!({"instruction": "", "output": "x"})).unwrap_err().contains("empty"));
    }
}
