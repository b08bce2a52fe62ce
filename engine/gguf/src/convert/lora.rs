//! PEFT LoRA to GGUF LoRA: [`convert_peft_lora_to_gguf`] writes an adapter folder
//! (`adapter_config.json`, `adapter_model.safetensors`) as the GGUF adapter file llama.cpp loads
//! with `--lora` (or `llama_adapter_lora_init`), as llama.cpp's `convert_lora_to_gguf.py` writes it:
//!
//! * metadata `general.architecture` (the base's), `general.type = adapter`, `adapter.type =
//!   lora`, `adapter.lora.alpha`; llama.cpp scales each pair by alpha / r, r read from the tensor;
//! * per target `<base tensor>.lora_a` (`[r, in]`) and `.lora_b` (`[out, r]`), named as the base
//!   model's GGUF tensors; `lora_b` of the Q/K projections of `llama` models has its rows permuted
//!   as the base weight's are, so that B·A lands in llama.cpp's rotary layout;
//! * F32 or F16.
//!
//! One difference from llama.cpp's script, which ignores `use_rslora`: rsLoRA's scale
//! alpha / √r is kept by writing alpha·√r as the file's alpha (llama.cpp divides it by r). What
//! llama.cpp cannot express is refused by name: DoRA (its magnitude vectors), per-module
//! `alpha_pattern`, `rank_pattern` with rsLoRA, `modules_to_save` (whole trained copies of base
//! modules), other PEFT types, and targets llama.cpp has no tensor for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::from_hf::{read_json, Params, SafeTensorsDir};
use super::llama::permute_rows_for_gguf;
use crate::error::GgufError;
use crate::types::GgmlType;
use crate::writer::GgufWriter;

/// What [`convert_peft_lora_to_gguf`] wrote.
#[derive(Debug, Clone)]
pub struct LoraGgufReport {
    pub path: PathBuf,
    pub architecture: String,
    /// Target modules (pairs of tensors) written.
    pub pairs: usize,
    /// `adapter.lora.alpha` as written (alpha·√r for rsLoRA).
    pub alpha: f32,
    /// `lora_b` tensors whose rows were permuted for llama.cpp's rotary layout.
    pub permuted: usize,
}

