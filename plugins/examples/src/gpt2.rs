//! A GPT-2 style model family (`GPT2LMHeadModel`), shipped by this out-of-tree plugin to show
//! that a third party's architecture runs through the ABI: the host loads the weights, owns the
//! KV cache and attention, and applies tuners and quantizers to these slots like any built-in's.
//!
//! What sets it apart from the built-in Llama-style families: learned absolute positions
//! (`wpe`), LayerNorm with bias, a fused q/k/v projection (`c_attn`), biases everywhere, the
//! `gelu_new` (tanh) activation (the SDK's `Activation`), and Conv1D weights stored `[in, out]` (declared `transposed`, so
//! the host holds them as `[out, in]` like every other linear weight). The output projection is
//! tied to the token embedding.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{Activation, Config, Error};
use swift_plugin_tensors::tch::Tensor;

/// One GPT-2 configuration (config.json's `n_embd`, `n_layer`, `n_head`, `n_positions`,
/// `n_inner`, `vocab_size`, `layer_norm_epsilon`, `activation_function`).
pub struct Gpt2 {
    embd: i64,
    layers: usize,
    heads: i64,
    positions: i64,
    inner: i64,
    vocab: i64,
    eps: f64,
    act: Activation,
}

pub struct Gpt2Family;

/// The config.json keys this family reads, typed (the SDK's `Config::typed` names a bad key).
#[derive(serde::Deserialize)]
struct Gpt2Config {
    n_embd: i64,
    n_layer: usize,
    n_head: i64,
    n_positions: i64,
    n_inner: Option<i64>,
    vocab_size: i64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    activation_function: String,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    reorder_and_upcast_attn: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2Family {
    pub(crate) fn build(config: &Value) -> Result<Gpt2, Error> {
        let c: Gpt2Config = Config::model(config).typed()?;
        for (key, n) in [
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("n_positions", c.n_positions),
            ("vocab_size", c.vocab_size),
            ("n_layer", c.n_layer as i64),
        ] {
            if n <= 0 {
                return Err(format!("gpt2: config.json `{key}` must be positive, got {n}").into());
            }
        }
        if c.n_embd % c.n_head != 0 {
            return Err(format!(
                "gpt2: n_embd {} is not a multiple of n_head {}",
                c.n_embd, c.n_head
            )
            .into());
        }
        if c.scale_attn_by_inverse_layer_idx || c.reorder_and_upcast_attn {
            return Err(
                "gpt2: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported"
                    .into(),
            );
        }
        Ok(Gpt2 {
            embd: c.n_embd,
            layers: c.n_layer,
            heads: c.n_head,
            positions: c.n_positions,
            inner: c.n_inner.unwrap_or(4 * c.n_embd),
            vocab: c.vocab_size,
            eps: c.layer_norm_epsilon,
            act: Activation::from_name(&c.activation_function)
                .map_err(|e| Error(format!("gpt2: {e}")))?,
        })
    }
}

impl ModelFamily for Gpt2Family {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        Ok(Box::new(Self::build(config)?))
    }
}

/// A Conv1D slot: weight stored `[in, out]` in the checkpoint, with a bias.
fn conv1d(name: String, out: i64, inp: i64, block: usize) -> Slot {
    let mut s = Slot::linear(name, out, inp, true, Some(block));
    s.transposed = true;
    s
}

impl Gpt2 {
    fn run(
        &self,
        ctx: &mut dyn ModelContext,
        ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        let mut h = self.embed(ctx, ids, positions)?;
        for i in 0..self.layers {
            h = self.layer(ctx, i, &h)?;
        }
        self.final_norm(ctx, &h)
    }

