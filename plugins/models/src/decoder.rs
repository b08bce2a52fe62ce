//! The Llama-style decoder that llama, qwen2, qwen3 and mistral share: token embedding, then
//! blocks of (RMSNorm → grouped-query self-attention with RoPE → residual, RMSNorm → SwiGLU MLP →
//! residual), a final RMSNorm and the output projection (tied to the embedding or not). The
//! families differ only in [`Options`], read from their own config.json conventions in their own
//! files. Every projection, norm and the attention itself go through the host's context.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{residual, Activation, Config, Error, Rope};
use tch::Tensor;

/// Where the families differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// The output projection carries a bias.
    pub o_bias: bool,
    /// The MLP projections carry a bias.
    pub mlp_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
}

/// One configuration of the decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    hidden: i64,
    intermediate: i64,
    layers: usize,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    eps: f64,
    act: Activation,
    vocab: i64,
    tie: bool,
    max_positions: Option<i64>,
    opts: Options,
    rope: Rope,
    /// The output projection: `lm_head`, or nested in a vision-language checkpoint
    /// (`language_model.lm_head`).
    head: String,
    /// The slots' names under where the decoder's weights live: `model` (`model.embed_tokens`,
    /// `model.layers.N`, `model.norm`), or nested (`language_model.model`); made once, not per
    /// pass (a decoding step asks for 8 per block).
    names: Names,
    /// Qwen2-VL's multimodal rotary sections (`rope_scaling.mrope_section`): positions may be
    /// `[3, batch, seq]` (temporal, height, width), each section of the rotary frequencies
    /// taking its axis; 1-D positions are the same on all three.
    mrope: Option<Vec<i64>>,
}

/// The names of the decoder's slots under one prefix: what [`Model::layout`] declares and what
/// each pass asks the host for, made once.
#[derive(Debug, Clone)]
struct Names {
    embed: String,
    norm: String,
    layers: Vec<LayerNames>,
}

/// One block's slot names.
#[derive(Debug, Clone)]
struct LayerNames {
    input_norm: String,
    q: String,
    k: String,
    v: String,
    q_norm: String,
    k_norm: String,
    o: String,
    post_norm: String,
    gate: String,
    up: String,
    down: String,
}

impl Names {
    fn new(prefix: &str, layers: usize) -> Self {
        Self {
            embed: format!("{prefix}.embed_tokens"),
            norm: format!("{prefix}.norm"),
            layers: (0..layers)
                .map(|i| {
                    let p = format!("{prefix}.layers.{i}");
                    LayerNames {
                        input_norm: format!("{p}.input_layernorm"),
                        q: format!("{p}.self_attn.q_proj"),
                        k: format!("{p}.self_attn.k_proj"),
                        v: format!("{p}.self_attn.v_proj"),
                        q_norm: format!("{p}.self_attn.q_norm"),
                        k_norm: format!("{p}.self_attn.k_norm"),
                        o: format!("{p}.self_attn.o_proj"),
                        post_norm: format!("{p}.post_attention_layernorm"),
                        gate: format!("{p}.mlp.gate_proj"),
                        up: format!("{p}.mlp.up_proj"),
                        down: format!("{p}.mlp.down_proj"),
                    }
                })
                .collect(),
        }
    }
}

/// The most layers or heads a config.json may declare (a damaged file is refused, not looped over).
const MAX_COUNT: i64 = 65_536;

impl Decoder {
    /// Reads the common config.json keys (`hidden_size`, `intermediate_size`,
    /// `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`, `head_dim`,
    /// `rms_norm_eps`, `vocab_size`, `tie_word_embeddings`, `rope_theta`, `rope_scaling`).
    pub fn from_config(config: &Value, opts: Options) -> Result<Self, Error> {
        let cfg = Config::model(config);
        let hidden = cfg.i64("hidden_size")?;
        let heads = cfg.count("num_attention_heads", MAX_COUNT)?;
        let kv_heads = cfg.i64_opt("num_key_value_heads")?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(Error(format!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        let head_dim = match cfg.i64_opt("head_dim")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(Error(format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                )))
            }
        };
        let act = Activation::from_name(
            &cfg.str_opt("hidden_act")?
                .unwrap_or_else(|| "silu".to_string()),
        )?;
        let layers = cfg.count("num_hidden_layers", MAX_COUNT)? as usize;
        Ok(Self {
            hidden,
            intermediate: cfg.i64("intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            eps: cfg.f64_or("rms_norm_eps", 1e-6)?,
            act,
            vocab: cfg.i64("vocab_size")?,
            tie: cfg.bool_or("tie_word_embeddings", false)?,
            max_positions: None,
            opts,
            rope: Rope::from_config(&cfg, head_dim)?,
            head: "lm_head".into(),
            names: Names::new("model", layers),
            mrope: None,
        })
    }

    /// Reads the weights under `prefix` (instead of `model`) and the head `head`.
    pub fn with_names(mut self, prefix: &str, head: &str) -> Self {
        self.head = head.into();
        self.names = Names::new(prefix, self.layers);
        self
    }

