//! Hugging Face to GGUF: [`convert_hf_to_gguf`] writes a model folder (`config.json`,
//! safetensors, `tokenizer.json`) as one GGUF file that llama.cpp loads, mirroring
//! llama.cpp's `convert_hf_to_gguf.py` and the reverse converter of this crate:
//!
//! * architectures `llama` (Llama, Mistral, SmolLM: `LlamaForCausalLM`, `MistralForCausalLM`)
//!   and `qwen2` (`Qwen2ForCausalLM`), with their `{arch}.*` hyper-parameters;
//! * llama.cpp tensor names; the Q/K rows of `llama` models permuted into llama.cpp's rotary
//!   layout ([`permute_rows_for_gguf`]); Llama-3 RoPE scaling as `rope_freqs.weight`;
//! * matrices stored as F32, F16, Q8_0, Q4_0, Q4_1, Q4_K or Q6_K (norms and biases stay F32, as
//!   llama.cpp keeps them; with the 4-bit types the output projection is Q8_0, Q6_K for Q4_K, as
//!   llama-quantize keeps it above 4 bits; a K-quant matrix whose rows are not whole
//!   super-blocks of 256 falls back as llama-quantize's does: Q4_K to Q5_0, Q6_K to Q8_0);
//! * `tokenizer.ggml.*` from `tokenizer.json` (byte-level BPE as `gpt2`, SentencePiece-style
//!   BPE with byte fallback as `llama`), special-token ids, and `tokenizer.chat_template`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::llama::permute_rows_for_gguf;
use crate::error::GgufError;
use crate::types::{GgmlType, MetadataValue, ValueType};
use crate::writer::GgufWriter;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;
const TOKEN_BYTE: i32 = 6;

/// What [`convert_hf_to_gguf`] is asked to do.
#[derive(Debug, Clone)]
pub struct HfToGgufOptions {
    /// The type of the matrices: one of [`EXPORT_TYPES`].
    pub ty: GgmlType,
    /// `general.name` (default: the folder's name).
    pub name: Option<String>,
    /// A chat template to store instead of the tokenizer's own.
    pub chat_template: Option<String>,
}

/// What [`convert_hf_to_gguf`] wrote.
#[derive(Debug, Clone)]
pub struct HfToGgufReport {
    pub path: PathBuf,
    pub architecture: String,
    pub tensor_count: usize,
    /// How many tensors were written as each ggml type.
    pub types: BTreeMap<String, usize>,
    /// Q/K tensors permuted into llama.cpp's rotary layout.
    pub permuted: usize,
    pub vocab_size: usize,
    pub tokenizer: String,
    pub chat_template: bool,
    pub warnings: Vec<String>,
}

impl fmt::Display for HfToGgufReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<String> = self
            .types
            .iter()
            .map(|(t, n)| format!("{n} x {t}"))
            .collect();
        writeln!(
            f,
            "wrote {} ({}): {} tensors ({}), {} Q/K tensors permuted for llama.cpp",
            self.path.display(),
            self.architecture,
            self.tensor_count,
            types.join(", "),
            self.permuted
        )?;
        write!(
            f,
            "  tokenizer: {} ({} tokens){}",
            self.tokenizer,
            self.vocab_size,
            if self.chat_template {
                ", with chat template"
            } else {
                ", no chat template"
            }
        )?;
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// The GGUF types [`convert_hf_to_gguf`] can store matrices as.
pub const EXPORT_TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// `general.file_type` (llama.cpp's `llama_ftype`) for a matrix type.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q4_K => 14,
        GgmlType::Q6_K => 18,
        _ => 1,
    }
}

