//! The vision-language families (LLaVA-1.5, Qwen2-VL) against Hugging Face transformers, on the
//! tiny random models of tests/reference/make_vision_models.py (tests/fixtures/models/{llava,
//! qwen2_vl}/), in-process: with the pixel values transformers' processor fed (recorded in
//! expected.safetensors), the logits at every prompt position within 1e-4 of transformers' and
//! 32 greedy tokens decoded through the KV cache identical; Qwen2-VL's multimodal rotary
//! positions equal `get_rope_index`'s; the vision slots carry their parts; the example plugin's
//! vision family against its reference; `swift infer` and `swift deploy` answer about an image.

use crate::common::*;
use swift_model::{mrope_index, ImageBatch, LoadedModel};
use swift_plugin_api::vision::Part;
use tch::{Kind, Tensor};

fn recorded(family: &str) -> std::collections::HashMap<String, Tensor> {
    let path = tiny_model(family).join("expected.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_i64().expect("an id"))
        .collect()
}

/// Prompt logits against transformers' and the greedy continuation through the cache.
fn check(family: &str, model: &LoadedModel, images: &ImageBatch) {
    let exp = expected(family);
    let rec = recorded(family);
    let ids = ids_of(&exp["input_ids"]);
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let mut cache = model.new_cache(1);
    let hidden = model
        .forward_with_images(&x, None, &mut cache, Some(images))
        .expect("the prompt runs");
    let logits = model.logits(&hidden).expect("logits").squeeze_dim(0);
    let want = &rec["logits"];
    assert_eq!(logits.size(), want.size(), "{family}: logits shape");
    let scale = f64::try_from(want.abs().max()).unwrap();
    let worst = f64::try_from((&logits - want).abs().max()).unwrap();
    assert!(
        worst <= 1e-4 * scale,
        "{family}: logits differ by {worst} (scale {scale})"
    );
    let mut next = i64::try_from(logits.get(-1).argmax(0, false)).unwrap();
    let mut got = vec![next];
    while got.len() < 32 {
        let h = model
            .forward(&Tensor::from_slice(&[next]).view([1, 1]), None, &mut cache)
            .expect("a decoding step");
        next = i64::try_from(model.logits(&h).unwrap().view([-1]).argmax(0, false)).unwrap();
        got.push(next);
    }
    assert_eq!(got, ids_of(&exp["greedy"]), "{family}: greedy continuation");
}

#[test]
fn llava_matches_transformers() {
    let model = load_tiny("llava");
    let rec = recorded("llava");
    let images = ImageBatch {
        pixel_values: rec["pixel_values"].shallow_clone(),
        grid_thw: Tensor::from_slice(&[1i64, 4, 4]).view([1, 3]),
    };
    check("llava", &model, &images);
    let layout = model.layout();
    let tower = "vision_tower.vision_model";
    assert_eq!(
        layout.part_of(&format!("{tower}.embeddings.patch_embedding.weight")),
        Some(Part::Vit)
    );
    assert_eq!(
        layout.part_of(&format!("{tower}.embeddings.class_embedding")),
        Some(Part::Vit)
    );
    assert_eq!(
        layout.part_of("multi_modal_projector.linear_2.bias"),
        Some(Part::Aligner)
    );
    assert_eq!(
        layout.part_of("language_model.model.layers.1.mlp.up_proj.weight"),
        Some(Part::Llm)
    );
    let decl = layout.vision.as_ref().expect("a vision declaration");
    assert_eq!(decl.tokens.count([1, 4, 4]), 16);
}

#[test]
fn qwen2_vl_matches_transformers() {
    let model = load_tiny("qwen2_vl");
    let exp = expected("qwen2_vl");
    let rec = recorded("qwen2_vl");
    let grids: Vec<i64> = exp["image_grid_thw"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(ids_of)
        .collect();
    // get_rope_index: positions and delta as transformers computes them.
    let ids = ids_of(&exp["input_ids"]);
    let mut it = grids.chunks(3).map(|c| [c[0], c[1], c[2]]);
    let (pos, delta) = mrope_index(&ids, exp["image_token_id"].as_i64().unwrap(), &mut it, 2)
        .expect("the placeholders fit the grids");
    let want = rec["position_ids"].to_kind(Kind::Int64).view([3, -1]);
    for (axis, p) in pos.iter().enumerate() {
        assert_eq!(
            p,
            &Vec::<i64>::try_from(want.get(axis as i64)).unwrap(),
            "axis {axis}"
        );
    }
    assert_eq!(delta, exp["rope_deltas"][0].as_i64().unwrap());
    let n = grids.len() as i64 / 3;
    let images = ImageBatch {
        pixel_values: rec["pixel_values"].shallow_clone(),
        grid_thw: Tensor::from_slice(&grids).view([n, 3]),
    };
    check("qwen2_vl", &model, &images);
    let layout = model.layout();
    assert_eq!(
        layout.part_of("visual.blocks.0.attn.qkv.weight"),
        Some(Part::Vit)
    );
    assert_eq!(
        layout.part_of("visual.merger.mlp.0.weight"),
        Some(Part::Aligner)
    );
    assert_eq!(layout.part_of("lm_head.weight"), Some(Part::Llm));
}

/// `swift infer` on an image row of a dataset: the prompt holds the image's placeholders as
/// transformers' processor expands them, and the answer is transformers' greedy continuation.
/// Then `swift deploy` answers the same question about the same image, sent as a data URL
/// through the `openai` client, with the same text; a remote URL is refused by name.
#[test]
fn infer_and_deploy_answer_about_an_image() {
    let exp = expected("llava");
    let model = tiny_model("llava");
    let m = model.to_str().unwrap();
    let image = llamafactory_data("mllm_demo_data/1.jpg");
    let tmp = tempfile::tempdir().unwrap();
    let rows = write_jsonl(
        &tmp.path().join("rows.jsonl"),
        [serde_json::json!({
            "messages": [{"role": "user", "content": "<image>Who are they?"}],
            "images": [image.to_str().unwrap()],
        })],
    );
    let out = tmp.path().join("out.jsonl");
    let n = 12;
    ok(swift1(&[
        "infer",
        "--model",
        m,
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--max_new_tokens",
        &n.to_string(),
    ]));
    let got = read_jsonl(&out);
    assert_eq!(got[0]["prompt_ids"], exp["input_ids"], "the prompt");
    let greedy = ids_of(&exp["greedy"]);
    assert_eq!(
        ids_of(&got[0]["response_ids"]),
        greedy[..n],
        "the answer is transformers' greedy continuation"
    );
    let answer = got[0]["response"].as_str().unwrap().to_string();

    // The chat with --images: the question without a tag gets one, as ms-swift adds it.
    let chat = ok(swift_input(
        &[
            "infer",
            "--model",
            m,
            "--images",
            image.to_str().unwrap(),
            "--max_new_tokens",
            &n.to_string(),
        ],
        &[],
        "Who are they?\n",
    ));
    assert!(chat.contains(&answer), "chat with --images: {chat}");

    // A text-only model refuses images by name.
    assert_fails(
        swift1(&[
            "infer",
            "--model",
            tiny().to_str().unwrap(),
            "--val_dataset",
            rows.to_str().unwrap(),
            "--result_path",
            out.to_str().unwrap(),
        ]),
        &["reads no images"],
    );

    let python = reference_python(&["openai"]);
    let server = Server::start(&["--model", m, "--served_model_name", "tiny-llava"]);
    let out = std::process::Command::new(python)
        .arg(workspace_root().join("tests/deploy_images_client.py"))
        .args(["--base-url", &server.base_url, "--model", "tiny-llava"])
        .args(["--image", image.to_str().unwrap()])
        .args([
            "--question",
            "Who are they?",
            "--max-tokens",
            &n.to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "deploy_images_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap()).unwrap();
    assert_eq!(
        v["text"].as_str(),
        Some(answer.as_str()),
        "deploy answers as infer"
    );
    assert_eq!(
        v["prompt_tokens"].as_u64(),
        Some(exp["input_ids"].as_array().unwrap().len() as u64)
    );
}

/// The example plugin's vision family (a third party's, loaded from its file with the plugin
/// directory): logits and greedy tokens against the plain-torch reference of
/// make_vision_models.py, and its slots tagged as the host's freeze flags read them.
#[test]
fn example_plugin_vision_family_matches_its_reference() {
    let model = load_tiny("example_gpt2_vision");
    let rec = recorded("example_gpt2_vision");
    let images = ImageBatch {
        pixel_values: rec["pixel_values"].shallow_clone(),
        grid_thw: Tensor::from_slice(&[1i64, 2, 2]).view([1, 3]),
    };
    let exp = expected("example_gpt2_vision");
    let ids = ids_of(&exp["input_ids"]);
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let mut cache = model.new_cache(1);
    let h = model
        .forward_with_images(&x, None, &mut cache, Some(&images))
        .expect("the prompt runs");
    let logits = model.logits(&h).unwrap().squeeze_dim(0);
    let want = &rec["logits"];
    let scale = f64::try_from(want.abs().max()).unwrap();
    let worst = f64::try_from((&logits - want).abs().max()).unwrap();
    assert!(
        worst <= 1e-4 * scale,
        "logits differ by {worst} (scale {scale})"
    );
    let mut next = i64::try_from(logits.get(-1).argmax(0, false)).unwrap();
    let mut got = vec![next];
    let greedy = ids_of(&exp["greedy"]);
    while got.len() < greedy.len() {
        let h = model
            .forward(&Tensor::from_slice(&[next]).view([1, 1]), None, &mut cache)
            .unwrap();
        next = i64::try_from(model.logits(&h).unwrap().view([-1]).argmax(0, false)).unwrap();
        got.push(next);
    }
    assert_eq!(got, greedy, "greedy continuation");
    let layout = model.layout();
    assert_eq!(layout.part_of("vision.patch_embed.weight"), Some(Part::Vit));
    assert_eq!(layout.part_of("projector.bias"), Some(Part::Aligner));
    assert_eq!(
        layout.part_of("transformer.h.0.attn.c_attn.weight"),
        Some(Part::Llm)
    );
}
