//! Reward modelling end to end: `swift rlhf --rlhf_type rm` and `swift infer` scoring with its
//! checkpoints, on the tiny random models of tests/fixtures/models/ (each run takes a second).
//!
//! * The value head against transformers: the tiny llama as `LlamaForSequenceClassification`
//!   with a fixed `score` weight (config.json as transformers saved it, values recorded by
//!   tests/reference/reward_model.py): our scores of fixed chosen / rejected ids, in one padded
//!   batch and alone, equal transformers' within 1e-4, and so does TRL's Bradley-Terry loss of
//!   them. Training on top of that folder starts from its head.
//! * LoRA reward model: TRL's metric names are logged, the checkpoint holds the head as PEFT's
//!   `modules_to_save`, `swift infer` scores preference rows and plain rows with it, and peft
//!   loads it into `AutoModelForSequenceClassification` with no missing or unexpected keys and
//!   the same scores (the reference virtualenv is needed: the test fails saying how to install
//!   it when missing).
//! * Full reward model of an untied family (qwen2): a `Qwen2ForSequenceClassification` folder
//!   without an LM head, which transformers loads with no missing or unexpected keys and the
//!   same scores.
//! * Bad input is refused clearly.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// transformers' numbers for the tiny llama as a reward model (tests/reference/reward_model.py).
fn reference() -> Value {
    read_json(&workspace_root().join("tests/reference/reward_model.json"))
}

/// Sequences of ids as `1,2;3,4` (the form `--debug_input_ids` takes for a batch).
fn batch_arg(seqs: &[&Value]) -> String {
    seqs.iter()
        .map(|s| ids_arg(s))
        .collect::<Vec<_>>()
        .join(";")
}

/// `swift infer ARGS --debug_input_ids IDS`: the scores.
fn swift_scores(args: &[&str], ids: &str) -> Vec<f64> {
    let mut a = vec!["infer"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--debug_input_ids", ids]);
    floats(&json_out(swift(&a))["scores"])
}

fn log_sigmoid(x: f64) -> f64 {
    -(1.0 + (-x).exp()).ln()
}

/// The tiny llama as transformers saves a one-label `LlamaForSequenceClassification`: the
/// recorded config.json, the fixture's weights plus the recorded `score.weight`.
fn reward_folder(dir: &Path, reference: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    let src = tiny();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&reference["config"]).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let score: Vec<u8> = floats(&reference["score_weight"])
        .iter()
        .flat_map(|&x| (x as f32).to_le_bytes())
        .collect();
    let n = score.len() / 4;
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name.to_string(), v))
        .collect();
    views.push((
        "score.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, n], &score).unwrap(),
    ));
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// tests/reference/reward_model.py ARGS with the reference virtualenv.
fn run_python(python: &Path, args: &[&str]) -> Value {
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    run_reference(python, "reward_model.py", &args)
}

fn rm(model: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "rlhf",
        "--rlhf_type",
        "rm",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        demo("dpo-en-demo#8"),
        "--max_length",
        "96",
        "--truncation_strategy",
        "left",
        "--logging_steps",
        "1",
        "--output_dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(swift(&args))
}

/// Fixed sequences a checkpoint is scored on by swift and by transformers.
const PROBE: &str = "5,17,40,3,99,120,7;11,12,13,200,14,15,16";

#[test]
fn value_head_and_loss_match_transformers() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("llama-rm");
    reward_folder(&model, &reference);
    let m = model.to_str().unwrap();
    let (chosen, rejected): (Vec<&Value>, Vec<&Value>) = (
        reference["chosen_ids"].as_array().unwrap().iter().collect(),
        reference["rejected_ids"]
            .as_array()
            .unwrap()
            .iter()
            .collect(),
    );
    let all: Vec<&Value> = chosen.iter().chain(&rejected).copied().collect();
    let want: Vec<f64> = floats(&reference["rewards_chosen"])
        .into_iter()
        .chain(floats(&reference["rewards_rejected"]))
        .collect();
    // One padded batch (rows of 5 to 8 tokens), then each sequence alone.
    let batched = swift_scores(&["--model", m], &batch_arg(&all));
    assert_close(&batched, &want, 1e-4, "padded batch");
    for (s, w) in all.iter().zip(&want) {
        let alone = swift_scores(&["--model", m], &batch_arg(&[s]));
        assert_close(&alone, &[*w], 1e-4, "alone");
    }
    // TRL's RewardTrainer loss of our scores equals its loss of transformers' scores.
    let n = chosen.len();
    let margins: Vec<f64> = (0..n).map(|i| batched[i] - batched[n + i]).collect();
    let loss = -margins.iter().map(|&d| log_sigmoid(d)).sum::<f64>() / n as f64;
    assert!((loss - num(&reference, "loss")).abs() < 1e-4, "{loss}");
    let centre = (0..n)
        .map(|i| (batched[i] + batched[n + i]).powi(2))
        .sum::<f64>()
        / n as f64;
    let centred = loss + 0.01 * centre;
    assert!((centred - num(&reference, "loss_center_0.01")).abs() < 1e-4);

    // Training on top of a reward model starts from its head: with a learning rate of 0 the
    // checkpoint's head is the folder's.
    let run = dir.path().join("run");
    rm(&model, &run, &["--max_steps", "1", "--learning_rate", "0"]);
    let run = run_folder(&run);
    let ck = run.join("checkpoint-1");
    let again = swift_scores(&["--adapters", ck.to_str().unwrap()], &batch_arg(&all));
    assert_close(&again, &want, 1e-4, "head read from --model");
}

