//! `swift rlhf` runs in the same training loop as `swift sft` (swift_train::trainer::train), so
//! what the loop owns works for preference training too, end to end on the tiny llama of
//! tests/fixtures/models/:
//!
//! * Resuming DPO (two-pass and one-pass gradient) and KTO from a mid-run checkpoint, with LoRA
//!   dropout on and shuffling on, logs exactly the uninterrupted run's losses after it (the
//!   checkpoints hold the optimiser's state and the step); a run without dropout differs, so
//!   the dropout draws really were repeated.
//! * `--tuner_type lora_plus`: B learns `--lora_lr_ratio` times faster than A (after one Adam
//!   step from B = 0, B's norm is exactly the ratio times plain LoRA's).
//! * `--tuner_type lisa`: only the logged active layer (and the weights outside the layers)
//!   changed.
//! * Validation (`--val_dataset`, `--split_dataset_ratio`): DPO, KTO and reward modelling log
//!   TRL's `eval_` metrics at `--eval_steps` and at the end, all finite; an untrained DPO LoRA
//!   (step 0, `--eval_on_start`) has `eval_loss` = ln 2 exactly, as its policy is its
//!   reference; and a run with validation takes exactly the steps of one without.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// The training records' (step, loss).
fn losses(run: &Path) -> Vec<(u64, f64)> {
    records(run)
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// The evaluation records.
fn evals(run: &Path) -> Vec<Value> {
    records(run)
        .into_iter()
        .filter(|r| r.get("eval_loss").is_some())
        .collect()
}

/// `swift rlhf` on the tiny model with `extra` flags; returns the run folder.
fn rlhf(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let run = dir.join(name);
    let model = tiny();
    let mut args = vec![
        "rlhf",
        "--model",
        model.to_str().unwrap(),
        "--max_length",
        "96",
        "--truncation_strategy",
        "left",
        "--logging_steps",
        "1",
        "--output_dir",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(swift_env(&args, &[("OMP_NUM_THREADS", "1")]));
    run_folder(&run)
}

/// A safetensors file's float32 tensors by name.
fn tensors_by_name(path: &Path) -> BTreeMap<String, Vec<f32>> {
    read_safetensors(path).into_iter().collect()
}

#[test]
fn dpo_and_kto_resumed_mid_run_log_the_uninterrupted_losses() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 items, batch 2 (KTO: 4): the run crosses an epoch boundary (a reshuffle) after the
    // checkpoint it resumes from.
    for (name, data, batch, extra) in [
        ("dpo", "dpo-en-demo#8", "2", &[][..]),
        (
            "dpo-one-pass",
            "dpo-en-demo#8",
            "2",
            &["--rlhf_chunk_size", "0"][..],
        ),
        ("kto", "kto-en-demo#8", "4", &["--rlhf_type", "kto"][..]),
    ] {
        let flags = |dropout: &'static str| -> Vec<&str> {
            [
                &[
                    "--dataset",
                    data,
                    "--per_device_train_batch_size",
                    batch,
                    "--disable_dropout",
                    "false",
                    "--lora_dropout",
                    dropout,
                    "--learning_rate",
                    "1e-2",
                    "--save_steps",
                    "3",
                    "--max_steps",
                    "6",
                ][..],
                extra,
            ]
            .concat()
        };
        let flags_on = flags("0.1");
        let whole = rlhf(tmp.path(), &format!("{name}-whole"), &flags_on);
        let ck3 = whole.join("checkpoint-3");
        for f in ["optimizer.safetensors", "trainer_state.json"] {
            assert!(ck3.join(f).is_file(), "{name}: {f}");
        }
        let resume = [
            &flags_on[..],
            &["--resume_from_checkpoint", ck3.to_str().unwrap()],
        ]
        .concat();
        let resumed = rlhf(tmp.path(), &format!("{name}-resumed"), &resume);
        let (a, b) = (losses(&whole), losses(&resumed));
        assert_eq!(a.len(), 6, "{name}: {a:?}");
        assert_eq!(
            b.iter().map(|x| x.0).collect::<Vec<_>>(),
            [4, 5, 6],
            "{name}: {b:?}"
        );
        for (step, loss) in &b {
            let want = a[*step as usize - 1].1;
            assert!(
                (loss - want).abs() < 1e-6,
                "{name} step {step}: resumed {loss} vs {want}"
            );
        }
        let (wa, wb) = (
            tensors_by_name(&whole.join("checkpoint-6/adapter_model.safetensors")),
            tensors_by_name(&resumed.join("checkpoint-6/adapter_model.safetensors")),
        );
        for (n, va) in &wa {
            let d = va
                .iter()
                .zip(&wb[n])
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(d < 1e-6, "{name}: {n} differs by {d}");
        }
        // Dropout was really on: without it the later losses differ.
        let c = losses(&rlhf(tmp.path(), &format!("{name}-nodrop"), &flags("0")));
        assert!(
            c.iter().zip(&a).any(|(x, y)| (x.1 - y.1).abs() > 1e-4),
            "{name}: {c:?} vs {a:?}"
        );
    }
}

