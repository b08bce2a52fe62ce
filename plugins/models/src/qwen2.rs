//! Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): the Llama decoder with a bias on the q, k and v
//! projections (never on the output projection or the MLP). Sliding-window attention
//! (`use_sliding_window`, off in every released checkpoint) is not implemented.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;

use crate::decoder::{Decoder, Options};
use swift_plugin_tensors::sdk::Config;

pub struct Qwen2;

impl ModelFamily for Qwen2 {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let cfg = Config::model(config);
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
