//! `swift infer` on a K-quant GGUF decodes on the integer kernels: a tiny random llama whose
//! widths exercise every new block layout (hidden 256: Q4_K matrices and a Q6_K tied
//! embedding/output; FFN 320, not whole super-blocks: its down projection falls back to Q5_0 as
//! llama-quantize's does) is exported with `--gguf_type q4_k`; the packed decoding gives the
//! same last-position logits as the same file dequantized to float32 (`swift export
//! --from_gguf`) within the 8-bit activations' error, and the same greedy tokens up to a
//! near-tie.

use std::path::Path;

use crate::common::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

const HIDDEN: usize = 256;
const FFN: usize = 320;
const VOCAB: usize = 320;

/// A two-layer llama with random weights (uniform, fixed seed) and the tiny llama's tokenizer.
fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tiny = tiny();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let mut config = read_json(&tiny.join("config.json"));
    config["hidden_size"] = json!(HIDDEN);
    config["intermediate_size"] = json!(FFN);
    config["head_dim"] = json!(64);
    config["num_attention_heads"] = json!(4);
    config["num_key_value_heads"] = json!(2);
    config["vocab_size"] = json!(VOCAB);
    config.as_object_mut().unwrap().remove("rope_scaling");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut shapes: Vec<(String, Vec<usize>, f32)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN], 0.5)];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN], 0.0));
        shapes.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![HIDDEN],
            0.0,
        ));
        for (m, out) in [("q", HIDDEN), ("k", 128), ("v", 128), ("o", HIDDEN)] {
            let k = HIDDEN;
            shapes.push((format!("{p}.self_attn.{m}_proj.weight"), vec![out, k], 0.1));
        }
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![FFN, HIDDEN], 0.1));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![FFN, HIDDEN], 0.1));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, FFN], 0.1));
    }
    shapes.push(("model.norm.weight".into(), vec![HIDDEN], 0.0));
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, shape, scale)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    // Norm weights are 1; the others uniform in ±scale.
                    let v = if *scale == 0.0 { 1.0 } else { u * scale };
                    v.to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape, _), bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn q4_k_gguf_decodes_packed_as_its_dequantized_float_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let env = [ONE_THREAD, ("SWIFT_RS_CACHE", cache_dir.to_str().unwrap())];
    let model = tmp.path().join("model");
    write_model(&model);
    let gguf = tmp.path().join("model-q4_k.gguf");
    ok(swift_env(
        &[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--to_gguf",
            "--gguf_type",
            "q4_k",
            "--output_dir",
            gguf.to_str().unwrap(),
        ],
        &env,
    ));
    // The file holds the three layouts: Q4_K (width 256), Q5_0 (width 320), Q6_K (output).
    let file = swift_gguf::GgufFile::open(&gguf).unwrap();
    let ty = |name: &str| file.tensor_info(name).unwrap().ggml_type.unwrap();
    assert_eq!(ty("blk.0.attn_q.weight"), swift_gguf::GgmlType::Q4_K);
    assert_eq!(ty("blk.0.ffn_up.weight"), swift_gguf::GgmlType::Q4_K);
    assert_eq!(ty("blk.0.ffn_down.weight"), swift_gguf::GgmlType::Q5_0);
    assert_eq!(ty("token_embd.weight"), swift_gguf::GgmlType::Q6_K);

    let float_dir = tmp.path().join("float");
    ok(swift_env(
        &[
            "export",
            "--from_gguf",
            gguf.to_str().unwrap(),
            "--output_dir",
            float_dir.to_str().unwrap(),
        ],
        &env,
    ));
    let ids = "1,17,42,99,7,250,13,64";
    let greedy = 16;
    let packed_out = swift_env(
        &[
            "infer",
            "--model",
            gguf.to_str().unwrap(),
            "--debug_input_ids",
            ids,
            "--debug_greedy_tokens",
            &greedy.to_string(),
        ],
        &env,
    );
    assert!(
        stderr(&packed_out).contains("integer kernel"),
        "the packed model decodes on the kernels: {}",
        stderr(&packed_out)
    );
    let packed = json_out(packed_out);
    let (p_logits, p_greedy) = (floats(&packed["last_logits"]), packed["greedy"].clone());
    let (f_logits, f_greedy) =
        infer_logits_env(&env, &["--model", float_dir.to_str().unwrap()], ids, greedy);

    // Every matrix stays packed: the folder is about the file's size.
    let converted: Vec<_> = std::fs::read_dir(cache_dir.join("converted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("-packed-v"))
        .collect();
    assert_eq!(converted.len(), 1, "{converted:?}");
    let folder = file_size(&converted[0].join("model.safetensors"));
    assert!(
        (folder as f64) < 1.1 * file_size(&gguf) as f64,
        "packed folder {folder} bytes, GGUF {}",
        file_size(&gguf)
    );

    // The prompt's last logits: 8-bit activations move them by a small part of their span.
    let span = f_logits.iter().cloned().fold(f64::MIN, f64::max)
        - f_logits.iter().cloned().fold(f64::MAX, f64::min);
    let diff = max_abs_diff(&p_logits, &f_logits);
    eprintln!("K-quant packed vs float32 logits: max |diff| {diff:.4} over a span of {span:.2}");
    assert!(diff < 0.03 * span, "max |diff| {diff} over a span {span}");

    // Greedy tokens: equal, or diverging only where the float model's top two are a near-tie
    // (closer than twice the logits' measured difference).
    let as_ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let (got, want) = (as_ids(&p_greedy), as_ids(&f_greedy));
    assert_eq!(want.len(), greedy, "{f_greedy}");
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        let mut prefix: Vec<String> = ids.split(',').map(String::from).collect();
        prefix.extend(want[..at].iter().map(i64::to_string));
        let (logits, _) = infer_logits_env(
            &env,
            &["--model", float_dir.to_str().unwrap()],
            &prefix.join(","),
            1,
        );
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let gap = sorted[0] - sorted[1];
        eprintln!("near-tie: diverges at token {at}, float top-2 gap {gap:.4}");
        assert!(
            gap < 2.0 * diff.max(0.01 * span),
            "diverges at token {at}, gap {gap}"
        );
    }
}
