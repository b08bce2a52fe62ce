//! Qwen3 (`Qwen3ForCausalLM`): the Llama decoder with RMSNorm over each head of q and k
//! (`q_norm`, `k_norm`) before RoPE, an explicit `head_dim`, and `attention_bias` from
//! config.json (false in released checkpoints).

use serde_json::Value;
use swift_plugin_tensors::prelude::*;

use crate::decoder::{Decoder, Options};
use swift_plugin_tensors::sdk::Config;

pub struct Qwen3;

impl ModelFamily for Qwen3 {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let cfg = Config::model(config);
        if cfg.bool_or("use_sliding_window", false)? {
            return Err("qwen3: use_sliding_window is not supported".into());
        }
        let bias = cfg.bool_or("attention_bias", false)?;
        let opts = Options {
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: false,
            qk_norm: true,
        };
        Ok(Box::new(Decoder::from_config(config, opts)?))
    }
}
