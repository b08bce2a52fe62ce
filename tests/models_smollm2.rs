//! The default model (SmolLM2-135M-Instruct, converted from its GGUF by `make setup`) is right,
//! not just self-consistent: its mean negative log-likelihood on the first 192 tokens of
//! LLaMA-Factory's wiki_demo.txt is 2.94 ± 0.01, its logits match transformers' (recorded in
//! tests/fixtures/models/smollm2_expected.json by tests/reference/make_tiny_models.py), and
//! `swift infer --template chatml --temperature 0` answers the capital question correctly.
//! Each test prints "skipped: ..." when the cache lacks the asset it needs.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn cache() -> PathBuf {
    std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/swift-rs")
        })
}

fn smollm() -> Option<PathBuf> {
    let dir = cache().join("models/SmolLM2-135M-Instruct");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        println!("skipped: {} is missing (run make setup)", dir.display());
        None
    }
}

fn expected() -> Value {
    let path = workspace_root().join("tests/fixtures/models/smollm2_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn nll_on_wiki_demo_is_2_94() {
    let Some(dir) = smollm() else { return };
    let wiki = cache().join("assets/llamafactory/data/wiki_demo.txt");
    if !wiki.is_file() {
        println!("skipped: {} is missing (run make setup)", wiki.display());
        return;
    }
    let out = ok(swift(&[
        "infer",
        "--model",
        dir.to_str().unwrap(),
        "--nll_file",
        wiki.to_str().unwrap(),
        "--nll_tokens",
        "192",
    ]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let nll = v["nll"].as_f64().unwrap();
    assert_eq!(v["tokens"], 192);
    assert!((nll - 2.94).abs() <= 0.01, "NLL {nll}");
    let reference = expected()["nll"].as_f64().unwrap();
    assert!(
        (nll - reference).abs() <= 1e-3,
        "NLL {nll}, transformers {reference}"
    );
}

#[test]
fn logits_and_greedy_answer_match_transformers() {
    let Some(dir) = smollm() else { return };
    let exp = expected();
    let ids: Vec<String> = exp["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    let out = ok(swift(&[
        "infer",
        "--model",
        dir.to_str().unwrap(),
        "--debug_input_ids",
        &ids.join(","),
        "--debug_greedy_tokens",
        "12",
    ]));
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    let logits: Vec<f64> = got["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let top_ids = exp["top_ids"].as_array().unwrap();
    let top = exp["top_logits"].as_array().unwrap();
    let scale = top[0].as_f64().unwrap().abs();
    for (id, want) in top_ids.iter().zip(top) {
        let (id, want) = (id.as_u64().unwrap() as usize, want.as_f64().unwrap());
        assert!(
            (logits[id] - want).abs() <= 1e-4 * scale.max(1.0),
            "logit of {id}: {} vs {want}",
            logits[id]
        );
    }
    let greedy: Vec<u64> = got["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = exp["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let n = want.len().min(greedy.len());
    assert_eq!(greedy[..n], want[..n]);
}

#[test]
fn chat_answers_the_capital_of_france() {
    let Some(dir) = smollm() else { return };
    let mut child = Command::new(swift_bin())
        .args([
            "infer",
            "--model",
            dir.to_str().unwrap(),
            "--template",
            "chatml",
            "--temperature",
            "0",
            "--max_new_tokens",
            "32",
        ])
        .env_remove("SWIFT_PLUGIN_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(">>> The capital of France is Paris.\n"),
        "{text}"
    );
}

#[test]
fn a_gguf_file_runs_directly() {
    let gguf = cache().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        println!("skipped: {} is missing (run make setup)", gguf.display());
        return;
    }
    // The converted folder is cached under $SWIFT_RS_CACHE/converted: use a scratch cache.
    let scratch = tempfile::tempdir().unwrap();
    let mut child = Command::new(swift_bin())
        .args([
            "infer",
            "--model",
            gguf.to_str().unwrap(),
            "--template",
            "chatml",
            "--max_new_tokens",
            "16",
        ])
        .env_remove("SWIFT_PLUGIN_PATH")
        .env("SWIFT_RS_CACHE", scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("Paris"), "{text}");
    let converted = std::fs::read_dir(scratch.path().join("converted"))
        .unwrap()
        .count();
    assert_eq!(converted, 1, "one cached conversion");
}