    /// Multimodal rotary positions with these sections (they sum to half the head size).
    pub fn with_mrope(mut self, sections: Vec<i64>) -> Result<Self, Error> {
        if sections.iter().sum::<i64>() * 2 != self.rope.rotary_dim() {
            return Err(Error(format!(
                "mrope_section {sections:?} must sum to half the rotary size {}",
                self.rope.rotary_dim()
            )));
        }
        self.mrope = Some(sections);
        Ok(self)
    }

    /// The hidden size (what image features must match).
    pub fn hidden_size(&self) -> i64 {
        self.hidden
    }

    /// `cos`/`sin` for `positions` (`[batch, seq]`, or `[3, batch, seq]` with M-RoPE).
    fn cos_sin(&self, positions: &Tensor, kind: tch::Kind) -> Result<(Tensor, Tensor), Error> {
        let Some(sections) = &self.mrope else {
            return self.rope.cos_sin(positions, kind);
        };
        let axes = if positions.dim() == 2 {
            Tensor::f_stack(&[positions, positions, positions], 0)?
        } else {
            positions.shallow_clone()
        };
        // Each axis's tables, then section i of the (doubled) frequencies from axis i % 3.
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for a in 0..3 {
            let (c, s) = self.rope.cos_sin(&axes.f_select(0, a)?, kind)?;
            cos.push(c);
            sin.push(s);
        }
        let sizes: Vec<i64> = sections.iter().chain(sections.iter()).copied().collect();
        let pick = |t: &[Tensor]| -> Result<Tensor, Error> {
            let parts: Vec<Vec<Tensor>> = t
                .iter()
                .map(|x| x.f_split_with_sizes(&sizes, -1))
                .collect::<Result<_, _>>()?;
            let chosen: Vec<&Tensor> = (0..sizes.len()).map(|i| &parts[i % 3][i]).collect();
            Ok(Tensor::f_cat(&chosen, -1)?)
        };
        Ok((pick(&cos)?, pick(&sin)?))
    }

    /// Bounds the positions generation may reach (Mistral's sliding window).
    pub fn with_max_positions(mut self, max: Option<i64>) -> Self {
        self.max_positions = max;
        self
    }

