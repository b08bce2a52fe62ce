//! The `llama` architecture: reading its hyper-parameters from GGUF metadata into a Hugging Face
//! `LlamaForCausalLM` `config.json`, mapping llama.cpp tensor names to Hugging Face names, and
//! undoing llama.cpp's row permutation of the Q and K projections.

use serde_json::{json, Value};

use crate::error::GgufError;
use crate::reader::{GgufFile, TensorInfo};

/// Hyper-parameters of a llama model, read from `llama.*` metadata and the tensor shapes.
#[derive(Debug, Clone)]
pub(crate) struct LlamaParams {
    /// `llama` or `qwen2`.
    pub arch: String,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: u64,
    pub vocab_size: u64,
    pub tied: bool,
    pub attention_bias: bool,
    pub rope_scaling: Value,
}

/// How a GGUF tensor becomes a Hugging Face tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transform {
    /// Copy as is.
    None,
    /// Undo llama.cpp's rotary permutation of rows, with this many heads.
    Unpermute(u64),
}

/// A planned tensor: where it comes from, its Hugging Face name and how to transform it.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub gguf_name: String,
    pub hf_name: String,
    pub transform: Transform,
}

impl LlamaParams {
    pub fn read(f: &GgufFile) -> Result<LlamaParams, GgufError> {
        let path = f.path().to_path_buf();
        // `qwen2` is the llama layout with Q/K/V biases and no rotary row permutation.
        let arch = f.architecture()?.to_owned();
        let key = |k: &str| format!("{arch}.{k}");
        let bad = |detail: String| GgufError::Unsupported {
            path: path.clone(),
            detail,
        };
        if f.get_u64(&key("expert_count"))?.unwrap_or(0) > 0 {
            return Err(bad(
                "mixture-of-experts llama models (llama.expert_count > 0) are not supported".into(),
            ));
        }
        let hidden_size = f.require_u64(&key("embedding_length"))?;
        let num_layers = f.require_u64(&key("block_count"))?;
        let num_heads = f.require_u64(&key("attention.head_count"))?;
        let num_kv_heads = f
            .get_u64(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let intermediate_size = f.require_u64(&key("feed_forward_length"))?;
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(format!(
                "{arch}.attention.head_count = {num_heads} is not a positive multiple of head_count_kv = {num_kv_heads}"
            )));
        }
        let head_dim = match f.get_u64(&key("attention.key_length"))? {
            Some(k) => k,
            None => hidden_size / num_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!(
                "head dimension {head_dim} must be even and positive"
            )));
        }
        if let Some(v) = f.get_u64(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(bad(format!(
                    "key length {head_dim} differs from value length {v}; Hugging Face llama needs them equal"
                )));
            }
        }
        if let Some(r) = f.get_u64(&key("rope.dimension_count"))? {
            if r != head_dim {
                return Err(bad(format!(
                    "{arch}.rope.dimension_count = {r} differs from the head dimension {head_dim} (partial rotary embeddings are not supported)"
                )));
            }
        }
        let rms_norm_eps = f
            .get_f64(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let rope_theta = f.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let max_position_embeddings = f.get_u64(&key("context_length"))?.unwrap_or(2048);

        let embd = f
            .tensor_info("token_embd.weight")
            .ok_or_else(|| GgufError::NoSuchTensor {
                path: path.clone(),
                name: "token_embd.weight".into(),
            })?;
        let embd_shape = embd.shape();
        if embd_shape.len() != 2 || embd_shape[1] as u64 != hidden_size {
            return Err(bad(format!(
                "token_embd.weight has shape {embd_shape:?}, expected [vocab, {hidden_size}]"
            )));
        }
        let vocab_size = embd_shape[0] as u64;
        if let Some(v) = f.get_u64(&key("vocab_size"))? {
            if v != vocab_size {
                return Err(bad(format!(
                    "{arch}.vocab_size = {v} but token_embd.weight has {vocab_size} rows"
                )));
            }
        }

        let rope_scaling = match f.get_str(&key("rope.scaling.type"))? {
            None | Some("none") => Value::Null,
            Some(kind @ ("linear" | "yarn")) => {
                let factor = f.require_f64(&key("rope.scaling.factor"))?;
                let mut v = json!({"type": kind, "rope_type": kind, "factor": factor});
                if kind == "yarn" {
                    if let Some(orig) = f.get_u64(&key("rope.scaling.original_context_length"))? {
                        v["original_max_position_embeddings"] = json!(orig);
                    }
                }
                v
            }
            Some(other) => {
                return Err(bad(format!("rope scaling type '{other}' is not supported")))
            }
        };

        // swift's own GGUF export keeps the Hugging Face rope_scaling (Llama-3 style scaling is
        // otherwise only present as the rope_freqs.weight factors).
        let rope_scaling = match f.get_str("swift.rope_scaling")? {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| bad(format!("swift.rope_scaling is not JSON: {e}")))?,
            None => rope_scaling,
        };

        Ok(LlamaParams {
            arch,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings,
            vocab_size,
            tied: f.tensor_info("output.weight").is_none(),
            attention_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
            rope_scaling,
        })
    }

    /// The Hugging Face name and shape every tensor must have, or an error naming the tensor.
    pub fn plan(
        &self,
        f: &GgufFile,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Planned>, GgufError> {
        let mut out = Vec::new();
        for t in f.tensors() {
            let Some((hf_name, transform)) = self.hf_name(&t.name) else {
                if t.name == "rope_freqs.weight" {
                    if !self.rope_scaling.is_null() {
                        continue; // restored from swift.rope_scaling
                    }
                    warnings.push(
                        "rope_freqs.weight (llama-3 style RoPE frequency factors) was skipped: config.json has no rope_scaling for it, so long-context behaviour differs".into(),
                    );
                    continue;
                }
                return Err(GgufError::Unsupported {
                    path: f.path().to_path_buf(),
                    detail: format!(
                        "tensor '{}' has no Hugging Face counterpart in the llama mapping",
                        t.name
                    ),
                });
            };
            self.check_shape(f, t, &hf_name)?;
            out.push(Planned {
                gguf_name: t.name.clone(),
                hf_name,
                transform,
            });
        }
        for required in ["model.embed_tokens.weight", "model.norm.weight"] {
            if !out.iter().any(|p| p.hf_name == required) {
                return Err(GgufError::Unsupported {
                    path: f.path().to_path_buf(),
                    detail: format!("no tensor maps to {required}"),
                });
            }
        }
        Ok(out)
    }

    fn hf_name(&self, name: &str) -> Option<(String, Transform)> {
        let fixed = match name {
            "token_embd.weight" => Some("model.embed_tokens.weight"),
            "output_norm.weight" => Some("model.norm.weight"),
            "output.weight" => Some("lm_head.weight"),
            _ => None,
        };
        if let Some(n) = fixed {
            return Some((n.to_owned(), Transform::None));
        }
        let rest = name.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: u64 = layer.parse().ok()?;
        if layer >= self.num_layers {
            return None;
        }
        let (module, suffix) = rest.rsplit_once('.')?;
        if suffix != "weight" && suffix != "bias" {
            return None;
        }
        let (hf, transform) = match module {
            "attn_norm" => ("input_layernorm", Transform::None),
            "ffn_norm" => ("post_attention_layernorm", Transform::None),
            "attn_q" if self.arch == "qwen2" => ("self_attn.q_proj", Transform::None),
            "attn_k" if self.arch == "qwen2" => ("self_attn.k_proj", Transform::None),
            "attn_q" => ("self_attn.q_proj", Transform::Unpermute(self.num_heads)),
            "attn_k" => ("self_attn.k_proj", Transform::Unpermute(self.num_kv_heads)),
            "attn_v" => ("self_attn.v_proj", Transform::None),
            "attn_output" => ("self_attn.o_proj", Transform::None),
            "ffn_gate" => ("mlp.gate_proj", Transform::None),
            "ffn_up" => ("mlp.up_proj", Transform::None),
            "ffn_down" => ("mlp.down_proj", Transform::None),
            _ => return None,
        };
        Some((format!("model.layers.{layer}.{hf}.{suffix}"), transform))
    }

    fn check_shape(&self, f: &GgufFile, t: &TensorInfo, hf_name: &str) -> Result<(), GgufError> {
        let h = self.hidden_size as usize;
        let i = self.intermediate_size as usize;
        let q = (self.num_heads * self.head_dim) as usize;
        let kv = (self.num_kv_heads * self.head_dim) as usize;
        let v = self.vocab_size as usize;
        let expected: Vec<usize> = if hf_name.ends_with(".bias") {
            let rows = if hf_name.contains("q_proj") {
                q
            } else if hf_name.contains("k_proj") || hf_name.contains("v_proj") {
                kv
            } else if hf_name.contains("o_proj") {
                h
            } else {
                return Err(GgufError::Unsupported {
                    path: f.path().to_path_buf(),
                    detail: format!("bias tensor '{}' is not supported", t.name),
                });
            };
            vec![rows]
        } else if hf_name.ends_with("layernorm.weight") || hf_name == "model.norm.weight" {
            vec![h]
        } else if hf_name.contains("q_proj") {
            vec![q, h]
        } else if hf_name.contains("k_proj") || hf_name.contains("v_proj") {
            vec![kv, h]
        } else if hf_name.contains("o_proj") {
            vec![h, q]
        } else if hf_name.contains("gate_proj") || hf_name.contains("up_proj") {
            vec![i, h]
        } else if hf_name.contains("down_proj") {
            vec![h, i]
        } else {
            vec![v, h]
        };
        if t.shape() != expected {
            return Err(GgufError::Shape {
                tensor: t.name.clone(),
                detail: format!(
                    "has shape {:?} (Hugging Face order) but the metadata implies {expected:?} for {hf_name}",
                    t.shape()
                ),
            });
        }
        Ok(())
    }

    /// `config.json` for `LlamaForCausalLM`.
    pub fn config_json(&self, bos: Option<u32>, eos: Option<u32>, pad: Option<u32>) -> Value {
        if self.arch == "qwen2" {
            return json!({
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "num_key_value_heads": self.num_kv_heads,
                "hidden_act": "silu",
                "rms_norm_eps": self.rms_norm_eps,
                "rope_theta": self.rope_theta,
                "rope_scaling": self.rope_scaling,
                "max_position_embeddings": self.max_position_embeddings,
                "vocab_size": self.vocab_size,
                "tie_word_embeddings": self.tied,
                "use_sliding_window": false,
                "sliding_window": null,
                "attention_dropout": 0.0,
                "initializer_range": 0.02,
                "use_cache": true,
                "bos_token_id": bos,
                "eos_token_id": eos,
                "pad_token_id": pad,
                "torch_dtype": "float32",
            });
        }
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tied,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "pretraining_tp": 1,
            "initializer_range": 0.02,
            "use_cache": true,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "torch_dtype": "float32",
        })
    }
}

