//! What the engine refuses to load (issue #14, parts 3 and 4): adapters that do not match their
//! files or their base, model folders whose weights config.json does not account for, each with
//! the override flag the error names; `#N` beyond a dataset's size says it repeats rows. The
//! adapters and folders are written by hand from the tiny llama, so each case is one short run.

use std::path::{Path, PathBuf};

use crate::common::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

/// The tiny llama's `model.layers.0.self_attn.q_proj`: 64 outputs, 64 inputs.
const SLOT: &str = "model.layers.0.self_attn.q_proj";

/// Writes `tensors` (name, shape; filled with small values) as a safetensors file.
fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|i| (0.01 * ((i % 7) as f32 - 3.0)).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A LoRA checkpoint on the tiny llama's [`SLOT`] whose tensors have rank `rank` and whose
/// adapter_config.json says `r`; with `args` as its args.json when given.
fn adapter(dir: &Path, name: &str, rank: usize, r: i64, args: Option<Value>) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let key = |m: &str| format!("base_model.model.{SLOT}.{m}.weight");
    write_tensors(
        &d.join("adapter_model.safetensors"),
        &[
            (key("lora_A"), vec![rank, 64]),
            (key("lora_B"), vec![64, rank]),
        ],
    );
    let cfg = json!({"peft_type": "LORA", "r": r, "lora_alpha": 4, "target_modules": ["q_proj"],
        "base_model_name_or_path": tiny()});
    std::fs::write(d.join("adapter_config.json"), cfg.to_string()).unwrap();
    if let Some(a) = args {
        std::fs::write(d.join("args.json"), a.to_string()).unwrap();
    }
    d
}

/// `swift CMD --model MODEL ARGS...` on two tokens (infer: one greedy token).
fn run(cmd: &str, model: &Path, args: &[&str]) -> std::process::Output {
    let model = model.display().to_string();
    let mut all = vec![cmd, "--model", &model];
    all.extend_from_slice(args);
    if cmd == "infer" {
        all.extend_from_slice(&["--debug_input_ids", "1,2", "--debug_greedy_tokens", "1"]);
    }
    swift_env(&all, &[ONE_THREAD])
}

fn refused(o: &std::process::Output, want: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "accepted; should be refused:\n{err}");
    for w in want {
        assert!(err.contains(w), "no `{w}` in the refusal:\n{err}");
    }
}

/// `r: 0`, `r` above the tensors' rank, another family and another base size are each refused
/// by `swift infer --adapters` (and the base mismatch by `swift deploy` and `swift export
/// --merge_lora`, which share the check); `--ignore_adapter_mismatch true` loads the last.
#[test]
fn adapters_that_do_not_match_their_files_or_base_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = adapter(dir.path(), "good", 2, 2, None);
    ok(run(
        "infer",
        &tiny(),
        &["--adapters", good.to_str().unwrap()],
    ));
    let zero = adapter(dir.path(), "zero", 2, 0, None);
    refused(
        &run("infer", &tiny(), &["--adapters", zero.to_str().unwrap()]),
        &["r is 0", "at least 1"],
    );
    let sixteen = adapter(dir.path(), "sixteen", 2, 16, None);
    refused(
        &run("infer", &tiny(), &["--adapters", sixteen.to_str().unwrap()]),
        &["not rank 16", "adapter_config.json"],
    );
    let base = json!({"model_type": "llama", "base_model": {"model_type": "llama",
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 3}});
    let other_layers = adapter(dir.path(), "layers", 2, 2, Some(base));
    refused(
        &run(
            "infer",
            &tiny(),
            &["--adapters", other_layers.to_str().unwrap()],
        ),
        &[
            "num_hidden_layers 3 (this model: 2)",
            "--ignore_adapter_mismatch true",
        ],
    );
    let qwen = adapter(
        dir.path(),
        "qwen",
        2,
        2,
        Some(json!({"model_type": "qwen2"})),
    );
    let q = qwen.to_str().unwrap();
    refused(
        &run("infer", &tiny(), &["--adapters", q]),
        &[
            "family `qwen2` (this model: `llama`)",
            "--ignore_adapter_mismatch true",
        ],
    );
    refused(
        &run("deploy", &tiny(), &["--adapters", q, "--port", "0"]),
        &["family `qwen2`", "--ignore_adapter_mismatch true"],
    );
    let merged = dir.path().join("merged").display().to_string();
    refused(
        &run(
            "export",
            &tiny(),
            &[
                "--adapters",
                q,
                "--merge_lora",
                "true",
                "--output_dir",
                &merged,
            ],
        ),
        &["family `qwen2`", "--ignore_adapter_mismatch true"],
    );
    let o = run(
        "infer",
        &tiny(),
        &["--adapters", q, "--ignore_adapter_mismatch", "true"],
    );
    assert!(stderr(&o).contains("(ignored)"), "{}", stderr(&o));
    ok(o);
}