#[test]
fn rlhf_lora_plus_moves_b_ratio_times_faster() {
    // One Adam step moves every element of B (zero at the start, so A gets no gradient) by
    // lr·sign(g), times the ratio with LoRA+: B's norm after one step is the ratio times plain
    // LoRA's, and A has not moved in either run.
    let tmp = tempfile::tempdir().unwrap();
    let common = [
        "--dataset",
        "dpo-en-demo#4",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "1",
        "--learning_rate",
        "1e-3",
        "--weight_decay",
        "0",
    ];
    let plain = rlhf(
        tmp.path(),
        "plain",
        &[&common[..], &["--tuner_type", "lora"]].concat(),
    );
    let plus = rlhf(
        tmp.path(),
        "plus",
        &[
            &common[..],
            &["--tuner_type", "lora_plus", "--lora_lr_ratio", "4"],
        ]
        .concat(),
    );
    let weights = |run: &Path| tensors_by_name(&run.join("checkpoint-1/adapter_model.safetensors"));
    let norm = |w: &BTreeMap<String, Vec<f32>>, part: &str| -> f64 {
        w.iter()
            .filter(|(n, _)| n.contains(part))
            .flat_map(|(_, v)| v.iter().map(|x| (*x as f64).powi(2)))
            .sum::<f64>()
            .sqrt()
    };
    let (wp, wl) = (weights(&plain), weights(&plus));
    let ratio = norm(&wl, ".lora_B.") / norm(&wp, ".lora_B.");
    assert!((ratio - 4.0).abs() < 1e-3, "B moved {ratio} times as far");
    for (n, v) in wp.iter().filter(|(n, _)| n.contains(".lora_A.")) {
        assert_eq!(v, &wl[n], "{n}");
    }
}

#[test]
fn rlhf_lisa_updates_only_the_active_layers() {
    // Two decoder layers, one trained at a time, re-drawn every 10 steps: after 2 steps exactly
    // the logged layer (and the weights outside the layers) changed.
    let tmp = tempfile::tempdir().unwrap();
    let run = rlhf(
        tmp.path(),
        "lisa",
        &[
            "--dataset",
            "dpo-en-demo#4",
            "--per_device_train_batch_size",
            "2",
            "--max_steps",
            "2",
            "--tuner_type",
            "lisa",
            "--lisa_activated_layers",
            "1",
            "--lisa_step_interval",
            "10",
            "--learning_rate",
            "1e-3",
        ],
    );
    let recs = records(&run);
    let active = recs[0]["lisa_layers"]
        .as_array()
        .unwrap_or_else(|| panic!("lisa_layers logged: {}", recs[0]));
    assert_eq!(active.len(), 1);
    let active = active[0].as_u64().unwrap();
    let base = tensors_by_name(&tiny().join("model.safetensors"));
    let tuned = tensors_by_name(&run.join("checkpoint-2/model.safetensors"));
    let changed = |n: &str| base[n].iter().zip(&tuned[n]).any(|(a, b)| a != b);
    for layer in 0..2u64 {
        let prefix = format!("model.layers.{layer}.");
        let moved = tuned
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .any(|n| changed(n));
        assert_eq!(moved, layer == active, "layer {layer} (active {active})");
    }
    assert!(changed("model.norm.weight"));
    // args.json counts every parameter as trainable over the run, and at most the tensors
    // outside the layers plus one layer at a time.
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("args.json")).unwrap()).unwrap();
    let numel = |pred: &dyn Fn(&str) -> bool| -> u64 {
        base.iter()
            .filter(|(n, _)| pred(n))
            .map(|(_, v)| v.len() as u64)
            .sum()
    };
    let all = numel(&|_| true);
    let layer0 = numel(&|n| n.starts_with("model.layers.0."));
    let layer1 = numel(&|n| n.starts_with("model.layers.1."));
    let outside = numel(&|n| !n.starts_with("model.layers."));
    assert_eq!(args["trainable_parameters"].as_u64(), Some(all));
    assert_eq!(
        args["trainable_parameters_at_once"].as_u64(),
        Some(outside + layer0.max(layer1))
    );
}

