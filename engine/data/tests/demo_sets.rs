//! The real LLaMA-Factory demo files (fetched by `make setup`) through `auto`: every named demo
//! set opens, every row preprocesses, and the rows have the shape each file promises. Fails,
//! saying how to install it, when the asset directory is missing.

use std::collections::BTreeMap;

use swift_data::{open_dataset, DatasetOptions, SourcedRow};
use swift_plugin_datasets as _;
use swift_registry::{PluginLoader, Registries};

// The repository's one place that knows what `make setup` installs (std only).
#[allow(dead_code)]
#[path = "../../../tests/common/setup.rs"]
mod setup;

fn prepare() -> (Registries, DatasetOptions) {
    let opts = DatasetOptions {
        model_name: Some("Swifty".into()),
        model_author: Some("ACME".into()),
        ..Default::default()
    };
    // The folder `asset:` paths resolve against ($SWIFT_RS_CACHE/assets), checked to be there.
    setup::asset("llamafactory/data");
    (
        PluginLoader::new(vec![])
            .load(&[])
            .expect("built-ins load")
            .registries,
        opts,
    )
}

fn load(name: &str, regs: &Registries, opts: &DatasetOptions) -> Vec<SourcedRow> {
    let mut ds = open_dataset(name, regs, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let rows: Vec<SourcedRow> = ds
        .by_ref()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let s = ds.stats();
    assert_eq!((s.rows_bad, s.rows_dropped), (0, 0), "{name}: {s:?}");
    assert_eq!(s.rows_yielded as usize, rows.len());
    rows
}

fn roles(r: &SourcedRow) -> Vec<&str> {
    r.row.messages.iter().map(|m| m.role.as_str()).collect()
}

#[test]
fn alpaca_demo_sets() {
    let (regs, opts) = prepare();
    for (name, n) in [("alpaca-en-demo", 999), ("alpaca_zh_demo", 1000)] {
        let rows = load(name, &regs, &opts);
        assert_eq!(rows.len(), n, "{name}");
        assert!(
            rows.iter().all(|r| roles(r) == ["user", "assistant"]),
            "{name}"
        );
    }
    let rows = load("alpaca-en-demo", &regs, &opts);
    assert_eq!(rows[0].line, 2);
    assert_eq!(
        rows[0].row.messages[0].content,
        "Describe a process of making crepes."
    );
}

#[test]
fn identity_fills_name_and_author() {
    let (regs, opts) = prepare();
    let rows = load("identity", &regs, &opts);
    assert_eq!(rows.len(), 91);
    assert_eq!(
        rows[0].row.messages[1].content,
        "Hello! I am Swifty, an AI assistant developed by ACME. How can I assist you today?"
    );
    assert!(rows
        .iter()
        .all(|r| !r.row.messages[1].content.contains("{{")));
    let e = open_dataset("identity", &regs, &DatasetOptions::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("identity.json:2: the row contains `{{name}}`; pass --model_name"),
        "{e}"
    );
    let rows = load("v1-sft-demo", &regs, &opts);
    assert_eq!(rows.len(), 500);
    assert_eq!(
        rows[0].row.messages[1].content,
        "Hello! I am Swifty, an AI assistant developed by ACME. How can I assist you today?"
    );
    assert_eq!((rows[0].line, rows[499].line), (1, 500));
}

#[test]
fn dpo_demo_sets_are_preference_pairs() {
    let (regs, opts) = prepare();
    for name in ["dpo-en-demo", "dpo-zh-demo"] {
        let rows = load(name, &regs, &opts);
        assert_eq!(rows.len(), 300, "{name}");
        for r in &rows {
            assert_eq!(r.row.messages.last().unwrap().role, "assistant");
            assert!(
                r.row
                    .rejected_response
                    .as_deref()
                    .is_some_and(|x| !x.is_empty()),
                "{name}:{}",
                r.line
            );
            assert_eq!(r.row.rejected_messages, None);
        }
    }
    let rows = load("dpo-en-demo", &regs, &opts);
    let multi_turn = rows
        .iter()
        .filter(|r| roles(r).iter().filter(|x| **x == "user").count() > 1)
        .count();
    assert_eq!(
        multi_turn, 106,
        "rows of dpo_en_demo.json with 3, 5, 7, 9 or 13 turns in `conversations`"
    );
    assert!(rows[0].row.messages[0]
        .content
        .starts_with("Hi! I'd like to create a new language game"));
    assert!(rows[0].row.messages[1]
        .content
        .starts_with("That sounds like a fun and engaging idea!"));
    assert!(rows
        .iter()
        .any(|r| roles(r) == ["system", "user", "assistant"]));
    let rows = load("v1-dpo-demo", &regs, &opts);
    assert_eq!(rows.len(), 10);
    assert!(rows
        .iter()
        .all(|r| r.row.rejected_response.is_some() || r.row.rejected_messages.is_some()));
}

#[test]
fn kto_demo_has_labels() {
    let (regs, opts) = prepare();
    let rows = load("kto-en-demo", &regs, &opts);
    assert_eq!(rows.len(), 300);
    let mut labels = BTreeMap::new();
    for r in &rows {
        *labels.entry(r.row.label.expect("label")).or_insert(0) += 1;
    }
    assert_eq!(labels, BTreeMap::from([(false, 150), (true, 150)]));
}

#[test]
fn glaive_tool_calls() {
    let (regs, opts) = prepare();
    for name in ["glaive-toolcall-en-demo", "glaive-toolcall-zh-demo"] {
        let rows = load(name, &regs, &opts);
        assert_eq!(rows.len(), 300, "{name}");
        let with_calls: Vec<&SourcedRow> = rows
            .iter()
            .filter(|r| r.row.messages.iter().any(|m| m.tool_calls.is_some()))
            .collect();
        assert!(with_calls.len() > 100, "{name}: {}", with_calls.len());
        for r in &with_calls {
            for (i, m) in r.row.messages.iter().enumerate() {
                if m.role == "tool" {
                    let prev = &r.row.messages[i - 1];
                    assert!(
                        prev.tool_calls.is_some(),
                        "{name}:{} a tool result follows a call",
                        r.line
                    );
                    assert_eq!(
                        m.name.as_deref(),
                        Some(prev.tool_calls.as_ref().unwrap()[0].function.name.as_str())
                    );
                }
            }
        }
        for r in &rows {
            for t in r.row.tools.iter().flatten() {
                assert_eq!(t["type"], "function", "{name}:{}", r.line);
                assert!(t["function"]["name"].is_string());
            }
        }
    }
    let rows = load("glaive-toolcall-en-demo", &regs, &opts);
    let first = rows
        .iter()
        .find(|r| r.row.messages.iter().any(|m| m.tool_calls.is_some()))
        .unwrap();
    assert_eq!(
        roles(first)[..6],
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    let call = &first.row.messages[3].tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.name, "search_recipes");
    assert_eq!(
        call.function.arguments,
        serde_json::json!({"ingredients": ["chicken", "bell peppers", "rice"]})
    );
    // Tool schemas keep the key order of the file.
    let keys: Vec<&String> = first.row.tools.as_ref().unwrap()[0]["function"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["name", "description", "parameters"]);
}

#[test]
fn pretraining_text_sets() {
    let (regs, opts) = prepare();
    let rows = load("c4-demo", &regs, &opts);
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|r| roles(r) == ["assistant"]));
    let rows = load("wiki-demo", &regs, &opts);
    assert!(rows.len() >= 25, "{}", rows.len());
    assert!(rows[0].row.messages[0]
        .content
        .starts_with("Anarchism is a political philosophy"));
}

#[test]
fn multimodal_and_reasoning_sets() {
    let (regs, opts) = prepare();
    let rows = load("mllm-demo", &regs, &opts);
    for r in &rows {
        assert!(!r.row.images.is_empty());
        for img in &r.row.images {
            assert!(std::path::Path::new(img).is_file(), "{img} exists");
        }
    }
    let rows = load("reason-tool-use-demo", &regs, &opts);
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().any(|r| r
        .row
        .messages
        .iter()
        .any(|m| m.content.starts_with("<think>\n"))));
    assert!(rows.iter().any(|r| r
        .row
        .messages
        .iter()
        .any(|m| m.tool_calls.as_ref().is_some_and(|c| c.len() == 3))));
}

#[test]
fn sampling_a_demo_set() {
    let (regs, opts) = prepare();
    let rows = load("alpaca-en-demo#2000", &regs, &opts);
    assert_eq!(rows.len(), 2000);
    let rows = load("dpo-en-demo#7", &regs, &opts);
    assert_eq!(rows.len(), 7);
}
