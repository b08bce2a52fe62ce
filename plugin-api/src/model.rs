//! The model interface (ARCHITECTURE.md §3.4): how a model family meets the host.
//!
//! The host owns the parameters, the KV cache and the attention kernel; a family declares what it
//! needs and writes its forward pass against a `ModelContext`:
//!
//! * [`ModelLayout`] is the declaration: every *slot* (a linear projection, an embedding or a
//!   norm) with the parameters behind it and the repeated block it belongs to, plus any other
//!   parameter the family reads directly. Tuners attach to slots by name, layer-wise tuners use
//!   the block index, quantizers replace a linear slot's weight: none of them needs family code.
//! * `ModelContext` is what `forward` may call: `linear`, `embedding`, `norm`, `param` and
//!   `attention`. The host answers each call with the base weight plus whatever tuners and
//!   quantizers have registered on that slot, and keeps the KV cache behind `attention`.
//! * `Model` is one instantiated family (its parsed `config.json`): the layout and `forward`.
//!
//! `forward` maps token ids `[batch, seq]` and their positions `[batch, seq]` (the host computes
//! them, so left-padded batches get the right positions) to the final hidden states
//! `[batch, seq, hidden]` *before* the output projection; the host applies
//! [`ModelLayout::output_slot`] itself, to the last position only when generating. Attention
//! takes `q` as `[batch, heads, seq, head_dim]` and `k`, `v` as `[batch, kv_heads, seq, head_dim]`
//! (grouped-query attention when `kv_heads < heads`), with RoPE already applied, and returns
//! `[batch, heads, seq, head_dim]`; the host appends `k`, `v` to the layer's cache and applies the
//! causal and padding masks.
//!
//! Gradient checkpointing (optional): a family may also offer its forward pass cut at block
//! boundaries (`Model::embed`, `Model::block`, `Model::final_norm`, announced by
//! `Model::has_blocks`), so that the host can run the blocks without keeping their
//! activations and recompute one block at a time during the backward pass. A family that does
//! not offer them keeps the default (`has_blocks` false) and is trained with plain forward
//! passes.
//!
//! The declarations are plain serde data (they cross the boundary as JSON) and live here; the
//! traits, which handle `tch` tensors, are swift-plugin-tensors' (`swift_plugin_tensors::model`).

use serde::{Deserialize, Serialize};

pub use crate::vision::{ImageTokens, Part, Positions, VisionDecl};

/// What a slot computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// `y = x Wᵀ (+ b)`, weight `[out, in]`.
    Linear,
    /// Row lookup, weight `[num, dim]`.
    Embedding,
    /// Normalisation over the last dimension, weight `[dim]` (and bias for LayerNorm).
    Norm,
}

/// The normalisation a `norm` call applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum NormKind {
    /// `w · x / sqrt(mean(x²) + eps)`, computed in float32 (Llama, Qwen, Mistral).
    RmsNorm = 0,
    /// `w · (x − mean) / sqrt(var + eps) + b` (GPT-2, BERT).
    LayerNorm = 1,
}

impl NormKind {
    /// The value that crosses the boundary.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Reads the value that crossed the boundary.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::RmsNorm),
            1 => Some(Self::LayerNorm),
            _ => None,
        }
    }
}

/// One slot: a named projection, embedding or norm and the parameters behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// The name `forward` passes to the context (by convention the module path, e.g.
    /// `model.layers.3.self_attn.q_proj`). Tuners' `target_modules` match against it.
    pub name: String,
    pub kind: SlotKind,
    /// The weight's parameter name in the checkpoint (e.g. `model.layers.3.self_attn.q_proj.weight`;
    /// tied output projections name the embedding's weight).
    pub weight: String,
    /// The weight's shape as the host holds it (`[out, in]` for linear slots).
    pub shape: Vec<i64>,
    /// The bias parameter, if the slot has one.
    #[serde(default)]
    pub bias: Option<String>,
    /// The repeated block (layer) the slot belongs to.
    #[serde(default)]
    pub block: Option<usize>,
    /// The checkpoint stores this linear weight as `[in, out]` (GPT-2's Conv1D); the host
    /// transposes it once at load time, so every linear weight it holds is `[out, in]`.
    #[serde(default)]
    pub transposed: bool,
    /// The part of a vision-language model the slot belongs to (`llm` unless declared).
    #[serde(default)]
    pub part: Part,
    /// The checkpoint stores this weight in another shape with the same elements in the same
    /// order (a patch embedding's Conv2d/Conv3d kernel `[out, c, (t,) p, p]`, held as the linear
    /// slot `[out, c·(t·)p·p]` over flattened patches); the host reshapes it once at load time
    /// and back when saving.
    #[serde(default)]
    pub stored_shape: Option<Vec<i64>>,
}

