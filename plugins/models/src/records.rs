//! The records of the built-in model families and of the `pt` backend: plain data, no tensors.
//!
//! The behaviour they go with is in the family files (`llama.rs`, ...) and `lib.rs` pairs them by
//! name. The `swift` binary compiles this same file into its catalogue (host/src/catalogue.rs),
//! so that `swift list` shows these entries without loading libtorch: keep it free of anything
//! but `swift_plugin_api`'s records.

use swift_plugin_api::backend::{AdapterSupport, Capabilities, ModelFormat};
use swift_plugin_api::{BackendRecord, ModelFamilyRecord};

/// The plugin these records belong to (this crate's package name; a test checks it).
pub const PLUGIN: &str = "swift-plugin-models";

/// Every built-in family, in registration order.
pub fn families() -> Vec<ModelFamilyRecord> {
    vec![llama(), qwen2(), qwen3(), mistral(), llava(), qwen2_vl()]
}

pub fn llama() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "llama".into(),
        aliases: vec![
            "llama2".into(),
            "llama3".into(),
            "smollm".into(),
            "smollm2".into(),
        ],
        description:
            "Llama-2/3 and SmolLM (LlamaForCausalLM): GQA, RoPE with scaling, RMSNorm, SwiGLU"
                .into(),
        architectures: vec!["LlamaForCausalLM".into()],
        model_types: vec!["llama".into()],
        default_template: Some("llama3".into()),
        alias_of: None,
    }
}

pub fn qwen2() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "qwen2".into(),
        aliases: vec!["qwen2_5".into(), "qwen2.5".into()],
        description: "Qwen2/Qwen2.5 (Qwen2ForCausalLM): Llama decoder with q/k/v bias".into(),
        architectures: vec!["Qwen2ForCausalLM".into()],
        model_types: vec!["qwen2".into()],
        default_template: Some("qwen2_5".into()),
        alias_of: None,
    }
}

pub fn qwen3() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "qwen3".into(),
        aliases: vec![],
        description: "Qwen3 (Qwen3ForCausalLM): Llama decoder with q/k RMSNorm".into(),
        architectures: vec!["Qwen3ForCausalLM".into()],
        model_types: vec!["qwen3".into()],
        default_template: Some("qwen3".into()),
        alias_of: None,
    }
}

pub fn mistral() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "mistral".into(),
        aliases: vec![],
        description: "Mistral (MistralForCausalLM): Llama decoder, sliding window up to its length"
            .into(),
        architectures: vec!["MistralForCausalLM".into()],
        model_types: vec!["mistral".into()],
        default_template: Some("chatml".into()),
        alias_of: None,
    }
}

/// The built-in `pt` inference backend: the host's own generation engine (swift-model) over
/// libtorch. It serves every model whose family is registered.
pub fn pt_backend() -> BackendRecord {
    BackendRecord::new(
        "pt",
        "libtorch generation in the host: KV cache, batching, sampling, streaming",
    )
    .with_capabilities(Capabilities {
        formats: vec![ModelFormat::Folder, ModelFormat::Gguf],
        devices: vec!["cpu".into(), "cuda".into()],
        dtypes: true,
        adapters: AdapterSupport::PerRow,
        prompt_logprobs: true,
        images: true,
        ..Capabilities::default()
    })
}

pub fn llava() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "llava".into(),
        aliases: vec!["llava1_5_hf".into(), "llava1_5".into()],
        description: "LLaVA-1.5 (LlavaForConditionalGeneration): CLIP vision tower, MLP projector, Llama language model; images as <image>".into(),
        architectures: vec!["LlavaForConditionalGeneration".into()],
        model_types: vec!["llava".into()],
        default_template: Some("llava1_5_hf".into()),
        alias_of: None,
    }
}

pub fn qwen2_vl() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "qwen2_vl".into(),
        aliases: vec![],
        description: "Qwen2-VL (Qwen2VLForConditionalGeneration): dynamic-resolution ViT with 2-D rotary, patch merger, qwen2 with M-RoPE; images as <|image_pad|>".into(),
        architectures: vec!["Qwen2VLForConditionalGeneration".into()],
        model_types: vec!["qwen2_vl".into()],
        default_template: Some("qwen2_vl".into()),
        alias_of: None,
    }
}
