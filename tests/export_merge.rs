//! `swift export --adapters CKPT --merge_lora true` end to end on the tiny random llama of
//! tests/fixtures/models/: a LoRA adapter trained for a few steps is merged into a full model
//! folder, and
//!
//! * `swift infer --model MERGED` (no other flag) gives the logits and greedy tokens of
//!   `swift infer --adapters CKPT`, and the same chat answers (the template is recorded);
//! * transformers loads the merged folder and its greedy tokens equal `swift infer --adapters`'s,
//!   and its weights equal peft's own `merge_and_unload()` (tests/reference/merge_reference.py);
//!   prints "skipped: ..." for this part when the venv is missing;
//! * a missing or mismatched adapter is one clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

fn tiny() -> PathBuf {
    workspace_root().join("tests/fixtures/models/llama")
}

fn venv_python() -> Option<PathBuf> {
    let cache = std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/swift-rs")
        });
    let p = cache.join("venv/bin/python");
    if p.is_file() {
        Some(p)
    } else {
        println!("skipped: {} is missing (run make setup)", p.display());
        None
    }
}

fn swift1(args: &[&str]) -> std::process::Output {
    swift_env(args, &[("OMP_NUM_THREADS", "1")])
}

/// A LoRA checkpoint trained once per test binary: 6 steps on five chat rows.
fn checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let rows = [
            ("hi", "hello there"),
            ("what is two plus two", "four"),
            ("name a color", "blue is a color"),
            (
                "say something about the weather",
                "it is sunny and warm today",
            ),
            ("ok", "fine"),
        ];
        let text: String = rows
            .iter()
            .map(|(q, a)| {
                serde_json::json!({"messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a}
                ]})
                .to_string()
                    + "\n"
            })
            .collect();
        let data = root.join("chat.jsonl");
        std::fs::write(&data, text).unwrap();
        let run = root.join("run");
        ok(swift1(&[
            "sft",
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
        ]));
        run.join("checkpoint-6")
    })
}

fn infer_debug(extra: &[&str], ids: &str) -> (Vec<f64>, Value) {
    let mut args = vec!["infer"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--debug_input_ids", ids, "--debug_greedy_tokens", "8"]);
    let v: Value = serde_json::from_str(ok(swift1(&args)).trim()).unwrap();
    let logits = v["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (logits, v["greedy"].clone())
}

const PROMPTS: [&str; 3] = ["1,2,3,4,5", "7,8,9", "100,101,102,103,104,105"];

#[test]
fn merged_folder_behaves_like_the_adapter_in_swift_and_transformers() {
    let ckpt = checkpoint();
    let printed = ok(swift1(&[
        "export",
        "--adapters",
        ckpt.to_str().unwrap(),
        "--merge_lora",
        "true",
    ]));
    let merged = ckpt.with_file_name("checkpoint-6-merged");
    assert_eq!(printed.trim(), merged.to_str().unwrap());
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(merged.join(f).is_file(), "{f} written");
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["swift_template"], "llama3", "the adapter's template");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");

    let m = merged.to_str().unwrap();
    let mut adapter_greedy = Vec::new();
    for ids in PROMPTS {
        let (a_logits, a_greedy) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], ids);
        let (m_logits, m_greedy) = infer_debug(&["--model", m], ids);
        let d = a_logits
            .iter()
            .zip(&m_logits)
            .fold(0.0f64, |x, (p, q)| x.max((p - q).abs()));
        assert!(d < 1e-4, "merged and adapter logits differ by {d} on {ids}");
        assert_eq!(a_greedy, m_greedy, "greedy tokens on {ids}");
        adapter_greedy.push(a_greedy);
    }
    let (b_greedy_logits, _) = infer_debug(&["--model", tiny().to_str().unwrap()], PROMPTS[0]);
    let (a_logits, _) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], PROMPTS[0]);
    let db = a_logits
        .iter()
        .zip(&b_greedy_logits)
        .fold(0.0f64, |x, (p, q)| x.max((p - q).abs()));
    assert!(db > 1e-3, "the adapter changes the base model's output");

    // The chat path: the recorded template means no --template is needed.
    let tmp = tempfile::tempdir().unwrap();
    let questions = tmp.path().join("q.jsonl");
    std::fs::write(
        &questions,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n{\"messages\":[{\"role\":\"user\",\"content\":\"name a color\"}]}\n",
    )
    .unwrap();
    let answers = |extra: &[&str], out: &str| -> Vec<String> {
        let path = tmp.path().join(out);
        let mut args = vec!["infer"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--val_dataset",
            questions.to_str().unwrap(),
            "--result_path",
            path.to_str().unwrap(),
            "--max_new_tokens",
            "12",
        ]);
        ok(swift1(&args));
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["response"].to_string())
            .collect()
    };
    let a = answers(&["--adapters", ckpt.to_str().unwrap()], "a.jsonl");
    let b = answers(&["--model", m], "b.jsonl");
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "chat answers of the adapter and the merged model");

    let Some(python) = venv_python() else { return };
    let script = workspace_root().join("tests/reference/merge_reference.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(tiny())
        .arg(ckpt)
        .arg(&merged)
        .arg("8")
        .args(PROMPTS)
        .env("OMP_NUM_THREADS", "1");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "merge_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["unexpected"], serde_json::json!([]), "{v}");
    let wd = v["max_weight_diff"].as_f64().unwrap();
    assert!(
        wd < 1e-5,
        "weights differ from peft's merge_and_unload by {wd}"
    );
    for (i, g) in adapter_greedy.iter().enumerate() {
        assert_eq!(
            &v["greedy"][i], g,
            "transformers' greedy tokens on prompt {i}"
        );
    }
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let o = swift1(args);
    assert!(!o.status.success(), "swift {args:?} should fail");
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "stderr of {args:?} lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_or_mismatched_adapters_are_clear_errors() {
    let ckpt = checkpoint();
    let tmp = tempfile::tempdir().unwrap();
    let c = ckpt.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();

    fails_with(
        &[
            "export",
            "--adapters",
            "/no/such/ckpt",
            "--merge_lora",
            "true",
        ],
        &["/no/such/ckpt", "no such checkpoint folder"],
    );
    // adapter_config.json without the weights.
    let half = tmp.path().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::copy(
        ckpt.join("adapter_config.json"),
        half.join("adapter_config.json"),
    )
    .unwrap();
    fails_with(
        &[
            "export",
            "--adapters",
            half.to_str().unwrap(),
            "--merge_lora",
            "--model",
            tiny().to_str().unwrap(),
            "--output_dir",
            o,
        ],
        &["adapter_model.safetensors", "missing"],
    );
    // Another family with the same shapes.
    let mistral = workspace_root().join("tests/fixtures/models/mistral");
    fails_with(
        &[
            "export",
            "--adapters",
            c,
            "--merge_lora",
            "--model",
            mistral.to_str().unwrap(),
            "--output_dir",
            o,
        ],
        &["trained on a `llama` model", "`mistral`", "pass --model"],
    );
    // The same family with other shapes.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tiny().join(f), other.join(f)).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(tiny().join("config.json")).unwrap())
            .unwrap();
    cfg["intermediate_size"] = 96.into();
    std::fs::write(other.join("config.json"), cfg.to_string()).unwrap();
    fails_with(
        &[
            "export",
            "--adapters",
            c,
            "--merge_lora",
            "--model",
            other.to_str().unwrap(),
            "--output_dir",
            o,
        ],
        &[
            "does not match base model",
            "mlp.down_proj",
            "64x96",
            "pass --model",
        ],
    );
    fails_with(
        &["export", "--adapters", c, "--merge_lora", "--output_dir", c],
        &["holds a LoRA checkpoint"],
    );
    assert!(
        !out.join("config.json").exists(),
        "nothing written on errors"
    );
    fails_with(
        &["export", "--merge_lora", "true"],
        &["--merge_lora needs --adapters"],
    );
    fails_with(&["export", "--adapters", c], &["--merge_lora true"]);
}

