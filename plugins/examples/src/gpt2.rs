//! A GPT-2 style model family (`GPT2LMHeadModel`), shipped by this out-of-tree plugin to show
//! that a third party's architecture runs through the ABI: the host loads the weights, owns the
//! KV cache and attention, and applies tuners and quantizers to these slots like any built-in's.
//!
//! What sets it apart from the built-in Llama-style families: learned absolute positions
//! (`wpe`), LayerNorm with bias, a fused q/k/v projection (`c_attn`), biases everywhere, the
//! `gelu_new` (tanh) activation, and Conv1D weights stored `[in, out]` (declared `transposed`, so
//! the host holds them as `[out, in]` like every other linear weight). The output projection is
//! tied to the token embedding.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use tch::Tensor;

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
}

pub struct Gpt2Family;

fn int(config: &Value, key: &str) -> Result<i64, String> {
    config
        .get(key)
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("gpt2: config.json needs a positive integer `{key}`"))
}

impl ModelFamily for Gpt2Family {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let embd = int(config, "n_embd")?;
        let heads = int(config, "n_head")?;
        if embd % heads != 0 {
            return Err(format!(
                "gpt2: n_embd {embd} is not a multiple of n_head {heads}"
            ));
        }
        match config.get("activation_function").and_then(Value::as_str) {
            None | Some("gelu_new") | Some("gelu_pytorch_tanh") => {}
            Some(other) => {
                return Err(format!(
                    "gpt2: activation_function `{other}` is not supported (gelu_new only)"
                ))
            }
        }
        if config
            .get("scale_attn_by_inverse_layer_idx")
            .and_then(Value::as_bool)
            == Some(true)
            || config
                .get("reorder_and_upcast_attn")
                .and_then(Value::as_bool)
                == Some(true)
        {
            return Err(
                "gpt2: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported"
                    .into(),
            );
        }
        Ok(Box::new(Gpt2 {
            embd,
            layers: int(config, "n_layer")? as usize,
            heads,
            positions: int(config, "n_positions")?,
            inner: config
                .get("n_inner")
                .and_then(Value::as_i64)
                .unwrap_or(4 * embd),
            vocab: int(config, "vocab_size")?,
            eps: config
                .get("layer_norm_epsilon")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
        }))
    }
}

/// A Conv1D slot: weight stored `[in, out]` in the checkpoint, with a bias.
fn conv1d(name: String, out: i64, inp: i64, block: usize) -> Slot {
    let mut s = Slot::linear(name, out, inp, true, Some(block));
    s.transposed = true;
    s
}

/// `gelu_new`, written exactly as transformers' NewGELUActivation.
fn gelu_new(x: &Tensor) -> Result<Tensor, tch::TchError> {
    let inner =
        (x + x.f_pow_tensor_scalar(3.0)? * 0.044715) * (2.0f64 / std::f64::consts::PI).sqrt();
    Ok(x * 0.5 * (inner.f_tanh()? + 1.0))
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
    fn layer(&self, ctx: &mut dyn ModelContext, i: usize, h: &Tensor) -> Result<Tensor, String> {
        let te = |e: tch::TchError| e.to_string();
        let (b, t, _) = h.size3().map_err(te)?;
        let hd = self.embd / self.heads;
        let p = format!("transformer.h.{i}");
        let x = ctx.norm(&format!("{p}.ln_1"), h, NormKind::LayerNorm, self.eps)?;
        let qkv = ctx.linear(&format!("{p}.attn.c_attn"), &x)?;
        let parts = qkv.f_split(self.embd, 2).map_err(te)?;
        let heads = |t2: &Tensor| {
            t2.f_view([b, t, self.heads, hd])
                .and_then(|v| v.f_transpose(1, 2))
                .map_err(te)
        };
        let (q, k, v) = (heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?);
        let a = ctx.attention(i, &q, &k, &v, None)?;
        let a = a
            .f_transpose(1, 2)
            .and_then(|a| a.f_reshape([b, t, self.embd]))
            .map_err(te)?;
        let h = h
            .f_add(&ctx.linear(&format!("{p}.attn.c_proj"), &a)?)
            .map_err(te)?;
        let x = ctx.norm(&format!("{p}.ln_2"), &h, NormKind::LayerNorm, self.eps)?;
        let m = gelu_new(&ctx.linear(&format!("{p}.mlp.c_fc"), &x)?).map_err(te)?;
        h.f_add(&ctx.linear(&format!("{p}.mlp.c_proj"), &m)?)
            .map_err(te)
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
        self.layer(ctx, index, hidden)
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
