//! BOFT and FourierFT against PEFT 0.21 (issue 16), with tuners.rs's helpers: the forward pass
//! and gradients in-process on the tiny llama holding PEFT's tensors (references recorded by
//! `tests/reference/boft_fourierft_reference.py`), FourierFT's spectral positions equal to
//! PEFT's, and end to end: a `swift sft` checkpoint that peft loads with no missing or
//! unexpected keys and the same logits as `swift infer --adapters`, and merged logits equal to
//! unmerged ones. BOFT above one butterfly factor (which PEFT on a CPU cannot run: it forces the
//! factor to 1 without its CUDA extension) is checked against the paper's dense formula in
//! `plugins/tuners/src/boft.rs`'s unit tests, and here trained, reloaded and merged.

use crate::common::*;
use crate::tuners::{matches_reference, trains_and_peft_agrees};
use serde_json::json;

const TARGETS: &[&str] = &["q_proj", "v_proj", "down_proj"];

#[test]
fn boft_matches_peft_and_peft_loads_its_checkpoint() {
    matches_reference(
        "boft",
        json!({"boft_block_size": 4, "boft_n_butterfly_factor": 1}),
        TARGETS,
        "boft_reference.json",
        &[],
    );
    trains_and_peft_agrees(
        "boft",
        &[
            "--target_modules",
            "q_proj",
            "v_proj",
            "down_proj",
            "--boft_block_size",
            "8",
            "--boft_n_butterfly_factor",
            "1",
            "--boft_dropout",
            "0.25",
        ],
    );
}

#[test]
fn boft_with_two_butterfly_factors_trains_reloads_and_merges() {
    // --boft_block_num 4 with 2 factors: q_proj (64 inputs) gets blocks of 16, down_proj (128)
    // blocks of 32, two factors each; the checkpoint says so, and merging changes nothing.
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    ok(swift1(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        "boft",
        "--target_modules",
        "q_proj",
        "down_proj",
        "--boft_block_num",
        "4",
        "--boft_n_butterfly_factor",
        "2",
        "--max_steps",
        "2",
        "--learning_rate",
        "5e-2",
    ]));
    let ck = run_folder(&run).join("checkpoint-2");
    let config = read_json(&ck.join("adapter_config.json"));
    assert_eq!(
        (
            &config["peft_type"],
            &config["boft_block_num"],
            &config["boft_block_size"],
            &config["boft_n_butterfly_factor"]
        ),
        (&json!("BOFT"), &json!(4), &json!(0), &json!(2))
    );
    let shapes: std::collections::BTreeMap<String, Vec<i64>> =
        tch::Tensor::read_safetensors(ck.join("adapter_model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.size()))
            .collect();
    assert_eq!(
        shapes["base_model.model.model.layers.0.self_attn.q_proj.boft_R"],
        [2, 4, 16, 16]
    );
    assert_eq!(
        shapes["base_model.model.model.layers.1.mlp.down_proj.boft_R"],
        [2, 4, 32, 32]
    );
    let c = ck.to_str().unwrap();
    let (base, _) = infer_logits(&["--model", tiny().to_str().unwrap()], "1,2,3,4", 1);
    let (hooked, _) = infer_logits(&["--adapters", c], "1,2,3,4", 1);
    let (merged, _) = infer_logits(&["--adapters", c, "--merge_lora", "true"], "1,2,3,4", 1);
    assert!(
        max_abs_diff(&base, &hooked) > 1e-3,
        "training moved nothing"
    );
    let d = max_abs_diff(&hooked, &merged);
    assert!(d < 1e-4, "merged and unmerged logits differ by {d}");
}

#[test]
fn fourierft_matches_peft_and_peft_loads_its_checkpoint() {
    let r = read_json(&workspace_root().join("tests/reference/fourierft_reference.json"));
    {
        // The positions PEFT drew from random_loc_seed 777 for n_frequency 100, per slot shape
        // (the tiny llama: hidden 64, 2 key/value heads of 16, intermediate 128).
        let _turn = torch_rng();
        let positions = r["positions"].as_object().unwrap();
        assert_eq!(positions.len(), 6);
        for (slot, rc) in positions {
            let (out, inp) = match slot.rsplit('.').next().unwrap() {
                "q_proj" => (64, 64),
                "v_proj" => (32, 64),
                "down_proj" => (64, 128),
                other => panic!("unexpected slot {other}"),
            };
            let rows = floats(&rc[0]);
            let cols = floats(&rc[1]);
            let peft: Vec<i64> = rows
                .iter()
                .zip(&cols)
                .map(|(r, c)| *r as i64 * inp + *c as i64)
                .collect();
            let ours = swift_plugin_tuners::fourierft::positions(out, inp, 100, 777).unwrap();
            assert_eq!(ours, peft, "{slot}");
        }
    }
    matches_reference(
        "fourierft",
        json!({"fourier_n_frequency": 100, "fourier_scaling": 100.0, "random_loc_seed": 777}),
        TARGETS,
        "fourierft_reference.json",
        &[],
    );
    trains_and_peft_agrees(
        "fourierft",
        &[
            "--target_modules",
            "q_proj",
            "v_proj",
            "--fourier_n_frequency",
            "64",
            "--fourier_scaling",
            "50",
            "--random_loc_seed",
            "5",
        ],
    );
}

#[test]
fn peft_made_boft_and_fourierft_checkpoints_give_peft_logits() {
    // PEFT's own files (BOFT by block count, FourierFT with another seed and targets), read by
    // `swift infer --adapters` through the same tuners: the logits are peft's.
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny();
    let v = run_reference(
        &python,
        "make_peft_boft_fourierft.py",
        &[&base, &tmp.path(), &"1,2,3,4"],
    );
    for name in ["boft", "fourierft"] {
        let ck = tmp.path().join(name);
        let peft = floats(&v[name]["last_logits"]);
        let (ours, _) = infer_logits(&["--adapters", ck.to_str().unwrap()], "1,2,3,4", 1);
        let d = max_abs_diff(&peft, &ours);
        assert!(d < 1e-4, "{name}: peft and swift logits differ by {d}");
        assert!(
            max_abs_diff(&peft, &floats(&v[name]["base_last_logits"])) > 1e-2,
            "{name}: the adapter changes nothing"
        );
    }
}
