//! # swift-quant: the quantization math behind the `quantizers` registry
//!
//! The quantizer plugins (plugins/quantizers) register the names `bnb`, `hqq`, `gptq`, `awq`
//! and `rtn` and say which bit widths each accepts; the host resolves `--quant_method` through
//! that registry and dispatches here by the resolved name ([`Method::from_name`]), as the LoRA
//! math lives host-side while the tuner registry selects it.
//!
//! * [`pack`]: two 4-bit codes per byte.
//! * [`bnb`]: bitsandbytes-style NF4 / FP4 with block-wise absmax (optionally double-quantized
//!   absmax), and 8-bit row-wise absmax (LLM.int8's weight format).
//! * [`affine`]: group-wise asymmetric integer quantization (`w ≈ q·scale + min` per group of
//!   `group_size` input columns), the format round-to-nearest, HQQ, GPTQ and AWQ share.
//! * [`hqq`]: half-quadratic optimisation of the zero point (no calibration data).
//! * [`gptq`]: Hessian-based post-training quantization (calibration data, act-order).
//! * [`awq`]: activation-aware per-input-channel scaling search (calibration data).
//! * [`calib`]: hooks on the host's linear slots that gather calibration statistics.
//! * [`gguf`]: GGUF's Q8_0/Q6_K/Q5_0/Q4_0/Q4_1/Q4_K blocks as slots that decode on swift-kernels' integer
//!   kernels without expanding the weights ([`gguf::GgufLinear`], [`gguf::GgufLoader`]).
//! * [`linear`]: [`linear::PackedLinear`], a quantized slot that dequantizes on the fly in its
//!   forward; [`linear::Loader`] reads it back; [`save`] writes a quantized model folder.
//!
//! ## Safetensors layout (`format: "swift-rs/packed-v1"` in `quantization_config`)
//!
//! A quantized linear slot whose float weight would be `STEM.weight` (shape `[out, in]`, the
//! slot's orientation) is stored instead as:
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `STEM.qweight` | U8 | `[out, ceil(in/2)]` (4-bit) or `[out, in]` (8-bit affine) | codes; 4-bit: column `2j` in the low nibble, `2j+1` in the high nibble |
//! | `STEM.qweight` | U8 | `[ceil(out·in/2)]` (bnb 4-bit) | NF4/FP4 codes of the row-major flattened weight, packed as above |
//! | `STEM.qweight` | I8 | `[out, in]` (bnb 8-bit) | `round(w · 127 / absmax_row)` |
//! | `STEM.absmax` | F32 | `[ceil(out·in/blocksize)]` | bnb 4-bit: absmax of each block |
//! | `STEM.absmax_q`, `STEM.absmax_scale`, `STEM.absmax_offset` | I8, F32, F32 | `[nblocks]`, `[ceil(nblocks/256)]`, `[1]` | bnb 4-bit double quantization: `absmax ≈ absmax_q · scale/127 + offset` per 256 blocks |
//! | `STEM.scb` | F32 | `[out]` | bnb 8-bit: row absmax |
//! | `STEM.scales`, `STEM.mins` | F16 | `[out, ceil(in/group)]` | affine: `w ≈ q · scale + min` |
//! | `STEM.input_scale` | F32 | `[in]` | AWQ: the input is divided by it, the weight was multiplied by it |
//!
//! Everything else (embeddings, norms, the output projection, biases) is stored as a plain
//! tensor. This is swift-rs's own layout; transformers' bnb/GPTQ/AWQ loaders do not read it.

pub mod affine;
pub mod awq;
pub mod bnb;
pub mod calib;
mod decode;
pub mod gguf;
pub mod gptq;
pub mod hqq;
pub mod linear;
pub mod pack;

use serde::{Deserialize, Serialize};

pub use linear::{save, Loader, PackedLinear};

