//! Training on images (issue 21) on the tiny random LLaVA-1.5 (tests/fixtures/models/llava, its
//! tokenizer's chat_template; `<image>` is one token of its own): LoRA SFT on mllm-demo's images
//! plus a grounding row lowers the loss, `--freeze_vit false` puts adapters on the vision tower
//! (by default it stays frozen, as ms-swift), DPO on image pairs raises the margins, and the
//! combinations that do not work yet are refused by name.

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub(crate) fn demo_images() -> PathBuf {
    setup::asset("llamafactory/data/mllm_demo_data")
}

/// mllm-demo's three images as chat rows, plus a grounding row (a box on 1.jpg).
pub(crate) fn image_rows(dir: &Path) -> PathBuf {
    let img = |n: u32| demo_images().join(format!("{n}.jpg")).display().to_string();
    write_jsonl(
        &dir.join("images.jsonl"),
        [
            json!({"messages": [{"role": "user", "content": "<image>Who are they?"}, {"role": "assistant", "content": "They're Kane and Gretzka from Bayern Munich."}], "images": [img(1)]}),
            json!({"messages": [{"role": "user", "content": "<image>Who is he?"}, {"role": "assistant", "content": "He's Thomas Muller from Bayern Munich."}], "images": [img(2)]}),
            json!({"messages": [{"role": "user", "content": "<image>Please describe this image"}, {"role": "assistant", "content": "Chinese astronauts Gui Haichao and Zhu Yangzhu."}], "images": [img(3)]}),
            json!({"messages": [{"role": "user", "content": "<image>Find <ref-object>"}, {"role": "assistant", "content": "<bbox>"}], "images": [img(1)], "objects": {"ref": ["the left player"], "bbox": [[30, 16.8, 150, 84]]}}),
        ],
    )
}

fn sft_images(data: &Path, run: &Path, extra: &[&str]) -> PathBuf {
    let model = tiny_model("llava");
    let mut args = vec![
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--learning_rate",
        "5e-3",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
        "--dataset_shuffle",
        "false",
    ];
    args.extend_from_slice(extra);
    ok(swift(&args));
    run_folder(run)
}

fn adapter_keys(run: &Path) -> Vec<String> {
    let ckpt = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("checkpoint-")
        })
        .expect("a checkpoint");
    let bytes = std::fs::read(ckpt.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.names().into_iter().map(String::from).collect()
}

#[test]
fn lora_sft_on_images_and_a_grounding_row_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let run = sft_images(
        &data,
        &dir.path().join("run"),
        &["--max_steps", "12", "--per_device_train_batch_size", "2"],
    );
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[9..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.8, "loss did not fall: {losses:?}");
    // Default --freeze_vit/--freeze_aligner true: adapters on the language model only.
    let keys = adapter_keys(&run);
    assert!(
        keys.iter().any(|k| k.contains("language_model")),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("vision_tower") || k.contains("multi_modal_projector")),
        "{keys:?}"
    );
}

#[test]
fn freeze_flags_choose_the_parts_that_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let run = sft_images(
        &data,
        &dir.path().join("run"),
        &[
            "--max_steps",
            "1",
            "--freeze_vit",
            "false",
            "--freeze_aligner",
            "false",
            "--freeze_llm",
            "true",
            "--vit_lr",
            "1e-3",
        ],
    );
    let keys = adapter_keys(&run);
    assert!(keys.iter().any(|k| k.contains("vision_tower")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.contains("multi_modal_projector")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("language_model")),
        "{keys:?}"
    );
    let args: Value = read_json(&run.join("args.json"));
    assert_eq!(args["vit_lr"], json!(1e-3));
}

#[test]
fn packing_and_gradient_checkpointing_with_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let model = tiny_model("llava");
    for (flag, value) in [("--packing", "true"), ("--gradient_checkpointing", "true")] {
        let out = dir.path().join(flag.trim_start_matches('-'));
        assert_fails(
            swift(&[
                "sft",
                "--model",
                model.to_str().unwrap(),
                "--dataset",
                data.to_str().unwrap(),
                "--output_dir",
                out.to_str().unwrap(),
                "--max_steps",
                "1",
                flag,
                value,
            ]),
            &[flag],
        );
    }
    // A row whose tags and images differ is refused naming its file and line.
    let bad = write_jsonl(
        &dir.path().join("bad.jsonl"),
        [
            json!({"messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Kane"}], "images": [demo_images().join("1.jpg").display().to_string()]}),
        ],
    );
    assert_fails(
        swift(&[
            "sft",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            bad.to_str().unwrap(),
            "--output_dir",
            dir.path().join("bad").to_str().unwrap(),
            "--max_steps",
            "1",
        ]),
        &["bad.jsonl:1", "<image>"],
    );
}