/// Convert the Hugging Face model folder `dir` into the GGUF file `out` (written atomically).
pub fn convert_hf_to_gguf(
    dir: &Path,
    out: &Path,
    opts: &HfToGgufOptions,
) -> Result<HfToGgufReport, GgufError> {
    if !EXPORT_TYPES.contains(&opts.ty) {
        return Err(GgufError::Writer(format!(
            "GGUF export stores matrices as f32, f16, q8_0, q4_0, q4_1, q4_k or q6_k, not {}",
            opts.ty
        )));
    }
    let unsupported = |detail: String| GgufError::Unsupported {
        path: dir.to_path_buf(),
        detail,
    };
    let config = read_json(&dir.join("config.json"))?;
    let params = Params::read(&config).map_err(unsupported)?;
    let mut warnings = Vec::new();
    let st = SafeTensorsDir::open(dir)?;

    // The tensor plan: llama.cpp name, source name, shape, type, permutation.
    let mut plan: Vec<Planned> = Vec::new();
    let mut names: Vec<&str> = st.names().collect();
    names.sort_by_key(|n| sort_key(n));
    for name in names {
        let shape = st.shape(name)?;
        let Some((gguf_name, permute)) = params.gguf_name(name) else {
            if name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            if name == "lm_head.weight" && params.tied {
                continue;
            }
            return Err(unsupported(format!(
                "tensor '{name}' has no llama.cpp counterpart in the {} mapping",
                params.arch
            )));
        };
        let matrix = shape.len() == 2;
        let mut ty = if matrix { opts.ty } else { GgmlType::F32 };
        let is_output =
            gguf_name == "output.weight" || (params.tied && gguf_name == "token_embd.weight");
        if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) && is_output {
            ty = GgmlType::Q8_0;
        }
        if ty == GgmlType::Q4_K && is_output {
            ty = GgmlType::Q6_K;
        }
        // As llama.cpp's llama-quantize: rows that are not whole super-blocks of 256 take the
        // nearest legacy type (SmolLM2's 576-wide matrices).
        if ty.block_size() == crate::QK_K && shape.last().copied().unwrap_or(0) % crate::QK_K != 0 {
            ty = match ty {
                GgmlType::Q4_K => GgmlType::Q5_0,
                _ => GgmlType::Q8_0,
            };
        }
        if ty.is_quantized() && shape.last().copied().unwrap_or(0) % ty.block_size() != 0 {
            warnings.push(format!(
                "{gguf_name}: rows of {} values are not whole {ty} blocks; stored as F16",
                shape.last().copied().unwrap_or(0)
            ));
            ty = GgmlType::F16;
        }
        plan.push(Planned {
            gguf_name,
            source: Some(name.to_owned()),
            shape,
            ty,
            permute,
        });
    }
    if !params.tied && !plan.iter().any(|p| p.gguf_name == "output.weight") {
        return Err(unsupported(
            "config.json says tie_word_embeddings is false, but there is no lm_head.weight".into(),
        ));
    }
    for required in ["token_embd.weight", "output_norm.weight"] {
        if !plan.iter().any(|p| p.gguf_name == required) {
            return Err(unsupported(format!("no tensor maps to {required}")));
        }
    }
    let rope_freqs = params.llama3_rope_factors();
    if let Some(f) = &rope_freqs {
        plan.push(Planned {
            gguf_name: "rope_freqs.weight".into(),
            source: None,
            shape: vec![f.len()],
            ty: GgmlType::F32,
            permute: None,
        });
    }

    let tok = tokenizer_metadata(dir, &config, params.vocab_size, &mut warnings)?;
    let mut w = GgufWriter::new();
    let name = opts.name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    w.set_metadata("general.architecture", params.arch);
    w.set_metadata("general.type", "model");
    w.set_metadata("general.name", name);
    params.write_metadata(&mut w);
    w.set_metadata("general.file_type", file_type(opts.ty));
    w.set_metadata("general.quantization_version", 2u32);
    for (k, v) in tok.metadata {
        w.set_metadata(&k, v);
    }
    let chat_template = match &opts.chat_template {
        Some(t) => Some(t.clone()),
        None => read_chat_template(dir)?,
    };
    if let Some(t) = &chat_template {
        w.set_metadata("tokenizer.chat_template", t.as_str());
    } else {
        warnings
            .push("the model has no chat template (tokenizer_config.json chat_template)".into());
    }
    if params.rope_scaling_json.is_some() {
        // llama.cpp reads the factors from rope_freqs.weight; the hyper-parameters are kept so
        // that converting back to Hugging Face restores config.json's rope_scaling exactly.
        w.set_metadata(
            "swift.rope_scaling",
            params.rope_scaling_json.clone().unwrap_or_default(),
        );
    }

    let mut types = BTreeMap::new();
    for p in &plan {
        w.declare_tensor(&p.gguf_name, &p.shape, p.ty)?;
        *types.entry(p.ty.name().to_owned()).or_insert(0) += 1;
    }
    let by_name: HashMap<&str, &Planned> = plan.iter().map(|p| (p.gguf_name.as_str(), p)).collect();
    let mut permuted = 0;
    w.write_with(out, |gguf_name| {
        let p = by_name
            .get(gguf_name)
            .ok_or_else(|| GgufError::Writer(format!("no plan for tensor '{gguf_name}'")))?;
        let data = match &p.source {
            None => rope_freqs.clone().unwrap_or_default(),
            Some(src) => {
                let data = st.f32(src)?;
                match p.permute {
                    None => data,
                    Some(heads) => {
                        permuted += 1;
                        let rows = p.shape[0];
                        let cols = p.shape.get(1).copied().unwrap_or(1);
                        permute_rows_for_gguf(&data, rows, cols, heads).ok_or_else(|| {
                            GgufError::Shape {
                                tensor: src.clone(),
                                detail: format!(
                                    "{rows} rows cannot be split into {heads} heads of even size"
                                ),
                            }
                        })?
                    }
                }
            }
        };
        let row = p.shape.last().copied().unwrap_or(1);
        crate::quant::quantize(p.ty, &data, row, gguf_name)
    })?;

    Ok(HfToGgufReport {
        path: out.to_path_buf(),
        architecture: params.arch.to_owned(),
        tensor_count: plan.len(),
        types,
        permuted,
        vocab_size: tok.vocab_size,
        tokenizer: tok.summary,
        chat_template: chat_template.is_some(),
        warnings,
    })
}

