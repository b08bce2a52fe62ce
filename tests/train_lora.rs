//! `swift sft` / `swift pt` end to end on the tiny random llama of tests/fixtures/models/ (fast)
//! and on SmolLM2-135M-Instruct (which `make setup` fetches):
//!
//! * the loss falls; the run folder holds args.json (with the loaded plugins), logging.jsonl and
//!   a PEFT-layout checkpoint;
//! * gradient accumulation over rows of unequal length equals one big batch (batch 4 vs 2×2 vs
//!   1×4: same losses, same adapter weights), because the loss is normalised over the labelled
//!   tokens of the whole optimiser step;
//! * full fine-tuning writes a model folder `swift infer` loads;
//! * Python peft loads the adapter with no missing or unexpected keys, and its logits equal
//!   `swift infer --adapters`'s within 1e-4 (greedy tokens identical); these tests need the
//!   reference virtualenv and fail saying how to install it when it is missing.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

fn sft(args: &[&str]) -> String {
    ok(swift1(&[&["sft"], args].concat()))
}

#[test]
fn lora_loss_falls_and_the_run_folder_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    let out = sft(&[
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "12",
        "--learning_rate",
        "1e-2",
        "--per_device_train_batch_size",
        "2",
        "--logging_steps",
        "1",
        "--save_steps",
        "5",
        "--save_total_limit",
        "2",
    ]);
    let run = run_folder(&run);
    assert!(out.trim().ends_with("checkpoint-12"), "{out}");
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[9..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "loss did not fall: {losses:?}");
    let rec = &records(&run)[0];
    for key in [
        "loss",
        "grad_norm",
        "learning_rate",
        "token_acc",
        "epoch",
        "step_time",
        "tokens_per_sec",
        "memory_mib",
    ] {
        assert!(rec.get(key).is_some(), "logging.jsonl lacks {key}: {rec}");
    }
    // The charts, as ms-swift draws them.
    for png in [
        "train_loss.png",
        "train_learning_rate.png",
        "train_token_acc.png",
    ] {
        let bytes = std::fs::read(run.join("images").join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    let args = args_json(&run);
    assert_eq!(args["tuner_type"], "lora");
    assert_eq!(args["lora_rank"], 8);
    assert_eq!(args["template"], "llama3");
    assert!(args["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "swift-plugin-tuners"));
    // save_total_limit 2 keeps the newest two of 5, 10, 12.
    let mut ckpts: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, ["checkpoint-10", "checkpoint-12"]);
    let ck = run.join("checkpoint-12");
    let cfg = read_json(&ck.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 8);
    let targets: Vec<&str> = cfg["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ],
        "all-linear leaves out lm_head"
    );
    let keys: Vec<String> = read_safetensors(&ck.join("adapter_model.safetensors"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 2 * 7 * 2, "2 layers x 7 slots x (A, B)");
    assert!(keys.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into()));
    // The adapter changes the model.
    let (base, _) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3,4", 1);
    let (tuned, _) = infer_logits(&["--adapters", ck.to_str().unwrap()], "1,2,3,4", 1);
    assert!(max_abs_diff(&base, &tuned) > 1e-3);
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let mut results = Vec::new();
    for (bs, accum) in [("4", "1"), ("2", "2"), ("1", "4")] {
        let run = tmp.path().join(format!("run-{bs}x{accum}"));
        // (batch 4 in one pass vs 2×2 vs 1×4; one-row passes are the 1×4 case.)
        sft(&[
            "--model",
            tiny().to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            run.to_str().unwrap(),
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-2",
            "--lr_scheduler_type",
            "constant",
            "--lora_dropout",
            "0",
            // Adam divides by √v + ε: with the default ε, float rounding on gradients near zero
            // becomes an lr-sized difference in the update. A larger ε keeps the update linear
            // in the gradient, so equal gradients show as equal weights.
            "--adam_epsilon",
            "1e-4",
            "--dataset_shuffle",
            "false",
            "--train_dataloader_shuffle",
            "false",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            bs,
            "--gradient_accumulation_steps",
            accum,
            // Whole micro-batches in one pass, their rows laid end to end (the default runs one
            // row per pass), so the three runs really differ in how rows are batched.
            "--rows_per_pass",
            "0",
        ]);
        let run = run_folder(&run);
        let weights = read_safetensors(&run.join("checkpoint-2/adapter_model.safetensors"));
        let norms: Vec<f64> = records(&run)
            .iter()
            .filter_map(|r| r.get("grad_norm").and_then(Value::as_f64))
            .collect();
        results.push((step_losses(&run), weights, norms));
    }
    let (losses0, weights0, norms0) = &results[0];
    for (losses, weights, norms) in &results[1..] {
        assert_eq!(losses.len(), 2);
        for (a, b) in norms.iter().zip(norms0) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "grad norms {norms:?} vs {norms0:?}"
            );
        }
        for (a, b) in losses.iter().zip(losses0) {
            assert!((a - b).abs() < 1e-5, "losses {losses:?} vs {losses0:?}");
        }
        for ((na, a), (nb, b)) in weights.iter().zip(weights0) {
            assert_eq!(na, nb);
            let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(d < 1e-5, "{na} differs by {d}");
        }
    }
}

