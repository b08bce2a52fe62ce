//! The built-in model families, registered through the plugin contract like any third-party
//! family: each declares its parameters and layer structure and runs `forward` only through the
//! host's context (ARCHITECTURE.md §3.4), so tuners and quantizers reach every family without
//! family code.
//!
//! * [`llama`], [`qwen2`], [`qwen3`], [`mistral`]: one file per architecture over the shared
//!   Llama-style [`decoder`].
//! * [`llava`] (LLaVA-1.5: CLIP tower, MLP projector) and [`qwen2_vl`] (Qwen2-VL: ViT with 2-D
//!   rotary, patch merger, M-RoPE): vision-language families over the same decoder, their towers
//!   built from host slots too (`swift_plugin_api::vision`).
//!
//! Rotary embeddings, config reading and the error type are the plugin SDK's
//! (`swift_plugin_tensors::sdk`), as any third-party family's are.
//! * [`records`]: every family's record and the `pt` inference backend's (generation itself is
//!   the host's, in swift-model), as plain data that the `swift` binary lists without libtorch.

pub mod decoder;
pub mod llama;
pub mod llava;
pub mod mistral;
pub mod qwen2;
pub mod qwen2_vl;
pub mod qwen3;
pub mod records;

use swift_plugin_tensors::prelude::*;

/// The `pt` backend's behaviour: it serves every model whose family is registered. Its models
/// load in the host's tensor engine (swift-pipeline's model bundle, over the host's families),
/// which drives them through the same backend contract as a plugin's.
struct PtBackend;

impl Backend for PtBackend {
    fn check_model(&self, _config: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn load(&self, _request: &LoadRequest) -> Result<Box<dyn BackendModel>, String> {
        Err(
            "the pt backend's models load in the host's tensor engine, not through this object"
                .into(),
        )
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for record in records::families() {
        match record.name.as_str() {
            "llama" => r.model_family(record, llama::Llama)?,
            "qwen2" => r.model_family(record, qwen2::Qwen2)?,
            "qwen3" => r.model_family(record, qwen3::Qwen3)?,
            "mistral" => r.model_family(record, mistral::Mistral)?,
            "llava" => r.model_family(record, llava::Llava)?,
            "qwen2_vl" => r.model_family(record, qwen2_vl::Qwen2Vl)?,
            other => {
                return Err(format!("model family `{other}` has a record but no behaviour").into())
            }
        }
    }
    r.backend(records::pt_backend(), PtBackend)?;
    Ok(())
}

swift_plugin_tensors::builtin_plugin!(register);

#[cfg(test)]
mod tests {
    #[test]
    fn the_records_name_this_plugin() {
        // The host lists these records under this name without loading this crate.
        assert_eq!(super::records::PLUGIN, env!("CARGO_PKG_NAME"));
    }
}
