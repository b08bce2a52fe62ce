//! PEFT interop on images (issue 21), for both tiny vision-language families (LLaVA-1.5 and
//! Qwen2-VL): LoRA SFT through the `swift` binary on mllm-demo rows and a grounding row, then
//! Python `peft` loads the checkpoint (every tensor under the module names transformers 4.57
//! gives, `model.language_model.…`; `target_modules` what peft matches) and its last-position
//! logits on expected.json's image + text prompt equal `swift infer --adapters --images`'s
//! within 1e-4; the checkpoint as peft writes it back (`save_pretrained`) reads the same; and
//! `swift infer --adapters --images` answers a dataset row with the greedy tokens of that forward
//! pass (tests/reference/peft_vision_logits.py).

use crate::common::*;
use crate::train_images::{demo_images, image_rows, qwen2_vl_template};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `swift sft` (LoRA, a few steps) on the image rows; the checkpoint folder.
fn train(family: &str, dir: &Path) -> PathBuf {
    let data = image_rows(dir);
    let model = tiny_model(family);
    let run = dir.join("run");
    let template = qwen2_vl_template(dir);
    let mut args = vec![
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--learning_rate",
        "1e-2",
        "--lora_dropout",
        "0",
        "--dataset_shuffle",
        "false",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "2",
    ];
    if family == "qwen2_vl" {
        args.extend_from_slice(&[
            "--plugin-dir",
            template.to_str().unwrap(),
            "--template",
            "qwen2-vl-test",
        ]);
    }
    ok(swift(&args));
    run_folder(&run).join("checkpoint-4")
}

/// expected.json's images, as files.
fn images(exp: &Value) -> Vec<String> {
    exp["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p.as_str().unwrap().rsplit('/').next().unwrap();
            demo_images().join(name).display().to_string()
        })
        .collect()
}

fn peft_agrees(family: &str) {
    let python = reference_python(&["transformers", "peft", "PIL"]);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = train(family, dir.path());
    let model = tiny_model(family);
    let exp = expected(family);
    let imgs = images(&exp);
    let ids: Vec<String> = exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let ids = ids.join(",");

    // What PEFT needs in adapter_config.json: module names and the base folder.
    let cfg: Value = read_json(&ckpt.join("adapter_config.json"));
    assert_eq!(
        cfg["base_model_name_or_path"].as_str(),
        Some(model.to_str().unwrap())
    );
    // Full names are module names (LLaVA's, whose tower has q_proj too); short ones (Qwen2-VL's
    // language model alone has q_proj) match by suffix, as PEFT matches them.
    let targets = cfg["target_modules"].as_array().expect("a list");
    assert!(
        !targets.is_empty()
            && targets.iter().all(|t| {
                let t = t.as_str().unwrap();
                !t.contains('.') || t.starts_with("model.language_model.layers.")
            }),
        "{targets:?}"
    );
    let bytes = std::fs::read(ckpt.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.model.language_model.layers.")),
        "{names:?}"
    );
    let adapted = names
        .iter()
        .filter(|n| n.ends_with(".lora_A.weight"))
        .count();

    let resaved = dir.path().join("resaved");
    let v = run_reference(
        &python,
        "peft_vision_logits.py",
        &[
            &model,
            &ckpt,
            &serde_json::to_string(&imgs).unwrap(),
            &exp["input_ids"].to_string(),
            &resaved,
        ],
    );
    assert_eq!(v["unexpected"], serde_json::json!([]), "{family}");
    assert_eq!(v["missing"], serde_json::json!([]), "{family}");
    assert_eq!(v["lora_modules"].as_u64(), Some(adapted as u64));
    let peft = floats(&v["last_logits"]);
    let scale = max_abs(&peft).max(1.0);
    assert!(
        max_abs_diff(&peft, &floats(&v["base_last_logits"])) > 1e-3,
        "{family}: the adapter does not change peft's output"
    );
    let mut extra = vec!["--adapters", ckpt.to_str().unwrap(), "--images"];
    extra.extend(imgs.iter().map(String::as_str));
    let (ours, _) = infer_logits(&extra, &ids, 1);
    let d = max_abs_diff(&peft, &ours);
    assert!(
        d <= 1e-4 * scale,
        "{family}: peft and swift logits differ by {d} (scale {scale})"
    );

    // The checkpoint as peft itself writes it reads the same.
    let mut extra = vec![
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        resaved.to_str().unwrap(),
        "--images",
    ];
    extra.extend(imgs.iter().map(String::as_str));
    let (theirs, _) = infer_logits(&extra, &ids, 1);
    let d = max_abs_diff(&peft, &theirs);
    assert!(
        d <= 1e-4 * scale,
        "{family}: peft's own file: logits differ by {d}"
    );

    // `swift infer --adapters` on a dataset row with an image: the prompt it builds, and its
    // greedy answer is the forward pass's (checked against peft above) greedy continuation.
    let rows = write_jsonl(
        &dir.path().join("ask.jsonl"),
        [serde_json::json!({
            "messages": [{"role": "user", "content": "<image>Who are they?"}],
            "images": [imgs[0]],
        })],
    );
    let out = dir.path().join("answers.jsonl");
    let n = 6;
    ok(swift1(&[
        "infer",
        "--adapters",
        ckpt.to_str().unwrap(),
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--max_new_tokens",
        &n.to_string(),
    ]));
    let got = read_jsonl(&out);
    let prompt: Vec<String> = got[0]["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let (_, greedy) = infer_logits(
        &[
            "--adapters",
            ckpt.to_str().unwrap(),
            "--images",
            imgs[0].as_str(),
        ],
        &prompt.join(","),
        n,
    );
    // The answer stops early at an EOS, which it leaves out.
    let answer = got[0]["response_ids"].as_array().unwrap();
    let greedy = greedy.as_array().unwrap();
    assert!(
        !answer.is_empty() && greedy.starts_with(answer),
        "{family}: the answer {answer:?} is not the greedy continuation {greedy:?}"
    );
}

