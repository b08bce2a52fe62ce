//! `swift export --adapters CKPT --merge_lora true` end to end on the tiny random llama of
//! tests/fixtures/models/: a LoRA adapter trained for a few steps is merged into a full model
//! folder, and
//!
//! * `swift infer --model MERGED` (no other flag) gives the logits and greedy tokens of
//!   `swift infer --adapters CKPT`, and the same chat answers (the template is recorded);
//! * transformers loads the merged folder and its greedy tokens equal `swift infer --adapters`'s,
//!   and its weights equal peft's own `merge_and_unload()` (tests/reference/merge_reference.py;
//!   needs the reference virtualenv, and fails saying how to install it when missing);
//! * a missing or mismatched adapter is one clear error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use serde_json::Value;

/// A LoRA checkpoint trained once per test binary: 6 steps on five chat rows.
fn checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let data = write_chat(
            &root.join("chat.jsonl"),
            &[
                ("hi", "hello there"),
                ("what is two plus two", "four"),
                ("name a color", "blue is a color"),
                (
                    "say something about the weather",
                    "it is sunny and warm today",
                ),
                ("ok", "fine"),
            ],
        );
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
        let run = run_folder(&run);
        run.join("checkpoint-6")
    })
}

/// The adapter's or a model's logits and 8 greedy tokens on `ids`.
fn infer_debug(extra: &[&str], ids: &str) -> (Vec<f64>, Value) {
    infer_logits(extra, ids, 8)
}

const PROMPTS: [&str; 3] = ["1,2,3,4,5", "7,8,9", "100,101,102,103,104,105"];

#[test]
fn merged_folder_behaves_like_the_adapter_in_swift_and_transformers() {
    let python = reference_python(&["transformers", "peft"]);
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
    let config = read_json(&merged.join("config.json"));
    assert_eq!(config["swift_template"], "llama3", "the adapter's template");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");

    let m = merged.to_str().unwrap();
    let mut adapter_greedy = Vec::new();
    for ids in PROMPTS {
        let (a_logits, a_greedy) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], ids);
        let (m_logits, m_greedy) = infer_debug(&["--model", m], ids);
        let d = max_abs_diff(&a_logits, &m_logits);
        assert!(d < 1e-4, "merged and adapter logits differ by {d} on {ids}");
        assert_eq!(a_greedy, m_greedy, "greedy tokens on {ids}");
        adapter_greedy.push(a_greedy);
    }
    let (b_greedy_logits, _) = infer_debug(&["--model", tiny().to_str().unwrap()], PROMPTS[0]);
    let (a_logits, _) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], PROMPTS[0]);
    let db = max_abs_diff(&a_logits, &b_greedy_logits);
    assert!(db > 1e-3, "the adapter changes the base model's output");

    // The chat path: the recorded template means no --template is needed.
    let tmp = tempfile::tempdir().unwrap();
    let questions = write_jsonl(
        &tmp.path().join("q.jsonl"),
        [user_row("hi"), user_row("name a color")],
    );
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
        read_jsonl(&path)
            .iter()
            .map(|r| r["response"].to_string())
            .collect()
    };
    let a = answers(&["--adapters", ckpt.to_str().unwrap()], "a.jsonl");
    let b = answers(&["--model", m], "b.jsonl");
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "chat answers of the adapter and the merged model");

    let v = run_reference(
        &python,
        "merge_reference.py",
        &[
            &tiny(),
            &ckpt,
            &merged,
            &"8",
            &PROMPTS[0],
            &PROMPTS[1],
            &PROMPTS[2],
        ],
    );
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
    assert_fails(swift1(args), needles);
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
    let mistral = tiny_model("mistral");
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
        &[
            "trained on another base",
            "family `llama` (this model: `mistral`)",
            "pass --model",
            "--ignore_adapter_mismatch true",
        ],
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
    let mut cfg = read_json(&tiny().join("config.json"));
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
            "trained on another base",
            "intermediate_size 128 (this model: 96)",
        ],
    );
    // Told to ignore the recorded base, the tensors' shapes still refuse it.
    fails_with(
        &[
            "export",
            "--adapters",
            c,
            "--merge_lora",
            "--model",
            other.to_str().unwrap(),
            "--ignore_adapter_mismatch",
            "true",
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
        &[ONE_THREAD, ("SWIFT_RS_CACHE", tmp.path().to_str().unwrap())],
    ));
    let gguf = PathBuf::from(printed.lines().last().unwrap().trim());
    assert_eq!(gguf, tmp.path().join("merged-gguf/merged-f32.gguf"));
    assert!(merged.join("config.json").is_file() && gguf.is_file());
    let ids = PROMPTS[0];
    let (a_logits, a_greedy) = infer_debug(&["--adapters", ckpt.to_str().unwrap()], ids);
    let (g_logits, g_greedy) = infer_logits_env(
        &[ONE_THREAD, ("SWIFT_RS_CACHE", tmp.path().to_str().unwrap())],
        &["--model", gguf.to_str().unwrap()],
        ids,
        8,
    );
    let d = max_abs_diff(&a_logits, &g_logits);
    assert!(d < 1e-4, "the merged GGUF differs from the adapter by {d}");
    assert_eq!(g_greedy, a_greedy);
}

#[test]
fn a_peft_made_adapter_with_rslora_and_modules_to_save_merges_like_peft() {
    // PEFT writes what swift's trainer does not: rsLoRA scaling and a whole lm_head
    // (modules_to_save). The merged weights must equal peft's own merge_and_unload().
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_model("mistral");
    let adapter = tmp.path().join("peft-adapter");
    make_peft_adapter(&python, &base, &adapter);
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
    let v = run_reference(
        &python,
        "merge_reference.py",
        &[&base, &adapter, &merged, &"4", &"1,2,3"],
    );
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    let wd = v["max_weight_diff"].as_f64().unwrap();
    assert!(
        wd < 1e-5,
        "weights differ from peft's merge_and_unload by {wd}"
    );
    // And the merge changed lm_head (modules_to_save) and the targets.
    let (base_logits, _) = infer_debug(&["--model", base.to_str().unwrap()], "1,2,3");
    let (merged_logits, _) = infer_debug(&["--model", merged.to_str().unwrap()], "1,2,3");
    let d = max_abs_diff(&base_logits, &merged_logits);
    assert!(d > 1e-2, "the merged model differs from the base");
}

/// tests/reference/make_peft_adapter_for_merge.py: a PEFT-made adapter for `base` in `out`.
fn make_peft_adapter(python: &Path, base: &Path, out: &Path) {
    let o = std::process::Command::new(python)
        .arg(workspace_root().join("tests/reference/make_peft_adapter_for_merge.py"))
        .arg(base)
        .arg(out)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "make_peft_adapter_for_merge.py failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
