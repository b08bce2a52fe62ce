//! End-to-end test on the real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by
//! `scripts/fetch-smollm.sh`): metadata, dequantization, conversion to a Hugging Face folder,
//! and the rebuilt tokenizer checked with the `tokenizers` crate. Fails, saying how to install
//! it, when the file is absent. Path: `$SWIFT_SMOLLM_GGUF`, default
//! `$SWIFT_RS_CACHE/assets/SmolLM2-135M-Instruct.Q4_1.gguf` (`SWIFT_RS_CACHE` defaults to
//! `~/.cache/swift-rs`).

use std::path::PathBuf;

use swift_gguf::{convert_to_hf, GgmlType, GgufFile};

// The repository's one place that knows what `make setup` installs (std only).
#[allow(dead_code)]
#[path = "../../../tests/common/setup.rs"]
mod setup;

fn smollm_path() -> PathBuf {
    match std::env::var_os("SWIFT_SMOLLM_GGUF") {
        Some(p) => PathBuf::from(p),
        None => setup::smollm2_gguf(),
    }
}

const CHAT_PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
const CHAT_IDS: [u32; 16] = [
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];

#[test]
fn smollm_metadata_and_tensors() {
    let path = smollm_path();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.require_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.require_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.require_u64("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.require_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.require_u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.require_f64("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.require_f64("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    assert_eq!(f.require_str("tokenizer.ggml.model").unwrap(), "gpt2");
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[1], "<|im_start|>");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges")
            .unwrap()
            .unwrap()
            .len(),
        48900
    );
    assert_eq!(f.parameter_count(), 134_515_008);
    assert_eq!(f.tensors().len(), 272);
    let count = |t: GgmlType| {
        f.tensors()
            .iter()
            .filter(|i| i.ggml_type == Some(t))
            .count()
    };
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::Q8_0), 1);
    assert_eq!(count(GgmlType::F32), 61);
    assert!(f.tensor_info("output.weight").is_none());

    let embd = f.tensor_f32("token_embd.weight").unwrap();
    assert_eq!(embd.shape, vec![49152, 576]);
    assert!(embd.data.iter().all(|v| v.is_finite()));
    let q = f.tensor_f32("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.shape, vec![576, 576]);
    let mean_abs = q.data.iter().map(|v| v.abs() as f64).sum::<f64>() / q.data.len() as f64;
    assert!(
        mean_abs > 1e-3 && mean_abs < 1.0,
        "implausible weights: mean |w| = {mean_abs}"
    );
    let norm = f.tensor_f32("output_norm.weight").unwrap();
    assert_eq!(norm.shape, vec![576]);
}

#[test]
fn smollm_converts_to_hf_folder() {
    let path = smollm_path();
    let out = std::env::temp_dir().join(format!("swift-gguf-smollm-{}", std::process::id()));
    let report = convert_to_hf(&path, &out).unwrap();
    println!("{report}");
    assert_eq!(report.parameter_count, 134_515_008);
    assert_eq!(report.tensor_count, 272);
    assert_eq!(report.unpermuted, 60);
    assert!(report.tied_embeddings);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["head_dim"], 64);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    assert_eq!(config["rope_theta"], 100000.0);
    assert_eq!(config["vocab_size"], 49152);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["bos_token_id"], 1);
    assert_eq!(config["eos_token_id"], 2);

    // The safetensors file is readable by the reference crate and holds the unpermuted weights.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 272);
    assert!(st.names().iter().all(|n| *n != "lm_head.weight"));
    let k = st.tensor("model.layers.3.self_attn.k_proj.weight").unwrap();
    assert_eq!(k.shape(), &[192, 576]);
    let f = GgufFile::open(&path).unwrap();
    let k_gguf = f.tensor_f32("blk.3.attn_k.weight").unwrap();
    let k_hf: Vec<f32> = k
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let repermuted = swift_gguf::convert::permute_rows_for_gguf(&k_hf, 192, 576, 3).unwrap();
    assert_eq!(repermuted, k_gguf.data);
    assert_ne!(k_hf, k_gguf.data);

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let enc = tok.encode(CHAT_PROMPT, false).unwrap();
    assert_eq!(enc.get_ids(), &CHAT_IDS);
    assert_eq!(tok.get_vocab_size(true), 49152);
    let digits = tok.encode("In 2024, 1.5x", false).unwrap();
    let pieces: Vec<&str> = digits.get_tokens().iter().map(String::as_str).collect();
    assert!(
        pieces.contains(&"2") && pieces.contains(&"4"),
        "digits must split: {pieces:?}"
    );
    let text = tok.decode(&CHAT_IDS, false).unwrap();
    assert_eq!(text, CHAT_PROMPT);

    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["add_bos_token"], false);
    assert!(tc["chat_template"].as_str().unwrap().contains("SmolLM"));
    let entries: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.iter().all(|n| !n.contains(".partial")),
        "{entries:?}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
