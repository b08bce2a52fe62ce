//! `swift-gguf`: pure-Rust support for GGUF, the llama.cpp model file format.
//!
//! * [`GgufFile`] reads GGUF v2/v3 files (memory-mapped): metadata of every value type, tensor
//!   infos, raw bytes, and tensors dequantized to `f32` with Hugging Face shape order.
//! * [`dequant`] decodes F32/F16/BF16/F64, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and the K-quants
//!   Q2_K..Q8_K; [`quant`] encodes F32/F16/BF16/Q8_0/Q4_0/Q4_1 (ggml's reference) and
//!   Q5_0/Q4_K/Q6_K ([`quant_k`]).
//! * [`GgufWriter`] writes GGUF v3 files with correct alignment.
//! * [`convert_to_hf`] turns a `llama` GGUF into a Hugging Face folder (config, float32
//!   safetensors with the Q/K permutation undone, tokenizer files, generation config);
//!   [`convert_to_hf_packed`] keeps Q8_0/Q6_K/Q5_0/Q4_0/Q4_1/Q4_K weights packed for the integer kernels;
//!   [`convert_hf_to_gguf`] goes the other way (F32/F16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K, llama and qwen2), and
//!   [`convert_peft_lora_to_gguf`] writes a PEFT LoRA adapter as a GGUF adapter file.
//!
//! No libtorch: this crate builds and tests on any machine.

mod atomic;
pub mod convert;
pub mod dequant;
mod error;
pub mod quant;
pub mod quant_k;
mod reader;
mod types;
mod writer;

pub use convert::{
    convert_hf_to_gguf, convert_peft_lora_to_gguf, convert_to_hf, convert_to_hf_packed,
    ConvertReport, HfToGgufOptions, HfToGgufReport, LoraGgufReport, PACKED_LAYOUT_VERSION,
};
pub use error::GgufError;
pub use reader::{F32Tensor, GgufFile, TensorInfo, DEFAULT_ALIGNMENT};
pub use types::{GgmlType, MetadataValue, ValueType, QK_K};
pub use writer::GgufWriter;
