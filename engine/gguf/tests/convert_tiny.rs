//! Conversion of a tiny random llama GGUF that the test writes itself with `GgufWriter`
//! (so it runs everywhere, without the real model): config values, tensor names and shapes,
//! the Q/K permutation undone, untied `lm_head`, quantized tensors dequantized, the rebuilt
//! byte-level BPE tokenizer loadable by the `tokenizers` crate, and clear errors for
//! unsupported inputs.

use std::path::PathBuf;

use swift_gguf::convert::permute_rows_for_gguf;
use swift_gguf::{convert_to_hf, GgmlType, GgufWriter, MetadataValue, ValueType};

const HIDDEN: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 32;
const FFN: usize = 96;
const LAYERS: usize = 2;

/// GPT-2's byte-to-unicode alphabet, in byte order.
fn byte_alphabet() -> Vec<String> {
    let mut n = 0u32;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                n += 1;
                255 + n
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

fn det(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
        .collect()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swift-gguf-tiny-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_writer(tokens: &[String], merges: &[&str]) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "llama");
    w.set_metadata("general.name", "tiny");
    w.set_metadata("llama.block_count", LAYERS as u32);
    w.set_metadata("llama.context_length", 256u32);
    w.set_metadata("llama.embedding_length", HIDDEN as u32);
    w.set_metadata("llama.feed_forward_length", FFN as u32);
    w.set_metadata("llama.attention.head_count", HEADS as u32);
    w.set_metadata("llama.attention.head_count_kv", KV_HEADS as u32);
    w.set_metadata("llama.rope.freq_base", 10000f32);
    w.set_metadata("llama.attention.layer_norm_rms_epsilon", 1e-6f32);
    w.set_metadata("tokenizer.ggml.model", "gpt2");
    w.set_metadata("tokenizer.ggml.pre", "smollm");
    w.set_metadata("tokenizer.ggml.tokens", tokens.to_vec());
    let types: Vec<MetadataValue> = (0..tokens.len())
        .map(|i| MetadataValue::I32(if i < 2 { 3 } else { 1 }))
        .collect();
    w.set_metadata(
        "tokenizer.ggml.token_type",
        MetadataValue::Array(ValueType::I32, types),
    );
    w.set_metadata(
        "tokenizer.ggml.merges",
        merges.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
    );
    w.set_metadata("tokenizer.ggml.bos_token_id", 0u32);
    w.set_metadata("tokenizer.ggml.eos_token_id", 1u32);
    w.set_metadata("tokenizer.ggml.add_bos_token", false);
    w.set_metadata("tokenizer.chat_template", "{{ messages[0]['content'] }}");
    w
}