#[test]
fn peft_loads_a_llava_lora_checkpoint_and_agrees() {
    peft_agrees("llava");
}

#[test]
fn qwen2_vl_lora_through_the_cli_and_peft_agree() {
    peft_agrees("qwen2_vl");
}

/// `swift export --merge_lora` with LoRA on LLaVA's patch embedding (a linear slot over
/// flattened patches, stored as a Conv2d kernel): the merged kernel keeps the stored
/// `[hidden, 3, 14, 14]` shape, and the merged folder gives the adapter's logits on an image
/// prompt.
#[test]
fn merging_lora_on_the_patch_embedding_keeps_the_kernel_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_rows(dir.path());
    let model = tiny_model("llava");
    let run = dir.path().join("run");
    ok(swift(&[
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--target_modules",
        "patch_embedding",
        "q_proj",
        "--freeze_vit",
        "false",
        "--learning_rate",
        "1e-2",
        "--lora_dropout",
        "0",
        "--max_steps",
        "2",
    ]));
    let ckpt = run_folder(&run).join("checkpoint-2");
    let merged = dir.path().join("merged");
    ok(swift(&[
        "export",
        "--adapters",
        ckpt.to_str().unwrap(),
        "--merge_lora",
        "true",
        "--output_dir",
        merged.to_str().unwrap(),
    ]));
    let kernel = "vision_tower.vision_model.embeddings.patch_embedding.weight";
    let shape_in = |folder: &Path| -> Vec<usize> {
        let bytes = std::fs::read(folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(kernel).unwrap().shape().to_vec()
    };
    let base_shape = shape_in(&model);
    assert_eq!(base_shape.len(), 4, "{base_shape:?}");
    assert_eq!(shape_in(&merged), base_shape);

    let exp = expected("llava");
    let ids: Vec<String> = exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let ids = ids.join(",");
    let img = demo_images().join("1.jpg").display().to_string();
    let (adapter, _) = infer_logits(
        &["--adapters", ckpt.to_str().unwrap(), "--images", &img],
        &ids,
        1,
    );
    let (merged_logits, _) = infer_logits(
        &["--model", merged.to_str().unwrap(), "--images", &img],
        &ids,
        1,
    );
    let (base, _) = infer_logits(
        &["--model", model.to_str().unwrap(), "--images", &img],
        &ids,
        1,
    );
    let scale = max_abs(&adapter).max(1.0);
    assert!(
        max_abs_diff(&adapter, &base) > 1e-3,
        "the adapter changes nothing"
    );
    let d = max_abs_diff(&adapter, &merged_logits);
    assert!(d <= 1e-4 * scale, "merged and adapter logits differ by {d}");
}

/// `--max_pixels` on `swift infer` and `swift deploy` (one definition with training's): it
/// scales the image down before LLaVA's fixed-size CLIP processor, so the logits change;
/// `MAX_PIXELS` acts as the flag when it is absent; a text-only model refuses the flag by name
/// in both commands.
#[test]
fn max_pixels_applies_to_infer_and_deploy_images() {
    let model = tiny_model("llava");
    let m = model.to_str().unwrap();
    let exp = expected("llava");
    let ids: Vec<String> = exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let ids = ids.join(",");
    let img = demo_images().join("1.jpg").display().to_string();
    let args = ["--model", m, "--images", &img];
    let (plain, _) = infer_logits(&args, &ids, 1);
    let (small, _) = infer_logits(&[&args[..], &["--max_pixels", "1000"]].concat(), &ids, 1);
    assert!(
        max_abs_diff(&plain, &small) > 1e-4,
        "--max_pixels changed nothing"
    );
    let (env, _) = infer_logits_env(&[ONE_THREAD, ("MAX_PIXELS", "1000")], &args, &ids, 1);
    assert_eq!(env, small, "MAX_PIXELS acts as --max_pixels");
    let text = tiny();
    for cmd in ["infer", "deploy"] {
        assert_fails(
            swift(&[
                cmd,
                "--model",
                text.to_str().unwrap(),
                "--max_pixels",
                "1000",
            ]),
            &["--max_pixels", "reads no images"],
        );
    }
}
