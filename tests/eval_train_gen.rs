//! Generation benchmarks during training (`--eval_use_evalscope true --eval_dataset` a
//! general_qa file, `--eval_generation_config '{"max_tokens": 8}'`): at each evaluation step
//! the benchmark is answered greedily by the model as it is (LoRA on) and its ROUGE/BLEU logged
//! beside the step; each step's metrics and answers equal `swift eval --adapters
//! --max_new_tokens 8` of the checkpoint saved at that step (same limit).

use crate::common::*;
use serde_json::Value;

const QA: &str = "{\"query\": \"Say hi.\", \"response\": \"hi there\"}\n\
{\"query\": \"And again?\", \"response\": \"hello again\", \"history\": [[\"Say hi.\", \"hi\"]]}\n\
{\"query\": \"Count.\", \"response\": \"one two three\"}\n";

#[test]
fn a_generation_benchmark_during_training_equals_eval_of_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let qa = write_text(&dir.path().join("qa.jsonl"), QA);
    let qa_s = qa.display().to_string();
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let model = tiny().display().to_string();
    let pairs: Vec<(&str, &str)> = vec![("Say hi.", "hi there hi there"); 8];
    let data = write_chat(&dir.path().join("train.jsonl"), &pairs);
    let data_s = data.display().to_string();
    let args = [
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
        "5e-2",
        "--eval_steps",
        "2",
        "--save_steps",
        "2",
        "--eval_use_evalscope",
        "true",
        "--eval_dataset",
        &qa_s,
        "--eval_limit",
        "2",
        "--output_dir",
        &out_s,
    ];
    // An unknown generation setting is refused by name (before the model loads).
    let mut bad = args.to_vec();
    bad.extend([
        "--eval_generation_config",
        r#"{"max_tokens": 8, "beams": 2}"#,
    ]);
    assert_fails(swift(&bad), &["--eval_generation_config", "`beams`"]);
    let mut args = args.to_vec();
    args.extend(["--eval_generation_config", r#"{"max_tokens": 8}"#]);
    ok(swift1(&args));
    let run = run_folder(&out);
    let log = read_jsonl(&run.join("logging.jsonl"));
    let evals: Vec<&Value> = log
        .iter()
        .filter(|r| r.get("eval_qa_rouge-l").is_some())
        .collect();
    let steps: Vec<u64> = evals.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4], "{log:?}");
    assert!(
        run.join("images/eval_qa_rouge-l.png").is_file(),
        "a chart of the benchmark's metric"
    );
    for (s, logged) in steps.iter().zip(&evals) {
        let ckpt = run.join(format!("checkpoint-{s}"));
        let eval_out = dir.path().join(format!("eval-{s}"));
        ok(swift1(&[
            "eval",
            "--adapters",
            &ckpt.display().to_string(),
            "--eval_dataset",
            &qa_s,
            "--eval_limit",
            "2",
            "--max_new_tokens",
            "8",
            "--output_dir",
            &eval_out.display().to_string(),
        ]));
        let eval_run = run_folder(&eval_out);
        let report = read_json(&eval_run.join("report.json"));
        let metrics = report["benchmarks"][0]["metrics"].as_object().unwrap();
        assert!(metrics.contains_key("bleu-4") && metrics.contains_key("rouge-1"));
        for (k, v) in metrics {
            let (want, got) = (v.as_f64().unwrap(), num(logged, &format!("eval_qa_{k}")));
            assert!(
                (want - got).abs() < 1e-12,
                "step {s} {k}: logged {got}, swift eval {want}"
            );
        }
        let during = read_jsonl(&run.join(format!("eval/step-{s}/predictions/qa.jsonl")));
        let after = read_jsonl(&eval_run.join("predictions/qa.jsonl"));
        assert_eq!(during.len(), 2);
        for (d, a) in during.iter().zip(&after) {
            assert_eq!(d["prediction"], a["prediction"], "step {s}");
            assert_eq!(d["prompt"], a["prompt"]);
        }
    }
}