#[test]
fn tiny_llama_converts() {
    let mut tokens = vec!["<s>".to_owned(), "</s>".to_owned()];
    tokens.extend(byte_alphabet());
    tokens.extend(["he", "ll", "hell", "hello"].map(String::from));
    let vocab = tokens.len();
    let mut w = tiny_writer(&tokens, &["h e", "l l", "he ll", "hell o"]);

    let q_hf = det(1, HEADS * HEAD_DIM * HIDDEN);
    let k_hf = det(2, KV_HEADS * HEAD_DIM * HIDDEN);
    w.add_tensor_f32(
        "token_embd.weight",
        &[vocab, HIDDEN],
        &det(0, vocab * HIDDEN),
        GgmlType::F16,
    )
    .unwrap();
    w.add_tensor_f32(
        "output.weight",
        &[vocab, HIDDEN],
        &det(9, vocab * HIDDEN),
        GgmlType::Q8_0,
    )
    .unwrap();
    w.add_tensor_f32(
        "output_norm.weight",
        &[HIDDEN],
        &vec![1.0; HIDDEN],
        GgmlType::F32,
    )
    .unwrap();
    for l in 0..LAYERS {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        let q = permute_rows_for_gguf(&q_hf, HEADS * HEAD_DIM, HIDDEN, HEADS).unwrap();
        let k = permute_rows_for_gguf(&k_hf, KV_HEADS * HEAD_DIM, HIDDEN, KV_HEADS).unwrap();
        w.add_tensor_f32(&p("attn_q"), &[HEADS * HEAD_DIM, HIDDEN], &q, GgmlType::F32)
            .unwrap();
        w.add_tensor_f32(
            &p("attn_k"),
            &[KV_HEADS * HEAD_DIM, HIDDEN],
            &k,
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("attn_v"),
            &[KV_HEADS * HEAD_DIM, HIDDEN],
            &det(3, KV_HEADS * HEAD_DIM * HIDDEN),
            GgmlType::Q4_0,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("attn_output"),
            &[HIDDEN, HEADS * HEAD_DIM],
            &det(4, HIDDEN * HEADS * HEAD_DIM),
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("ffn_gate"),
            &[FFN, HIDDEN],
            &det(5, FFN * HIDDEN),
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("ffn_up"),
            &[FFN, HIDDEN],
            &det(6, FFN * HIDDEN),
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("ffn_down"),
            &[HIDDEN, FFN],
            &det(7, FFN * HIDDEN),
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(
            &p("attn_norm"),
            &[HIDDEN],
            &vec![1.0; HIDDEN],
            GgmlType::F32,
        )
        .unwrap();
        w.add_tensor_f32(&p("ffn_norm"), &[HIDDEN], &vec![1.0; HIDDEN], GgmlType::F32)
            .unwrap();
    }
    let dir = tmp("ok");
    let gguf = dir.join("tiny.gguf");
    w.write(&gguf).unwrap();

    let out = dir.join("hf");
    let report = convert_to_hf(&gguf, &out).unwrap();
    assert_eq!(report.tensor_count, 3 + 9 * LAYERS);
    assert_eq!(report.unpermuted, 2 * LAYERS);
    assert!(!report.tied_embeddings);
    assert_eq!(report.source_types.get("Q8_0"), Some(&1));
    assert_eq!(report.source_types.get("Q4_0"), Some(&LAYERS));
    assert!(report.to_string().contains("converted llama model 'tiny'"));

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], false);
    assert_eq!(config["num_key_value_heads"], KV_HEADS);
    assert_eq!(config["head_dim"], HEAD_DIM);
    assert_eq!(config["intermediate_size"], FFN);
    assert_eq!(config["rms_norm_eps"], 1e-6);
    assert_eq!(config["vocab_size"], vocab);
    assert_eq!(config["max_position_embeddings"], 256);
    assert_eq!(config["eos_token_id"], 1);
    assert!(config["pad_token_id"].is_null());

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), v)
    };
    let (shape, q) = read("model.layers.1.self_attn.q_proj.weight");
    assert_eq!(shape, vec![HEADS * HEAD_DIM, HIDDEN]);
    assert_eq!(q, q_hf, "Q permutation must be undone exactly");
    assert_eq!(read("model.layers.0.self_attn.k_proj.weight").1, k_hf);
    assert_eq!(read("lm_head.weight").0, vec![vocab, HIDDEN]);
    assert_eq!(
        read("model.layers.0.mlp.down_proj.weight").0,
        vec![HIDDEN, FFN]
    );
    assert_eq!(
        read("model.layers.0.post_attention_layernorm.weight").0,
        vec![HIDDEN]
    );
    assert_eq!(st.len(), report.tensor_count);

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let enc = tok.encode("<s>hello hell", false).unwrap();
    let hello = tokens.iter().position(|t| t == "hello").unwrap() as u32;
    let hell = tokens.iter().position(|t| t == "hell").unwrap() as u32;
    let space = tokens.iter().position(|t| t == "Ġ").unwrap() as u32;
    assert_eq!(enc.get_ids(), &[0, hello, space, hell]);
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "<s>hello hell");
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello hell");

    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["chat_template"], "{{ messages[0]['content'] }}");
    assert_eq!(tc["model_max_length"], 256);
    assert!(tc["pad_token"].is_null());
    let gen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        gen,
        serde_json::json!({"bos_token_id": 0, "eos_token_id": 1})
    );

    // Converting again over the same folder works and leaves no temporary files.
    convert_to_hf(&gguf, &out).unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unsupported_inputs_fail_clearly() {
    let dir = tmp("bad");
    let tokens: Vec<String> = vec!["a".into(), "b".into()];

    // Another architecture.
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "mamba");
    let path = dir.join("mamba.gguf");
    w.write(&path).unwrap();
    let err = convert_to_hf(&path, &dir.join("out1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("architecture 'mamba' is not supported") && err.contains("mamba.gguf"),
        "{err}"
    );

    // A tensor with no Hugging Face name.
    let mut w = tiny_writer(&tokens, &["a b"]);
    w.add_tensor_f32(
        "token_embd.weight",
        &[2, HIDDEN],
        &det(0, 2 * HIDDEN),
        GgmlType::F32,
    )
    .unwrap();
    w.add_tensor_f32(
        "output_norm.weight",
        &[HIDDEN],
        &vec![1.0; HIDDEN],
        GgmlType::F32,
    )
    .unwrap();
    w.add_tensor_f32(
        "blk.0.mystery.weight",
        &[HIDDEN],
        &vec![1.0; HIDDEN],
        GgmlType::F32,
    )
    .unwrap();
    let path = dir.join("mystery.gguf");
    w.write(&path).unwrap();
    let err = convert_to_hf(&path, &dir.join("out2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'blk.0.mystery.weight'"), "{err}");

    // A shape that contradicts the metadata.
    let mut w = tiny_writer(&tokens, &["a b"]);
    w.add_tensor_f32(
        "token_embd.weight",
        &[2, HIDDEN],
        &det(0, 2 * HIDDEN),
        GgmlType::F32,
    )
    .unwrap();
    w.add_tensor_f32(
        "output_norm.weight",
        &[HIDDEN],
        &vec![1.0; HIDDEN],
        GgmlType::F32,
    )
    .unwrap();
    w.add_tensor_f32(
        "blk.0.attn_q.weight",
        &[HIDDEN, 32],
        &det(0, HIDDEN * 32),
        GgmlType::F32,
    )
    .unwrap();
    let path = dir.join("shape.gguf");
    w.write(&path).unwrap();
    let err = convert_to_hf(&path, &dir.join("out3"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk.0.attn_q.weight") && err.contains("[64, 64]"),
        "{err}"
    );
    // Nothing that looks like a model was left behind.
    assert!(!dir.join("out3").join("config.json").exists());

    // A tensor type that cannot be dequantized.
    let mut w = tiny_writer(&tokens, &["a b"]);
    w.add_tensor_bytes(
        "token_embd.weight",
        &[2, 256],
        GgmlType::IQ2_XXS,
        vec![0u8; 2 * 66],
    )
    .unwrap();
    w.set_metadata("llama.embedding_length", 256u32);
    w.add_tensor_f32("output_norm.weight", &[256], &vec![1.0; 256], GgmlType::F32)
        .unwrap();
    let path = dir.join("iq.gguf");
    w.write(&path).unwrap();
    let err = convert_to_hf(&path, &dir.join("out4"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("IQ2_XXS (id 16)") && err.contains("token_embd.weight"),
        "{err}"
    );
    assert!(
        !dir.join("out4").exists(),
        "nothing is written before the inputs are validated"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