#[test]
fn lora_reward_model_trains_saves_the_head_and_scores_pairs() {
    let python = reference_python(&["transformers", "peft"]);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let printed = rm(
        &tiny(),
        &run,
        &["--max_steps", "4", "--learning_rate", "1e-2", "--seed", "7"],
    );
    let run = run_folder(&run);
    let ck = run.join("checkpoint-4");
    assert_eq!(printed.trim(), ck.to_str().unwrap());
    let steps = steps(&run);
    assert_eq!(steps.len(), 4);
    for s in &steps {
        let (c, r) = (num(s, "rewards/chosen"), num(s, "rewards/rejected"));
        // One pair per step: the logged loss is -log σ(r_c - r_r) of the logged rewards.
        assert!((num(s, "loss") + log_sigmoid(c - r)).abs() < 1e-5, "{s}");
        assert!((num(s, "rewards/margins") - (c - r)).abs() < 1e-6, "{s}");
        assert_eq!(num(s, "rewards/accuracies"), if c > r { 1.0 } else { 0.0 });
        assert!(s.get("logps/chosen").is_none(), "scores are not log-probs");
    }
    let args = args_json(&run);
    assert_eq!(args["loss_type"], "bradley_terry");
    assert_eq!(args["rlhf_type"], "rm");
    // PEFT's layout for a SEQ_CLS model with the head in modules_to_save.
    let cfg = read_json(&ck.join("adapter_config.json"));
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["score"]));
    let names = tensor_names(&ck.join("adapter_model.safetensors"));
    assert!(names.contains(&"base_model.model.score.weight".to_string()));
    assert!(names.iter().any(|n| n.ends_with("q_proj.lora_A.weight")));
    assert!(ck.join("args.json").is_file());

    // swift infer scores preference rows (chosen and rejected) and plain rows.
    let out = dir.path().join("scores.jsonl");
    ok(swift(&[
        "infer",
        "--adapters",
        ck.to_str().unwrap(),
        "--val_dataset",
        demo("dpo-en-demo#3"),
        "--result_path",
        out.to_str().unwrap(),
        "--max_length",
        "96",
    ]));
    let lines = read_jsonl(&out);
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let (c, r) = (num(l, "chosen_score"), num(l, "rejected_score"));
        assert_ne!(c, r);
        assert_eq!(l["chosen_better"], c > r);
        assert!(!l["chosen"].as_str().unwrap().is_empty());
        assert!(!l["rejected"].as_str().unwrap().is_empty());
    }
    let plain = dir.path().join("plain.jsonl");
    let rows = dir.path().join("rows.jsonl");
    write_jsonl(&rows, [chat_row("hi", "hello there")]);
    ok(swift(&[
        "infer",
        "--adapters",
        ck.to_str().unwrap(),
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        plain.to_str().unwrap(),
    ]));
    let line = read_jsonl(&plain).remove(0);
    assert_eq!(line["response"], "hello there");
    num(&line, "score");

    // The head moved: the base's scores of the probe differ from the checkpoint's, and the run
    // is deterministic (the same seed gives the same scores).
    let ours = swift_scores(&["--adapters", ck.to_str().unwrap()], PROBE);
    let run2 = dir.path().join("run2");
    rm(
        &tiny(),
        &run2,
        &["--max_steps", "4", "--learning_rate", "1e-2", "--seed", "7"],
    );
    let run2 = run_folder(&run2);
    let ours2 = swift_scores(
        &["--adapters", run2.join("checkpoint-4").to_str().unwrap()],
        PROBE,
    );
    assert_eq!(ours, ours2, "same seed, same reward model");

    let base = tiny();
    let v = run_python(
        &python,
        &["peft", base.to_str().unwrap(), ck.to_str().unwrap(), PROBE],
    );
    assert_eq!(v["unexpected"], serde_json::json!([]), "{v}");
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["peft_type"], "PeftModelForSequenceClassification");
    assert_close(&floats(&v["scores"]), &ours, 1e-4, "peft vs swift");
}