impl Slot {
    /// A linear slot `name` with weight `name.weight` of shape `[out, in]`.
    pub fn linear(
        name: impl Into<String>,
        out: i64,
        inp: i64,
        bias: bool,
        block: Option<usize>,
    ) -> Self {
        let name = name.into();
        Self {
            weight: format!("{name}.weight"),
            bias: bias.then(|| format!("{name}.bias")),
            name,
            kind: SlotKind::Linear,
            shape: vec![out, inp],
            block,
            transposed: false,
            part: Part::Llm,
            stored_shape: None,
        }
    }

    /// An embedding slot `name` with weight `name.weight` of shape `[num, dim]`.
    pub fn embedding(name: impl Into<String>, num: i64, dim: i64) -> Self {
        let name = name.into();
        Self {
            weight: format!("{name}.weight"),
            bias: None,
            name,
            kind: SlotKind::Embedding,
            shape: vec![num, dim],
            block: None,
            transposed: false,
            part: Part::Llm,
            stored_shape: None,
        }
    }

    /// A norm slot `name` with weight `name.weight` (and `name.bias` when `bias`) of shape `[dim]`.
    pub fn norm(name: impl Into<String>, dim: i64, bias: bool, block: Option<usize>) -> Self {
        let name = name.into();
        Self {
            weight: format!("{name}.weight"),
            bias: bias.then(|| format!("{name}.bias")),
            name,
            kind: SlotKind::Norm,
            shape: vec![dim],
            block,
            transposed: false,
            part: Part::Llm,
            stored_shape: None,
        }
    }

    /// The same slot, tagged as belonging to `part`.
    pub fn with_part(mut self, part: Part) -> Self {
        self.part = part;
        self
    }

    /// The same slot, stored in the checkpoint as `stored` (see [`Slot::stored_shape`]).
    pub fn stored_as(mut self, stored: Vec<i64>) -> Self {
        self.stored_shape = Some(stored);
        self
    }
}

/// A parameter `forward` reads directly with [`ModelContext::param`] (outside any slot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDecl {
    pub name: String,
    pub shape: Vec<i64>,
    /// The part of a vision-language model the parameter belongs to (`llm` unless declared).
    #[serde(default)]
    pub part: Part,
}

impl ParamDecl {
    /// A parameter of the language model.
    pub fn new(name: impl Into<String>, shape: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            shape,
            part: Part::Llm,
        }
    }

    /// The same parameter, tagged as belonging to `part`.
    pub fn with_part(mut self, part: Part) -> Self {
        self.part = part;
        self
    }
}

