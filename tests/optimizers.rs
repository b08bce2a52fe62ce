//! Optimizers as a registry kind (`--optimizer NAME`, ARCHITECTURE.md §3.8), end to end on the
//! tiny llama of tests/fixtures/models/ (the math itself is compared with galore_torch and the
//! Q-GaLore transcription in plugins/optimizers' unit tests):
//!
//! * `swift list optimizers --json` lists the built-ins with their options;
//! * full fine-tuning with `--use_galore true` (GaLore) and with `--galore_quantization true`
//!   (Q-GaLore) resumed from a mid-run checkpoint logs exactly the uninterrupted run's losses and
//!   ends on the same weights (the checkpoint carries the projections, moments and, for
//!   Q-GaLore, the adaptive gap); the run crosses projection refreshes before and after the
//!   checkpoint;
//! * a galore flag with `adamw`, `--galore_quantization` without `--use_galore`, and
//!   `--use_galore` against another `--optimizer` are refused by name;
//! * a plugin's optimizer: the example plugin's `example-sign-sgd` trains LoRA through
//!   `--plugin-dir`: after one step every element of `lora_B` (zero at the start) is exactly
//!   ±lr or 0, signSGD's hand-computed update; a trainer flag it does not read is refused.

use std::path::{Path, PathBuf};

use crate::common::*;

fn sft(out: &Path, extra: &[&str]) -> PathBuf {
    let data = ten_chat_rows(out.parent().unwrap());
    let base = [
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
        "--logging_steps",
        "1",
    ]
    .map(String::from);
    let args: Vec<String> = base
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // One libtorch thread: a projection refresh takes the SVD of the gradient, whose singular
    // vectors (and so the moments' coordinates) follow the last bits of the gradient, which a
    // changing thread count (threads.rs gives up a core while the machine is busy) would move.
    ok(swift_env(&args, &[("OMP_NUM_THREADS", "1")]));
    run_folder(out)
}

#[test]
fn list_optimizers_shows_the_builtins_with_their_options() {
    let rows: serde_json::Value =
        serde_json::from_str(&ok(swift(&["list", "optimizers", "--json"]))).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["adamw", "galore", "q_galore"]);
    let galore = &rows[1];
    let opt = |n: &str| {
        galore["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {galore}"))
    };
    assert_eq!(opt("galore_rank")["default"], 128);
    assert_eq!(opt("galore_update_proj_gap")["default"], 50);
    assert_eq!(opt("galore_scale")["default"], 1.0);
}

#[test]
fn galore_and_q_galore_resume_mid_run_to_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("galore", &["--use_galore", "true"][..]),
        (
            "q_galore",
            &["--use_galore", "true", "--galore_quantization", "true"][..],
        ),
    ] {
        let common = [
            flags,
            &[
                "--tuner_type",
                "full",
                "--galore_rank",
                "4",
                "--galore_update_proj_gap",
                "2",
                "--learning_rate",
                "1e-2",
                "--max_steps",
                "6",
                "--save_steps",
                "3",
            ][..],
        ]
        .concat();
        let whole = sft(&tmp.path().join(format!("{name}-whole")), &common);
        assert_eq!(
            args_json(&whole)["optimizer"],
            name,
            "the optimizer that ran"
        );
        let ck3 = whole.join("checkpoint-3");
        let state = tensor_names(&ck3.join("optimizer.safetensors"));
        assert!(
            state.iter().any(|n| n.starts_with("optim.ortho.")),
            "{name}: the projections are saved: {state:?}"
        );
        let resumed = sft(
            &tmp.path().join(format!("{name}-resumed")),
            &[
                &common[..],
                &["--resume_from_checkpoint", ck3.to_str().unwrap()],
            ]
            .concat(),
        );
        let (a, b) = (step_losses(&whole), step_losses(&resumed));
        assert_eq!(a.len(), 6, "{name}: {a:?}");
        assert_eq!(b.len(), 3, "{name}: {b:?}");
        for (i, l) in b.iter().enumerate() {
            assert!(
                (l - a[3 + i]).abs() < 1e-6,
                "{name} step {}: resumed {l} vs {}",
                i + 4,
                a[3 + i]
            );
        }
        assert!(a[5] < a[0], "{name}: the loss falls: {a:?}");
        let weights = |run: &Path| tensors_by_name(&run.join("checkpoint-6/model.safetensors"));
        let (wa, wb) = (weights(&whole), weights(&resumed));
        for (n, va) in &wa {
            assert!(
                max_abs_diff(
                    &va.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                    &wb[n].iter().map(|&x| x as f64).collect::<Vec<_>>()
                ) < 1e-6,
                "{name}: {n} differs"
            );
        }
    }
}

#[test]
fn optimizer_flags_that_cannot_apply_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let model = tiny();
    let base = [
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        tmp.path().to_str().unwrap(),
        "--max_steps",
        "1",
    ];
    for (extra, needles) in [
        (&["--galore_rank", "4"][..], &["--galore_rank", "adamw"][..]),
        (
            &["--galore_quantization", "true"][..],
            &["--galore_quantization", "--use_galore"][..],
        ),
        (
            &["--use_galore", "true", "--optimizer", "adamw"][..],
            &["--use_galore", "--optimizer adamw"][..],
        ),
        (&["--optimizer", "galor"][..], &["galor", "galore"][..]),
    ] {
        assert_fails(swift(&[&base[..], extra].concat()), needles);
    }
}

#[test]
fn a_plugins_optimizer_trains_with_its_own_update() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let pd = plugins.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let out = tmp.path().join("run");
    let model = tiny();
    let args = [
        "--plugin-dir",
        pd,
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
        "--optimizer",
        "example-sign-sgd",
        "--max_steps",
        "1",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler_type",
        "constant",
    ];
    ok(swift1(&args));
    let ck = run_folder(&out).join("checkpoint-1");
    let b: Vec<f32> = read_safetensors(&ck.join("adapter_model.safetensors"))
        .into_iter()
        .filter(|(n, _)| n.contains(".lora_B."))
        .flat_map(|(_, v)| v)
        .collect();
    assert!(!b.is_empty());
    assert!(
        b.iter().all(|x| *x == 0.0 || (x.abs() - 1e-3).abs() < 1e-9),
        "signSGD moves B by exactly ±lr: {:?}",
        &b[..8]
    );
    assert!(b.iter().any(|x| *x != 0.0));
    // Adam's flags are not its options.
    let mut refused = args.to_vec();
    refused.extend(["--adam_beta1", "0.8"]);
    assert_fails(swift1(&refused), &["--adam_beta1", "example-sign-sgd"]);
}