#[test]
fn full_fine_tuning_saves_a_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    sft(&[
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--train_type",
        "full",
        "--max_steps",
        "8",
        "--learning_rate",
        "5e-3",
        "--per_device_train_batch_size",
        "2",
        "--logging_steps",
        "1",
    ]);
    let run = run_folder(&run);
    let losses = step_losses(&run);
    assert!(
        losses[5..].iter().sum::<f64>() < losses[..3].iter().sum::<f64>(),
        "{losses:?}"
    );
    let ck = run.join("checkpoint-8");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "args.json",
    ] {
        assert!(ck.join(f).is_file(), "{f} missing");
    }
    let (base, _) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3", 1);
    let (tuned, _) = infer_logits(&["--model", ck.to_str().unwrap()], "1,2,3", 1);
    assert!(max_abs_diff(&base, &tuned) > 1e-3);
}

#[test]
fn pt_trains_on_every_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    ok(swift1(&[
        "pt",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "6",
        "--learning_rate",
        "1e-2",
        "--logging_steps",
        "1",
    ]));
    let run = run_folder(&run);
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 6);
    let args = args_json(&run);
    assert_eq!(args["command"], "pt");
}

#[test]
fn bad_settings_are_clear_errors() {
    let o = swift(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        "x.jsonl",
        "--tuner_type",
        "lorra",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("lora"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let o = swift(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--target_modules",
        "qkv",
        "--output_dir",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("q_proj"), "{}", stderr(&o));
}

/// Runs tests/reference/peft_logits.py and compares with `swift infer --adapters`.
pub(crate) fn check_peft(python: &Path, base: &Path, ckpt: &Path, ids: &str, greedy: usize) {
    let v = run_reference(
        python,
        "peft_logits.py",
        &[&base, &ckpt, &ids, &greedy.to_string()],
    );
    assert_eq!(
        v["unexpected"],
        serde_json::json!([]),
        "{}",
        v["unexpected"]
    );
    assert_eq!(v["missing"], serde_json::json!([]), "{}", v["missing"]);
    assert!(v["lora_modules"].as_u64().unwrap() > 0);
    let peft = floats(&v["last_logits"]);
    let base_logits = floats(&v["base_last_logits"]);
    let (ours, greedy_ours) = infer_logits(&["--adapters", ckpt.to_str().unwrap()], ids, greedy);
    let scale = max_abs(&peft).max(1.0);
    let d = max_abs_diff(&peft, &ours);
    assert!(
        d <= 1e-4 * scale,
        "peft and swift logits differ by {d} (scale {scale})"
    );
    assert!(
        max_abs_diff(&peft, &base_logits) > 1e-3,
        "the adapter does not change peft's output"
    );
    assert_eq!(v["greedy"], greedy_ours, "greedy continuations");
}

#[test]
fn peft_loads_the_adapter_and_agrees_on_the_tiny_model() {
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    sft(&[
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "6",
        "--learning_rate",
        "1e-2",
    ]);
    let run = run_folder(&run);
    check_peft(&python, &tiny(), &run.join("checkpoint-6"), "1,2,3,4,5", 8);
}

#[test]
fn smollm2_lora_on_alpaca_loss_falls_and_peft_agrees() {
    let model = smollm2();
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // 16 rows, batch 4, 3 epochs: 12 steps of short rows.
    sft(&[
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        demo("alpaca-en-demo#16"),
        "--output_dir",
        run.to_str().unwrap(),
        "--num_train_epochs",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "96",
        "--truncation_strategy",
        "right",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
    ]);
    let run = run_folder(&run);
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    println!("SmolLM2 LoRA losses: {losses:?} (first 3 mean {first:.4}, last 3 mean {last:.4})");
    assert!(last < first, "loss did not fall: {losses:?}");
    // "<|im_start|>user\nWho are you?" in SmolLM2's vocabulary.
    check_peft(
        &python,
        &model,
        &run.join("checkpoint-12"),
        "1,4093,198,40701,359,346,47",
        8,
    );
}

#[test]
fn lora_trains_the_example_plugins_family_with_no_tuner_code_in_it() {
    // GPT-2 is provided only by the example plugin (loaded with --plugin-dir); its slots are
    // Conv1D weights the host transposes, and gradients cross the plugin boundary.
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    let model = tiny_model("gpt2");
    ok(swift1(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "10",
        "--learning_rate",
        "1e-2",
        "--per_device_train_batch_size",
        "2",
        "--logging_steps",
        "1",
    ]));
    let run = run_folder(&run);
    let losses = step_losses(&run);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[7..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "loss did not fall: {losses:?}");
    let args = args_json(&run);
    assert!(
        args["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"].is_string() && p["sha256"].is_string()),
        "args.json records the plugin file: {}",
        args["plugins"]
    );
    // infer reloads the recorded plugin: no --plugin-dir needed.
    let ck = run.join("checkpoint-10");
    let (tuned, _) = infer_logits(&["--adapters", ck.to_str().unwrap()], "1,2,3", 1);
    let (base, _) = infer_logits(
        &[
            "--plugin-dir",
            plugins.path().to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
        "1,2,3",
        1,
    );
    assert!(max_abs_diff(&base, &tuned) > 1e-3);
}

#[test]
fn settings_come_from_a_config_file_and_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    let cfg = tmp.path().join("sft.yaml");
    std::fs::write(
        &cfg,
        "max_steps: 3\nlora_rank: 4\nlogging_steps: 1\ntarget_modules: [q_proj, v_proj]\n",
    )
    .unwrap();
    ok(swift_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "sft",
            "--model",
            tiny().to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            run.to_str().unwrap(),
            "--lora_rank",
            "2",
        ],
        &[("SWIFT_LEARNING_RATE", "0.005"), ONE_THREAD],
    ));
    let run = run_folder(&run);
    let args = args_json(&run);
    assert_eq!(args["max_steps"], 3, "from the file");
    assert_eq!(args["lora_rank"], 2, "the flag beats the file");
    assert_eq!(args["learning_rate"], 0.005, "from the environment");
    assert_eq!(args["target_slots"], 4, "q_proj and v_proj of 2 layers");
    assert_eq!(step_losses(&run).len(), 3);
}

