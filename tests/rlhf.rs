//! `swift rlhf` end to end, on the tiny random llama of tests/fixtures/models/ (fast) and briefly
//! on SmolLM2-135M-Instruct (which `make setup` fetches):
//!
//! * DPO with LoRA logs TRL's metrics at every step; at step 1 (LoRA's B is zero, dropout off)
//!   the policy equals its reference exactly, so every reward is 0; afterwards the rewards move,
//!   which they could not if the reference ran with the adapters on. The run records that the
//!   reference is the policy with its adapters disabled and that one model was loaded; full
//!   fine-tuning loads a frozen second copy instead. On SmolLM2 the peak RSS of a LoRA DPO run
//!   stays within a fraction of one copy of the weights of an SFT run on the same rows (a second
//!   copy would add all of them).
//! * KTO on kto-en-demo, ORPO, SimPO and CPO run end to end and log their metrics.
//! * Bad input gets a clear error; rows whose answer is truncated away are dropped and counted.
//!
//! The losses themselves are tested against TRL's formulas in plugins/losses.

use std::path::Path;

use crate::common::*;

fn rlhf(out: &Path, extra: &[&str]) -> String {
    let model = tiny();
    let out_s = out.to_str().unwrap();
    let mut args = vec![
        "rlhf",
        "--model",
        model.to_str().unwrap(),
        "--max_length",
        "96",
        "--truncation_strategy",
        "left",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
        "--output_dir",
        out_s,
    ];
    args.extend_from_slice(extra);
    ok(swift(&args))
}

const METRICS: [&str; 6] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
];

#[test]
fn dpo_lora_reference_is_the_policy_with_adapters_off() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let printed = rlhf(
        &run,
        &[
            "--rlhf_type",
            "dpo",
            "--dataset",
            demo("dpo-en-demo#8"),
            "--per_device_train_batch_size",
            "2",
            "--max_steps",
            "4",
            "--learning_rate",
            "1e-2",
        ],
    );
    let run = run_folder(&run);
    let steps = steps(&run);
    assert_eq!(steps.len(), 4, "{steps:?}");
    for s in &steps {
        for m in METRICS {
            num(s, m);
        }
        assert!(s.get("nll_loss").is_none(), "plain DPO has no NLL term");
    }
    // Step 1: the adapters add zero, so policy == reference and the rewards are exactly 0.
    for m in ["rewards/chosen", "rewards/rejected", "rewards/margins"] {
        assert_eq!(num(&steps[0], m), 0.0, "{m} at step 1: {}", steps[0]);
    }
    assert!((num(&steps[0], "loss") - 2f64.ln()).abs() < 1e-6);
    // Later the trained adapters move the policy away from the (adapter-free) reference.
    for s in &steps[1..] {
        assert!(num(s, "rewards/chosen").abs() > 1e-4, "{s}");
        assert!(num(s, "rewards/rejected").abs() > 1e-4, "{s}");
    }
    let args = args_json(&run);
    assert_eq!(args["reference"], "the policy with its adapters disabled");
    assert_eq!(args["models_loaded"], 1, "no second copy of the base");
    assert_eq!(args["loss_type"], "sigmoid");
    assert_eq!(args["command"], "rlhf");
    let ckpt = run.join("checkpoint-4");
    assert_eq!(printed.trim(), ckpt.to_str().unwrap());
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "args.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f}");
    }
    let last = records(&run).pop().unwrap();
    assert_eq!(last["train_pairs"], 8);
}

