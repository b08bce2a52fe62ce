//! Mistral (`MistralForCausalLM`): the Llama decoder without biases, `head_dim` possibly
//! explicit. `sliding_window` only matters for sequences longer than the window (4096 in
//! Mistral-7B-v0.1, null in later releases); longer sequences are refused.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;

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