/// TRL's evaluation metrics of each method (the loop adds the `eval_` prefix).
const DPO_EVAL: [&str; 7] = [
    "eval_loss",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
];
const KTO_EVAL: [&str; 6] = [
    "eval_loss",
    "eval_kl",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_logps/chosen",
    "eval_logps/rejected",
];
const RM_EVAL: [&str; 6] = [
    "eval_loss",
    "eval_accuracy",
    "eval_margin",
    "eval_min_reward",
    "eval_mean_reward",
    "eval_max_reward",
];

fn assert_eval_records(name: &str, evals: &[Value], steps: &[u64], keys: &[&str]) {
    assert_eq!(
        evals
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        steps,
        "{name}: {evals:?}"
    );
    for r in evals {
        for k in keys {
            assert!(num(r, k).is_finite(), "{name}: {k} in {r}");
        }
    }
}

#[test]
fn dpo_validation_logs_trls_metrics_and_changes_nothing_of_training() {
    let tmp = tempfile::tempdir().unwrap();
    let train = [
        "--dataset",
        "dpo-en-demo#8",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-2",
        "--disable_dropout",
        "false",
        "--lora_dropout",
        "0.1",
    ];
    let plain = rlhf(tmp.path(), "plain", &train);
    let run = rlhf(
        tmp.path(),
        "eval",
        &[
            &train[..],
            &[
                "--val_dataset",
                "dpo-en-demo#4",
                "--eval_steps",
                "2",
                "--eval_on_start",
                "true",
            ],
        ]
        .concat(),
    );
    let ev = evals(&run);
    assert_eval_records("dpo", &ev, &[0, 2, 4], &DPO_EVAL);
    // Step 0: the LoRA's B is zero, so the policy is its reference: every reward is 0, no pair
    // is ranked right, and the loss is −log σ(0) = ln 2.
    let start = &ev[0];
    assert!(
        (num(start, "eval_loss") - 2f64.ln()).abs() < 1e-6,
        "{start}"
    );
    for k in [
        "eval_rewards/chosen",
        "eval_rewards/rejected",
        "eval_rewards/margins",
        "eval_rewards/accuracies",
    ] {
        assert_eq!(num(start, k), 0.0, "{k}: {start}");
    }
    assert!(
        start.get("eval_nll_loss").is_none(),
        "plain DPO has no NLL term"
    );
    // Later the adapters moved the policy away from the reference.
    assert!(num(&ev[2], "eval_rewards/margins") != 0.0, "{}", ev[2]);
    // Evaluation (dropout off, no gradients) leaves the training as it was.
    assert_eq!(losses(&plain), losses(&run));
    assert!(run.join("images/eval_loss.png").is_file());
}

#[test]
fn kto_and_reward_model_validation_log_trls_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let kto = rlhf(
        tmp.path(),
        "kto",
        &[
            "--rlhf_type",
            "kto",
            "--dataset",
            "kto-en-demo#8",
            "--val_dataset",
            "kto-en-demo#8",
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "2",
            "--eval_steps",
            "1",
        ],
    );
    let ev = evals(&kto);
    assert_eval_records("kto", &ev, &[1, 2], &KTO_EVAL);
    for r in &ev {
        assert!(num(r, "eval_kl") >= 0.0, "{r}");
        assert!(r.get("eval_rewards/accuracies").is_none(), "unpaired: {r}");
    }

    let rm = rlhf(
        tmp.path(),
        "rm",
        &[
            "--rlhf_type",
            "rm",
            "--dataset",
            "dpo-en-demo#8",
            "--val_dataset",
            "dpo-en-demo#4",
            "--per_device_train_batch_size",
            "2",
            "--max_steps",
            "3",
            "--eval_steps",
            "2",
            "--learning_rate",
            "1e-2",
        ],
    );
    let ev = evals(&rm);
    assert_eval_records("rm", &ev, &[2, 3], &RM_EVAL);
    for r in &ev {
        let (lo, mean, hi) = (
            num(r, "eval_min_reward"),
            num(r, "eval_mean_reward"),
            num(r, "eval_max_reward"),
        );
        assert!(lo <= mean && mean <= hi && lo < hi, "{r}");
        let acc = num(r, "eval_accuracy");
        assert!(
            (0.0..=1.0).contains(&acc) && (acc * 4.0).fract() == 0.0,
            "4 pairs: {r}"
        );
    }

    // --split_dataset_ratio holds out the last share of the shuffled pairs.
    let split = rlhf(
        tmp.path(),
        "split",
        &[
            "--dataset",
            "dpo-en-demo#8",
            "--split_dataset_ratio",
            "0.25",
            "--per_device_train_batch_size",
            "2",
            "--max_steps",
            "2",
        ],
    );
    let args: Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["train_rows"], 6);
    assert_eval_records("split", &evals(&split), &[2], &DPO_EVAL);
}
