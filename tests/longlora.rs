//! LongLoRA (`--tuner_type longlora`, issue 16): LoRA plus embeddings and norms trained whole,
//! with shifted sparse attention while training only. The attention's math is checked against
//! the paper's formula in `engine/model/tests/shifted_sparse.rs`; here: the mode is on in
//! training passes only (evaluation, adapters off and inference attend fully), and end to end a
//! `--max_length 1024` run's loss falls, Python peft loads its checkpoint (a PEFT LoRA one with
//! the embeddings and norms under `modules_to_save`) with the logits of `swift infer
//! --adapters`, which equal a plain LoRA's reading the same tensors.

use crate::common::*;
use serde_json::json;
use swift_train::AttachedAdapter;
use tch::{Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn shifted_sparse_attention_is_on_only_while_training_with_the_adapter_on() {
    let _turn = torch_rng();
    tch::manual_seed(3);
    let mut model = load_tiny("llama");
    let base = load_tiny("llama");
    let targets: Vec<String> = model
        .layout()
        .slots
        .iter()
        .filter(|s| s.name.ends_with("q_proj") || s.name.ends_with("v_proj"))
        .map(|s| s.name.clone())
        .collect();
    let adapter = AttachedAdapter::attach(
        &mut model,
        &builtin_tuner("longlora"),
        json!({"lora_rank": 4, "lora_alpha": 8.0, "group_size_ratio": 0.25}),
        &targets,
    )
    .unwrap();
    let plan = adapter.plan();
    assert_eq!(
        plan.attention,
        swift_plugin_api::tuner::AttentionMode::ShiftedSparse {
            group_size_ratio: 0.25
        }
    );
    assert_eq!(plan.train_whole, ["*embed*", "*norm*"]);
    // Make the adapter change the output (B starts at zero).
    tch::no_grad(|| {
        for (_, t) in adapter.named_tensors() {
            let mut t = t.shallow_clone();
            t.copy_(&(t.randn_like() * 0.1));
        }
    });
    // 40 tokens, --max_length 40: groups of 10.
    let swift_model_attention = swift_model::TrainingAttention {
        group: swift_model::sparse::group_size(40, 0.25).unwrap(),
        length: 40,
        switches: adapter.training_switches(),
    };
    model.set_training_attention(Some(swift_model_attention));
    let ids = Tensor::arange_start(3, 43, (Kind::Int64, tch::Device::Cpu)).view([1, 40]);
    let hidden =
        |m: &swift_model::LoadedModel| tch::no_grad(|| m.forward_train(&ids, None).unwrap());
    let inference = |m: &swift_model::LoadedModel| {
        let mut cache = m.new_cache(1);
        m.forward(&ids, None, &mut cache).unwrap()
    };
    adapter.set_training(true);
    let sparse = hidden(&model);
    adapter.set_training(false);
    let full = hidden(&model);
    let served = inference(&model);
    assert!(
        max_diff(&full, &served) < 1e-5,
        "evaluation attends as inference does"
    );
    assert!(
        max_diff(&sparse, &full) > 1e-3,
        "training attends differently (sparse)"
    );
    // Adapters off while training: the base model, fully attended.
    adapter.set_training(true);
    adapter.set_enabled(false);
    let off = hidden(&model);
    assert!(
        max_diff(&off, &inference(&base)) < 1e-5,
        "adapters off: the base model with full attention"
    );
}

/// `swift sft --tuner_type longlora ARGS` on the tiny llama with ten rows; the run folder.
fn longlora_sft(dir: &std::path::Path, args: &[&str]) -> std::path::PathBuf {
    let data = ten_chat_rows(dir);
    let run = dir.join("run");
    let base = tiny();
    let mut all = vec![
        "sft",
        "--model",
        base.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        "longlora",
        "--learning_rate",
        "1e-2",
        "--logging_steps",
        "1",
    ];
    all.extend_from_slice(args);
    ok(swift1(&all));
    run_folder(&run)
}

#[test]
fn longlora_trains_at_max_length_1024_and_peft_and_infer_read_it_with_full_attention() {
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let run = longlora_sft(
        tmp.path(),
        &[
            "--max_length",
            "1024",
            "--max_steps",
            "8",
            "--group_size_ratio",
            "0.25",
        ],
    );
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 8);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[5..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "loss did not fall: {losses:?}");
    let args = args_json(&run);
    assert_eq!(args["group_size_ratio"], json!(0.25));
    let ck = run.join("checkpoint-8");
    let config = read_json(&ck.join("adapter_config.json"));
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(
        config["modules_to_save"],
        json!([
            "model.embed_tokens",
            "model.layers.0.input_layernorm",
            "model.layers.0.post_attention_layernorm",
            "model.layers.1.input_layernorm",
            "model.layers.1.post_attention_layernorm",
            "model.norm"
        ])
    );
    // The norms were trained (they start at the base's).
    let saved = tensors_by_name(&ck.join("adapter_model.safetensors"));
    let norm = &saved["base_model.model.model.norm.weight"];
    let base_norm = tensors_by_name(&tiny().join("model.safetensors"))["model.norm.weight"].clone();
    assert!(changed(&base_norm, norm), "model.norm did not train");
    // Python peft loads it (no missing or unexpected keys) with swift infer --adapters' logits.
    crate::train_lora::check_peft(&python, &tiny(), &ck, "1,2,3,4,5", 3);
    // Inference attends fully: a plain LoRA reading the same files (no args.json, so the
    // checkpoint's peft_type picks `lora`) gives the same logits; merged as well.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(ck.join(f), plain.join(f)).unwrap();
    }
    let ids: String = (3..80).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let (longlora, _) = infer_logits(&["--adapters", ck.to_str().unwrap()], &ids, 1);
    let (lora, _) = infer_logits(&["--adapters", plain.to_str().unwrap()], &ids, 1);
    assert_eq!(longlora, lora, "longlora's inference is plain LoRA's");
    let (merged, _) = infer_logits(
        &["--adapters", ck.to_str().unwrap(), "--merge_lora", "true"],
        &ids,
        1,
    );
    assert!(max_abs_diff(&longlora, &merged) < 1e-4);
}