/// Trains `tuner` on the tiny model for `steps` steps with `extra` flags; returns the run folder.
fn tiny_run(tmp: &Path, name: &str, tuner: &str, steps: &str, extra: &[&str]) -> PathBuf {
    let data = ten_chat_rows(tmp);
    let run = tmp.join(name);
    let model = tiny();
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        tuner,
        "--max_steps",
        steps,
        "--logging_steps",
        "1",
    ];
    args.extend_from_slice(extra);
    sft(&args);
    run_folder(&run)
}

#[test]
fn peft_agrees_with_dora_rslora_pissa_and_olora_adapters() {
    // Each variant trains a few steps; the checkpoint must load in peft with no missing or
    // unexpected keys (DoRA's lora_magnitude_vector; PiSSA/OLoRA converted to rank 2r against
    // the original base) and give swift infer --adapters's logits.
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    for tuner in ["dora", "rslora", "pissa", "olora"] {
        let run = tiny_run(tmp.path(), tuner, tuner, "4", &["--learning_rate", "1e-2"]);
        let ck = run.join("checkpoint-4");
        let cfg = read_json(&ck.join("adapter_config.json"));
        match tuner {
            "dora" => assert_eq!(cfg["use_dora"], true),
            "rslora" => assert_eq!(cfg["use_rslora"], true),
            _ => assert_eq!(
                (cfg["r"].as_i64(), cfg["lora_alpha"].as_f64()),
                (Some(16), Some(64.0))
            ),
        }
        check_peft(&python, &tiny(), &ck, "1,2,3,4,5", 8);
    }
}