#[test]
fn merge_and_gguf_in_one_command() {
    let ckpt = checkpoint();
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("merged");
    let printed = ok(swift_env(
        &[
            "export",
            "--adapters",
            ckpt.to_str().unwrap(),
            "--merge_lora",
            "--to_gguf",
            "--gguf_type",
            "f32",
            "--output_dir",
            merged.to_str().unwrap(),
        ],
        &[
            ("OMP_NUM_THREADS", "1"),
            ("SWIFT_RS_CACHE", tmp.path().to_str().unwrap()),
        ],
    ));
    let gguf = PathBuf::from(printed.lines().last().unwrap().trim());
    assert_eq!(gguf, tmp.path().join("merged-gguf/merged-f32.gguf"));
    assert!(merged.join("config.json").is_file() && gguf.is_file());
    let ids = PROMPTS[0];
    let (a_logits, a_greedy) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], ids);
    let v: Value = serde_json::from_str(
        ok(swift_env(
            &[
                "infer",
                "--model",
                gguf.to_str().unwrap(),
                "--debug_input_ids",
                ids,
                "--debug_greedy_tokens",
                "8",
            ],
            &[
                ("OMP_NUM_THREADS", "1"),
                ("SWIFT_RS_CACHE", tmp.path().to_str().unwrap()),
            ],
        ))
        .trim(),
    )
    .unwrap();
    let g_logits: Vec<f64> = v["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let d = a_logits
        .iter()
        .zip(&g_logits)
        .fold(0.0f64, |x, (p, q)| x.max((p - q).abs()));
    assert!(d < 1e-4, "the merged GGUF differs from the adapter by {d}");
    assert_eq!(v["greedy"], a_greedy);
}

#[test]
fn a_peft_made_adapter_with_rslora_and_modules_to_save_merges_like_peft() {
    // PEFT writes what swift's trainer does not: rsLoRA scaling and a whole lm_head
    // (modules_to_save). The merged weights must equal peft's own merge_and_unload().
    let Some(python) = venv_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = workspace_root().join("tests/fixtures/models/mistral");
    let adapter = tmp.path().join("peft-adapter");
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/reference/make_peft_adapter_for_merge.py"))
        .arg(&base)
        .arg(&adapter)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged = tmp.path().join("merged");
    // The base comes from adapter_config.json's base_model_name_or_path (no args.json).
    ok(swift1(&[
        "export",
        "--adapters",
        adapter.to_str().unwrap(),
        "--merge_lora",
        "--output_dir",
        merged.to_str().unwrap(),
    ]));
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/reference/merge_reference.py"))
        .arg(&base)
        .arg(&adapter)
        .arg(&merged)
        .arg("4")
        .arg("1,2,3")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    let wd = v["max_weight_diff"].as_f64().unwrap();
    assert!(
        wd < 1e-5,
        "weights differ from peft's merge_and_unload by {wd}"
    );
    // And the merge changed lm_head (modules_to_save) and the targets.
    let (base_logits, _) = infer_debug(&["--model", base.to_str().unwrap()], "1,2,3");
    let (merged_logits, _) = infer_debug(&["--model", merged.to_str().unwrap()], "1,2,3");
    let d = base_logits
        .iter()
        .zip(&merged_logits)
        .fold(0.0f64, |x, (p, q)| x.max((p - q).abs()));
    assert!(d > 1e-2, "the merged model differs from the base");
}
