//! The vision-language families (LLaVA-1.5, Qwen2-VL) against Hugging Face transformers, on the
//! tiny random models of tests/reference/make_vision_models.py (tests/fixtures/models/{llava,
//! qwen2_vl}/), in-process: with the pixel values transformers' processor fed (recorded in
//! expected.safetensors), the logits at every prompt position within 1e-4 of transformers' and
//! 32 greedy tokens decoded through the KV cache identical; Qwen2-VL's multimodal rotary
//! positions equal `get_rope_index`'s; the vision slots carry their parts.

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
        .flat_map(|g| ids_of(g))
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