#[test]
fn lora_plus_moves_b_ratio_times_faster() {
    // One Adam step moves every element by lr·sign(g) (times the ratio for B), and B starts at
    // zero: B's norm after one step is exactly the ratio times that of plain LoRA.
    let tmp = tempfile::tempdir().unwrap();
    let b_norm = |run: &Path| -> f64 {
        read_safetensors(&run.join("checkpoint-1/adapter_model.safetensors"))
            .iter()
            .filter(|(n, _)| n.contains(".lora_B."))
            .flat_map(|(_, v)| v.iter().map(|x| (*x as f64).powi(2)))
            .sum::<f64>()
            .sqrt()
    };
    let plain = tiny_run(tmp.path(), "plain", "lora", "1", &["--lora_dropout", "0"]);
    let plus = tiny_run(
        tmp.path(),
        "plus",
        "lora+",
        "1",
        &["--lora_dropout", "0", "--lora_lr_ratio", "4"],
    );
    let ratio = b_norm(&plus) / b_norm(&plain);
    assert!((ratio - 4.0).abs() < 1e-3, "{ratio}");
}

#[test]
fn freeze_keeps_the_named_parameters_and_trains_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(
        tmp.path(),
        "freeze",
        "freeze",
        "2",
        &[
            "--freeze_parameters",
            "model.layers.0",
            "--trainable_parameters",
            "model.layers.0.mlp.down_proj",
            "--learning_rate",
            "1e-3",
        ],
    );
    let base = tensors_by_name(&tiny().join("model.safetensors"));
    let tuned = tensors_by_name(&run.join("checkpoint-2/model.safetensors"));
    for (name, after) in &tuned {
        let moved = changed(&base[name], after);
        if name.starts_with("model.layers.0.") && !name.contains("mlp.down_proj") {
            assert!(!moved, "{name} is frozen but changed");
        } else if name.starts_with("model.layers.") {
            assert!(moved, "{name} should train");
        }
    }
    let o = swift1(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        "x.jsonl",
        "--tuner_type",
        "freeze",
    ]);
    assert!(!o.status.success());
}