/// A copy of the tiny llama with config.json edited by `edit` and its weights plus `extra`
/// tensors.
fn llama_copy(
    dir: &Path,
    name: &str,
    edit: impl Fn(&mut Value),
    extra: &[(&str, Vec<usize>)],
) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
    }
    let mut cfg = read_json(&d.join("config.json"));
    edit(&mut cfg);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    if !extra.is_empty() {
        let bytes = std::fs::read(tiny().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut views: Vec<(String, TensorView)> = st.tensors();
        let data: Vec<Vec<u8>> = extra
            .iter()
            .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
            .collect();
        for ((n, s), b) in extra.iter().zip(&data) {
            views.push((
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            ));
        }
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(d.join("model.safetensors"), out).unwrap();
    }
    d
}

/// A config.json with fewer layers than the weights, or weights no layout reads, are refused
/// naming `--allow_unused_weights`, which loads them; a family's ignorable weights
/// (`rotary_emb.inv_freq`) load silently.
#[test]
fn model_folders_with_weights_their_config_does_not_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fewer = llama_copy(
        dir.path(),
        "fewer",
        |c| c["num_hidden_layers"] = json!(1),
        &[],
    );
    refused(
        &run("infer", &fewer, &[]),
        &["model.layers.1.", "not used", "--allow_unused_weights true"],
    );
    ok(run("infer", &fewer, &["--allow_unused_weights", "true"]));
    let stray = llama_copy(
        dir.path(),
        "stray",
        |_| {},
        &[
            ("vision_tower.patch_embed.weight", vec![4, 4]),
            ("model.layers.0.self_attn.rotary_emb.inv_freq", vec![8]),
        ],
    );
    let o = run("infer", &stray, &[]);
    refused(&o, &["1 stored weights", "vision_tower.patch_embed.weight"]);
    assert!(!stderr(&o).contains("inv_freq"), "{}", stderr(&o));
    let ignorable = llama_copy(
        dir.path(),
        "ignorable",
        |_| {},
        &[("model.layers.0.self_attn.rotary_emb.inv_freq", vec![8])],
    );
    ok(run("infer", &ignorable, &[]));
}

/// `#N` above a file's row count warns that it samples with repetition.
#[test]
fn sampling_more_rows_than_a_file_has_says_it_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_chat(&dir.path().join("two.jsonl"), &[("a", "b"), ("c", "d")]);
    let spec = format!("{}#5", data.display());
    let tok = tiny().display().to_string();
    let o = swift(&[
        "encode",
        "--model",
        &tok,
        "--template",
        "chatml",
        "--dataset",
        &spec,
        "--json",
    ]);
    let err = stderr(&o);
    assert_eq!(stdout(&o).lines().count(), 5, "{err}");
    assert!(
        err.contains("#5: the file has 2 rows, so #5 samples with repetition"),
        "{err}"
    );
}
