//! The built-in model families, registered through the plugin contract like any third-party
//! family: each declares its parameters and layer structure and runs `forward` only through the
//! host's context (ARCHITECTURE.md §3.4), so tuners and quantizers reach every family without
//! family code.
//!
//! * [`llama`], [`qwen2`], [`qwen3`], [`mistral`]: one file per architecture over the shared
//!   Llama-style [`decoder`].
//! * [`rope`]: rotary embeddings with `rope_scaling` (linear, dynamic, llama3, yarn).
//! * the `pt` inference backend record (generation itself is the host's, in swift-model).

mod config;
pub mod decoder;
pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod qwen3;
pub mod rope;

use swift_plugin_api::prelude::*;

/// The built-in `pt` inference backend: the host's own generation engine (swift-model) over
/// libtorch. It serves every model whose family is registered.
struct PtBackend;

impl Backend for PtBackend {
    fn check_model(&self, _config: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.model_family(llama::record(), llama::Llama)?;
    r.model_family(qwen2::record(), qwen2::Qwen2)?;
    r.model_family(qwen3::record(), qwen3::Qwen3)?;
    r.model_family(mistral::record(), mistral::Mistral)?;
    r.backend(
        BackendRecord::new(
            "pt",
            "libtorch generation in the host: KV cache, batching, sampling, streaming",
        ),
        PtBackend,
    )?;
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);
