//! Llama (Llama-2, Llama-3/3.1/3.2, SmolLM, and the many checkpoints that reuse
//! `LlamaForCausalLM`): the plain decoder, with `attention_bias` and `mlp_bias` read from
//! config.json (both default false) and any supported `rope_scaling` (Llama-3.1 uses `llama3`).

use serde_json::Value;
use swift_plugin_tensors::prelude::*;

use crate::decoder::{Decoder, Options};
use swift_plugin_tensors::sdk::Config;

pub struct Llama;

impl ModelFamily for Llama {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let cfg = Config::model(config);
        let bias = cfg.bool_or("attention_bias", false)?;
        let opts = Options {
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: cfg.bool_or("mlp_bias", false)?,
            qk_norm: false,
        };
        Ok(Box::new(Decoder::from_config(config, opts)?))
    }
}