#[test]
fn lisa_only_updates_the_active_layers() {
    // Two decoder layers, one active at a time, re-drawn every 10 steps: after 2 steps exactly
    // the logged layer (and the embeddings / final norm outside the layers) changed.
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(
        tmp.path(),
        "lisa",
        "lisa",
        "2",
        &[
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
        .expect("lisa_layers logged");
    assert_eq!(active.len(), 1);
    let active = active[0].as_u64().unwrap();
    let base = tensors_by_name(&tiny().join("model.safetensors"));
    let tuned = tensors_by_name(&run.join("checkpoint-2/model.safetensors"));
    for layer in 0..2u64 {
        let prefix = format!("model.layers.{layer}.");
        let moved = tuned
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .any(|(n, after)| changed(&base[n], after));
        assert_eq!(moved, layer == active, "layer {layer} (active {active})");
    }
    assert!(changed(
        &base["model.norm.weight"],
        &tuned["model.norm.weight"]
    ));
}

#[test]
fn resuming_gives_the_losses_of_an_uninterrupted_run() {
    // Dropout on, shuffling on, 5 steps per epoch: resuming from step 3 crosses the epoch
    // boundary (a reshuffle) and must repeat the uninterrupted run's losses and weights.
    let tmp = tempfile::tempdir().unwrap();
    let flags = [
        "--lora_dropout",
        "0.1",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-2",
        "--save_steps",
        "3",
    ];
    let whole = tiny_run(tmp.path(), "whole", "lora", "8", &flags);
    let ck3 = whole.join("checkpoint-3");
    assert!(ck3.join("optimizer.safetensors").is_file());
    assert!(ck3.join("trainer_state.json").is_file());
    let resume = [
        &flags[..],
        &["--resume_from_checkpoint", ck3.to_str().unwrap()],
    ]
    .concat();
    let resumed = tiny_run(tmp.path(), "resumed", "lora", "8", &resume);
    let by_step = |run: &Path| -> Vec<(u64, f64)> {
        records(run)
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_u64()?, r["loss"].as_f64()?)))
            .collect()
    };
    let (a, b) = (by_step(&whole), by_step(&resumed));
    assert_eq!(b.first().map(|x| x.0), Some(4), "{b:?}");
    for (step, loss) in &b {
        let (_, want) = a.iter().find(|(s, _)| s == step).unwrap();
        assert!((loss - want).abs() < 1e-6, "step {step}: {loss} vs {want}");
    }
    let wa = read_safetensors(&whole.join("checkpoint-8/adapter_model.safetensors"));
    let wb = read_safetensors(&resumed.join("checkpoint-8/adapter_model.safetensors"));
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-6, "{na} differs by {d}");
    }
    // Dropout was really on: a run without it has other losses.
    let no_dropout = tiny_run(
        tmp.path(),
        "nodrop",
        "lora",
        "8",
        &[&flags[2..], &["--lora_dropout", "0"]].concat(),
    );
    let c = by_step(&no_dropout);
    assert!((c[7].1 - a[7].1).abs() > 1e-6, "{c:?} vs {a:?}");
}

#[test]
fn llamapro_adds_zero_blocks_that_leave_the_output_unchanged_then_trains_only_them() {
    // Two layers, two new blocks: [0, 0*, 1, 1*]. At learning rate 0 the saved expanded model
    // must give the base model's logits; after training, only layers 1 and 3 changed.
    let tmp = tempfile::tempdir().unwrap();
    let frozen = tiny_run(
        tmp.path(),
        "pro0",
        "llamapro",
        "1",
        &["--llamapro_num_new_blocks", "2", "--learning_rate", "0"],
    );
    let ck = frozen.join("checkpoint-1");
    let cfg = read_json(&ck.join("config.json"));
    assert_eq!(cfg["num_hidden_layers"], 4);
    let (base, base_greedy) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3,4", 6);
    let (expanded, greedy) = infer_logits(&["--model", ck.to_str().unwrap()], "1,2,3,4", 6);
    let scale = base.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    assert!(max_abs_diff(&base, &expanded) < 1e-5 * scale);
    assert_eq!(base_greedy, greedy);

    let trained = tiny_run(
        tmp.path(),
        "pro",
        "llamapro",
        "3",
        &["--llamapro_num_new_blocks", "2", "--learning_rate", "1e-2"],
    );
    let before = tensors_by_name(&ck.join("model.safetensors"));
    let after = tensors_by_name(&trained.join("checkpoint-3/model.safetensors"));
    for (name, t) in &after {
        let moved = changed(&before[name], t);
        let new_block = name.starts_with("model.layers.1.") || name.starts_with("model.layers.3.");
        assert_eq!(moved, new_block, "{name}");
    }
}