/// The value head's gradient is the same whether the pairs are scored in one padded pass
/// (`--rlhf_chunk_size 0`) or one sequence at a time in two passes (the default).
#[test]
fn chunked_and_one_pass_reward_training_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for chunk in ["0", "1"] {
        let run = dir.path().join(format!("c{chunk}"));
        rm(
            &tiny(),
            &run,
            &[
                "--per_device_train_batch_size",
                "2",
                "--max_steps",
                "3",
                "--learning_rate",
                "1e-2",
                "--rlhf_chunk_size",
                chunk,
            ],
        );
        let run = run_folder(&run);
        runs.push(steps(&run));
    }
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        for k in ["loss", "grad_norm", "rewards/margins", "rewards/chosen"] {
            let (x, y) = (num(a, k), num(b, k));
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{k}: {x} vs {y}");
        }
    }
}

#[test]
fn full_reward_model_is_a_sequence_classifier() {
    let python = reference_python(&["transformers"]);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // qwen2's fixture has an untied LM head, which a sequence classifier does not keep.
    rm(
        &tiny_model("qwen2"),
        &run,
        &[
            "--tuner_type",
            "full",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-3",
        ],
    );
    let run = run_folder(&run);
    let ck = run.join("checkpoint-2");
    let cfg = read_json(&ck.join("config.json"));
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["Qwen2ForSequenceClassification"])
    );
    assert_eq!(cfg["id2label"], serde_json::json!({"0": "LABEL_0"}));
    let names = tensor_names(&ck.join("model.safetensors"));
    assert!(names.contains(&"score.weight".to_string()));
    assert!(!names.contains(&"lm_head.weight".to_string()));
    for f in ["args.json", "tokenizer.json"] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let ours = swift_scores(&["--model", ck.to_str().unwrap()], PROBE);
    let v = run_python(&python, &["full", ck.to_str().unwrap(), PROBE]);
    assert_eq!(v["unexpected"], serde_json::json!([]), "{v}");
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["num_labels"], 1);
    assert_close(&floats(&v["scores"]), &ours, 1e-4, "transformers vs swift");
}

#[test]
fn bad_reward_model_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let m = model.to_str().unwrap();
    let run = dir.path().join("r");
    let r = run.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--rlhf_type", "rm", "--loss_type", "sigmoid"],
            "bradley_terry",
        ),
        (
            vec!["--rlhf_type", "dpo", "--loss_type", "bradley_terry"],
            "use it with --rlhf_type rm",
        ),
        (
            vec!["--rlhf_type", "dpo", "--center_rewards_coefficient", "0.01"],
            "is for --rlhf_type rm",
        ),
        (
            vec!["--rlhf_type", "rm", "--center_rewards_coefficient=-1"],
            "must be a finite number >= 0, got -1",
        ),
    ] {
        let mut a = vec![
            "rlhf",
            "--model",
            m,
            "--output_dir",
            r,
            "--dataset",
            demo("dpo-en-demo#2"),
        ];
        a.extend(args.iter().copied());
        let out = swift(&a);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = swift(&[
        "rlhf",
        "--rlhf_type",
        "rm",
        "--model",
        m,
        "--output_dir",
        r,
        "--dataset",
        demo("alpaca-en-demo#2"),
    ]);
    assert!(
        stderr(&out).contains("needs preference rows"),
        "{}",
        stderr(&out)
    );
    // Scoring needs an answer to score.
    rm(&model, &run, &["--max_steps", "1"]);
    let run = run_folder(&run);
    let rows = dir.path().join("q.jsonl");
    write_jsonl(&rows, [user_row("hi")]);
    let out = swift(&[
        "infer",
        "--adapters",
        run.join("checkpoint-1").to_str().unwrap(),
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        dir.path().join("o.jsonl").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not end with an assistant answer"),
        "{}",
        stderr(&out)
    );
}
