//! GGUF to Hugging Face conversion: [`convert_to_hf`] turns a GGUF model into a folder that
//! `transformers` (and swift-rs's own loader) can open: `config.json`, `model.safetensors`
//! (float32, dequantized), `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
//! Supported architectures: `llama`, `qwen2`. The other direction, [`convert_hf_to_gguf`], is in
//! [`from_hf`].

mod from_hf;
mod llama;
mod lora;
mod safetensors;
mod tokenizer;

pub use from_hf::{
    convert_hf_to_gguf, tokenizer_gguf_metadata, HfToGgufOptions, HfToGgufReport, EXPORT_TYPES,
};
pub use lora::{convert_peft_lora_to_gguf, LoraGgufReport};
pub use tokenizer::{build_tokenizer, HfTokenizer, SpecialTokenIds};

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::atomic::write_json_atomic;
use crate::error::GgufError;
use crate::reader::GgufFile;
use crate::types::GgmlType;

pub use llama::permute_rows_for_gguf;

/// What [`convert_to_hf`] did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// `general.architecture` of the source.
    pub architecture: String,
    /// `general.name` of the source, when present.
    pub model_name: Option<String>,
    /// The folder written.
    pub out_dir: PathBuf,
    /// Elements over all tensors written to `model.safetensors`.
    pub parameter_count: u64,
    /// Number of source tensors written to `model.safetensors`.
    pub tensor_count: usize,
    /// How many of them stayed packed ([`convert_to_hf_packed`]); the rest are float32.
    pub packed: usize,
    /// How many source tensors had each ggml type (e.g. `Q4_1 -> 210`).
    pub source_types: BTreeMap<String, usize>,
    /// Number of Q/K projection tensors whose llama.cpp row permutation was undone.
    pub unpermuted: usize,
    /// Whether the output embedding is tied to the input embedding (no `output.weight`).
    pub tied_embeddings: bool,
    /// One-line description of the tokenizer that was rebuilt.
    pub tokenizer: String,
    /// Vocabulary size of the tokenizer.
    pub vocab_size: usize,
    /// Whether a chat template was carried over.
    pub chat_template: bool,
    /// Files written, relative to `out_dir`.
    pub files: Vec<String>,
    /// Things that were approximated or skipped.
    pub warnings: Vec<String>,
}

impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<String> = self
            .source_types
            .iter()
            .map(|(t, n)| format!("{n} x {t}"))
            .collect();
        writeln!(
            f,
            "converted {} model{} to {}",
            self.architecture,
            self.model_name
                .as_deref()
                .map(|n| format!(" '{n}'"))
                .unwrap_or_default(),
            self.out_dir.display()
        )?;
        writeln!(
            f,
            "  {} tensors ({}), {} kept packed, the others dequantized to float32: {} parameters{}",
            self.tensor_count,
            types.join(", "),
            self.packed,
            self.parameter_count,
            if self.tied_embeddings {
                ", tied embeddings"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  undid llama.cpp's rotary row permutation on {} Q/K tensors",
            self.unpermuted
        )?;
        writeln!(
            f,
            "  tokenizer: {}{}",
            self.tokenizer,
            if self.chat_template {
                ", with chat template"
            } else {
                ", no chat template"
            }
        )?;
        write!(f, "  files: {}", self.files.join(", "))?;
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// Convert the GGUF model at `gguf` into a Hugging Face folder `out_dir` (created if needed;
/// files already there with the same names are replaced).
///
/// Every file is written under a temporary name and renamed into place, and `config.json` is
/// written last, so an interrupted conversion never leaves a folder that looks complete.
pub fn convert_to_hf(gguf: &Path, out_dir: &Path) -> Result<ConvertReport, GgufError> {
    convert(gguf, out_dir, false)
}

/// The version of [`convert_to_hf_packed`]'s output: which types stay packed and how. Raise it
/// whenever [`PACKED_TYPES`] or the packed tensors change, so folders converted before (cached
/// under a key that holds it) are converted again instead of read with fewer types packed.
pub const PACKED_LAYOUT_VERSION: u32 = 2;

/// The block types [`convert_to_hf_packed`] keeps packed (the ones swift-kernels multiplies).
pub const PACKED_TYPES: [GgmlType; 6] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// [`convert_to_hf`] for decoding on the integer kernels: every 2-D weight stored as one of
/// [`PACKED_TYPES`] stays packed, as `STEM.qweight` (`U8`, `[rows, bytes per row]`: the GGUF blocks of
/// each row, Q/K rows put back in Hugging Face order) and `STEM.ggml_type` (`I32`, `[1]`: the
/// ggml type id); other tensors are float32 as in [`convert_to_hf`]. `config.json` then carries
/// `"quantization_config": {"quant_method": "gguf"}`. The folder is about the GGUF file's size.
pub fn convert_to_hf_packed(gguf: &Path, out_dir: &Path) -> Result<ConvertReport, GgufError> {
    convert(gguf, out_dir, true)
}

fn convert(gguf: &Path, out_dir: &Path, packed: bool) -> Result<ConvertReport, GgufError> {
    let f = GgufFile::open(gguf)?;
    let arch = f.architecture()?.to_owned();
    if arch != "llama" && arch != "qwen2" {
        return Err(GgufError::Unsupported {
            path: gguf.to_path_buf(),
            detail: format!("architecture '{arch}' is not supported yet (supported: llama, qwen2)"),
        });
    }
    let mut warnings = Vec::new();
    let params = llama::LlamaParams::read(&f)?;
    let plan = params.plan(&f, &mut warnings)?;
    let tok = tokenizer::build_tokenizer(&f, Some(params.max_position_embeddings))?;
    warnings.extend(tok.warnings.iter().cloned());
    if tok.vocab_size as u64 != params.vocab_size {
        warnings.push(format!(
            "the tokenizer has {} tokens but the embedding has {} rows",
            tok.vocab_size, params.vocab_size
        ));
    }

    // Check every tensor type now, so an unsupported one fails before anything is written.
    let mut source_types = BTreeMap::new();
    for p in &plan {
        let info = f
            .tensor_info(&p.gguf_name)
            .ok_or_else(|| GgufError::NoSuchTensor {
                path: gguf.to_path_buf(),
                name: p.gguf_name.clone(),
            })?;
        match info.ggml_type {
            None => {
                return Err(GgufError::UnknownType {
                    tensor: info.name.clone(),
                    type_id: info.type_id,
                })
            }
            Some(t) if !crate::dequant::can_dequantize(t) => {
                return Err(GgufError::UnsupportedType {
                    tensor: info.name.clone(),
                    type_name: t.name(),
                    type_id: t.id(),
                    operation: "dequantization",
                })
            }
            Some(t) => *source_types.entry(t.name().to_owned()).or_insert(0) += 1,
        }
    }

    fs::create_dir_all(out_dir)
        .map_err(|e| GgufError::io("creating the output folder", out_dir, e))?;
    // A stale config.json from an earlier run would make a half-written folder look complete.
    let config_path = out_dir.join("config.json");
    if config_path.exists() {
        fs::remove_file(&config_path)
            .map_err(|e| GgufError::io("removing the old", &config_path, e))?;
    }

    // Which planned tensors stay packed, and the order they are written in: float32 tensors,
    // then the packed tensors' type ids, then their bytes (so every 4-byte tensor starts
    // aligned and loads in place).
    let keep_packed: Vec<bool> = plan
        .iter()
        .map(|p| {
            let info = f.tensor_info(&p.gguf_name);
            packed
                && p.hf_name.ends_with(".weight")
                && info.is_some_and(|t| {
                    t.shape().len() == 2 && t.ggml_type.is_some_and(|g| PACKED_TYPES.contains(&g))
                })
        })
        .collect();
    // (entry, dtype, index into `plan`, what to write)
    #[derive(Clone, Copy, PartialEq)]
    enum Part {
        Float,
        TypeId,
        Blocks,
    }
    let mut parts: Vec<(safetensors::Entry, &str, usize, Part)> = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let shape = f
            .tensor_info(&p.gguf_name)
            .map(|t| t.shape())
            .unwrap_or_default();
        if !keep_packed[i] {
            let e = safetensors::Entry {
                name: p.hf_name.clone(),
                shape,
            };
            parts.push((e, "F32", i, Part::Float));
        }
    }
    for part in [Part::TypeId, Part::Blocks] {
        for (i, p) in plan.iter().enumerate() {
            if !keep_packed[i] {
                continue;
            }
            let stem = p.hf_name.trim_end_matches(".weight");
            let info = f.tensor_info(&p.gguf_name);
            let (name, shape, dtype) = match part {
                Part::TypeId => (format!("{stem}.ggml_type"), vec![1], "I32"),
                _ => {
                    let shape = info.map(|t| t.shape()).unwrap_or_default();
                    let bytes = info.and_then(|t| t.n_bytes()).unwrap_or(0) as usize;
                    let rows = shape.first().copied().unwrap_or(1).max(1);
                    (format!("{stem}.qweight"), vec![rows, bytes / rows], "U8")
                }
            };
            parts.push((safetensors::Entry { name, shape }, dtype, i, part));
        }
    }
    let parameter_count: u64 = plan
        .iter()
        .filter_map(|p| f.tensor_info(&p.gguf_name))
        .map(|t| t.n_elements())
        .sum();
    let mut st_meta = BTreeMap::new();
    st_meta.insert("format".to_owned(), "pt".to_owned());
    st_meta.insert(
        "source".to_owned(),
        format!(
            "swift-gguf {} from {}",
            env!("CARGO_PKG_VERSION"),
            gguf.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    );
    let mut unpermuted = 0;
    let entries: Vec<(safetensors::Entry, &str)> =
        parts.iter().map(|(e, d, _, _)| (e.clone(), *d)).collect();
    safetensors::write_typed(
        &out_dir.join("model.safetensors"),
        &entries,
        &st_meta,
        |k| {
            let (_, _, i, part) = &parts[k];
            let p = &plan[*i];
            match part {
                Part::Float => {
                    let t = f.tensor_f32(&p.gguf_name)?;
                    let data = match p.transform {
                        llama::Transform::None => t.data,
                        llama::Transform::Unpermute(heads) => {
                            unpermuted += 1;
                            let rows = t.shape[0];
                            let cols = t.shape.get(1).copied().unwrap_or(1);
                            llama::unpermute_rows(
                                &t.data,
                                rows,
                                cols,
                                heads as usize,
                                &p.gguf_name,
                            )?
                        }
                    };
                    Ok(data.iter().flat_map(|v| v.to_le_bytes()).collect())
                }
                Part::TypeId => {
                    let id = f
                        .tensor_info(&p.gguf_name)
                        .and_then(|t| t.ggml_type)
                        .map_or(0, GgmlType::id);
                    Ok((id as i32).to_le_bytes().to_vec())
                }
                Part::Blocks => {
                    let bytes = f.tensor_data(&p.gguf_name)?;
                    match p.transform {
                        llama::Transform::None => Ok(bytes.to_vec()),
                        llama::Transform::Unpermute(heads) => {
                            unpermuted += 1;
                            let rows = f
                                .tensor_info(&p.gguf_name)
                                .and_then(|t| t.shape().first().copied())
                                .unwrap_or(1)
                                .max(1);
                            llama::unpermute_rows(
                                bytes,
                                rows,
                                bytes.len() / rows,
                                heads as usize,
                                &p.gguf_name,
                            )
                        }
                    }
                }
            }
        },
    )?;

    write_json_atomic(&out_dir.join("tokenizer.json"), &tok.tokenizer_json)?;
    write_json_atomic(
        &out_dir.join("tokenizer_config.json"),
        &tok.tokenizer_config,
    )?;

    let sp = &tok.special;
    let eos_ids: Value = match (sp.eos, sp.eot) {
        (Some(e), Some(t)) if e != t => json!([e, t]),
        (Some(e), _) => json!(e),
        (None, Some(t)) => json!(t),
        (None, None) => Value::Null,
    };
    let mut generation = json!({
        "bos_token_id": sp.bos,
        "eos_token_id": eos_ids,
        "pad_token_id": sp.pad,
    });
    if let Some(obj) = generation.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    write_json_atomic(&out_dir.join("generation_config.json"), &generation)?;

    let mut config = params.config_json(sp.bos, sp.eos, sp.pad);
    let packed_count = keep_packed.iter().filter(|&&k| k).count();
    if packed_count > 0 {
        config["quantization_config"] = json!({ "quant_method": "gguf" });
    }
    write_json_atomic(&config_path, &config)?;

    Ok(ConvertReport {
        architecture: arch,
        model_name: f.get_str("general.name").ok().flatten().map(str::to_owned),
        out_dir: out_dir.to_path_buf(),
        parameter_count,
        tensor_count: plan.len(),
        packed: packed_count,
        source_types,
        unpermuted,
        tied_embeddings: params.tied,
        tokenizer: tok.summary,
        vocab_size: tok.vocab_size,
        chat_template: f
            .get_str("tokenizer.chat_template")
            .ok()
            .flatten()
            .is_some(),
        files: [
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "config.json",
        ]
        .map(String::from)
        .to_vec(),
        warnings,
    })
}
