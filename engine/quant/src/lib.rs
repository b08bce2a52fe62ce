//! # swift-quant: the host side of the quantizer contract
//!
//! The math of every quantizer is plugin code on the quantizer contract (swift-plugin-api's and
//! swift-plugin-tensors' `quantizer` modules; the built-ins are plugins/quantizers). This crate
//! is what the host does around it:
//!
//! * [`calib`]: hooks on the host's linear slots that gather the calibration statistics a
//!   scheme asks for (GPTQ's Hessian, AWQ's activation magnitudes and rows).
//! * [`linear`]: [`linear::PluginLinear`], a quantized slot whose forward is the plugin's packed
//!   slot (or, in a decoding step of a weight the plugin offers in the host's affine layout,
//!   swift-kernels' integer kernel); [`linear::SchemeLoader`] reads each slot's stored tensors
//!   and hands them to the scheme; [`save`] writes a quantized model folder.
//! * [`gguf`]: GGUF's Q8_0/Q6_K/Q5_0/Q4_0/Q4_1/Q4_K blocks as slots that decode on swift-kernels'
//!   integer kernels without expanding the weights ([`gguf::GgufLinear`], [`gguf::GgufLoader`]).
//!
//! A quantized slot whose float weight would be `STEM.weight` is stored as the tensors its
//! packed slot names, `STEM.<name>` (the layouts are the quantizers' own: plugins/quantizers
//! documents the built-ins'); config.json's `quantization_config` is the scheme's, with
//! `modules_not_converted` added.

mod blocks4;
pub mod calib;
mod decode;
pub mod gguf;
pub mod linear;

pub use linear::{save, PluginLinear, SchemeLoader};

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

/// `e` as a message (for `Result<_, String>` interfaces).
pub(crate) fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}