    fn run(
        &self,
        ctx: &mut dyn ModelContext,
        ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, Error> {
        let mut h = ctx.embedding(&self.names.embed, ids)?;
        let (cos, sin) = self.cos_sin(positions, h.kind())?;
        for i in 0..self.layers {
            h = self.layer(ctx, i, &h, &cos, &sin)?;
        }
        Ok(ctx.norm(&self.names.norm, &h, NormKind::RmsNorm, self.eps)?)
    }

    /// Block `i`: `h` (`[batch, seq, hidden]`) through attention and the MLP, with their
    /// residuals. `forward` and the per-block entry points (gradient checkpointing) share it.
    fn layer(
        &self,
        ctx: &mut dyn ModelContext,
        i: usize,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor, Error> {
        let (b, t, _) = h.size3()?;
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let n = self
            .names
            .layers
            .get(i)
            .ok_or_else(|| Error(format!("block {i} of a {}-block model", self.layers)))?;
        let x = ctx.norm(&n.input_norm, h, NormKind::RmsNorm, self.eps)?;
        // Each projection as `[b, t, n, hd]`, later with its heads second (`[b, n, t, hd]`). With
        // one position (a decoding step) both are the same memory: a plain view to the second
        // shape from the start, one libtorch operation instead of two per tensor.
        let split = |y: Tensor, n: i64| -> Result<Tensor, Error> {
            Ok(y.f_view(if t == 1 { [b, n, t, hd] } else { [b, t, n, hd] })?)
        };
        let heads_second = |y: Tensor| -> Result<Tensor, Error> {
            Ok(if t == 1 { y } else { y.f_transpose(1, 2)? })
        };
        let mut q = split(ctx.linear(&n.q, &x)?, heads)?;
        let mut k = split(ctx.linear(&n.k, &x)?, kv)?;
        let v = split(ctx.linear(&n.v, &x)?, kv)?;
        if self.opts.qk_norm {
            q = ctx.norm(&n.q_norm, &q, NormKind::RmsNorm, self.eps)?;
            k = ctx.norm(&n.k_norm, &k, NormKind::RmsNorm, self.eps)?;
        }
        let q = self.rope.apply(&heads_second(q)?, cos, sin)?;
        let k = self.rope.apply(&heads_second(k)?, cos, sin)?;
        let v = heads_second(v)?;
        let a = ctx.attention(i, &q, &k, &v, None)?;
        let a = if t == 1 {
            a.f_reshape([b, t, heads * hd])?
        } else {
            a.f_transpose(1, 2)?.f_reshape([b, t, heads * hd])?
        };
        // Residuals are new tensors (not in place), so autograd keeps the norms' inputs.
        let h = residual(h, &ctx.linear(&n.o, &a)?)?;
        let x = ctx.norm(&n.post_norm, &h, NormKind::RmsNorm, self.eps)?;
        let gate = ctx.linear(&n.gate, &x)?;
        let up = ctx.linear(&n.up, &x)?;
        let m = self.act.gated(&gate, &up)?;
        residual(&h, &ctx.linear(&n.down, &m)?)
    }
}

/// Stored weights a Llama-style folder may hold that the decoder does not read: rotary
/// frequency buffers (recomputed from `rope_theta`), a tied copy of the LM head, and a reward
/// model's value head (`score`, read by the host's reward module, not by the family).
fn decoder_ignorable(tie: bool, head: &str) -> Vec<String> {
    let mut v = vec![
        "*rotary_emb.inv_freq".to_string(),
        "score.weight".into(),
        "score.bias".into(),
    ];
    if tie {
        v.push(format!("{head}.weight"));
    }
    v
}

/// The [`Model`] methods a family that wraps a [`Decoder`] in a field `lm` (a vision-language
/// model: tower and projector of its own, the language model a plain decoder) forwards to it:
/// `forward`, `has_blocks`, `embed`, `block`, `final_norm`. Used inside the family's
/// `impl Model` block.
macro_rules! language_model_methods {
    () => {
        fn forward(
            &self,
            ctx: &mut dyn ModelContext,
            input_ids: &Tensor,
            positions: &Tensor,
        ) -> Result<Tensor, String> {
            self.lm.forward(ctx, input_ids, positions)
        }

        fn has_blocks(&self) -> bool {
            true
        }

        fn embed(
            &self,
            ctx: &mut dyn ModelContext,
            input_ids: &Tensor,
            positions: &Tensor,
        ) -> Result<Tensor, String> {
            self.lm.embed(ctx, input_ids, positions)
        }

        fn block(
            &self,
            ctx: &mut dyn ModelContext,
            index: usize,
            hidden: &Tensor,
            positions: &Tensor,
        ) -> Result<Tensor, String> {
            self.lm.block(ctx, index, hidden, positions)
        }

        fn final_norm(
            &self,
            ctx: &mut dyn ModelContext,
            hidden: &Tensor,
        ) -> Result<Tensor, String> {
            self.lm.final_norm(ctx, hidden)
        }
    };
}
pub(crate) use language_model_methods;

impl Model for Decoder {
    fn layout(&self) -> ModelLayout {
        let (hs, hd, o) = (self.hidden, self.head_dim, self.opts);
        let names = &self.names;
        let mut slots = vec![Slot::embedding(names.embed.clone(), self.vocab, hs)];
        for (i, n) in names.layers.iter().enumerate() {
            let blk = Some(i);
            slots.push(Slot::norm(n.input_norm.clone(), hs, false, blk));
            let q = Slot::linear(n.q.clone(), self.heads * hd, hs, o.qkv_bias, blk);
            slots.push(q);
            let k = Slot::linear(n.k.clone(), self.kv_heads * hd, hs, o.qkv_bias, blk);
            slots.push(k);
            let v = Slot::linear(n.v.clone(), self.kv_heads * hd, hs, o.qkv_bias, blk);
            slots.push(v);
            if o.qk_norm {
                slots.push(Slot::norm(n.q_norm.clone(), hd, false, blk));
                slots.push(Slot::norm(n.k_norm.clone(), hd, false, blk));
            }
            let out = Slot::linear(n.o.clone(), hs, self.heads * hd, o.o_bias, blk);
            slots.push(out);
            slots.push(Slot::norm(n.post_norm.clone(), hs, false, blk));
            let ff = self.intermediate;
            slots.push(Slot::linear(n.gate.clone(), ff, hs, o.mlp_bias, blk));
            slots.push(Slot::linear(n.up.clone(), ff, hs, o.mlp_bias, blk));
            slots.push(Slot::linear(n.down.clone(), hs, ff, o.mlp_bias, blk));
        }
        slots.push(Slot::norm(names.norm.clone(), hs, false, None));
        let mut head = Slot::linear(self.head.clone(), self.vocab, hs, false, None);
        if self.tie {
            head.weight = format!("{}.weight", self.names.embed);
        }
        slots.push(head);
        ModelLayout {
            num_blocks: self.layers,
            slots,
            params: Vec::new(),
            output_slot: self.head.clone(),
            vocab_size: self.vocab,
            num_kv_heads: self.kv_heads,
            head_dim: hd,
            max_positions: self.max_positions,
            ignorable: decoder_ignorable(self.tie, &self.head),
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
        self.run(ctx, input_ids, positions).map_err(String::from)
    }

    fn has_blocks(&self) -> bool {
        true
    }

    fn embed(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        _positions: &Tensor,
    ) -> Result<Tensor, String> {
        ctx.embedding(&self.names.embed, input_ids)
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
        let (cos, sin) = self.cos_sin(positions, hidden.kind())?;
        self.layer(ctx, index, hidden, &cos, &sin)
            .map_err(String::from)
    }

    fn final_norm(&self, ctx: &mut dyn ModelContext, hidden: &Tensor) -> Result<Tensor, String> {
        ctx.norm(&self.names.norm, hidden, NormKind::RmsNorm, self.eps)
    }
}