/// The chunked two-pass gradient (`--rlhf_chunk_size k`) equals the one-pass gradient: the same
/// losses and gradient norms step by step (dropout off, gradient accumulation on).
#[test]
fn chunked_gradient_pass_equals_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for chunk in ["0", "1", "3"] {
        let run = dir.path().join(format!("c{chunk}"));
        rlhf(
            &run,
            &[
                "--dataset",
                demo("dpo-en-demo#8"),
                "--per_device_train_batch_size",
                "2",
                "--gradient_accumulation_steps",
                "2",
                "--max_steps",
                "2",
                "--learning_rate",
                "1e-2",
                "--rlhf_chunk_size",
                chunk,
            ],
        );
        let run = run_folder(&run);
        runs.push(steps(&run));
    }
    for other in &runs[1..] {
        for (a, b) in runs[0].iter().zip(other) {
            for k in ["loss", "grad_norm", "rewards/margins", "logps/chosen"] {
                let (x, y) = (num(a, k), num(b, k));
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{k}: {x} vs {y}");
            }
        }
    }
    assert!(num(&runs[0][1], "rewards/margins").abs() > 1e-4);
}

#[test]
fn full_fine_tuning_loads_a_frozen_reference() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    rlhf(
        &run,
        &[
            "--dataset",
            demo("dpo-en-demo#4"),
            "--tuner_type",
            "full",
            "--per_device_train_batch_size",
            "2",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-3",
        ],
    );
    let run = run_folder(&run);
    let steps = steps(&run);
    assert_eq!(num(&steps[0], "rewards/chosen"), 0.0);
    assert!(
        num(&steps[1], "rewards/chosen").abs() > 1e-4,
        "{}",
        steps[1]
    );
    let args = args_json(&run);
    assert_eq!(args["reference"], "a frozen copy of the model");
    assert_eq!(args["models_loaded"], 2);
    assert!(run.join("checkpoint-2/model.safetensors").is_file());
}