#[test]
fn longlora_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the norms trained whole; groups of half the length.
    let run = longlora_sft(
        tmp.path(),
        &[
            "--max_length",
            "64",
            "--max_steps",
            "1",
            "--embedder_and_normalizer",
            "norm",
            "--group_size_ratio",
            "0.5",
            "--truncation_strategy",
            "left",
        ],
    );
    let config = read_json(&run.join("checkpoint-1/adapter_config.json"));
    let modules = config["modules_to_save"].as_array().unwrap();
    assert_eq!(modules.len(), 5, "{modules:?}");
    assert!(!modules.iter().any(|m| m == "model.embed_tokens"));
    let data = ten_chat_rows(tmp.path());
    let base = tiny();
    let sft = |extra: &[&str]| {
        let out = tmp.path().join("refused");
        let mut a = vec![
            "sft",
            "--model",
            base.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            out.to_str().unwrap(),
            "--max_steps",
            "1",
        ];
        a.extend_from_slice(extra);
        swift(&a)
    };
    // int(200 × 0.3) = 60 does not divide 200 (ms-swift refuses it too).
    assert_fails(
        sft(&[
            "--tuner_type",
            "longlora",
            "--max_length",
            "200",
            "--group_size_ratio",
            "0.3",
        ]),
        &["--max_length 200", "--group_size_ratio 0.3"],
    );
    assert_fails(
        sft(&[
            "--tuner_type",
            "longlora",
            "--embedder_and_normalizer",
            "nothing_like_it",
        ]),
        &["*nothing_like_it*", "matches no layer"],
    );
    assert_fails(
        sft(&["--tuner_type", "lora", "--group_size_ratio", "0.5"]),
        &["--group_size_ratio"],
    );
}
