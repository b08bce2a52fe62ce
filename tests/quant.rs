//! Quantization end to end on the tiny random llama of tests/fixtures/models/ (fast):
//!
//! * `swift export --quant_method bnb|rtn` writes a packed folder (config.json carries a
//!   `quantization_config`, 4-bit weights at most 0.3× the float32 file), and `swift infer`
//!   loads it directly: its logits equal, within 1e-4, those of Hugging Face transformers on
//!   weights quantized independently in numpy (tests/reference/quant_reference.py, recorded in
//!   tests/fixtures/quant/expected.json): NF4 with double-quantized absmax, FP4, round-to-nearest
//!   at group size 32;
//! * `gptq` (act-order) and `awq` calibrate on a small text file, and their exports load;
//!   8-bit GPTQ moves the float logits less than a quarter as much as 4-bit GPTQ;
//! * QLoRA (`swift sft --quant_method bnb --quant_bits 4`): the loss falls;
//! * one clear error each: unknown quantizer, missing calibration set, unsupported bits, unknown
//!   model family, full fine-tuning over a quantized base.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// The recorded references: logits of transformers on numpy-quantized weights.
fn quant_expected() -> Value {
    read_json(&fixture_file("quant/expected.json"))
}

fn export(model: &Path, out: &Path, flags: &[&str]) -> Value {
    let mut args = vec![
        "export",
        "--model",
        model.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(flags);
    serde_json::from_str(ok(swift1(&args)).trim()).unwrap()
}

fn logits(model: &Path, ids: &str) -> Vec<f64> {
    infer_logits(
        &["--model", model.to_str().unwrap(), "--device", "cpu"],
        ids,
        1,
    )
    .0
}

#[test]
fn bnb_and_rtn_exports_load_and_match_the_numpy_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = quant_expected();
    let ids = ids_arg(&exp["input_ids"]);
    let float = floats(&exp["float32"]);
    let float_size = file_size(&tiny().join("model.safetensors"));
    for (name, flags) in [
        (
            "bnb_nf4",
            vec!["--quant_method", "bnb", "--quant_bits", "4"],
        ),
        (
            "bnb_fp4",
            vec![
                "--quant_method",
                "bnb",
                "--quant_bits",
                "4",
                "--bnb_4bit_quant_type",
                "fp4",
                "--bnb_4bit_use_double_quant",
                "false",
            ],
        ),
        (
            "rtn4_g32",
            vec![
                "--quant_method",
                "rtn",
                "--quant_bits",
                "4",
                "--group_size",
                "32",
            ],
        ),
    ] {
        let out = tmp.path().join(name);
        let summary = export(&tiny(), &out, &flags);
        assert_eq!(summary["slots"], 14, "{summary}");
        // Packed: 4-bit weights at most 0.3x the float32 file.
        let size = file_size(&out.join("model.safetensors"));
        assert!(
            (size as f64) <= 0.3 * float_size as f64,
            "{name}: {size} bytes vs float32 {float_size}"
        );
        let config = read_json(&out.join("config.json"));
        let q = &config["quantization_config"];
        assert_eq!(q["bits"], 4, "{q}");
        assert_eq!(q["format"], "swift-rs/packed-v1", "{q}");
        assert_eq!(q["modules_not_converted"][0], "lm_head", "{q}");
        // The tokenizer and the rest travel along, so infer needs no flags.
        assert!(out.join("tokenizer.json").is_file());
        let got = logits(&out, &ids);
        let want = floats(&exp[name]);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "{name}: logits differ from the reference by {d}");
        // And the quantization is real: the float model's logits are far away.
        assert!(max_abs_diff(&got, &float) > 0.1, "{name}: equal to float32");
    }
}

fn calibration_file(dir: &Path) -> PathBuf {
    let words = [
        "the", "weather", "is", "sunny", "and", "warm", "today", "with", "a", "light", "breeze",
        "blue", "color", "four", "hello", "there", "name", "long", "sentence", "west",
    ];
    write_jsonl(
        &dir.join("calib.jsonl"),
        (0..12).map(|i| {
            let row: Vec<&str> = (0..40)
                .map(|j| words[(i * 7 + j * 3 + j * j) % words.len()])
                .collect();
            serde_json::json!({ "text": row.join(" ") })
        }),
    )
}

