//! Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): the Llama decoder with a bias on the q, k and v
//! projections (never on the output projection or the MLP). Sliding-window attention
//! (`use_sliding_window`, off in every released checkpoint) is not implemented.

use serde_json::Value;
use swift_plugin_api::prelude::*;

use crate::config::Cfg;
use crate::decoder::{Decoder, Options};

pub struct Qwen2;

impl ModelFamily for Qwen2 {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let cfg = Cfg::new(config.clone(), "config.json");
        if cfg.bool_or("use_sliding_window", false)? {
            return Err("qwen2: use_sliding_window is not supported".into());
        }
        let opts = Options {
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
        };
        Ok(Box::new(Decoder::from_config(config, opts)?))
    }
}

pub fn record() -> ModelFamilyRecord {
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
