//! The tokenizer half of HF -> GGUF export, on llama.cpp's own vocabularies: each vocab-only
//! GGUF of llama.cpp's `models/` folder is rebuilt as a Hugging Face tokenizer (GGUF -> HF),
//! exported back to `tokenizer.ggml.*` metadata (HF -> GGUF), and
//!
//! * the tokens, token types, merges, pre-tokenizer name and special-token ids equal the
//!   original file's (SentencePiece-style vocabularies: all but the scores, which are rebuilt
//!   from the merge order);
//! * the exported vocabulary, rebuilt once more, tokenizes llama.cpp's reference texts
//!   (`.inp`) into llama.cpp's reference ids (`.out`).
//!
//! Uses the same folder as llama_cpp_vocabs.rs and fails saying how to install it when it is
//! missing.

use std::path::{Path, PathBuf};

use swift_gguf::convert::{build_tokenizer, tokenizer_gguf_metadata};
use swift_gguf::{GgufFile, GgufWriter, MetadataValue};

// The repository's one place that knows what `make setup` installs (std only).
#[allow(dead_code)]
#[path = "../../../tests/common/setup.rs"]
mod setup;

/// `$SWIFT_LLAMA_CPP_MODELS`, else `$SWIFT_RS_CACHE/assets/llama.cpp/models` (fetched by
/// `make setup`; the test fails saying so when it is missing).
fn models_dir() -> PathBuf {
    let dir = match std::env::var_os("SWIFT_LLAMA_CPP_MODELS") {
        Some(d) => PathBuf::from(d),
        None => setup::asset("llama.cpp/models"),
    };
    assert!(
        dir.join("ggml-vocab-gpt-2.gguf").is_file(),
        "{} has no ggml-vocab-*.gguf files",
        dir.display()
    );
    dir
}

/// GGUF vocab -> HF folder -> exported vocab-only GGUF; returns the exported file.
fn round_trip(src: &Path, work: &Path) -> PathBuf {
    let f = GgufFile::open(src).unwrap();
    let hf = build_tokenizer(&f, None).unwrap();
    std::fs::write(
        work.join("tokenizer.json"),
        serde_json::to_string(&hf.tokenizer_json).unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("tokenizer_config.json"),
        serde_json::to_string(&hf.tokenizer_config).unwrap(),
    )
    .unwrap();
    let (meta, warnings) =
        tokenizer_gguf_metadata(work, &serde_json::json!({}), hf.vocab_size as u64).unwrap();
    assert!(warnings.is_empty(), "{}: {warnings:?}", src.display());
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "llama");
    for (k, v) in meta {
        w.set_metadata(&k, v);
    }
    let out = work.join("exported.gguf");
    w.write(&out).unwrap();
    out
}

fn texts(src: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(src.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(src.with_extension("gguf.out")).unwrap();
    let mut cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if cases.last() == Some(&"") {
        cases.pop();
    }
    cases
        .into_iter()
        .zip(out.lines())
        .map(|(t, l)| {
            (
                t.to_owned(),
                l.split_whitespace().map(|x| x.parse().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn exported_vocabularies_equal_llama_cpp_s() {
    let dir = models_dir();
    for name in ["gpt-2", "starcoder", "llama-bpe", "qwen2", "llama-spm"] {
        let src = dir.join(format!("ggml-vocab-{name}.gguf"));
        let work = tempfile::tempdir().unwrap();
        let exported = round_trip(&src, work.path());
        let a = GgufFile::open(&src).unwrap();
        let b = GgufFile::open(&exported).unwrap();
        let spm = a.get_str("tokenizer.ggml.model").unwrap() == Some("llama");
        let mut keys = vec![
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
        ];
        if !spm {
            keys.extend(["tokenizer.ggml.merges", "tokenizer.ggml.pre"]);
        }
        for k in keys {
            let (va, vb): (Option<&MetadataValue>, Option<&MetadataValue>) =
                (a.metadata(k), b.metadata(k));
            // llama.cpp's starcoder vocab names its pre-tokenizer `starcoder`, which is the
            // same splitting as `smollm`/`refact`; the exporter names it by its structure.
            if k == "tokenizer.ggml.pre" && name == "starcoder" {
                assert_eq!(vb.and_then(|v| v.as_str()), Some("smollm"));
                continue;
            }
            assert_eq!(va, vb, "{name}: {k}");
        }
        // The exported vocabulary tokenizes like llama.cpp.
        let rebuilt = build_tokenizer(&b, None).unwrap();
        let tok: tokenizers::Tokenizer = serde_json::to_string(&rebuilt.tokenizer_json)
            .unwrap()
            .parse()
            .unwrap();
        let cases = texts(&src);
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(text, want)| {
                let got = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
                (&got != want).then(|| format!("{text:?}: got {got:?}, llama.cpp {want:?}"))
            })
            .collect();
        println!(
            "{name}: {}/{} cases match llama.cpp",
            cases.len() - failures.len(),
            cases.len()
        );
        assert!(failures.is_empty(), "{name}: {failures:#?}");
    }
}