/// Everything that can go wrong quantizing.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{0}")]
    Config(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Model(#[from] swift_model::ModelError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, QuantError>;

/// A quantization method (the registered quantizer names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Bnb,
    Hqq,
    Gptq,
    Awq,
    Rtn,
}

impl Method {
    /// The method a registered quantizer name dispatches to.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bnb" => Some(Self::Bnb),
            "hqq" => Some(Self::Hqq),
            "gptq" => Some(Self::Gptq),
            "awq" => Some(Self::Awq),
            "rtn" => Some(Self::Rtn),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bnb => "bnb",
            Self::Hqq => "hqq",
            Self::Gptq => "gptq",
            Self::Awq => "awq",
            Self::Rtn => "rtn",
        }
    }

    /// The bit widths the method supports.
    pub fn supported_bits(self) -> &'static [u8] {
        match self {
            Self::Awq => &[4],
            _ => &[4, 8],
        }
    }

    /// Whether the method needs calibration data.
    pub fn needs_calibration(self) -> bool {
        matches!(self, Self::Gptq | Self::Awq)
    }

    /// An error unless `bits` is supported.
    pub fn check_bits(self, bits: u8) -> std::result::Result<(), String> {
        if self.supported_bits().contains(&bits) {
            Ok(())
        } else {
            let list: Vec<String> = self
                .supported_bits()
                .iter()
                .map(|b| b.to_string())
                .collect();
            Err(format!(
                "{} does not support {bits}-bit quantization; --quant_bits must be {}",
                self.name(),
                list.join(" or ")
            ))
        }
    }
}

/// bnb's 4-bit code books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bnb4Type {
    Nf4,
    Fp4,
}

/// How to quantize: what `config.json`'s `quantization_config` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    pub quant_method: Method,
    pub bits: u8,
    /// Affine methods: input columns per scale/min pair (0: one group per row).
    #[serde(default)]
    pub group_size: i64,
    /// bnb 4-bit: code book.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnb_4bit_quant_type: Option<Bnb4Type>,
    /// bnb 4-bit: elements per absmax block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocksize: Option<i64>,
    /// bnb 4-bit: absmax values quantized again (8-bit, blocks of 256).
    #[serde(default)]
    pub bnb_4bit_use_double_quant: bool,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal.
    #[serde(default)]
    pub desc_act: bool,
    /// Slots left in float (the output projection by default).
    #[serde(default)]
    pub modules_not_converted: Vec<String>,
    /// The layout of the stored tensors (see the crate docs).
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    FORMAT.to_string()
}

/// The layout version written into `quantization_config.format`.
pub const FORMAT: &str = "swift-rs/packed-v1";

impl QuantConfig {
    /// Defaults for `method` at `bits`: group size 128, NF4 with double quantization for bnb
    /// 4-bit (blocks of 64), act-order for GPTQ.
    pub fn new(method: Method, bits: u8) -> Result<Self> {
        method.check_bits(bits).map_err(QuantError::Config)?;
        let bnb4 = method == Method::Bnb && bits == 4;
        Ok(Self {
            quant_method: method,
            bits,
            group_size: if method == Method::Bnb { 0 } else { 128 },
            bnb_4bit_quant_type: bnb4.then_some(Bnb4Type::Nf4),
            blocksize: bnb4.then_some(64),
            bnb_4bit_use_double_quant: bnb4,
            desc_act: method == Method::Gptq,
            modules_not_converted: Vec::new(),
            format: FORMAT.into(),
        })
    }

    /// Reads `config.json`'s `quantization_config` (None when the model is not quantized).
    pub fn from_model_config(config: &serde_json::Value) -> Result<Option<Self>> {
        let Some(q) = config.get("quantization_config") else {
            return Ok(None);
        };
        let method = q.get("quant_method").and_then(|m| m.as_str()).unwrap_or("");
        if Method::from_name(method).is_none() {
            return Err(QuantError::Config(format!(
                "config.json's quantization_config has quant_method `{method}`, which swift cannot load (it loads bnb, hqq, gptq, awq and rtn exports written by `swift export`)"
            )));
        }
        let format = q.get("format").and_then(|m| m.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(QuantError::Config(format!(
                "config.json's quantization_config has format `{format}`; swift loads only its own layout `{FORMAT}` (re-export the float model with `swift export --quant_method {method}`)"
            )));
        }
        let c: Self = serde_json::from_value(q.clone())
            .map_err(|e| QuantError::Config(format!("config.json's quantization_config: {e}")))?;
        c.quant_method
            .check_bits(c.bits)
            .map_err(QuantError::Config)?;
        Ok(Some(c))
    }
}

/// `e` as a message (for `Result<_, String>` interfaces).
pub(crate) fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests;
