//! Files the tests write and read: JSON and JSON-lines, chat datasets in the messages format,
//! and a run folder's logging.jsonl and args.json.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// A JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A JSON-lines file, one value per line.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

/// Writes `text` to `path`; returns `path`.
pub fn write_text(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_path_buf()
}

/// Writes `rows` as JSON lines to `path`; returns `path`.
pub fn write_jsonl(path: &Path, rows: impl IntoIterator<Item = Value>) -> PathBuf {
    let text: String = rows.into_iter().map(|r| r.to_string() + "\n").collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_path_buf()
}

/// One user turn and its answer, in the messages format.
pub fn chat_row(query: &str, answer: &str) -> Value {
    json!({"messages": [
        {"role": "user", "content": query},
        {"role": "assistant", "content": answer}
    ]})
}

/// One user turn to answer.
pub fn user_row(query: &str) -> Value {
    json!({"messages": [{"role": "user", "content": query}]})
}

/// Writes one chat row per (query, answer) pair to `path`; returns `path`.
pub fn write_chat(path: &Path, pairs: &[(&str, &str)]) -> PathBuf {
    write_jsonl(path, pairs.iter().map(|(q, a)| chat_row(q, a)))
}

/// Five question/answer pairs of unequal lengths (the training sets of train_lora and
/// train_packing).
pub const CHAT_QA: [(&str, &str); 5] = [
    ("hi", "hello there"),
    ("what is two plus two", "four"),
    ("name a color", "blue is a color"),
    (
        "say a long sentence about the weather today please",
        "the weather today is sunny and warm with a light breeze from the west",
    ),
    ("ok", "fine"),
];

/// Ten chat rows of unequal lengths ([`CHAT_QA`] twice) in `dir/chat.jsonl`.
pub fn ten_chat_rows(dir: &Path) -> PathBuf {
    write_chat(&dir.join("chat.jsonl"), &[CHAT_QA, CHAT_QA].concat())
}

/// Every record of a run folder's logging.jsonl.
pub fn records(run: &Path) -> Vec<Value> {
    read_jsonl(&run.join("logging.jsonl"))
}

/// The records of a run that carry a `step`.
pub fn steps(run: &Path) -> Vec<Value> {
    records(run)
        .into_iter()
        .filter(|r| r.get("step").is_some())
        .collect()
}

/// The training records of a run: those with a `step` and a `loss`.
pub fn loss_steps(run: &Path) -> Vec<Value> {
    records(run)
        .into_iter()
        .filter(|r| r.get("step").is_some() && r.get("loss").is_some())
        .collect()
}

/// The training losses of a run, step by step.
pub fn step_losses(run: &Path) -> Vec<f64> {
    loss_steps(run).iter().map(|r| num(r, "loss")).collect()
}

/// A run folder's args.json.
pub fn args_json(run: &Path) -> Value {
    read_json(&run.join("args.json"))
}

/// The number `r[key]`, or a panic naming the key and the record.
pub fn num(r: &Value, key: &str) -> f64 {
    r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {r}"))
}

/// The run folder a training command wrote inside `--output_dir OUT`: the single
/// `v<N>-<YYYYmmdd-HHMMSS>` folder there (a panic if there is none or more than one).
pub fn run_folder(output_dir: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(output_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", output_dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.split_once('-'))
                    .is_some_and(|(n, stamp)| n.parse::<u64>().is_ok() && stamp.len() == 15)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{} should hold exactly one v<N>-<timestamp> run folder: {found:?}",
        output_dir.display()
    );
    found.remove(0)
}