struct Planned {
    gguf_name: String,
    /// The safetensors name; `None` for computed tensors (rope_freqs).
    source: Option<String>,
    shape: Vec<usize>,
    ty: GgmlType,
    permute: Option<usize>,
}

/// Tensors in llama.cpp's usual order: embedding, blocks by number, then the rest.
fn sort_key(name: &str) -> (usize, usize, String) {
    if name.contains("embed_tokens") {
        return (0, 0, name.to_owned());
    }
    let layer = name
        .split('.')
        .skip_while(|p| *p != "layers")
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok());
    match layer {
        Some(l) => (1, l, name.to_owned()),
        None => (2, 0, name.to_owned()),
    }
}

pub(super) fn read_json(path: &Path) -> Result<Value, GgufError> {
    let text = fs::read_to_string(path).map_err(|e| GgufError::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|source| GgufError::Json {
        file: path.display().to_string(),
        source,
    })
}

/// `tokenizer_config.json`'s `chat_template` (a string, or the `default` of a list of named
/// templates), else `chat_template.jinja`.
fn read_chat_template(dir: &Path) -> Result<Option<String>, GgufError> {
    let tc = dir.join("tokenizer_config.json");
    if tc.is_file() {
        let v = read_json(&tc)?;
        match &v["chat_template"] {
            Value::String(s) => return Ok(Some(s.clone())),
            Value::Array(list) => {
                let pick = list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .or_else(|| list.first());
                if let Some(s) = pick.and_then(|t| t["template"].as_str()) {
                    return Ok(Some(s.to_owned()));
                }
            }
            _ => {}
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| GgufError::io("reading", &jinja, e));
    }
    Ok(None)
}

/// Hyper-parameters from `config.json`.
pub(super) struct Params {
    pub(super) arch: &'static str,
    hidden: u64,
    intermediate: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    eps: f64,
    rope_theta: f64,
    context: u64,
    vocab_size: u64,
    tied: bool,
    rope_scaling: Value,
    rope_scaling_json: Option<String>,
}

/// The largest head dimension accepted from a config.json (real models use 64 to 576); the
/// llama3 rope factors hold head_dim / 2 values.
const MAX_HEAD_DIM: u64 = 1 << 16;