#[test]
fn gptq_and_awq_calibrate_and_their_exports_load() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = calibration_file(tmp.path());
    let exp = quant_expected();
    let ids = ids_arg(&exp["input_ids"]);
    let float = floats(&exp["float32"]);
    let c = calib.to_str().unwrap();
    let common = [
        "--dataset",
        c,
        "--quant_n_samples",
        "8",
        "--max_length",
        "48",
    ];
    let mut d4 = 0.0f64;
    for (name, method) in [("gptq4", "gptq"), ("awq4", "awq")] {
        let out = tmp.path().join(name);
        export(
            &tiny(),
            &out,
            &[
                &[
                    "--quant_method",
                    method,
                    "--quant_bits",
                    "4",
                    "--group_size",
                    "32",
                ],
                &common[..],
            ]
            .concat(),
        );
        let config = read_json(&out.join("config.json"));
        assert_eq!(config["quantization_config"]["quant_method"], method);
        assert_eq!(
            config["quantization_config"]["desc_act"],
            method == "gptq",
            "act-order is GPTQ's default"
        );
        let got = logits(&out, &ids);
        assert!(got.iter().all(|x| x.is_finite()));
        let d = max_abs_diff(&got, &float);
        assert!(d > 1e-3 && d < 5.0, "{name}: {d}");
        if name == "gptq4" {
            d4 = d;
        }
    }
    let gptq8 = tmp.path().join("gptq8");
    let s = export(
        &tiny(),
        &gptq8,
        &[
            &[
                "--quant_method",
                "gptq",
                "--quant_bits",
                "8",
                "--group_size",
                "32",
            ],
            &common[..],
        ]
        .concat(),
    );
    assert_eq!(s["quant_method"], "gptq", "{s}");
    let d = max_abs_diff(&logits(&gptq8, &ids), &float);
    assert!(
        d < d4 / 4.0,
        "8-bit GPTQ moved the logits by {d}, 4-bit by {d4}"
    );

    // AWQ stores its per-channel input scale.
    let st = std::fs::read(tmp.path().join("awq4/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert!(st.names().iter().any(|n| n.ends_with("q_proj.input_scale")));
}

#[test]
fn qlora_trains_lora_over_a_frozen_4bit_base_and_the_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chat(
        &tmp.path().join("data.jsonl"),
        &[
            ("hi", "hello there"),
            ("what is two plus two", "four"),
            ("name a color", "blue is a color"),
            ("ok", "fine"),
        ],
    );
    let run = tmp.path().join("run");
    let out = swift1(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--quant_method",
        "bnb",
        "--quant_bits",
        "4",
        "--tuner_type",
        "lora",
        "--max_steps",
        "10",
        "--learning_rate",
        "1e-2",
        "--lora_dropout",
        "0",
        "--per_device_train_batch_size",
        "4",
        "--dataset_shuffle",
        "false",
        "--train_dataloader_shuffle",
        "false",
        "--logging_steps",
        "1",
        "--device",
        "cpu",
    ]);
    let run = run_folder(&run);
    let err = stderr(&out);
    let out = ok(out);
    assert!(
        err.contains("QLoRA: 14 linear slots frozen as bnb 4-bit"),
        "{err}"
    );
    assert!(out.trim().ends_with("checkpoint-10"), "{out}");
    let losses: Vec<f64> = steps(&run).iter().map(|r| num(r, "loss")).collect();
    // Every step sees the same batch (4 rows, batch 4, no shuffling).
    assert_eq!(losses.len(), 10);
    assert!(losses[9] < 0.8 * losses[0], "loss did not fall: {losses:?}");
    assert!(run
        .join("checkpoint-10/adapter_model.safetensors")
        .is_file());
}

#[test]
fn bad_requests_get_one_clear_error_each() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny();
    let m = model.to_str().unwrap();
    let o = tmp.path().join("o");
    let o = o.to_str().unwrap();
    let fails = |args: &[&str], want: &str| {
        assert_fails(swift1(args), &[want]);
    };
    fails(
        &[
            "export",
            "--model",
            m,
            "--quant_method",
            "gtpq",
            "--quant_bits",
            "4",
            "--output_dir",
            o,
        ],
        "unknown quantizer `gtpq`; did you mean `gptq`",
    );
    fails(
        &[
            "export",
            "--model",
            m,
            "--quant_method",
            "gptq",
            "--quant_bits",
            "4",
            "--output_dir",
            o,
        ],
        "gptq needs a calibration set: pass --dataset",
    );
    fails(
        &[
            "export",
            "--model",
            m,
            "--quant_method",
            "awq",
            "--quant_bits",
            "8",
            "--output_dir",
            o,
        ],
        "quantizer `awq` does not support 8-bit weights; --quant_bits must be 4",
    );
    fails(
        &[
            "export",
            "--model",
            m,
            "--quant_method",
            "bnb",
            "--quant_bits",
            "3",
            "--output_dir",
            o,
        ],
        "--quant_bits must be 4 or 8",
    );
    // A model whose family no plugin provides.
    let foo = tmp.path().join("foo");
    std::fs::create_dir_all(&foo).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(model.join(f), foo.join(f)).unwrap();
    }
    let mut config = read_json(&model.join("config.json"));
    config["architectures"] = serde_json::json!(["FooForCausalLM"]);
    config["model_type"] = serde_json::json!("foo");
    std::fs::write(foo.join("config.json"), config.to_string()).unwrap();
    fails(
        &[
            "export",
            "--model",
            foo.to_str().unwrap(),
            "--quant_method",
            "rtn",
            "--quant_bits",
            "4",
            "--output_dir",
            o,
        ],
        "unknown architecture",
    );
    fails(
        &[
            "sft",
            "--model",
            m,
            "--dataset",
            "x.jsonl",
            "--quant_method",
            "bnb",
            "--quant_bits",
            "4",
            "--tuner_type",
            "full",
        ],
        "not --tuner_type full",
    );
}

#[test]
fn every_quantizer_is_registered() {
    let v: Value = serde_json::from_str(&ok(swift1(&["list", "quantizers", "--json"]))).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for want in ["awq", "bnb", "gptq", "hqq", "rtn"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn deploy_serves_a_quantized_export_like_infer() {
    // The packed folder loads in `swift deploy` as in `swift infer`: the greedy answer of one
    // chat request is the same text.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nf4");
    export(
        &tiny(),
        &out,
        &["--quant_method", "bnb", "--quant_bits", "4"],
    );
    let rows = write_jsonl(&tmp.path().join("q.jsonl"), [user_row("hello there")]);
    let result = tmp.path().join("r.jsonl");
    ok(swift1(&[
        "infer",
        "--model",
        out.to_str().unwrap(),
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        result.to_str().unwrap(),
        "--max_new_tokens",
        "8",
        "--temperature",
        "0",
    ]));
    let want = read_jsonl(&result).remove(0);
    let server = Server::start(&["--model", out.to_str().unwrap()]);
    let (status, body) = server.post(
        "/v1/chat/completions",
        r#"{"model": "nf4", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8, "temperature": 0}"#,
    );
    drop(server);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"], want["response"],
        "deploy {body} vs infer {want}"
    );
}
