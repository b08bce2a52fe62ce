//! Mistral (`MistralForCausalLM`): the Llama decoder without biases, `head_dim` possibly
//! explicit. `sliding_window` only matters for sequences longer than the window (4096 in
//! Mistral-7B-v0.1, null in later releases); longer sequences are refused.

use serde_json::Value;
use swift_plugin_api::prelude::*;

use crate::decoder::{Decoder, Options};

pub struct Mistral;

impl ModelFamily for Mistral {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let opts = Options {
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
        };
        let window = config.get("sliding_window").and_then(Value::as_i64);
        Ok(Box::new(
            Decoder::from_config(config, opts)?.with_max_positions(window),
        ))
    }
}

pub fn record() -> ModelFamilyRecord {
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