impl Params {
    pub(super) fn read(c: &Value) -> Result<Params, String> {
        let archs: Vec<&str> = c["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let model_type = c["model_type"].as_str().unwrap_or("");
        let arch = if archs
            .iter()
            .any(|a| matches!(*a, "LlamaForCausalLM" | "MistralForCausalLM"))
            || matches!(model_type, "llama" | "mistral")
        {
            "llama"
        } else if archs.contains(&"Qwen2ForCausalLM") || model_type == "qwen2" {
            "qwen2"
        } else {
            return Err(format!(
                "model family {archs:?} (model_type '{model_type}') cannot be exported to GGUF yet \
                 (supported: llama, mistral, qwen2)"
            ));
        };
        let u = |k: &str| -> Result<u64, String> {
            c[k].as_u64()
                .ok_or_else(|| format!("config.json has no positive integer '{k}'"))
        };
        let hidden = u("hidden_size")?;
        let heads = u("num_attention_heads")?;
        let kv_heads = c["num_key_value_heads"].as_u64().unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(format!(
                "num_attention_heads {heads} is not a positive multiple of num_key_value_heads {kv_heads}"
            ));
        }
        let head_dim = c["head_dim"].as_u64().unwrap_or(hidden / heads);
        if !(1..=MAX_HEAD_DIM).contains(&head_dim) {
            return Err(format!(
                "config.json gives a head dimension of {head_dim} (head_dim, or hidden_size / num_attention_heads); it must be between 1 and {MAX_HEAD_DIM}"
            ));
        }
        let tied = c["tie_word_embeddings"].as_bool().unwrap_or(false);
        let rope_scaling = c["rope_scaling"].clone();
        let kind = rope_scaling["rope_type"]
            .as_str()
            .or(rope_scaling["type"].as_str())
            .unwrap_or("none");
        let rope_scaling_json = match kind {
            "none" | "default" => None,
            "linear" | "yarn" | "llama3" => Some(rope_scaling.to_string()),
            other => {
                return Err(format!(
                    "rope_scaling type '{other}' cannot be exported to GGUF"
                ))
            }
        };
        if arch == "qwen2" && c["use_sliding_window"].as_bool() == Some(true) {
            return Err("Qwen2 sliding-window attention cannot be exported to GGUF".into());
        }
        let p = Params {
            arch,
            hidden,
            intermediate: u("intermediate_size")?,
            layers: u("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: c["rope_theta"].as_f64().unwrap_or(10000.0),
            context: c["max_position_embeddings"].as_u64().unwrap_or(2048),
            vocab_size: u("vocab_size")?,
            tied,
            rope_scaling,
            rope_scaling_json,
        };
        // GGUF stores these as 32-bit integers.
        for (k, v) in [
            ("hidden_size", p.hidden),
            ("intermediate_size", p.intermediate),
            ("num_hidden_layers", p.layers),
            ("num_attention_heads", p.heads),
            ("num_key_value_heads", p.kv_heads),
            ("max_position_embeddings", p.context),
            ("vocab_size", p.vocab_size),
        ] {
            if v > u64::from(u32::MAX) {
                return Err(format!(
                    "config.json's {k} is {v}; GGUF holds it in 32 bits (at most {})",
                    u32::MAX
                ));
            }
        }
        Ok(p)
    }

    fn write_metadata(&self, w: &mut GgufWriter) {
        let a = self.arch;
        let k = |s: &str| format!("{a}.{s}");
        w.set_metadata(&k("vocab_size"), self.vocab_size as u32);
        w.set_metadata(&k("context_length"), self.context as u32);
        w.set_metadata(&k("embedding_length"), self.hidden as u32);
        w.set_metadata(&k("block_count"), self.layers as u32);
        w.set_metadata(&k("feed_forward_length"), self.intermediate as u32);
        w.set_metadata(&k("rope.dimension_count"), self.head_dim as u32);
        w.set_metadata(&k("attention.head_count"), self.heads as u32);
        w.set_metadata(&k("attention.head_count_kv"), self.kv_heads as u32);
        w.set_metadata(&k("attention.layer_norm_rms_epsilon"), self.eps as f32);
        w.set_metadata(&k("rope.freq_base"), self.rope_theta as f32);
        if self.head_dim != self.hidden / self.heads {
            w.set_metadata(&k("attention.key_length"), self.head_dim as u32);
            w.set_metadata(&k("attention.value_length"), self.head_dim as u32);
        }
        let rs = &self.rope_scaling;
        if let Some(kind @ ("linear" | "yarn")) = rs["rope_type"].as_str().or(rs["type"].as_str()) {
            {
                w.set_metadata(&k("rope.scaling.type"), kind);
                w.set_metadata(
                    &k("rope.scaling.factor"),
                    rs["factor"].as_f64().unwrap_or(1.0) as f32,
                );
                if let Some(o) = rs["original_max_position_embeddings"].as_u64() {
                    w.set_metadata(&k("rope.scaling.original_context_length"), o as u32);
                }
            }
        }
    }

    /// Llama-3 RoPE frequency factors, as `convert_hf_to_gguf.py` computes them.
    fn llama3_rope_factors(&self) -> Option<Vec<f32>> {
        let rs = &self.rope_scaling;
        if rs["rope_type"].as_str() != Some("llama3") {
            return None;
        }
        let factor = rs["factor"].as_f64().unwrap_or(8.0);
        let low = rs["low_freq_factor"].as_f64().unwrap_or(1.0);
        let high = rs["high_freq_factor"].as_f64().unwrap_or(4.0);
        let old = rs["original_max_position_embeddings"]
            .as_f64()
            .unwrap_or(8192.0);
        let (low_wavelen, high_wavelen) = (old / low, old / high);
        let dim = self.head_dim as usize;
        Some(
            (0..dim / 2)
                .map(|i| {
                    // float32 as torch computes `base ** (arange(0, dim, 2) / dim)`.
                    let exp = (2 * i) as f32 / dim as f32;
                    let freq = 1.0 / (self.rope_theta as f32).powf(exp);
                    let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
                    if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor as f32
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                    }
                })
                .collect(),
        )
    }