#[test]
fn a_plugins_tuner_trains_through_the_same_registry_and_adapter() {
    let python = reference_python(&["transformers", "peft"]);
    // example-attn-dora comes from the example .so: it picks q_proj/v_proj itself and asks the
    // host's lora adapter for DoRA; peft reads the result.
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    ok(swift1(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        "example-attn-dora",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-2",
    ]));
    let run = run_folder(&run);
    let ck = run.join("checkpoint-3");
    let names: Vec<String> = read_safetensors(&ck.join("adapter_model.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.contains(".q_proj.") || n.contains(".v_proj.")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("lora_magnitude_vector")),
        "{names:?}"
    );
    let listed = ok(swift1(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "list",
        "tuners",
    ]));
    assert!(listed.contains("example-attn-dora"), "{listed}");
    check_peft(&python, &tiny(), &ck, "1,2,3,4,5", 4);
}

/// `example-gain` (the example .so's own math, not a LoRA configuration: a trained gain per
/// output channel) trains, saves its own checkpoint layout and reloads with `swift infer
/// --adapters --plugin-dir`; its logits equal those of the base with each targeted weight's rows
/// scaled by `1 + g` by hand here, and its merge gives the same.
#[test]
fn a_plugins_own_tuner_math_trains_saves_and_reloads() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let pd = plugins.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    ok(swift1(&[
        "--plugin-dir",
        pd,
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        "example-gain",
        "--target_modules",
        "q_proj",
        "v_proj",
        "--max_steps",
        "3",
        "--learning_rate",
        "5e-2",
    ]));
    let ck = run_folder(&run).join("checkpoint-3");
    let cfg = read_json(&ck.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "EXAMPLE_GAIN", "{cfg}");
    let gains = read_safetensors(&ck.join("adapter_model.safetensors"));
    assert_eq!(gains.len(), 4, "q_proj and v_proj of 2 layers: {gains:?}");
    assert!(gains
        .iter()
        .all(|(n, g)| n.ends_with(".example_gain") && g.iter().any(|v| *v != 0.0)));
    // A LoRA flag the tuner does not read is refused by name.
    let refused = swift1(&[
        "--plugin-dir",
        pd,
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--tuner_type",
        "example-gain",
        "--lora_rank",
        "4",
    ]);
    assert_fails(refused, &["--lora_rank", "example-gain"]);

    // The base with every gained weight's rows scaled by hand.
    let scaled = tmp.path().join("scaled");
    std::fs::create_dir(&scaled).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() && f.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&f, scaled.join(f.file_name().unwrap())).unwrap();
        }
    }
    let bytes = std::fs::read(tiny().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(
            view.dtype(),
            safetensors::Dtype::F32,
            "the tiny model is float32"
        );
        let mut data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let slot = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        if let Some((_, g)) = gains
            .iter()
            .find(|(n, _)| *n == format!("base_model.model.{slot}.example_gain"))
        {
            let cols = view.shape()[1];
            for (i, v) in data.iter_mut().enumerate() {
                *v *= 1.0 + g[i / cols];
            }
        }
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name.to_string(), view.shape().to_vec(), raw));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, shape, raw)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw);
            (n.clone(), v.unwrap())
        })
        .collect();
    std::fs::write(
        scaled.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();

    let c = ck.to_str().unwrap();
    let (adapted, greedy) = infer_logits(&["--plugin-dir", pd, "--adapters", c], "1,2,3,4", 4);
    let (by_hand, greedy_by_hand) =
        infer_logits(&["--model", scaled.to_str().unwrap()], "1,2,3,4", 4);
    let (base, _) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3,4", 1);
    assert!(
        max_abs_diff(&adapted, &base) > 1e-4,
        "the gain changes the output"
    );
    assert!(
        max_abs_diff(&adapted, &by_hand) < 1e-4,
        "{}",
        max_abs_diff(&adapted, &by_hand)
    );
    assert_eq!(greedy, greedy_by_hand);
    let (merged, _) = infer_logits(
        &["--plugin-dir", pd, "--adapters", c, "--merge_lora", "true"],
        "1,2,3,4",
        1,
    );
    assert!(max_abs_diff(&merged, &adapted) < 1e-4);
}

