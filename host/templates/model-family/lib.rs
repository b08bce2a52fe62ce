//! __NAME__: a swift-rs model family (a plugin with its own forward pass).
//!
//! This skeleton is a complete Llama-architecture decoder written against the plugin SDK, so it
//! builds, loads and matches transformers as generated (`python tests/compare.py`, see the
//! README). Make it your architecture by changing, in order:
//!
//! 1. [`record`]: the `architectures` / `model_types` of config.json that select this family
//!    (until then, pick it with `--model_type __NAME__`);
//! 2. [`Family::instantiate`]: which config.json keys you read (the SDK's `Config`, or a serde
//!    struct through `Config::typed`);
//! 3. [`Decoder::layout`]: every weight, named as in the checkpoint's safetensors, as a slot
//!    (linear, embedding, norm) the host loads, quantizes and attaches adapters to;
//! 4. [`Decoder::run_block`]: one block's arithmetic, only through the host's context (`ctx.linear`,
//!    `ctx.norm`, `ctx.attention`, ...) and the SDK (`Rope`, `Activation`, `rms_norm`, ...).
//!
//! `forward` is embed → every block → final norm → output slot; the host runs the blocks one by
//! one for gradient checkpointing through the same entry points. `register` runs once when swift
//! loads the library; panics are caught and reported as errors naming this plugin.

use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{Activation, Config, Error, Rope};
use swift_plugin_tensors::tch::Tensor;

/// The family's record: its name, and the config.json values that select it.
pub fn record() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "__NAME__".into(),
        aliases: vec![],
        description: "__NAME__ (Llama-architecture skeleton from swift new-plugin)".into(),
        // e.g. vec!["MyModelForCausalLM".into()] and vec!["my_model".into()]
        architectures: vec![],
        model_types: vec![],
        default_template: Some("chatml".into()),
        alias_of: None,
    }
}

/// What swift instantiates for each model folder of this family.
pub struct Family;

impl ModelFamily for Family {
    fn instantiate(&self, config: &serde_json::Value) -> Result<Box<dyn Model>, String> {
        Ok(Box::new(Decoder::from_config(&Config::model(config))?))
    }
}

/// One configuration of the decoder, read from config.json.
pub struct Decoder {
    hidden: i64,
    intermediate: i64,
    layers: usize,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    eps: f64,
    vocab: i64,
    tie: bool,
    act: Activation,
    rope: Rope,
}