#[test]
fn dpo_with_images_raises_the_margins() {
    let dir = tempfile::tempdir().unwrap();
    let img = |n: u32| demo_images().join(format!("{n}.jpg")).display().to_string();
    let data = write_jsonl(
        &dir.path().join("pairs.jsonl"),
        (1..=3).map(|n| {
            json!({"messages": [{"role": "user", "content": "<image>Who is in the picture?"}, {"role": "assistant", "content": format!("Player number {n} of Bayern.")}],
                   "rejected_response": "I cannot see anything.", "images": [img(n)]})
        }),
    );
    let model = tiny_model("llava");
    let run = dir.path().join("run");
    ok(swift(&[
        "rlhf",
        "--rlhf_type",
        "dpo",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "8",
        "--learning_rate",
        "5e-3",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "1",
        "--dataset_shuffle",
        "false",
    ]));
    let recs = records(&run_folder(&run));
    let margins: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.get("rewards/margins").and_then(Value::as_f64))
        .collect();
    assert!(margins.len() >= 8, "{recs:?}");
    let first: f64 = margins[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = margins[margins.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last > first, "margins did not rise: {margins:?}");
}

#[test]
fn max_pixels_flag_and_environment_variable_scale_images_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let model = tiny_model("llava");
    let first_loss = |name: &str, extra: &[&str], env: &[(&str, &str)]| -> f64 {
        let out = dir.path().join(name);
        let mut args = vec![
            "sft",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            out.to_str().unwrap(),
            "--max_steps",
            "1",
            "--logging_steps",
            "1",
            "--dataset_shuffle",
            "false",
            "--lora_dropout",
            "0",
        ];
        args.extend_from_slice(extra);
        ok(swift_env(&args, env));
        step_losses(&run_folder(&out))[0]
    };
    let plain = first_loss("plain", &[], &[]);
    // mllm-demo's images are about 50,000 pixels: 1,000 scales them down before the CLIP processor.
    let small = first_loss("flag", &["--max_pixels", "1000"], &[]);
    assert!((plain - small).abs() > 1e-6, "{plain} {small}");
    let env = first_loss("env", &[], &[("MAX_PIXELS", "1000")]);
    assert_eq!(env, small, "MAX_PIXELS acts as --max_pixels");
    // The flag wins over the variable (500,000 leaves the images as they are).
    let both = first_loss(
        "both",
        &["--max_pixels", "500000"],
        &[("MAX_PIXELS", "1000")],
    );
    assert_eq!(both, plain);
}

/// A chat template for the tiny Qwen2-VL as a text-only plugin, with Qwen2-VL's image and box
/// conventions as template options (ms-swift's `replace_tag`, `replace_ref`, `replace_bbox`).
pub(crate) fn qwen2_vl_template(dir: &Path) -> PathBuf {
    write_text(
        &dir.join("qwen2-vl-test.toml"),
        r#"[[template]]
name = "qwen2-vl-test"
prefix = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
prompt = "<|im_start|>user\n{{QUERY}}<|im_end|>\n<|im_start|>assistant\n"
chat_sep = "<|im_end|>\n"
suffix = "<|im_end|>"
[template.options]
image = "<|vision_start|><|image_pad|><|vision_end|>"
ref_format = "<|object_ref_start|>{ref}<|object_ref_end|>"
bbox_format = "<|box_start|>{points}<|box_end|>"
"#,
    )
}

#[test]
fn qwen2_vl_lora_sft_with_grounding_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let template = qwen2_vl_template(dir.path());
    let model = tiny_model("qwen2_vl");
    let run = dir.path().join("run");
    ok(swift(&[
        "sft",
        "--plugin-dir",
        template.to_str().unwrap(),
        "--template",
        "qwen2-vl-test",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--learning_rate",
        "5e-3",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
        "--dataset_shuffle",
        "false",
        "--max_steps",
        "12",
        "--per_device_train_batch_size",
        "2",
    ]));
    let losses = step_losses(&run_folder(&run));
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[9..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.8, "loss did not fall: {losses:?}");
}