#[test]
fn validation_split_is_evaluated_every_eval_steps() {
    // 10 rows, 20 % held out: 8 train, 2 validation; evaluated at steps 2, 4 and 6 (the end).
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(
        tmp.path(),
        "eval",
        "lora",
        "6",
        &[
            "--split_dataset_ratio",
            "0.2",
            "--eval_steps",
            "2",
            "--learning_rate",
            "1e-2",
            "--per_device_train_batch_size",
            "2",
        ],
    );
    let evals: Vec<(u64, f64, f64)> = records(&run)
        .iter()
        .filter_map(|r| {
            Some((
                r.get("step")?.as_u64()?,
                r.get("eval_loss")?.as_f64()?,
                r.get("eval_token_acc")?.as_f64()?,
            ))
        })
        .collect();
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 4, 6],
        "{evals:?}"
    );
    assert!(evals[2].1 < evals[0].1, "validation loss falls: {evals:?}");
    assert!(evals.iter().all(|e| (0.0..=1.0).contains(&e.2)));
    let args = args_json(&run);
    assert_eq!(args["train_rows"], 8);
    assert!(run.join("images/eval_loss.png").is_file());
}

#[test]
fn infer_merge_lora_folds_lora_and_dora_into_the_weights_with_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    for tuner in ["lora", "dora"] {
        let run = tiny_run(tmp.path(), tuner, tuner, "3", &["--learning_rate", "1e-2"]);
        let ck = run.join("checkpoint-3");
        let (hooked, greedy_hooked) =
            infer_logits(&["--adapters", ck.to_str().unwrap()], "1,2,3,4", 6);
        let (merged, greedy_merged) = infer_logits(
            &["--adapters", ck.to_str().unwrap(), "--merge_lora", "true"],
            "1,2,3,4",
            6,
        );
        let (base, _) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3,4", 1);
        let scale = hooked.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        assert!(max_abs_diff(&hooked, &merged) < 1e-4 * scale, "{tuner}");
        assert!(
            max_abs_diff(&hooked, &base) > 1e-3,
            "{tuner}: the adapter changes the output"
        );
        assert_eq!(greedy_hooked, greedy_merged, "{tuner}");
    }
}

