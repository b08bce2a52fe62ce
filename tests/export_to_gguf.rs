//! `swift export --model DIR --to_gguf` and `--to_ollama` through the real binary:
//!
//! * the tiny llama, mistral and qwen2 fixtures become GGUF files that the Python `gguf` package
//!   (llama.cpp's reader) reads, with the metadata of their config.json and tensors equal to an
//!   independent re-implementation of llama.cpp's converter (tests/reference/gguf_check.py:
//!   names, Q/K row permutation, Llama-3 RoPE factors, vocabulary and merges);
//! * re-imported by swift (`--model FILE.gguf`, llama and qwen2), an f32 export gives the source
//!   folder's logits;
//!   q8_0 and q4_0 exports stay close and are smaller;
//! * `--to_ollama` writes a Modelfile whose TEMPLATE, SYSTEM and stop lines come from the
//!   swift template;
//! * with the default model present: SmolLM2 exported to f32 equals the original Q4_1 GGUF's
//!   dequantized tensors and metadata (tests/reference/gguf_compare.py) and gives the folder's
//!   logits when re-imported; exported to q4_1, its tensors are the original's bytes;
//! * bad input is one clear error.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// swift with one thread and its GGUF conversion cache in `cache_dir` (so re-imports are fresh).
fn swift_in(cache_dir: &Path, args: &[&str]) -> std::process::Output {
    swift_env(
        args,
        &[ONE_THREAD, ("SWIFT_RS_CACHE", cache_dir.to_str().unwrap())],
    )
}

fn export(cache_dir: &Path, model: &Path, ty: &str, out: &Path) -> PathBuf {
    let printed = ok(swift_in(
        cache_dir,
        &[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--to_gguf",
            "--gguf_type",
            ty,
            "--output_dir",
            out.to_str().unwrap(),
        ],
    ));
    let path = PathBuf::from(printed.lines().last().unwrap().trim());
    assert!(path.is_file(), "{} written", path.display());
    path
}

fn logits(cache_dir: &Path, model: &Path, ids: &str) -> (Vec<f64>, Value) {
    infer_logits_env(
        &[ONE_THREAD, ("SWIFT_RS_CACHE", cache_dir.to_str().unwrap())],
        &["--model", model.to_str().unwrap()],
        ids,
        6,
    )
}

#[test]
fn tiny_models_export_to_gguf_that_llama_cpp_tools_read() {
    let python = reference_python(&["gguf", "numpy", "safetensors"]);
    let tmp = tempfile::tempdir().unwrap();
    for (name, arch, ty, heads) in [
        ("mistral", "llama", "f32", 4),
        ("llama", "llama", "f16", 4),
        ("qwen2", "qwen2", "q8_0", 4),
        ("mistral", "llama", "q4_0", 4),
    ] {
        let file = export(tmp.path(), &tiny_model(name), ty, &tmp.path().join(name));
        assert!(
            file.ends_with(format!("{name}-{ty}.gguf")),
            "{}",
            file.display()
        );
        let v = run_reference(&python, "gguf_check.py", &[&file, &tiny_model(name)]);
        let m = &v["metadata"];
        assert_eq!(m["general.architecture"], arch, "{name}");
        assert_eq!(m[format!("{arch}.block_count")], 2);
        assert_eq!(m[format!("{arch}.embedding_length")], 64);
        assert_eq!(m[format!("{arch}.feed_forward_length")], 128);
        assert_eq!(m[format!("{arch}.attention.head_count")], heads);
        assert_eq!(m[format!("{arch}.attention.head_count_kv")], 2);
        assert_eq!(m[format!("{arch}.rope.dimension_count")], 16);
        assert_eq!(m["tokenizer.ggml.model"], "gpt2");
        assert_eq!(m["tokenizer.ggml.eos_token_id"], 2);
        assert_eq!(v["array_lengths"]["tokenizer.ggml.tokens"], 320);
        assert_eq!(v["tokens_match"], true, "{name}: vocabulary in id order");
        assert_eq!(v["merges_match"], true, "{name}: merges");
        assert_eq!(v["missing"], serde_json::json!([]), "{name}: {v}");
        assert_eq!(v["unexpected"], serde_json::json!([]), "{name}: {v}");
        assert_eq!(v["shape_mismatches"], serde_json::json!([]), "{name}");
        // Norms stay F32 (exact); matrices are within the type's rounding.
        let max_abs = v["max_abs"].as_f64().unwrap();
        assert_eq!(v["max_diff"]["F32"], 0.0, "{name}: {v}");
        match ty {
            "f16" => {
                let d = v["max_diff"]["F16"].as_f64().unwrap();
                assert!(d <= max_abs / 1024.0, "{name}: f16 error {d}");
            }
            "q8_0" => {
                let d = v["max_diff"]["Q8_0"].as_f64().unwrap();
                assert!(d > 0.0 && d <= max_abs / 127.0, "{name}: q8_0 error {d}");
            }
            "q4_0" => {
                // Q4_0 steps are max/8 per block of 32; the output projection stays Q8_0.
                let d = v["max_diff"]["Q4_0"].as_f64().unwrap();
                assert!(d > 0.0 && d <= max_abs / 8.0, "{name}: q4_0 error {d}");
                assert!(v["max_diff"]["Q8_0"].as_f64().unwrap() <= max_abs / 127.0);
                assert_eq!(m["general.file_type"], 2);
            }
            _ => assert_eq!(v["max_diff"].as_object().unwrap().len(), 1, "{v}"),
        }
        if name == "llama" {
            // Llama-3 RoPE scaling travels as rope_freqs.weight (checked against the formula
            // above, as F32) and, for swift's own re-import, as swift.rope_scaling.
            assert!(m["swift.rope_scaling"].as_str().unwrap().contains("llama3"));
            assert_eq!(m["general.file_type"], 1);
        }
    }
}