/// Undo llama.cpp's permutation of the rows of a Q or K projection (weight `[rows, cols]` or
/// bias `[rows]` with `cols = 1`). llama.cpp stored `w.reshape(h, 2, d/2, cols).swapaxes(1, 2)`
/// (with `d = rows / h`); viewing the stored rows as `[h, d/2, 2, cols]` and swapping axes 1
/// and 2 back gives the Hugging Face (rotate-half) layout.
pub(crate) fn unpermute_rows<T: Copy + Default>(
    data: &[T],
    rows: usize,
    cols: usize,
    n_head: usize,
    tensor: &str,
) -> Result<Vec<T>, GgufError> {
    if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 || data.len() != rows * cols {
        return Err(GgufError::Shape {
            tensor: tensor.to_owned(),
            detail: format!(
                "cannot undo the rotary permutation: {rows} rows x {cols} columns ({} values) with {n_head} heads",
                data.len()
            ),
        });
    }
    let d = rows / n_head;
    let half = d / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                let src = h * d + 2 * j + i;
                let dst = h * d + i * half + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// The permutation llama.cpp applies (Hugging Face layout to GGUF layout); used by tests and by
/// exporters that write llama GGUFs.
pub fn permute_rows_for_gguf(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Option<Vec<f32>> {
    if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 || data.len() != rows * cols {
        return None;
    }
    let d = rows / n_head;
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                let hf = h * d + i * half + j;
                let gg = h * d + 2 * j + i;
                out[gg * cols..(gg + 1) * cols].copy_from_slice(&data[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_matches_numpy_reference() {
        // One head of dimension 4, one column: HF rows [r0, r1, r2, r3] are stored by llama.cpp
        // as reshape(1, 2, 2).swapaxes(1, 2) = [r0, r2, r1, r3].
        let stored = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(
            unpermute_rows(&stored, 4, 1, 1, "q").unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        // Two heads of dimension 6, two columns.
        let hf: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let gg = permute_rows_for_gguf(&hf, 12, 2, 2).unwrap();
        // Head 0 rows stored as [0, 3, 1, 4, 2, 5]; each row has 2 columns.
        assert_eq!(
            &gg[0..12],
            &[0., 1., 6., 7., 2., 3., 8., 9., 4., 5., 10., 11.]
        );
        assert_eq!(unpermute_rows(&gg, 12, 2, 2, "k").unwrap(), hf);
        assert!(unpermute_rows(&gg, 12, 2, 5, "k").is_err());
    }
}