/// Everything a family declares about one configuration. (`Default` is an empty layout, for
/// tests that need only a field or two.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLayout {
    /// Number of repeated blocks (transformer layers); slots carry their block index.
    pub num_blocks: usize,
    /// Every slot, in forward order.
    pub slots: Vec<Slot>,
    /// Parameters read directly with `param`.
    #[serde(default)]
    pub params: Vec<ParamDecl>,
    /// The linear slot that maps hidden states to logits (applied by the host).
    pub output_slot: String,
    /// Vocabulary size (the output slot's `out`).
    pub vocab_size: i64,
    /// Key/value heads and head size of every attention layer (sizes the KV cache).
    pub num_kv_heads: i64,
    pub head_dim: i64,
    /// The longest position the model supports (learned position tables), if bounded.
    #[serde(default)]
    pub max_positions: Option<i64>,
    /// Stored weights the family knowingly does not read (`*` matches any run of characters):
    /// e.g. `*rotary_emb.inv_freq`, a tied copy of `lm_head.weight`, a vision tower when
    /// loading text only. Any other stored weight the layout does not use makes loading fail
    /// (`--allow_unused_weights true` overrides). Appended: older plugins declare none.
    #[serde(default)]
    pub ignorable: Vec<String>,
    /// A vision-language family's image declarations (`crate::vision`); `None` for text only.
    #[serde(default)]
    pub vision: Option<VisionDecl>,
    /// Where transformers' module tree names a slot otherwise than the stored weights do
    /// (its `_checkpoint_conversion_mapping`: LLaVA's `language_model.model.` is the module
    /// `model.language_model.`): prefix rewrites, first match wins. PEFT files (adapter
    /// tensors, `target_modules`, `modules_to_save`) use the module names
    /// ([`ModelLayout::module_name`]); reading, both spellings are accepted
    /// ([`ModelLayout::stored_name`]). Empty (the default) when they agree, as for text families.
    /// Appended: older plugins declare none.
    #[serde(default)]
    pub module_names: Vec<ModuleName>,
}

/// One rewrite of [`ModelLayout::module_names`]: names starting with the component(s)
/// `stored` are named from `module` on in transformers' module tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleName {
    pub stored: String,
    pub module: String,
}

impl ModuleName {
    pub fn new(stored: impl Into<String>, module: impl Into<String>) -> Self {
        Self {
            stored: stored.into(),
            module: module.into(),
        }
    }
}

/// `name` with the leading components `from` replaced by `to`, when it starts with them.
fn swap_prefix(name: &str, from: &str, to: &str) -> Option<String> {
    let rest = name.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('.')).then(|| format!("{to}{rest}"))
}

impl ModelLayout {
    /// Every parameter name the layout needs, without repeats, in declaration order.
    pub fn parameter_names(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let names = self
            .slots
            .iter()
            .flat_map(|s| std::iter::once(&s.weight).chain(s.bias.iter()))
            .chain(self.params.iter().map(|p| &p.name));
        for n in names {
            if seen.insert(n.clone()) {
                out.push(n.clone());
            }
        }
        out
    }

    /// Whether the stored weight `name` matches one of the [`ModelLayout::ignorable`] patterns.
    pub fn is_ignorable(&self, name: &str) -> bool {
        self.ignorable.iter().any(|p| glob(p, name))
    }

    /// The slot called `name`.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// The part the parameter `name` (a slot's weight or bias, or a declared parameter)
    /// belongs to; `None` when the layout does not declare it.
    pub fn part_of(&self, name: &str) -> Option<Part> {
        self.slots
            .iter()
            .find(|s| s.weight == name || s.bias.as_deref() == Some(name))
            .map(|s| s.part)
            .or_else(|| self.params.iter().find(|p| p.name == name).map(|p| p.part))
    }

    /// The module name (transformers', PEFT's) of the stored name or slot `name`
    /// ([`ModelLayout::module_names`]); `name` itself when no rewrite applies.
    pub fn module_name(&self, name: &str) -> String {
        self.module_names
            .iter()
            .find_map(|m| swap_prefix(name, &m.stored, &m.module))
            .unwrap_or_else(|| name.to_string())
    }

