//! Rebuilding a Hugging Face tokenizer from GGUF `tokenizer.ggml.*` metadata: `tokenizer.json`
//! (a `tokenizers` BPE model: byte-level for `gpt2`-type vocabularies, SentencePiece-style with
//! `▁` and byte fallback for `llama`-type ones), `tokenizer_config.json` and the special-token
//! ids that `config.json` and `generation_config.json` need.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::error::GgufError;
use crate::reader::GgufFile;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i64 = 1;
const TOKEN_UNKNOWN: i64 = 2;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Pre-tokenizer regex of Llama-3 (`tokenizer.ggml.pre = llama-bpe`), from its tokenizer.json.
pub(crate) const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Pre-tokenizer regex of Qwen2/2.5/3 (`tokenizer.ggml.pre = qwen2`), from its tokenizer.json.
pub(crate) const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special tokens of the vocabulary, as ids (from `tokenizer.ggml.*_token_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokenIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
}

/// A Hugging Face tokenizer rebuilt from GGUF metadata: the contents of `tokenizer.json` and
/// `tokenizer_config.json`, plus what the model config needs.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    pub tokenizer_json: Value,
    pub tokenizer_config: Value,
    pub special: SpecialTokenIds,
    /// Human-readable summary, e.g. `gpt2 byte-level BPE (pre smollm), 49152 tokens, 48900 merges`.
    pub summary: String,
    pub vocab_size: usize,
    pub warnings: Vec<String>,
}

/// Build the tokenizer files from `f`'s `tokenizer.*` metadata (works on vocab-only GGUFs too).
/// `model_max_length` goes into `tokenizer_config.json`.
pub fn build_tokenizer(
    f: &GgufFile,
    model_max_length: Option<u64>,
) -> Result<HfTokenizer, GgufError> {
    let unsupported = |detail: String| GgufError::Unsupported {
        path: f.path().to_path_buf(),
        detail,
    };
    let model = f.require_str("tokenizer.ggml.model")?;
    let tokens =
        f.get_str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| GgufError::MissingMetadata {
                path: f.path().to_path_buf(),
                key: "tokenizer.ggml.tokens".into(),
            })?;
    let n = tokens.len();
    let types = match f.get_i64_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() == n => t,
        Some(t) => {
            return Err(unsupported(format!(
                "tokenizer.ggml.token_type has {} entries but there are {n} tokens",
                t.len()
            )))
        }
        None => vec![TOKEN_NORMAL; n],
    };
    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match f.get_u64(key)? {
            Some(v) if (v as usize) < n => Ok(Some(v as u32)),
            Some(v) => Err(unsupported(format!(
                "{key} is {v}, but the vocabulary has only {n} tokens"
            ))),
            None => Ok(None),
        }
    };
    let special = SpecialTokenIds {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        eot: id("tokenizer.ggml.eot_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
    };
    let mut warnings = Vec::new();

    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        if vocab.contains_key(*t) {
            warnings.push(format!(
                "token {i} {t:?} duplicates an earlier token; the vocabulary keeps the first id"
            ));
            continue;
        }
        vocab.insert((*t).to_owned(), json!(i));
    }

    let spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(unsupported(format!(
                "tokenizer.ggml.model '{other}' is not supported (supported: gpt2, llama)"
            )))
        }
    };
    let add_bos = f.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm);
    let add_eos = f.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    // Added tokens: everything llama.cpp treats as a whole token rather than BPE output.
    let mut added = Vec::new();
    for (i, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if matches!(ty, TOKEN_UNKNOWN | TOKEN_CONTROL | TOKEN_USER_DEFINED) {
            if spm && ty == TOKEN_USER_DEFINED && t.starts_with("<0x") {
                continue;
            }
            added.push(json!({
                "id": i,
                "content": t,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                // Control and unknown tokens are special; user-defined ones are added tokens
                // that decode as text, as llama.cpp treats them.
                "special": ty != TOKEN_USER_DEFINED,
            }));
        }
    }

    let name = |i: Option<u32>| i.map(|i| tokens[i as usize].to_owned());
    let post_template = |byte_level: bool| -> Value {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Map::new();
        let mut add = |id: Option<u32>, seq: &mut Vec<Value>, type_id: u32| {
            if let Some(id) = id {
                let t = tokens[id as usize];
                seq.push(json!({"SpecialToken": {"id": t, "type_id": type_id}}));
                specials.insert(t.to_owned(), json!({"id": t, "ids": [id], "tokens": [t]}));
            }
        };
        let bos = if add_bos { special.bos } else { None };
        let eos = if add_eos { special.eos } else { None };
        add(bos, &mut single, 0);
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        add(eos, &mut single, 0);
        add(bos, &mut pair, 0);
        pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        add(eos, &mut pair, 0);
        add(bos, &mut pair, 1);
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        add(eos, &mut pair, 1);
        let template = json!({
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": specials,
        });
        let byte_level_pp = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
        match (
            byte_level,
            (add_bos && special.bos.is_some()) || (add_eos && special.eos.is_some()),
        ) {
            (true, true) => json!({"type": "Sequence", "processors": [byte_level_pp, template]}),
            (true, false) => byte_level_pp,
            (false, true) => template,
            (false, false) => Value::Null,
        }
    };

    let (model_json, normalizer, pre_tokenizer, decoder, post_processor, summary) = if spm {
        let scores = f.get_f64_array("tokenizer.ggml.scores")?.ok_or_else(|| {
            unsupported("a llama (SentencePiece) vocabulary needs tokenizer.ggml.scores".into())
        })?;
        if scores.len() != n {
            return Err(unsupported(format!(
                "tokenizer.ggml.scores has {} entries but there are {n} tokens",
                scores.len()
            )));
        }
        let merges = spm_merges(&tokens, &scores);
        let add_space_prefix = f
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let mut normalizers = Vec::new();
        if add_space_prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
        }
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        let summary = format!(
            "llama (SentencePiece-style BPE with byte fallback), {n} tokens, {} merges derived from scores",
            merges.len()
        );
        let model = json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": name(special.unk),
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        });
        (
            model,
            json!({"type": "Sequence", "normalizers": normalizers}),
            Value::Null,
            json!({"type": "Sequence", "decoders": decoders}),
            post_template(false),
            summary,
        )
    } else {
        let merges = f.get_str_array("tokenizer.ggml.merges")?.ok_or_else(|| {
            unsupported("a gpt2 (byte-level BPE) vocabulary needs tokenizer.ggml.merges".into())
        })?;
        let mut pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(unsupported(format!(
                    "merge {i} ({m:?}) in tokenizer.ggml.merges is not two tokens separated by a space"
                )));
            };
            pairs.push(json!([a, b]));
        }
        let pre = f.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" | "refact" => json!({
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)],
            }),
            "default" | "gpt2" | "gpt-2" => byte_level(true),
            "llama-bpe" | "llama3" => {
                json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
            }
            "qwen2" => {
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
            }
            other => {
                warnings.push(format!(
                    "pre-tokenizer '{other}' is not known to this converter; using the GPT-2 byte-level pre-tokenizer, so some texts may tokenize differently from llama.cpp"
                ));
                byte_level(true)
            }
        };
        // llama.cpp looks whole pre-tokenized words up in the vocabulary before merging for the
        // Llama-3 pre-tokenizer, as Llama-3's tokenizer.json does with `ignore_merges`.
        let ignore_merges = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
        let summary = format!(
            "gpt2 (byte-level BPE, pre-tokenizer {pre}), {n} tokens, {} merges",
            pairs.len()
        );
        let model = json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": pairs,
        });
        (
            model,
            Value::Null,
            pre_tokenizer,
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            post_template(true),
            summary,
        )
    };

    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model_json,
    });

    let mut decoder_map = Map::new();
    for a in &added {
        let mut entry = a.clone();
        if let (Some(obj), Some(id)) = (entry.as_object_mut(), a.get("id").and_then(Value::as_u64))
        {
            obj.remove("id");
            decoder_map.insert(id.to_string(), entry);
        }
    }
    let mut config = Map::new();
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    config.insert("added_tokens_decoder".into(), Value::Object(decoder_map));
    config.insert("bos_token".into(), json!(name(special.bos)));
    config.insert("eos_token".into(), json!(name(special.eos)));
    config.insert("pad_token".into(), json!(name(special.pad)));
    config.insert("unk_token".into(), json!(name(special.unk)));
    if let Some(t) = f.get_str("tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(t));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(m) = model_max_length {
        config.insert("model_max_length".into(), json!(m));
    }
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));

    Ok(HfTokenizer {
        tokenizer_json,
        tokenizer_config: Value::Object(config),
        special,
        summary,
        vocab_size: n,
        warnings,
    })
}

/// Merges for a SentencePiece BPE vocabulary, derived the way transformers'
/// `SentencePieceExtractor` does: every split of a piece into two pieces that are both in the
/// vocabulary is a merge, ranked by the merged piece's score (higher first), ties by the
/// lengths of the left and right parts (longer first), then by id order.
fn spm_merges(tokens: &[&str], scores: &[f64]) -> Vec<Value> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(t).or_insert(i);
    }
    struct M<'a> {
        l: &'a str,
        r: &'a str,
        score: f64,
        key: (usize, usize),
    }
    let mut merges: Vec<M> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if ids.get(t) != Some(&i) {
            continue; // a duplicate: transformers' dict keeps one entry
        }
        let mut local: Vec<M> = t
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = t.split_at(at);
                match (ids.get(l), ids.get(r)) {
                    (Some(&li), Some(&ri)) => Some(M {
                        l,
                        r,
                        score: scores[i],
                        key: (li, ri),
                    }),
                    _ => None,
                }
            })
            .collect();
        local.sort_by_key(|m| m.key);
        merges.extend(local);
    }
    merges.sort_by(|a, b| {
        let ka = (a.l.chars().count(), a.r.chars().count());
        let kb = (b.l.chars().count(), b.r.chars().count());
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(kb.cmp(&ka))
    });
    merges.into_iter().map(|m| json!([m.l, m.r])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spm_merges_follow_scores() {
        let tokens = ["<unk>", "a", "b", "c", "ab", "abc", "bc"];
        let scores = [0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let m = spm_merges(&tokens, &scores);
        assert_eq!(
            m,
            vec![
                json!(["a", "b"]),
                json!(["ab", "c"]),
                json!(["a", "bc"]),
                json!(["b", "c"])
            ]
        );
    }
}
