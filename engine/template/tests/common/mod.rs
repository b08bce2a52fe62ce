//! Shared helpers of the integration tests: the asset cache (the repository's
//! tests/common/setup.rs: a missing asset fails the test with the command that installs it),
//! LLaMA-Factory demo rows turned into standard rows (a small stand-in for the dataset crate's
//! preprocessors), and the built-in template records.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use swift_plugin_api::{FunctionCall, Message, StandardRow, TemplateRecord, ToolCall};

// Keep the built-in templates plugin linked so `inventory` finds it.
use swift_plugin_templates as _;

#[path = "../../../../tests/common/setup.rs"]
mod setup;
#[allow(unused_imports)]
pub use setup::{asset, llamafactory_data, tokenizer};

/// A built-in template record by name.
pub fn record(name: &str) -> TemplateRecord {
    let report = swift_registry::PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-ins load");
    report
        .registries
        .templates
        .resolve(name)
        .expect("template registered")
        .record
        .clone()
}

fn read_json(path: &PathBuf) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("json array")
}

/// alpaca rows: user = instruction (+ "\n" + input), assistant = output.
pub fn alpaca(path: &PathBuf) -> Vec<StandardRow> {
    read_json(path)
        .iter()
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut q = s("instruction");
            if !s("input").is_empty() {
                q = format!("{q}\n{}", s("input"));
            }
            StandardRow {
                messages: vec![
                    Message::new("user", q),
                    Message::new("assistant", s("output")),
                ],
                ..Default::default()
            }
        })
        .collect()
}

fn sharegpt_message(m: &Value) -> Message {
    let value = m
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match m.get("from").and_then(Value::as_str).unwrap_or("") {
        "human" => Message::new("user", value),
        "gpt" => Message::new("assistant", value),
        "system" => Message::new("system", value),
        "observation" => Message::new("tool", value),
        "function_call" => {
            let call: Value = serde_json::from_str(&value).expect("function_call json");
            let mut msg = Message::new("assistant", "");
            msg.tool_calls = Some(vec![ToolCall {
                id: None,
                kind: "function".into(),
                function: FunctionCall {
                    name: call["name"].as_str().unwrap_or("").into(),
                    arguments: call["arguments"].clone(),
                },
            }]);
            msg
        }
        other => panic!("unexpected sharegpt role {other}"),
    }
}

/// sharegpt rows (with `tools` as a JSON string), e.g. glaive-toolcall.
pub fn sharegpt(path: &PathBuf) -> Vec<StandardRow> {
    read_json(path)
        .iter()
        .map(|r| {
            let messages = r["conversations"]
                .as_array()
                .expect("conversations")
                .iter()
                .map(sharegpt_message)
                .collect();
            let tools = r
                .get("tools")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| serde_json::from_str::<Vec<Value>>(s).expect("tools json"));
            StandardRow {
                messages,
                tools,
                ..Default::default()
            }
        })
        .collect()
}

/// dpo rows with more than one message before the answer: conversations + chosen.
pub fn dpo_multi(path: &PathBuf) -> Vec<StandardRow> {
    read_json(path)
        .iter()
        .filter(|r| r["conversations"].as_array().is_some_and(|c| c.len() > 1))
        .map(|r| {
            let mut messages: Vec<Message> = r["conversations"]
                .as_array()
                .expect("conversations")
                .iter()
                .map(sharegpt_message)
                .collect();
            messages.push(sharegpt_message(&r["chosen"]));
            StandardRow {
                messages,
                ..Default::default()
            }
        })
        .collect()
}

/// The three row sets of the Must-show comparisons, by name.
pub fn must_show_rows() -> Vec<(&'static str, Vec<StandardRow>)> {
    vec![
        (
            "alpaca-en-demo",
            alpaca(&llamafactory_data("alpaca_en_demo.json")),
        ),
        (
            "glaive-toolcall-en-demo",
            sharegpt(&llamafactory_data("glaive_toolcall_en_demo.json")),
        ),
        (
            "dpo-en-demo (multi-turn)",
            dpo_multi(&llamafactory_data("dpo_en_demo.json")),
        ),
    ]
}