    /// The stored name (the slot's) of `name`, which may be spelled either way: a module
    /// name is rewritten back, a stored name is returned as it is.
    pub fn stored_name(&self, name: &str) -> String {
        self.module_names
            .iter()
            .find_map(|m| swap_prefix(name, &m.module, &m.stored))
            .unwrap_or_else(|| name.to_string())
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod module_name_tests {
    use super::*;

    fn layout(rules: &[(&str, &str)]) -> ModelLayout {
        ModelLayout {
            module_names: rules.iter().map(|(s, m)| ModuleName::new(*s, *m)).collect(),
            ..ModelLayout::default()
        }
    }

    #[test]
    fn llava_and_qwen2_vl_names_both_ways() {
        // LlavaForConditionalGeneration._checkpoint_conversion_mapping (transformers 4.57).
        let llava = layout(&[
            ("language_model.model", "model.language_model"),
            ("vision_tower", "model.vision_tower"),
            ("multi_modal_projector", "model.multi_modal_projector"),
            ("language_model.lm_head", "lm_head"),
        ]);
        let q = "language_model.model.layers.0.self_attn.q_proj";
        assert_eq!(
            llava.module_name(q),
            "model.language_model.layers.0.self_attn.q_proj"
        );
        assert_eq!(llava.stored_name(&llava.module_name(q)), q);
        assert_eq!(llava.stored_name(q), q, "a stored name reads as itself");
        assert_eq!(llava.module_name("language_model.lm_head"), "lm_head");
        assert_eq!(llava.stored_name("lm_head"), "language_model.lm_head");
        // Whole components only.
        assert_eq!(llava.module_name("vision_towers.x"), "vision_towers.x");
        // Qwen2VLForConditionalGeneration's.
        let qwen = layout(&[
            ("model", "model.language_model"),
            ("visual", "model.visual"),
        ]);
        assert_eq!(
            qwen.module_name("model.layers.1.mlp.up_proj"),
            "model.language_model.layers.1.mlp.up_proj"
        );
        assert_eq!(
            qwen.module_name("visual.blocks.0.attn.qkv"),
            "model.visual.blocks.0.attn.qkv"
        );
        assert_eq!(qwen.module_name("lm_head"), "lm_head");
        assert_eq!(
            qwen.stored_name("model.visual.blocks.0.attn.qkv"),
            "visual.blocks.0.attn.qkv"
        );
        assert_eq!(
            qwen.stored_name("model.language_model.layers.1.mlp.up_proj"),
            "model.layers.1.mlp.up_proj"
        );
        assert_eq!(
            qwen.stored_name("model.layers.1.mlp.up_proj"),
            "model.layers.1.mlp.up_proj"
        );
        assert_eq!(
            layout(&[]).module_name("model.layers.0.q"),
            "model.layers.0.q"
        );
    }
}

#[cfg(test)]
mod glob_tests {
    #[test]
    fn star_matches_any_run() {
        use super::glob;
        assert!(glob(
            "*rotary_emb.inv_freq",
            "model.layers.0.self_attn.rotary_emb.inv_freq"
        ));
        assert!(glob("lm_head.weight", "lm_head.weight"));
        assert!(!glob("lm_head.weight", "lm_head.weight2"));
        assert!(glob("vision_tower.*", "vision_tower.a.b"));
        assert!(glob("a*b*c", "a-b-c") && !glob("a*b*c", "a-c-b"));
        assert!(!glob("ab*ba", "aba"));
    }
}

/// One piece of a forward pass cut at block boundaries (see [`ModelLayout::num_blocks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPart {
    /// Token ids to the first block's input.
    Embed,
    /// Block `i`: hidden states in, hidden states out.
    Block(usize),
    /// The last block's output to the final hidden states (the final norm).
    Final,
    /// Pixel values (and the patch grid, passed as the positions) to image features, one row
    /// per placeholder position (`crate::vision`).
    Images,
}

impl ForwardPart {
    /// The values that cross the boundary: (part, block index).
    pub fn to_ffi(self) -> (u8, u32) {
        match self {
            Self::Embed => (0, 0),
            Self::Block(i) => (1, i as u32),
            Self::Final => (2, 0),
            Self::Images => (3, 0),
        }
    }

    /// Reads the values that crossed the boundary.
    pub fn from_ffi(part: u8, index: u32) -> Option<Self> {
        match part {
            0 => Some(Self::Embed),
            1 => Some(Self::Block(index as usize)),
            2 => Some(Self::Final),
            3 => Some(Self::Images),
            _ => None,
        }
    }
}
