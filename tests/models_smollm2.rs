//! The default model (SmolLM2-135M-Instruct, converted from its GGUF by `make setup`) is right,
//! not just self-consistent: its mean negative log-likelihood on the first 192 tokens of
//! LLaMA-Factory's wiki_demo.txt is 2.94 ± 0.01, its logits match transformers' (recorded in
//! tests/fixtures/models/smollm2_expected.json by tests/reference/make_tiny_models.py), and
//! `swift infer --template chatml --temperature 0` answers the capital question correctly.
//! Each test fails, saying how to install it, when the cache lacks the asset it needs.

use crate::common::*;
use serde_json::{json, Value};

/// transformers' numbers for SmolLM2, recorded by tests/reference/make_tiny_models.py.
fn smollm2_expected() -> Value {
    read_json(&fixture_file("models/smollm2_expected.json"))
}

#[test]
fn nll_on_wiki_demo_is_2_94() {
    let dir = smollm2();
    let wiki = llamafactory_data("wiki_demo.txt");
    let v = json_out(swift(&[
        "infer",
        "--model",
        dir.to_str().unwrap(),
        "--nll_file",
        wiki.to_str().unwrap(),
        "--nll_tokens",
        "192",
    ]));
    let nll = v["nll"].as_f64().unwrap();
    assert_eq!(v["tokens"], 192);
    assert!((nll - 2.94).abs() <= 0.01, "NLL {nll}");
    let reference = smollm2_expected()["nll"].as_f64().unwrap();
    assert!(
        (nll - reference).abs() <= 1e-3,
        "NLL {nll}, transformers {reference}"
    );
}

#[test]
fn logits_and_greedy_answer_match_transformers() {
    let dir = smollm2();
    let exp = smollm2_expected();
    let (logits, greedy) = infer_logits_env(
        &[],
        &["--model", dir.to_str().unwrap()],
        &ids_arg(&exp["prompt_ids"]),
        12,
    );
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
    let greedy: Vec<u64> = greedy
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
fn result_path_records_the_prompt_and_answer_token_ids() {
    // transformers' ChatML prompt ids and greedy answer (the recorded reference ends with EOS,
    // which `response_ids` leaves out, as `response` does).
    let dir = smollm2();
    let exp = smollm2_expected();
    let work = tempfile::tempdir().unwrap();
    let data = write_jsonl(
        &work.path().join("q.jsonl"),
        [json!({"messages": [{"role": "user", "content": "What is the capital of France?"}]})],
    );
    let out = work.path().join("out.jsonl");
    ok(swift(&[
        "infer",
        "--model",
        dir.to_str().unwrap(),
        "--template",
        "chatml",
        "--val_dataset",
        data.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--temperature",
        "0",
        "--max_new_tokens",
        "32",
    ]));
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["prompt_ids"], exp["prompt_ids"], "{}", rows[0]);
    let mut answer = exp["greedy_ids"].as_array().unwrap().clone();
    assert_eq!(answer.pop(), Some(json!(2)), "the reference ends with EOS");
    assert_eq!(rows[0]["response_ids"], Value::Array(answer), "{}", rows[0]);
    assert_eq!(rows[0]["response"], "The capital of France is Paris.");
    assert_eq!(rows[0]["prompt_tokens"], json!(16));
}

#[test]
fn chat_answers_the_capital_of_france() {
    let dir = smollm2();
    let out = swift_input(
        &[
            "infer",
            "--model",
            dir.to_str().unwrap(),
            "--template",
            "chatml",
            "--temperature",
            "0",
            "--max_new_tokens",
            "32",
        ],
        &[],
        "What is the capital of France?\n",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(">>> The capital of France is Paris.\n"),
        "{text}"
    );
}

#[test]
fn a_gguf_file_runs_directly() {
    let gguf = smollm2_gguf();
    // The converted folder is cached under $SWIFT_RS_CACHE/converted: use a scratch cache.
    let scratch = tempfile::tempdir().unwrap();
    let out = swift_input(
        &[
            "infer",
            "--model",
            gguf.to_str().unwrap(),
            "--template",
            "chatml",
            "--max_new_tokens",
            "16",
        ],
        &[("SWIFT_RS_CACHE", scratch.path().to_str().unwrap())],
        "What is the capital of France?\n",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("Paris"), "{text}");
    let converted = std::fs::read_dir(scratch.path().join("converted"))
        .unwrap()
        .count();
    assert_eq!(converted, 1, "one cached conversion");
}