    /// Block `i`: attention and MLP with their residuals (shared by `forward` and the
    /// per-block entry points of gradient checkpointing).
    fn layer(&self, ctx: &mut dyn ModelContext, i: usize, h: &Tensor) -> Result<Tensor, Error> {
        let (b, t, _) = h.size3()?;
        let hd = self.embd / self.heads;
        let p = format!("transformer.h.{i}");
        let x = ctx.norm(&format!("{p}.ln_1"), h, NormKind::LayerNorm, self.eps)?;
        let qkv = ctx.linear(&format!("{p}.attn.c_attn"), &x)?;
        let parts = qkv.f_split(self.embd, 2)?;
        let heads = |t2: &Tensor| t2.f_view([b, t, self.heads, hd])?.f_transpose(1, 2);
        let (q, k, v) = (heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?);
        let a = ctx.attention(i, &q, &k, &v, None)?;
        let a = a.f_transpose(1, 2)?.f_reshape([b, t, self.embd])?;
        let h = h.f_add(&ctx.linear(&format!("{p}.attn.c_proj"), &a)?)?;
        let x = ctx.norm(&format!("{p}.ln_2"), &h, NormKind::LayerNorm, self.eps)?;
        let m = self.act.apply(&ctx.linear(&format!("{p}.mlp.c_fc"), &x)?)?;
        Ok(h.f_add(&ctx.linear(&format!("{p}.mlp.c_proj"), &m)?)?)
    }
}

impl Model for Gpt2 {
    fn layout(&self) -> ModelLayout {
        let e = self.embd;
        let mut slots = vec![
            Slot::embedding("transformer.wte", self.vocab, e),
            Slot::embedding("transformer.wpe", self.positions, e),
        ];
        for i in 0..self.layers {
            let p = format!("transformer.h.{i}");
            slots.push(Slot::norm(format!("{p}.ln_1"), e, true, Some(i)));
            slots.push(conv1d(format!("{p}.attn.c_attn"), 3 * e, e, i));
            slots.push(conv1d(format!("{p}.attn.c_proj"), e, e, i));
            slots.push(Slot::norm(format!("{p}.ln_2"), e, true, Some(i)));
            slots.push(conv1d(format!("{p}.mlp.c_fc"), self.inner, e, i));
            slots.push(conv1d(format!("{p}.mlp.c_proj"), e, self.inner, i));
        }
        slots.push(Slot::norm("transformer.ln_f", e, true, None));
        let mut head = Slot::linear("lm_head", self.vocab, e, false, None);
        head.weight = "transformer.wte.weight".into();
        slots.push(head);
        ModelLayout {
            num_blocks: self.layers,
            slots,
            params: Vec::new(),
            output_slot: "lm_head".into(),
            vocab_size: self.vocab,
            num_kv_heads: self.heads,
            head_dim: e / self.heads,
            max_positions: Some(self.positions),
            // transformers' causal-mask buffers and the tied head's copy.
            ignorable: vec![
                "*.attn.bias".into(),
                "*.attn.masked_bias".into(),
                "lm_head.weight".into(),
            ],
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
        self.run(ctx, input_ids, positions)
    }

    // Per-block entry points: the host can checkpoint this family's blocks too
    // (`--gradient_checkpointing true`), with no training code in the plugin.
    fn has_blocks(&self) -> bool {
        true
    }

    fn embed(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        Ok(ctx.embedding("transformer.wte", input_ids)?
            + ctx.embedding("transformer.wpe", positions)?)
    }

    fn block(
        &self,
        ctx: &mut dyn ModelContext,
        index: usize,
        hidden: &Tensor,
        _positions: &Tensor,
    ) -> Result<Tensor, String> {
        if index >= self.layers {
            return Err(format!("block {index} of a {}-block model", self.layers));
        }
        Ok(self.layer(ctx, index, hidden)?)
    }

    fn final_norm(&self, ctx: &mut dyn ModelContext, hidden: &Tensor) -> Result<Tensor, String> {
        ctx.norm("transformer.ln_f", hidden, NormKind::LayerNorm, self.eps)
    }
}

/// The family's record: resolved from `GPT2LMHeadModel` / `gpt2` checkpoints.
pub fn record() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "example-gpt2".into(),
        aliases: vec!["gpt2".into()],
        description:
            "GPT-2 style (learned positions, LayerNorm, fused c_attn), from the example plugin"
                .into(),
        architectures: vec!["GPT2LMHeadModel".into()],
        model_types: vec!["gpt2".into()],
        default_template: Some("chatml".into()),
        alias_of: None,
    }
}