#[test]
fn f32_exports_reimport_with_the_same_logits_and_quantized_ones_stay_close() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = "1,2,3,4,5,6,7";
    // mistral: untied output, no RoPE scaling; llama: tied, Llama-3 RoPE scaling; qwen2: Q/K/V
    // biases, no row permutation.
    for name in ["mistral", "llama", "qwen2"] {
        let src = tiny_model(name);
        let (want, want_greedy) = logits(tmp.path(), &src, ids);
        let f32_file = export(tmp.path(), &src, "f32", &tmp.path().join(name));
        let (got, got_greedy) = logits(tmp.path(), &f32_file, ids);
        let d = max_abs_diff(&want, &got);
        assert!(d < 1e-4, "{name}: f32 round trip changes logits by {d}");
        assert_eq!(want_greedy, got_greedy, "{name}");
        let f32_size = file_size(&f32_file);
        let scale = max_abs(&want);
        // Random tiny models are far more sensitive to rounding than trained ones, so only
        // q8_0 is compared on logits here (q4_0 is checked per tensor against gguf-py above,
        // and on SmolLM2 in the README's figures).
        for ty in ["q8_0", "q4_0"] {
            let file = export(
                tmp.path(),
                &src,
                ty,
                &tmp.path().join(format!("{name}-{ty}")),
            );
            if ty == "q8_0" {
                let (q, _) = logits(tmp.path(), &file, ids);
                let d = max_abs_diff(&want, &q);
                assert!(
                    d > 0.0 && d < 0.15 * scale,
                    "{name} {ty}: logits differ by {d} (scale {scale})"
                );
            }
            let ratio = 0.35;
            let size = file_size(&file);
            assert!(
                (size as f64) < ratio * f32_size as f64,
                "{name} {ty}: {size} bytes vs {f32_size} for f32"
            );
        }
    }
}