/// Writes the PEFT LoRA adapter in `adapter_dir` for the base model whose `config.json` is
/// `base_config` as the GGUF adapter file `out` (atomically), its matrices as `ty` (F32 or F16).
pub fn convert_peft_lora_to_gguf(
    adapter_dir: &Path,
    base_config: &Value,
    out: &Path,
    ty: GgmlType,
) -> Result<LoraGgufReport, GgufError> {
    let cfg_path = adapter_dir.join("adapter_config.json");
    let refuse = |detail: String| GgufError::Unsupported {
        path: cfg_path.clone(),
        detail,
    };
    if !matches!(ty, GgmlType::F32 | GgmlType::F16) {
        return Err(GgufError::Writer(format!(
            "a GGUF LoRA adapter is written as f32 or f16, not {ty}"
        )));
    }
    let cfg = read_json(&cfg_path)?;
    let peft_type = cfg["peft_type"].as_str().unwrap_or("");
    if peft_type != "LORA" {
        return Err(refuse(format!(
            "peft_type is {peft_type:?}: llama.cpp applies LoRA adapters only (peft_type \"LORA\"); merge other adapters into the model instead (swift export --merge_lora true)"
        )));
    }
    if cfg["use_dora"].as_bool().unwrap_or(false) {
        return Err(refuse(
            "use_dora is true: llama.cpp has no DoRA magnitude vectors; merge the adapter instead (swift export --merge_lora true)".into(),
        ));
    }
    let non_empty = |k: &str| match &cfg[k] {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Null => false,
        _ => true,
    };
    if non_empty("alpha_pattern") {
        return Err(refuse(
            "alpha_pattern gives modules their own alpha: a GGUF adapter holds one alpha; merge the adapter instead".into(),
        ));
    }
    if non_empty("modules_to_save") {
        return Err(refuse(format!(
            "modules_to_save {} are whole trained copies of base modules, which a GGUF LoRA adapter cannot hold; merge the adapter instead",
            cfg["modules_to_save"]
        )));
    }
    let rslora = cfg["use_rslora"].as_bool().unwrap_or(false);
    if rslora && non_empty("rank_pattern") {
        return Err(refuse(
            "use_rslora with a rank_pattern needs a different alpha per module: a GGUF adapter holds one; merge the adapter instead".into(),
        ));
    }
    let r = cfg["r"]
        .as_f64()
        .filter(|r| *r > 0.0)
        .ok_or_else(|| refuse("r is missing or not a positive number".into()))?;
    let alpha = cfg["lora_alpha"]
        .as_f64()
        .ok_or_else(|| refuse("lora_alpha is missing or not a number".into()))?;
    // llama.cpp scales by alpha / r; rsLoRA's scale is alpha / √r = (alpha·√r) / r.
    let alpha = if rslora { alpha * r.sqrt() } else { alpha } as f32;

    let params = Params::read(base_config).map_err(|detail| GgufError::Unsupported {
        path: PathBuf::from("config.json"),
        detail,
    })?;
    let weights = adapter_dir.join("adapter_model.safetensors");
    let st = SafeTensorsDir::open_file(&weights)?;

    // Pair each module's lora_A and lora_B: base tensor name -> (A, B) safetensors names.
    let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for name in st.names() {
        let (module, which) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else {
            return Err(GgufError::Unsupported {
                path: weights.clone(),
                detail: format!(
                    "tensor '{name}' is not a lora_A or lora_B weight: a GGUF LoRA adapter holds only those (merge the adapter instead)"
                ),
            });
        };
        let base = module.strip_prefix("base_model.model.").unwrap_or(module);
        let entry = pairs.entry(format!("{base}.weight")).or_default();
        if which == 0 {
            entry.0 = Some(name.to_owned());
        } else {
            entry.1 = Some(name.to_owned());
        }
    }
    if pairs.is_empty() {
        return Err(GgufError::Unsupported {
            path: weights,
            detail: "no lora_A / lora_B tensors".into(),
        });
    }

    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", params.arch);
    w.set_metadata("general.type", "adapter");
    w.set_metadata("adapter.type", "lora");
    let name = adapter_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapter".into());
    w.set_metadata("general.name", name);
    w.set_metadata("adapter.lora.alpha", alpha);
    w.set_metadata("general.quantization_version", 2u32);
    let mut permuted = 0;
    let mut written = 0;
    // In the base's tensor order (blocks by number), A then B.
    let mut ordered: Vec<(String, Option<usize>, String, String)> = Vec::new();
    for (base, (a, b)) in &pairs {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(GgufError::Unsupported {
                path: weights.clone(),
                detail: format!("module {base} has only one of lora_A / lora_B"),
            });
        };
        let Some((gguf, heads)) = params.gguf_name(base) else {
            return Err(GgufError::Unsupported {
                path: weights.clone(),
                detail: format!(
                    "the adapter targets {base}, which has no llama.cpp tensor in the {} mapping (llama.cpp's adapters reach its linear layers only)",
                    params.arch
                ),
            });
        };
        ordered.push((gguf, heads, a.clone(), b.clone()));
    }
    ordered.sort_by_key(|(g, ..)| block_order(g));
    for (gguf, heads, a, b) in ordered {
        let (sa, sb) = (st.shape(&a)?, st.shape(&b)?);
        if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] {
            return Err(GgufError::Shape {
                tensor: a.clone(),
                detail: format!(
                    "lora_A {sa:?} and lora_B {sb:?} do not pair as [r, in] and [out, r]"
                ),
            });
        }
        let da = st.f32(&a)?;
        let mut db = st.f32(&b)?;
        if let Some(h) = heads {
            db = permute_rows_for_gguf(&db, sb[0], sb[1], h).ok_or_else(|| GgufError::Shape {
                tensor: b.clone(),
                detail: format!("{} rows cannot be split into {h} heads of even size", sb[0]),
            })?;
            permuted += 1;
        }
        w.add_tensor_f32(&format!("{gguf}.lora_a"), &sa, &da, ty)?;
        w.add_tensor_f32(&format!("{gguf}.lora_b"), &sb, &db, ty)?;
        written += 1;
    }
    w.write(out)?;
    Ok(LoraGgufReport {
        path: out.to_path_buf(),
        architecture: params.arch.to_owned(),
        pairs: written,
        alpha,
        permuted,
    })
}

/// `blk.N.*` by block number, then by name.
fn block_order(gguf: &str) -> (usize, String) {
    let n = gguf
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (n, gguf.to_owned())
}