#[test]
fn kto_orpo_simpo_cpo_run_and_log_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // KTO: all 8 rows in each batch, so both labels occur in every step.
    for (t, data, batch, nll) in [
        ("kto", demo("kto-en-demo#8"), "8", false),
        ("orpo", demo("dpo-en-demo#4"), "4", true),
        ("simpo", demo("dpo-en-demo#4"), "4", true),
        ("cpo", demo("dpo-en-demo#4"), "4", true),
    ] {
        let run = dir.path().join(t);
        rlhf(
            &run,
            &[
                "--rlhf_type",
                t,
                "--dataset",
                data,
                "--per_device_train_batch_size",
                batch,
                "--max_steps",
                "2",
            ],
        );
        let run = run_folder(&run);
        let steps = steps(&run);
        assert_eq!(steps.len(), 2, "{t}");
        let args = args_json(&run);
        for s in &steps {
            for m in [
                "loss",
                "rewards/chosen",
                "rewards/rejected",
                "rewards/margins",
                "logps/chosen",
                "logps/rejected",
            ] {
                num(s, m);
            }
            assert_eq!(s.get("nll_loss").is_some(), nll, "{t}: {s}");
            if t == "kto" {
                assert!(num(s, "kl") >= 0.0);
                assert!(s.get("rewards/accuracies").is_none(), "unpaired: {s}");
            } else {
                num(s, "rewards/accuracies");
            }
        }
        if t == "kto" {
            assert_eq!(args["reference"], "the policy with its adapters disabled");
            assert_eq!(args["loss_type"], "kto");
        } else {
            assert_eq!(args["reference"], "none (reference-free loss)", "{t}");
            assert_eq!(args["models_loaded"], 1);
        }
        if t == "simpo" {
            assert_eq!(args["beta"], 2.0, "ms-swift's SimPO default");
        }
        assert!(run.join("checkpoint-2/adapter_model.safetensors").is_file());
    }
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let m = model.to_str().unwrap();
    let run = dir.path().join("r");
    let r = run.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--rlhf_type", "kto", "--dataset", demo("dpo-en-demo#2")],
            "boolean `label`",
        ),
        (
            vec!["--rlhf_type", "dpo", "--dataset", demo("alpaca-en-demo#2")],
            "needs preference rows",
        ),
        (
            vec!["--rlhf_type", "ppo", "--dataset", demo("dpo-en-demo#2")],
            "unknown --rlhf_type `ppo`",
        ),
        (
            vec![
                "--rlhf_type",
                "dpo",
                "--loss_type",
                "kto",
                "--dataset",
                demo("dpo-en-demo#2"),
            ],
            "needs paired data",
        ),
        (
            vec![
                "--rlhf_type",
                "dpo",
                "--loss_type",
                "sigmoidd",
                "--dataset",
                demo("dpo-en-demo#2"),
            ],
            "sigmoid",
        ),
        (
            // Right truncation to 8 tokens leaves no answer token: every pair is dropped.
            vec![
                "--dataset",
                demo("dpo-en-demo#3"),
                "--max_length",
                "8",
                "--truncation_strategy",
                "right",
            ],
            "3 rows were dropped",
        ),
    ] {
        let mut a = vec!["rlhf", "--model", m, "--output_dir", r];
        a.extend(args.iter().copied());
        let out = swift(&a);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// SmolLM2, two short runs on the same rows: LoRA DPO (reference = adapters off) against LoRA
/// SFT. A second copy of the base would add its 538 MB of float32 weights to the DPO run's peak.
#[test]
fn smollm2_dpo_holds_one_copy_of_the_base() {
    let model = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    let common = [
        "--model",
        m,
        "--max_length",
        "64",
        "--truncation_strategy",
        "left",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--dataset_shuffle",
        "false",
        "--logging_steps",
        "1",
    ];
    let dpo = dir.path().join("dpo");
    let sft = dir.path().join("sft");
    let mut a = vec!["rlhf", "--dataset", demo("dpo-en-demo#2"), "--output_dir"];
    a.push(dpo.to_str().unwrap());
    a.extend(common);
    ok(swift(&a));
    let mut a = vec!["sft", "--dataset", demo("dpo-en-demo#2"), "--output_dir"];
    a.push(sft.to_str().unwrap());
    a.extend(common);
    ok(swift(&a));
    let (dpo, sft) = (run_folder(&dpo), run_folder(&sft));
    let peak = |run: &Path| num(&records(run).pop().unwrap(), "memory_mib");
    let (pd, ps) = (peak(&dpo), peak(&sft));
    let weights_mib = 134.5e6 * 4.0 / (1024.0 * 1024.0);
    assert!(
        pd - ps < 0.5 * weights_mib,
        "DPO peak {pd:.0} MiB vs SFT {ps:.0} MiB: more than half a copy of the weights ({weights_mib:.0} MiB) extra"
    );
    let steps = steps(&dpo);
    assert_eq!(num(&steps[0], "rewards/margins"), 0.0);
    assert_eq!(args_json(&dpo)["models_loaded"], 1);
}

/// A third party's loss: the example plugin registers `example-apo-zero` (TRL's APO-zero) and
/// `swift rlhf --loss_type` uses it through the same registry. At step 1 policy == reference, so
/// its loss is exactly 1 − σ(0) + σ(0) = 1 (the built-in DPO loss would be ln 2).
#[test]
fn a_plugin_preference_loss_is_used_by_name() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let model = tiny();
    let out = ok(swift(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "rlhf",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        demo("dpo-en-demo#4"),
        "--loss_type",
        "example-apo-zero",
        "--max_length",
        "96",
        "--truncation_strategy",
        "left",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--output_dir",
        run.to_str().unwrap(),
    ]));
    let run = run_folder(&run);
    assert!(out.contains("checkpoint-2"), "{out}");
    let steps = steps(&run);
    assert!((num(&steps[0], "loss") - 1.0).abs() < 1e-6, "{}", steps[0]);
    assert_eq!(args_json(&run)["loss_type"], "example-apo-zero");
    let listed = ok(swift(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "list",
        "preference-losses",
    ]));
    assert!(
        listed.contains("example-apo-zero") && listed.contains("sigmoid"),
        "{listed}"
    );
}