#[test]
fn modelfile_comes_from_the_swift_template() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ollama");
    let printed = ok(swift_in(
        tmp.path(),
        &[
            "export",
            "--model",
            tiny_model("llama").to_str().unwrap(),
            "--to_ollama",
            "true",
            "--template",
            "qwen2_5",
            "--output_dir",
            out.to_str().unwrap(),
        ],
    ));
    assert!(printed.contains("Modelfile") && printed.contains("llama-f16.gguf"));
    let text = std::fs::read_to_string(out.join("Modelfile")).unwrap();
    let want = r#"FROM ./llama-f16.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ else }}<|im_start|>system
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>
{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
<|im_start|>assistant
{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>
{{ end }}{{ end }}"""
SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""
PARAMETER stop "<|im_end|>"
"#;
    assert_eq!(text, want);

    // Llama-3: no default system, <|eot_id|> closes turns.
    let out3 = tmp.path().join("ollama3");
    ok(swift_in(
        tmp.path(),
        &[
            "export",
            "--model",
            tiny_model("llama").to_str().unwrap(),
            "--to_ollama",
            "--template",
            "llama3",
            "--output_dir",
            out3.to_str().unwrap(),
        ],
    ));
    let text = std::fs::read_to_string(out3.join("Modelfile")).unwrap();
    let want = "FROM ./llama-f16.gguf\nTEMPLATE \"\"\"{{ if .System }}<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ else }}<|begin_of_text|>{{ end }}{{ range .Messages }}{{ if eq .Role \"user\" }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Content }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{ else if eq .Role \"assistant\" }}{{ .Content }}<|eot_id|>{{ end }}{{ end }}\"\"\"\nPARAMETER stop \"<|eot_id|>\"\nPARAMETER stop \"<|im_end|>\"\n";
    assert_eq!(text, want);
}

#[test]
fn bad_gguf_exports_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let fails = |args: &[&str], needles: &[&str]| {
        assert_fails(swift_in(tmp.path(), args), needles);
    };
    let gpt2 = tiny_model("gpt2");
    fails(
        &[
            "export",
            "--model",
            gpt2.to_str().unwrap(),
            "--to_gguf",
            "--output_dir",
            o,
        ],
        &[
            "GPT2LMHeadModel",
            "cannot be exported to GGUF",
            "supported: llama",
        ],
    );
    fails(
        &[
            "export",
            "--model",
            tiny_model("llama").to_str().unwrap(),
            "--to_gguf",
            "--gguf_type",
            "q5_k",
            "--output_dir",
            o,
        ],
        &[
            "--gguf_type q5_k",
            "f32, f16, q8_0, q4_0, q4_1, q4_k or q6_k",
        ],
    );
    fails(&["export", "--to_gguf"], &["--to_gguf needs --model"]);
    fails(
        &[
            "export",
            "--model",
            tmp.path().to_str().unwrap(),
            "--to_gguf",
            "--output_dir",
            o,
        ],
        &["no config.json"],
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn smollm2_f32_export_equals_the_original_gguf() {
    let model = smollm2();
    let original = smollm2_gguf();
    let python = reference_python(&["gguf", "numpy"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = export(tmp.path(), &model, "f32", &tmp.path().join("smol.gguf"));
    // Same logits re-imported as from the folder it was exported from.
    let ids = "1,9690,198,2683,359,346,47,2,198,1,4093,198";
    let (want, want_greedy) = logits(tmp.path(), &model, ids);
    let (got, got_greedy) = logits(tmp.path(), &file, ids);
    let d = max_abs_diff(&want, &got);
    assert!(d < 1e-3, "re-imported logits differ by {d}");
    assert_eq!(want_greedy, got_greedy);
    // Re-quantized to the original's types (Q4_1 matrices, Q8_0 tied embedding), every tensor
    // is byte for byte the one llama.cpp wrote.
    let q41 = export(
        tmp.path(),
        &model,
        "q4_1",
        &tmp.path().join("smol-q4_1.gguf"),
    );
    let (a, b) = (
        swift_gguf::GgufFile::open(&original).unwrap(),
        swift_gguf::GgufFile::open(&q41).unwrap(),
    );
    assert_eq!(a.tensors().len(), b.tensors().len());
    for t in a.tensors() {
        let u = b.tensor_info(&t.name).unwrap();
        assert_eq!(t.type_name(), u.type_name(), "{}", t.name);
        assert!(
            a.tensor_data(&t.name).unwrap() == b.tensor_data(&t.name).unwrap(),
            "{} differs from the original's bytes",
            t.name
        );
    }
    let v = run_reference(&python, "gguf_compare.py", &[&original, &file]);
    assert_eq!(v["max_tensor_diff"], 0.0, "{v}");
    for k in [
        "tensors_only_in_original",
        "tensors_only_in_exported",
        "shape_mismatches",
        "metadata_mismatches",
    ] {
        assert_eq!(v[k], serde_json::json!([]), "{k}: {v}");
    }
    assert_eq!(v["exported_types"]["F32"], 272);
    assert_eq!(v["n_tensors"], 272);
}

#[test]
fn gguf_chat_template_renders_like_the_swift_template() {
    // A model tuned with a swift template that is not the tokenizer's own (here the tiny llama,
    // which has no chat_template) gets that template as the GGUF's Jinja chat_template: as the
    // tokenizer's chat_template, it encodes conversations into the same ids.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(
        &data,
        concat!(
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi there"},"#,
            r#"{"role":"assistant","content":"hello"},{"role":"user","content":" what is 2+2? "},"#,
            r#"{"role":"assistant","content":"four"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"name a color"},{"role":"assistant","content":"blue"}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let ids = |model: &Path, template: &str| -> Vec<Value> {
        ok(swift_in(
            tmp.path(),
            &[
                "encode",
                "--model",
                model.to_str().unwrap(),
                "--template",
                template,
                "--dataset",
                data.to_str().unwrap(),
                "--json",
            ],
        ))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["input_ids"].clone())
        .collect()
    };
    for t in ["llama3", "chatml", "qwen2_5", "default"] {
        let file = ok(swift_in(
            tmp.path(),
            &[
                "export",
                "--model",
                tiny_model("llama").to_str().unwrap(),
                "--to_gguf",
                "--template",
                t,
                "--output_dir",
                tmp.path().join(format!("{t}.gguf")).to_str().unwrap(),
            ],
        ));
        let g = swift_gguf::GgufFile::open(file.trim()).unwrap();
        let jinja = g
            .get_str("tokenizer.chat_template")
            .unwrap()
            .unwrap()
            .to_owned();
        let copy = tmp.path().join(format!("model-{t}"));
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(tiny_model("llama")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        let cfg_path = copy.join("tokenizer_config.json");
        let mut cfg = read_json(&cfg_path);
        cfg["chat_template"] = Value::String(jinja);
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let want = ids(&tiny_model("llama"), t);
        assert_eq!(want.len(), 2);
        assert_eq!(ids(&copy, "jinja"), want, "template {t}");
    }
}

/// `swift export --adapters CKPT --to_gguf` writes the GGUF adapter file that llama.cpp's own
/// `convert_lora_to_gguf.py` writes (recorded by tests/reference/lora_gguf_reference.py from a
/// PEFT adapter on the tiny llama: every linear target, lora_B of Q/K permuted), equal tensor by
/// tensor; rsLoRA keeps its scale through alpha; what llama.cpp cannot hold is refused by name.
#[test]
fn lora_adapters_export_as_llama_cpps_converter_writes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = fixture_file("lora_gguf/adapter");
    let export_lora = |adapter: &Path, out: &Path, extra: &[&str]| {
        let (model, adapter, out) = (
            tiny().display().to_string(),
            adapter.display().to_string(),
            out.display().to_string(),
        );
        let mut args = vec![
            "export",
            "--model",
            model.as_str(),
            "--adapters",
            adapter.as_str(),
            "--to_gguf",
            "true",
            "--output_dir",
            out.as_str(),
        ];
        args.extend_from_slice(extra);
        swift_in(tmp.path(), &args)
    };
    let ours_path = tmp.path().join("ours.gguf");
    let printed = ok(export_lora(&adapter, &ours_path, &["--gguf_type", "f32"]));
    assert_eq!(printed.trim(), ours_path.to_str().unwrap());
    let ours = swift_gguf::GgufFile::open(&ours_path).unwrap();
    let theirs = swift_gguf::GgufFile::open(fixture_file("lora_gguf/llama_cpp.gguf")).unwrap();
    for key in ["general.architecture", "general.type", "adapter.type"] {
        assert_eq!(
            ours.get_str(key).unwrap(),
            theirs.get_str(key).unwrap(),
            "{key}"
        );
    }
    assert_eq!(ours.get_f64("adapter.lora.alpha").unwrap(), Some(8.0));
    assert_eq!(
        ours.get_f64("adapter.lora.alpha").unwrap(),
        theirs.get_f64("adapter.lora.alpha").unwrap()
    );
    let names = |f: &swift_gguf::GgufFile| {
        let mut n: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&ours), names(&theirs));
    assert_eq!(
        ours.tensors().len(),
        2 * 7 * 2,
        "7 targets x 2 blocks, A and B"
    );
    for name in names(&theirs) {
        let (a, b) = (
            ours.tensor_f32(&name).unwrap(),
            theirs.tensor_f32(&name).unwrap(),
        );
        assert_eq!(a.shape, b.shape, "{name}");
        assert_eq!(a.data, b.data, "{name}");
    }

    // rsLoRA: llama.cpp scales by alpha / r, so alpha·√r = 8·2 is written for alpha / √r.
    let edited = |name: &str, key: &str, value: Value| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(adapter.join(f), dir.join(f)).unwrap();
        }
        let mut cfg: Value = read_json(&dir.join("adapter_config.json"));
        cfg[key] = value;
        std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
        dir
    };
    let rs = edited("rslora", "use_rslora", Value::Bool(true));
    let rs_out = tmp.path().join("rs").join("rs.gguf");
    ok(export_lora(&rs, &rs_out, &[]));
    let rs_file = swift_gguf::GgufFile::open(&rs_out).unwrap();
    assert_eq!(rs_file.get_f64("adapter.lora.alpha").unwrap(), Some(16.0));

    // Refused, naming the file or flag.
    let dora = edited("dora", "use_dora", Value::Bool(true));
    assert_fails(
        export_lora(&dora, &tmp.path().join("d.gguf"), &[]),
        &["dora/adapter_config.json", "use_dora"],
    );
    let saved = edited("saved", "modules_to_save", serde_json::json!(["lm_head"]));
    assert_fails(
        export_lora(&saved, &tmp.path().join("s.gguf"), &[]),
        &["modules_to_save"],
    );
    assert_fails(
        export_lora(
            &adapter,
            &tmp.path().join("q.gguf"),
            &["--gguf_type", "q8_0"],
        ),
        &["--gguf_type q8_0", "f32 or f16"],
    );
    assert_fails(
        export_lora(
            &adapter,
            &tmp.path().join("t.gguf"),
            &["--template", "chatml"],
        ),
        &["--template"],
    );
    assert!(!tmp.path().join("d.gguf").exists() && !tmp.path().join("q.gguf").exists());
}
