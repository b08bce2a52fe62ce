//! Checks rebuilt tokenizers against llama.cpp's own reference tokenizations: the vocab-only
//! GGUFs in llama.cpp's `models/` folder come with `.inp` (texts) and `.out` (token ids that
//! llama.cpp produces, without special tokens). The folder ships in the llama-cpp-python sdist:
//!
//! ```text
//! python3 -m pip download --no-deps --no-binary llama-cpp-python -d DIR llama-cpp-python==0.3.36
//! tar xzf DIR/llama_cpp_python-0.3.36.tar.gz llama_cpp_python-0.3.36/vendor/llama.cpp/models
//! SWIFT_LLAMA_CPP_MODELS=$PWD/llama_cpp_python-0.3.36/vendor/llama.cpp/models cargo test -p swift-gguf --test llama_cpp_vocabs
//! ```
//!
//! Without `SWIFT_LLAMA_CPP_MODELS` it uses `$SWIFT_RS_CACHE/assets/llama.cpp/models` (fetched by
//! `make setup`), and fails saying how to install it when neither exists.

use std::path::{Path, PathBuf};

use swift_gguf::convert::build_tokenizer;
use swift_gguf::GgufFile;

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

/// Tokenize every `.inp` case of `name` and count how many match `.out` exactly.
fn check(dir: &Path, name: &str) -> (usize, usize, Vec<String>) {
    let gguf = dir.join(format!("ggml-vocab-{name}.gguf"));
    let f = GgufFile::open(&gguf).unwrap();
    let built = build_tokenizer(&f, None).unwrap();
    assert!(built.warnings.is_empty(), "{name}: {:?}", built.warnings);
    let json = serde_json::to_string(&built.tokenizer_json).unwrap();
    let tok: tokenizers::Tokenizer = json.parse().unwrap();
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
    let mut cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if cases.last() == Some(&"") {
        cases.pop();
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        cases.len(),
        expected.len(),
        "{name}: .inp and .out disagree on the case count"
    );
    let mut failures = Vec::new();
    for (text, want) in cases.iter().zip(&expected) {
        let got = tok.encode(*text, false).unwrap().get_ids().to_vec();
        if &got != want {
            failures.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
        }
    }
    (cases.len() - failures.len(), cases.len(), failures)
}

#[test]
fn rebuilt_tokenizers_match_llama_cpp() {
    let dir = models_dir();
    // Vocabularies whose pre-tokenizer this converter knows.
    for name in [
        "gpt-2",
        "starcoder",
        "refact",
        "llama-bpe",
        "qwen2",
        "llama-spm",
        "phi-3",
    ] {
        let (ok, total, failures) = check(&dir, name);
        println!("{name}: {ok}/{total} cases match llama.cpp");
        for f in &failures {
            println!("  {f}");
        }
        assert!(
            failures.is_empty(),
            "{name}: {} of {total} cases differ",
            failures.len()
        );
    }
}
