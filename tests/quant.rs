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

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn tiny() -> PathBuf {
    workspace_root().join("tests/fixtures/models/llama")
}

fn expected() -> Value {
    let p = workspace_root().join("tests/fixtures/quant/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Runs swift with one libtorch thread (the machine is shared).
fn swift1(args: &[&str]) -> std::process::Output {
    swift_env(args, &[("OMP_NUM_THREADS", "1")])
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
    let v: Value = serde_json::from_str(
        ok(swift1(&[
            "infer",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--debug_input_ids",
            ids,
            "--debug_greedy_tokens",
            "1",
        ]))
        .trim(),
    )
    .unwrap();
    floats(&v["last_logits"])
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn ids(exp: &Value) -> String {
    exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn bnb_and_rtn_exports_load_and_match_the_numpy_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = expected();
    let ids = ids(&exp);
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
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
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
    let p = dir.join("calib.jsonl");
    let words = [
        "the", "weather", "is", "sunny", "and", "warm", "today", "with", "a", "light", "breeze",
        "blue", "color", "four", "hello", "there", "name", "long", "sentence", "west",
    ];
    let mut text = String::new();
    for i in 0..12 {
        let row: Vec<&str> = (0..40)
            .map(|j| words[(i * 7 + j * 3 + j * j) % words.len()])
            .collect();
        text.push_str(&serde_json::json!({ "text": row.join(" ") }).to_string());
        text.push('\n');
    }
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn gptq_and_awq_calibrate_and_their_exports_load() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = calibration_file(tmp.path());
    let exp = expected();
    let ids = ids(&exp);
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
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
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
    let data = tmp.path().join("data.jsonl");
    let mut text = String::new();
    for (q, a) in [
        ("hi", "hello there"),
        ("what is two plus two", "four"),
        ("name a color", "blue is a color"),
        ("ok", "fine"),
    ] {
        text.push_str(
            &serde_json::json!({"messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a}
            ]})
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&data, text).unwrap();
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
    let err = stderr(&out);
    let out = ok(out);
    assert!(
        err.contains("QLoRA: 14 linear slots frozen as bnb 4-bit"),
        "{err}"
    );
    assert!(out.trim().ends_with("checkpoint-10"), "{out}");
    let losses: Vec<f64> = std::fs::read_to_string(run.join("logging.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("step").is_some())
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
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
        let out = swift1(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let e = stderr(&out);
        assert!(e.contains(want), "{args:?}: {e}");
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
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
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

/// One HTTP request over a plain socket; the response body.
fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connects");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn deploy_serves_a_quantized_export_like_infer() {
    // The packed folder loads in `swift deploy` as in `swift infer`: the greedy answer of one
    // chat request is the same text.
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nf4");
    export(
        &tiny(),
        &out,
        &["--quant_method", "bnb", "--quant_bits", "4"],
    );
    let rows = tmp.path().join("q.jsonl");
    std::fs::write(
        &rows,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}\n",
    )
    .unwrap();
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
    let line = std::fs::read_to_string(&result).unwrap();
    let want: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let mut child = std::process::Command::new(swift_bin())
        .args([
            "deploy",
            "--model",
            out.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().strip_prefix("listening on ").map(String::from);
    let reply = addr.as_deref().map(|a| {
        http_post(
            a,
            "/v1/chat/completions",
            r#"{"model": "nf4", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8, "temperature": 0}"#,
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let (status, body) = reply.unwrap_or_else(|| panic!("no listening line: {first:?}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"], want["response"],
        "deploy {body} vs infer {want}"
    );
}
