//! `swift export --from_gguf FILE --output_dir DIR` through the real binary: the SmolLM2 GGUF of
//! ASSETS.md becomes a Hugging Face folder with the figures of its metadata, and bad input is one
//! clear error that leaves no folder behind.

use crate::common::*;

#[test]
fn smollm_gguf_converts_to_a_hugging_face_folder() {
    let gguf = smollm2_gguf();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("smollm");
    let printed = ok(swift(&[
        "export",
        "--from_gguf",
        gguf.to_str().unwrap(),
        "--output_dir",
        dir.to_str().unwrap(),
    ]));
    assert_eq!(printed.trim(), dir.to_str().unwrap());
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    let config = read_json(&dir.join("config.json"));
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["intermediate_size"], 1536);
    assert_eq!(config["num_attention_heads"], 9);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["vocab_size"], 49152);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["rope_theta"].as_f64(), Some(100000.0));
    let tok_config = read_json(&dir.join("tokenizer_config.json"));
    let template = tok_config["chat_template"]
        .as_str()
        .expect("chat template carried over");
    assert!(
        template.contains("<|im_start|>") && template.contains("SmolLM"),
        "{template}"
    );
    // 134,515,008 parameters in float32, plus the safetensors header.
    let size = file_size(&dir.join("model.safetensors"));
    assert!(
        size > 134_515_008 * 4 && size < 134_515_008 * 4 + 1_000_000,
        "{size}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_one_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("model.gguf");
    std::fs::write(&bad, b"definitely not a gguf file, just some bytes").unwrap();
    let dir = work.path().join("out");
    let o = swift(&[
        "export",
        "--from_gguf",
        bad.to_str().unwrap(),
        "--output_dir",
        dir.to_str().unwrap(),
    ]);
    assert_fails(o, &["model.gguf"]);
    assert!(
        !dir.join("config.json").exists(),
        "no half-written folder that looks complete"
    );

    let o = swift(&[
        "export",
        "--from_gguf",
        work.path().join("missing.gguf").to_str().unwrap(),
    ]);
    assert_fails(o, &["missing.gguf"]);
}