    /// The llama.cpp name of a Hugging Face tensor and the head count to permute its rows with.
    pub(super) fn gguf_name(&self, name: &str) -> Option<(String, Option<usize>)> {
        let fixed = match name {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" if !self.tied => Some("output.weight"),
            _ => None,
        };
        if let Some(n) = fixed {
            return Some((n.to_owned(), None));
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: u64 = layer.parse().ok()?;
        if layer >= self.layers {
            return None;
        }
        let (module, suffix) = rest.rsplit_once('.')?;
        if suffix != "weight" && suffix != "bias" {
            return None;
        }
        let permute = self.arch == "llama";
        let (gg, heads) = match module {
            "input_layernorm" => ("attn_norm", None),
            "post_attention_layernorm" => ("ffn_norm", None),
            "self_attn.q_proj" => ("attn_q", permute.then_some(self.heads as usize)),
            "self_attn.k_proj" => ("attn_k", permute.then_some(self.kv_heads as usize)),
            "self_attn.v_proj" => ("attn_v", None),
            "self_attn.o_proj" => ("attn_output", None),
            "mlp.gate_proj" => ("ffn_gate", None),
            "mlp.up_proj" => ("ffn_up", None),
            "mlp.down_proj" => ("ffn_down", None),
            _ => return None,
        };
        Some((format!("blk.{layer}.{gg}.{suffix}"), heads))
    }
}

/// The safetensors files of a model folder, memory-mapped, read as `f32`.
pub(super) struct SafeTensorsDir {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    index: HashMap<String, StEntry>,
}

/// Where one tensor lies: file index, dtype, shape, byte range in the file.
type StEntry = (usize, Dtype, Vec<usize>, (usize, usize));

/// One tensor of a safetensors header: name, dtype, shape, byte range in the file.
type HeaderEntry = (String, Dtype, Vec<usize>, (usize, usize));

/// The tensors a safetensors file's header describes: name, dtype, shape and byte range in the
/// file. The `safetensors` crate reads the header (its size is capped, and every tensor's range
/// is checked against its shape, its neighbours and the file's length, without overflow).
pub(crate) fn safetensors_entries(bytes: &[u8]) -> Result<Vec<HeaderEntry>, String> {
    let (n, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("safetensors header: {e}"))?;
    let start = 8 + n;
    Ok(meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (a, b) = info.data_offsets;
            (name, info.dtype, info.shape.clone(), (start + a, start + b))
        })
        .collect())
}

impl SafeTensorsDir {
    fn open(dir: &Path) -> Result<Self, GgufError> {
        let mut files: Vec<PathBuf> = Vec::new();
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            let v = read_json(&index)?;
            let mut shards: Vec<&str> = v["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            files.extend(shards.iter().map(|s| dir.join(s)));
        } else if dir.join("model.safetensors").is_file() {
            files.push(dir.join("model.safetensors"));
        }
        if files.is_empty() {
            return Err(GgufError::Unsupported {
                path: dir.to_path_buf(),
                detail: "no model.safetensors (or model.safetensors.index.json) in the folder"
                    .into(),
            });
        }
        Self::open_files(&files)
    }

    /// One safetensors file (an adapter's `adapter_model.safetensors`).
    pub(super) fn open_file(path: &Path) -> Result<Self, GgufError> {
        Self::open_files(&[path.to_path_buf()])
    }