#[test]
fn modules_to_save_train_whole_layers_that_peft_and_the_merge_agree_on() {
    // The tiny llama ties lm_head to the embedding table, as SmolLM2 does. peft 0.17 gives each
    // saved module its own copy (the tie is broken: saving lm_head alone leaves the embedding
    // at the base); swift does the same, so peft loads the adapter with no missing or
    // unexpected keys and computes swift's logits, with adapters on the fly, folded in at load
    // time, and exported merged (config.json then unties the two).
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny();
    for (name, modules) in [
        ("head", vec!["lm_head"]),
        ("both", vec!["embed_tokens", "lm_head"]),
    ] {
        let mut extra = vec![
            "--learning_rate",
            "1e-2",
            "--target_modules",
            "q_proj",
            "v_proj",
            "--modules_to_save",
        ];
        extra.extend(&modules);
        let run = tiny_run(tmp.path(), name, "lora", "4", &extra);
        let ck = run.join("checkpoint-4");
        let cfg = read_json(&ck.join("adapter_config.json"));
        let tensors = tensors_by_name(&ck.join("adapter_model.safetensors"));
        let base_table =
            tensors_by_name(&base.join("model.safetensors"))["model.embed_tokens.weight"].clone();
        let head = &tensors["base_model.model.lm_head.weight"];
        assert!(changed(&base_table, head), "lm_head trained");
        if name == "head" {
            assert_eq!(cfg["modules_to_save"], serde_json::json!(["lm_head"]));
            assert!(!tensors.contains_key("base_model.model.model.embed_tokens.weight"));
        } else {
            assert_eq!(
                cfg["modules_to_save"],
                serde_json::json!(["model.embed_tokens", "lm_head"])
            );
            let table = &tensors["base_model.model.model.embed_tokens.weight"];
            assert!(changed(&base_table, table), "the embedding trained");
            assert!(changed(table, head), "the copies are not tied");
        }
        check_peft(&python, &base, &ck, "1,2,3,4,5", 8);
        let (on_the_fly, greedy) = infer_logits(&["--adapters", ck.to_str().unwrap()], "1,2,3", 6);
        let (folded, greedy_folded) = infer_logits(
            &["--adapters", ck.to_str().unwrap(), "--merge_lora", "true"],
            "1,2,3",
            6,
        );
        assert!(max_abs_diff(&on_the_fly, &folded) < 1e-4);
        assert_eq!(greedy, greedy_folded);
        let merged = tmp.path().join(format!("{name}-merged"));
        ok(swift1(&[
            "export",
            "--adapters",
            ck.to_str().unwrap(),
            "--merge_lora",
            "true",
            "--output_dir",
            merged.to_str().unwrap(),
        ]));
        let mcfg = read_json(&merged.join("config.json"));
        assert_eq!(mcfg["tie_word_embeddings"], false);
        let (m, greedy_merged) = infer_logits(&["--model", merged.to_str().unwrap()], "1,2,3", 6);
        assert!(max_abs_diff(&on_the_fly, &m) < 1e-4);
        assert_eq!(greedy, greedy_merged);
        if name == "head" {
            continue;
        }
        // transformers loads the merged folder, and its weights are peft's merge_and_unload().
        let v = run_reference(
            &python,
            "merge_reference.py",
            &[&base, &ck, &merged, &"6", &"1,2,3"],
        );
        assert_eq!(v["missing"], serde_json::json!([]), "{v}");
        assert_eq!(v["unexpected"], serde_json::json!([]), "{v}");
        assert!(v["max_weight_diff"].as_f64().unwrap() < 1e-5, "{v}");
        assert_eq!(v["greedy"][0], greedy);
    }
    // What cannot be saved whole is a clear error.
    let data = ten_chat_rows(tmp.path());
    for (flags, want) in [
        (vec!["--modules_to_save", "nope"], "names no layer"),
        (
            vec!["--modules_to_save", "q_proj"],
            "both a LoRA target and in --modules_to_save",
        ),
        (
            vec!["--tuner_type", "full", "--modules_to_save", "lm_head"],
            "--modules_to_save is for LoRA tuners",
        ),
    ] {
        let mut args = vec![
            "sft",
            "--model",
            base.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
        ];
        let out_dir = tmp.path().join("bad");
        args.push(out_dir.to_str().unwrap());
        args.extend(flags);
        assert_fails(swift1(&args), &[want]);
    }
}

#[test]
fn bfloat16_training_keeps_the_lora_tensors_in_float32() {
    // A bfloat16 base with float32 adapters (PEFT's autocast_adapter_dtype): the first loss is
    // the float32 run's up to bfloat16 rounding, the loss falls, and the adapter is saved F32.
    let tmp = tempfile::tempdir().unwrap();
    let f32_run = tiny_run(tmp.path(), "f32", "lora", "6", &["--learning_rate", "1e-2"]);
    let bf16_run = tiny_run(
        tmp.path(),
        "bf16",
        "lora",
        "6",
        &["--learning_rate", "1e-2", "--torch_dtype", "bfloat16"],
    );
    let (a, b) = (step_losses(&f32_run), step_losses(&bf16_run));
    assert_eq!((a.len(), b.len()), (6, 6));
    assert!(
        (a[0] - b[0]).abs() < 2e-2 * a[0],
        "first loss {} (float32) vs {} (bfloat16)",
        a[0],
        b[0]
    );
    assert!(b[4] + b[5] < b[0] + b[1], "the loss falls: {b:?}");
    let args = args_json(&bf16_run);
    assert_eq!(args["torch_dtype"], "bfloat16");
    let bytes = std::fs::read(bf16_run.join("checkpoint-6/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    }
}