impl Decoder {
    pub fn from_config(cfg: &Config) -> Result<Self, Error> {
        let hidden = cfg.i64("hidden_size")?;
        let heads = cfg.count("num_attention_heads", 65_536)?;
        let kv_heads = cfg.i64_or("num_key_value_heads", heads)?;
        if heads % kv_heads != 0 {
            return Err(Error(format!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        let head_dim = cfg.i64_or("head_dim", hidden / heads)?;
        Ok(Self {
            hidden,
            intermediate: cfg.i64("intermediate_size")?,
            layers: cfg.count("num_hidden_layers", 65_536)? as usize,
            heads,
            kv_heads,
            head_dim,
            eps: cfg.f64_or("rms_norm_eps", 1e-6)?,
            vocab: cfg.i64("vocab_size")?,
            tie: cfg.bool_or("tie_word_embeddings", false)?,
            act: Activation::from_name(&cfg.str_opt("hidden_act")?.unwrap_or("silu".into()))?,
            // rope_theta, rope_scaling and partial_rotary_factor; `.with_style(
            // RopeStyle::Interleaved)` for GPT-J-style pairs.
            rope: Rope::from_config(cfg, head_dim)?,
        })
    }

    /// Block `i`: attention and MLP with their residuals.
    fn run_block(
        &self,
        ctx: &mut dyn ModelContext,
        i: usize,
        h: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, Error> {
        let (b, t, _) = h.size3()?;
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let p = format!("model.layers.{i}");
        let (cos, sin) = self.rope.cos_sin(positions, h.kind())?;
        let x = ctx.norm(&format!("{p}.input_layernorm"), h, NormKind::RmsNorm, self.eps)?;
        let q = ctx.linear(&format!("{p}.self_attn.q_proj"), &x)?;
        let k = ctx.linear(&format!("{p}.self_attn.k_proj"), &x)?;
        let v = ctx.linear(&format!("{p}.self_attn.v_proj"), &x)?;
        // [batch, heads, seq, head_dim]
        let q = q.f_view([b, t, heads, hd])?.f_transpose(1, 2)?;
        let k = k.f_view([b, t, kv, hd])?.f_transpose(1, 2)?;
        let v = v.f_view([b, t, kv, hd])?.f_transpose(1, 2)?;
        let q = self.rope.apply(&q, &cos, &sin)?;
        let k = self.rope.apply(&k, &cos, &sin)?;
        // The host's causal attention, with its KV cache during generation.
        let a = ctx.attention(i, &q, &k, &v, None)?;
        let a = a.f_transpose(1, 2)?.f_reshape([b, t, heads * hd])?;
        let h = h.f_add(&ctx.linear(&format!("{p}.self_attn.o_proj"), &a)?)?;
        let x = ctx.norm(
            &format!("{p}.post_attention_layernorm"),
            &h,
            NormKind::RmsNorm,
            self.eps,
        )?;
        let gate = self.act.apply(&ctx.linear(&format!("{p}.mlp.gate_proj"), &x)?)?;
        let up = ctx.linear(&format!("{p}.mlp.up_proj"), &x)?;
        Ok(h.f_add(&ctx.linear(&format!("{p}.mlp.down_proj"), &(gate * up))?)?)
    }
}

impl Model for Decoder {
    fn layout(&self) -> ModelLayout {
        let (hs, hd) = (self.hidden, self.head_dim);
        let mut slots = vec![Slot::embedding("model.embed_tokens", self.vocab, hs)];
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            let blk = Some(i);
            let linear = |name: &str, out: i64, inp: i64| {
                Slot::linear(format!("{p}.{name}"), out, inp, false, blk)
            };
            slots.extend([
                Slot::norm(format!("{p}.input_layernorm"), hs, false, blk),
                linear("self_attn.q_proj", self.heads * hd, hs),
                linear("self_attn.k_proj", self.kv_heads * hd, hs),
                linear("self_attn.v_proj", self.kv_heads * hd, hs),
                linear("self_attn.o_proj", hs, self.heads * hd),
                Slot::norm(format!("{p}.post_attention_layernorm"), hs, false, blk),
                linear("mlp.gate_proj", self.intermediate, hs),
                linear("mlp.up_proj", self.intermediate, hs),
                linear("mlp.down_proj", hs, self.intermediate),
            ]);
        }
        slots.push(Slot::norm("model.norm", hs, false, None));
        let mut head = Slot::linear("lm_head", self.vocab, hs, false, None);
        if self.tie {
            head.weight = "model.embed_tokens.weight".into();
        }
        slots.push(head);
        ModelLayout {
            num_blocks: self.layers,
            slots,
            params: Vec::new(),
            output_slot: "lm_head".into(),
            vocab_size: self.vocab,
            num_kv_heads: self.kv_heads,
            head_dim: hd,
            max_positions: None,
            // Weights a checkpoint may carry that this layout does not read: loading refuses any
            // other unused weight (naming --allow_unused_weights).
            ignorable: if self.tie {
                vec!["*rotary_emb.inv_freq".into(), "lm_head.weight".into()]
            } else {
                vec!["*rotary_emb.inv_freq".into()]
            },
            vision: None,
            module_names: Vec::new(),
        }
    }

    fn forward(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        let mut h = self.embed(ctx, input_ids, positions)?;
        for i in 0..self.layers {
            h = self.run_block(ctx, i, &h, positions)?;
        }
        self.final_norm(ctx, &h)
    }

    // Per-block entry points: gradient checkpointing (`--gradient_checkpointing true`).
    fn has_blocks(&self) -> bool {
        true
    }

    fn embed(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        _positions: &Tensor,
    ) -> Result<Tensor, String> {
        ctx.embedding("model.embed_tokens", input_ids)
    }

    fn block(
        &self,
        ctx: &mut dyn ModelContext,
        index: usize,
        hidden: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        if index >= self.layers {
            return Err(format!("block {index} of a {}-block model", self.layers));
        }
        Ok(self.run_block(ctx, index, hidden, positions)?)
    }

    fn final_norm(&self, ctx: &mut dyn ModelContext, hidden: &Tensor) -> Result<Tensor, String> {
        ctx.norm("model.norm", hidden, NormKind::RmsNorm, self.eps)
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.model_family(record(), Family)?;
    plugin_info!("__NAME__: registered model family `__NAME__`");
    Ok(())
}

swift_plugin_tensors::export_plugin!(register);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_gives_the_checkpoint_layout() {
        let config = serde_json::json!({
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        });
        let model = Family.instantiate(&config).unwrap();
        let layout = model.layout();
        assert_eq!(layout.num_blocks, 2);
        assert_eq!(layout.slots.len(), 1 + 2 * 9 + 2);
        assert!(layout.slots.iter().any(|s| s.name == "model.layers.1.self_attn.k_proj"));
        let bad = Family.instantiate(&serde_json::json!({"hidden_size": 64}));
        assert!(bad.err().unwrap().contains("num_attention_heads"));
    }
}