    fn open_files(files: &[PathBuf]) -> Result<Self, GgufError> {
        let mut maps = Vec::new();
        let mut idx = HashMap::new();
        for (fi, path) in files.iter().enumerate() {
            let file = fs::File::open(path).map_err(|e| GgufError::io("opening", path, e))?;
            // SAFETY: read-only mapping of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| GgufError::io("mapping", path, e))?;
            let entries = safetensors_entries(&map).map_err(|detail| GgufError::Malformed {
                path: path.clone(),
                detail,
            })?;
            for (name, dtype, shape, range) in entries {
                idx.insert(name, (fi, dtype, shape, range));
            }
            maps.push((path.clone(), map));
        }
        Ok(Self { maps, index: idx })
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub(super) fn shape(&self, name: &str) -> Result<Vec<usize>, GgufError> {
        Ok(self.entry(name)?.2.clone())
    }

    fn entry(&self, name: &str) -> Result<&StEntry, GgufError> {
        self.index.get(name).ok_or_else(|| GgufError::NoSuchTensor {
            path: self.maps.first().map(|m| m.0.clone()).unwrap_or_default(),
            name: name.to_owned(),
        })
    }

    pub(super) fn f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let (fi, dtype, shape, (a, b)) = self.entry(name)?;
        let bytes = &self.maps[*fi].1[*a..*b];
        let (size, conv): (usize, fn(&[u8]) -> f32) = match dtype {
            Dtype::F32 => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Dtype::F16 => (2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::BF16 => (2, |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            other => {
                return Err(GgufError::Unsupported {
                    path: self.maps[*fi].0.clone(),
                    detail: format!(
                        "tensor '{name}' has dtype {other} (F32, F16 or BF16 expected)"
                    ),
                })
            }
        };
        // The header was checked: the range holds exactly the shape's elements.
        debug_assert_eq!(bytes.len(), shape.iter().product::<usize>() * size);
        Ok(bytes.chunks_exact(size).map(conv).collect())
    }
}

/// The `tokenizer.ggml.*` metadata (and `tokenizer.chat_template`) that [`convert_hf_to_gguf`]
/// writes for the tokenizer files in `dir`, with warnings; `config` is the model's
/// `config.json` (special-token ids) and `vocab_size` the embedding's rows (the token list is
/// padded to it).
#[allow(clippy::type_complexity)]
pub fn tokenizer_gguf_metadata(
    dir: &Path,
    config: &Value,
    vocab_size: u64,
) -> Result<(Vec<(String, MetadataValue)>, Vec<String>), GgufError> {
    let mut warnings = Vec::new();
    let mut tok = tokenizer_metadata(dir, config, vocab_size, &mut warnings)?;
    if let Some(t) = read_chat_template(dir)? {
        tok.metadata
            .push(("tokenizer.chat_template".into(), MetadataValue::String(t)));
    }
    Ok((tok.metadata, warnings))
}

/// `tokenizer.ggml.*` metadata rebuilt from a folder's tokenizer files.
struct TokenizerMetadata {
    metadata: Vec<(String, MetadataValue)>,
    vocab_size: usize,
    summary: String,
}

fn string_array(v: Vec<String>) -> MetadataValue {
    MetadataValue::from(v)
}

fn i32_array(v: &[i32]) -> MetadataValue {
    MetadataValue::Array(
        ValueType::I32,
        v.iter().map(|&x| MetadataValue::I32(x)).collect(),
    )
}

fn f32_array(v: &[f32]) -> MetadataValue {
    MetadataValue::Array(
        ValueType::F32,
        v.iter().map(|&x| MetadataValue::F32(x)).collect(),
    )
}

/// A token's text from a `tokenizer_config.json` entry (a string or `{"content": ...}`).
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

fn tokenizer_metadata(
    dir: &Path,
    config: &Value,
    model_vocab: u64,
    warnings: &mut Vec<String>,
) -> Result<TokenizerMetadata, GgufError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(GgufError::Unsupported {
            path: dir.to_path_buf(),
            detail: "no tokenizer.json: GGUF export needs the fast tokenizer file".into(),
        });
    }
    let tj = read_json(&path)?;
    let bad = |detail: String| GgufError::Unsupported {
        path: path.clone(),
        detail,
    };
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(format!(
            "tokenizer model type {} cannot be exported to GGUF (BPE only)",
            model["type"]
        )));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut by_id: BTreeMap<usize, (String, i32)> = BTreeMap::new();
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("token {t:?} has no integer id")))?;
        by_id.insert(id as usize, (t.clone(), TOKEN_NORMAL));
    }
    let spm = model["byte_fallback"].as_bool().unwrap_or(false);
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.is_file() {
        read_json(&tc_path)?
    } else {
        Value::Null
    };
    let unk_text = model["unk_token"].as_str().map(String::from);
    for a in tj["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        let ty = if a["special"].as_bool().unwrap_or(false) {
            if spm && unk_text.as_deref() == Some(content) {
                TOKEN_UNKNOWN
            } else {
                TOKEN_CONTROL
            }
        } else {
            TOKEN_USER_DEFINED
        };
        by_id.insert(id as usize, (content.to_owned(), ty));
    }
    let n_tok = by_id.keys().next_back().map(|k| k + 1).unwrap_or(0);
    let n = n_tok.max(model_vocab as usize);
    if n_tok > model_vocab as usize {
        warnings.push(format!(
            "the tokenizer has {n_tok} tokens but the model's vocabulary is {model_vocab}"
        ));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut ids: HashMap<String, usize> = HashMap::new();
    for i in 0..n {
        let (t, mut ty) = by_id
            .remove(&i)
            .unwrap_or_else(|| (format!("[PAD{i}]"), TOKEN_UNUSED));
        if spm && ty == TOKEN_NORMAL {
            if is_byte_token(&t) {
                ty = TOKEN_BYTE;
            } else if unk_text.as_deref() == Some(t.as_str()) {
                ty = TOKEN_UNKNOWN;
            }
        }
        ids.entry(t.clone()).or_insert(i);
        tokens.push(t);
        types.push(ty);
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .collect();

    // Special tokens: tokenizer_config.json names them, config.json's ids fill the gaps.
    let special = |key: &str| -> Option<u32> {
        token_text(&tc[format!("{key}_token")])
            .and_then(|t| ids.get(t).map(|&i| i as u32))
            .or_else(|| {
                let v = &config[format!("{key}_token_id")];
                v.as_u64().or_else(|| v[0].as_u64()).map(|i| i as u32)
            })
    };
    let mut metadata: Vec<(String, MetadataValue)> = Vec::new();
    let mut put = |k: &str, v: MetadataValue| metadata.push((k.to_owned(), v));
    let add_bos = tc["add_bos_token"].as_bool();
    let summary;
    if spm {
        let add_space_prefix = json_has(&tj["normalizer"], "Prepend")
            || tj["pre_tokenizer"]["prepend_scheme"]
                .as_str()
                .is_some_and(|s| s != "never");
        // SentencePiece scores: a piece made by merge k scores -k, so the merge order survives;
        // pieces no merge makes (characters, bytes, specials) score below every merge.
        let mut score = vec![f32::NAN; n];
        for (k, m) in merges.iter().enumerate() {
            let merged: String = m.split(' ').collect();
            if let Some(&i) = ids.get(&merged) {
                if score[i].is_nan() {
                    score[i] = -(k as f32);
                }
            }
        }
        let floor = -(merges.len() as f32) - 1.0;
        for (i, s) in score.iter_mut().enumerate() {
            if s.is_nan() {
                *s = if tokens[i].chars().count() == 1 {
                    0.0
                } else {
                    floor - i as f32
                };
            }
        }
        put("tokenizer.ggml.model", "llama".into());
        put("tokenizer.ggml.pre", "default".into());
        put("tokenizer.ggml.tokens", string_array(tokens.clone()));
        put("tokenizer.ggml.scores", f32_array(&score));
        put("tokenizer.ggml.token_type", i32_array(&types));
        put("tokenizer.ggml.add_space_prefix", add_space_prefix.into());
        put(
            "tokenizer.ggml.add_bos_token",
            add_bos.unwrap_or(true).into(),
        );
        summary = format!(
            "llama (SentencePiece-style BPE), scores from {} merges",
            merges.len()
        );
    } else {
        let pre = detect_pre(&tj["pre_tokenizer"], warnings);
        put("tokenizer.ggml.model", "gpt2".into());
        put("tokenizer.ggml.pre", pre.into());
        put("tokenizer.ggml.tokens", string_array(tokens.clone()));
        put("tokenizer.ggml.token_type", i32_array(&types));
        put("tokenizer.ggml.merges", string_array(merges.clone()));
        put("tokenizer.ggml.add_space_prefix", false.into());
        put(
            "tokenizer.ggml.add_bos_token",
            add_bos.unwrap_or(false).into(),
        );
        summary = format!(
            "gpt2 byte-level BPE (pre-tokenizer {pre}), {} merges",
            merges.len()
        );
    }
    if let Some(e) = tc["add_eos_token"].as_bool() {
        put("tokenizer.ggml.add_eos_token", e.into());
    }
    for (key, gguf_key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = special(key).filter(|&i| (i as usize) < n) {
            put(gguf_key, MetadataValue::U32(id));
        }
    }
    Ok(TokenizerMetadata {
        metadata,
        vocab_size: n,
        summary,
    })
}

fn is_byte_token(t: &str) -> bool {
    t.len() == 6 && t.starts_with("<0x") && t.ends_with('>')
}

/// Whether a tokenizer.json component (or a Sequence of them) has a part of type `ty`.
fn json_has(v: &Value, ty: &str) -> bool {
    if v["type"].as_str() == Some(ty) {
        return true;
    }
    ["normalizers", "pretokenizers", "processors", "decoders"]
        .iter()
        .filter_map(|k| v[*k].as_array())
        .flatten()
        .any(|p| json_has(p, ty))
}

/// llama.cpp's `tokenizer.ggml.pre` for a byte-level pre-tokenizer: the inverse of what the
/// reverse converter builds for each name.
fn detect_pre(pre: &Value, warnings: &mut Vec<String>) -> &'static str {
    let regex = |v: &Value| -> Option<String> {
        let parts: Vec<&Value> = match v["pretokenizers"].as_array() {
            Some(a) => a.iter().collect(),
            None => vec![v],
        };
        parts
            .iter()
            .find(|p| p["type"] == "Split")
            .and_then(|p| p["pattern"]["Regex"].as_str().map(String::from))
    };
    let digits = json_has(pre, "Digits");
    match regex(pre) {
        Some(r) if r == super::tokenizer::LLAMA3_REGEX => "llama-bpe",
        Some(r) if r == super::tokenizer::QWEN2_REGEX => "qwen2",
        Some(_) => {
            warnings.push(
                "the pre-tokenizer's split pattern is not one llama.cpp names; written as \
                 'default' (GPT-2's), so llama.cpp may split some texts differently"
                    .into(),
            );
            "default"
        }
        None if digits => "smollm",
        None => "gpt-2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Property tests of the two files of a Hugging Face folder this converter parses itself:
    /// safetensors headers and config.json (cases: `PROPTEST_CASES`).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A valid two-tensor safetensors file.
        fn valid_safetensors() -> Vec<u8> {
            let header = json!({
                "__metadata__": {"format": "pt"},
                "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
            })
            .to_string();
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend((0..32u8).collect::<Vec<_>>());
            bytes
        }

        /// Any number in JSON, biased to the edges.
        fn number() -> impl Strategy<Value = Value> {
            prop_oneof![
                (0u64..5).prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                Just(json!(u64::MAX)),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                Just(json!(-1)),
                Just(json!("7")),
                Just(Value::Null),
            ]
        }

        proptest! {
            #[test]
            fn damaged_safetensors_headers_are_refused_or_describe_the_file(
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                word in proptest::option::of((any::<usize>(), any::<u64>())),
                cut in proptest::option::of(any::<usize>()),
            ) {
                let mut bytes = valid_safetensors();
                let len = bytes.len();
                for (p, b) in edits {
                    bytes[p % len] = b;
                }
                if let Some((p, w)) = word {
                    for (i, b) in w.to_le_bytes().into_iter().enumerate() {
                        if let Some(x) = bytes.get_mut(p % len + i) {
                            *x = b;
                        }
                    }
                }
                if let Some(c) = cut {
                    bytes.truncate(c % len);
                }
                if let Ok(entries) = safetensors_entries(&bytes) {
                    for (name, dtype, shape, (a, b)) in entries {
                        prop_assert!(a <= b && b <= bytes.len(), "{name}: {a}..{b} of {}", bytes.len());
                        let n: usize = shape.iter().product();
                        prop_assert_eq!(n * dtype.bitsize() / 8, b - a, "{}", name);
                    }
                }
            }

            #[test]
            fn any_config_json_is_refused_or_read_with_bounded_sizes(
                hidden in number(), heads in number(), kv in number(), head_dim in number(),
                layers in number(), vocab in number(), inter in number(), theta in number(),
                factor in number(), old in number(),
                rope in prop_oneof![Just("llama3"), Just("linear"), Just("yarn"), Just("none"), Just("dynamic")],
            ) {
                let c = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
                    "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
                    "num_hidden_layers": layers, "vocab_size": vocab, "intermediate_size": inter,
                    "rope_theta": theta, "rope_scaling": {"rope_type": rope, "factor": factor,
                    "original_max_position_embeddings": old}});
                if let Ok(p) = Params::read(&c) {
                    if let Some(f) = p.llama3_rope_factors() {
                        prop_assert!(f.len() as u64 <= MAX_HEAD_DIM / 2);
                    }
                    let mut w = GgufWriter::new();
                    p.write_metadata(&mut w);
                }
            }
        }

        #[test]
        fn a_header_length_past_the_file_is_refused() {
            // The hand-written reader this replaced added 8 to u64::MAX and sliced backwards.
            for n in [u64::MAX, u64::MAX - 7, 1 << 40, 1000] {
                let mut bytes = valid_safetensors();
                bytes[..8].copy_from_slice(&n.to_le_bytes());
                let e = safetensors_entries(&bytes).unwrap_err();
                assert!(e.contains("safetensors header"), "{e}");
            }
        }

        #[test]
        fn a_huge_head_dim_is_refused_with_the_range() {
            // It sized the llama3 rope factors: 2^40 of them would not fit in memory.
            let c = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 32,
                "num_attention_heads": 4, "head_dim": 1u64 << 40, "intermediate_size": 64,
                "num_hidden_layers": 1, "vocab_size": 10,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0}});
            let e = Params::read(&c).err().unwrap();
            assert!(e.contains("between 1 and 65536"), "{e}");
            let c = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 1u64 << 33,
                "num_attention_heads": 1u64 << 30, "intermediate_size": 64,
                "num_hidden_layers": 1, "vocab_size": 10});
            let e = Params::read(&c).err().unwrap();
            assert!(e.contains("hidden_size") && e.contains("32 bits"), "{e}");
        }
    }

    #[test]
    fn llama3_rope_factors_match_the_reference_formula() {
        // dim 8, theta 10000, original context 64: wavelengths 2π·10000^(i/4) for i = 0..4 are
        // 6.28, 62.8, 628, 6283. high_wavelen = 64/4 = 16, low_wavelen = 64/1 = 64, factor 8:
        // [1 (< 16), smooth, 8 (> 64), 8]; smooth = (64/62.83 - 1)/(4 - 1) = 0.00620,
        // 1/((1 - 0.00620)/8 + 0.00620) = 7.6674.
        let c = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 32,
            "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 1,
            "vocab_size": 10, "rope_theta": 10000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}});
        let p = Params::read(&c).unwrap();
        let f = p.llama3_rope_factors().unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 7.6674).abs() < 1e-3, "{f:?}");
        assert_eq!(&f[2..], &[8.0, 8.0]);
    }

    #[test]
    fn unknown_families_are_refused() {
        let c = json!({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"});
        let e = Params::read(&c).err().unwrap();
        assert!(
            e.contains("cannot be exported to GGUF") && e.contains("llama"),
            "{e}"
        );
    }

    #[test]
    fn names_and_permutations() {
        let c = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 32,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
            "num_hidden_layers": 2, "vocab_size": 10, "tie_word_embeddings": true});
        let p = Params::read(&c).unwrap();
        assert_eq!(
            p.gguf_name("model.layers.1.self_attn.k_proj.weight"),
            Some(("blk.1.attn_k.weight".into(), Some(2)))
        );
        assert_eq!(
            p.gguf_name("model.layers.0.mlp.down_proj.weight"),
            Some(("blk.0.ffn_down.weight".into(), None))
        );
        assert_eq!(
            p.gguf_name("lm_head.weight"),
            None,
            "tied: no output.weight"
        );
        assert_eq!(p.gguf_name("model.layers.2.mlp.up_proj.weight"), None);
    }
}
