//! The model interface (DESIGN.md §4), tensor side: [`Model`] (one instantiated family) and
//! [`ModelContext`] (what its `forward` may call). The declarations ([`ModelLayout`], slots,
//! norms) are swift-plugin-api's, re-exported here; its `model` module documents the interface.

pub use swift_plugin_api::model::*;

pub use traits::{Model, ModelContext};

mod traits {
    use swift_plugin_api::model::{ModelLayout, NormKind};
    use tch::Tensor;

    fn no_blocks() -> String {
        "this model family does not offer per-block entry points (Model::has_blocks is false)"
            .to_string()
    }

    /// What the host offers `forward` (see the module documentation for tensor shapes).
    pub trait ModelContext {
        /// Applies the linear slot `slot` to `x` (`[..., in]` → `[..., out]`).
        fn linear(&mut self, slot: &str, x: &Tensor) -> Result<Tensor, String>;
        /// Looks up `ids` in the embedding slot `slot` (`[...]` → `[..., dim]`).
        fn embedding(&mut self, slot: &str, ids: &Tensor) -> Result<Tensor, String>;
        /// Normalises `x` over its last dimension with the norm slot `slot`.
        fn norm(
            &mut self,
            slot: &str,
            x: &Tensor,
            kind: NormKind,
            eps: f64,
        ) -> Result<Tensor, String>;
        /// A declared parameter, by name.
        fn param(&mut self, name: &str) -> Result<Tensor, String>;
        /// Causal attention of block `layer` over its cached keys/values and the new ones.
        /// `scale` defaults to `1/sqrt(head_dim)`.
        fn attention(
            &mut self,
            layer: usize,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            scale: Option<f64>,
        ) -> Result<Tensor, String>;
        /// Non-causal attention without a cache (a vision tower's): `q`, `k`, `v` as for
        /// [`ModelContext::attention`], with as many key/value heads as query heads; `runs`
        /// cuts the sequence into independent runs that attend only within themselves (one per
        /// image; empty: the whole sequence is one run). `scale` defaults to `1/sqrt(head_dim)`.
        fn full_attention(
            &mut self,
            _q: &Tensor,
            _k: &Tensor,
            _v: &Tensor,
            _runs: &[i64],
            _scale: Option<f64>,
        ) -> Result<Tensor, String> {
            Err("this context has no full attention for vision towers".into())
        }
    }

    /// One instantiated model family (a parsed `config.json`).
    pub trait Model: Send + Sync + 'static {
        /// The parameters and structure this configuration needs.
        fn layout(&self) -> ModelLayout;
        /// Token ids and positions `[batch, seq]` → final hidden states `[batch, seq, hidden]`,
        /// every projection through `ctx`.
        fn forward(
            &self,
            ctx: &mut dyn ModelContext,
            input_ids: &Tensor,
            positions: &Tensor,
        ) -> Result<Tensor, String>;

        /// Whether [`Model::embed`], [`Model::block`] and [`Model::final_norm`] are implemented
        /// (gradient checkpointing). When true, `forward(ids, pos)` must equal
        /// `final_norm(block(n−1, … block(0, embed(ids, pos), pos) …, pos))`, and block `i` may
        /// call `attention` for layer `i` only. Randomness inside a block (dropout) is the host's
        /// business: it re-seeds the generator before each block.
        fn has_blocks(&self) -> bool {
            false
        }
        /// Token ids and positions `[batch, seq]` → the first block's input `[batch, seq, hidden]`.
        fn embed(
            &self,
            _ctx: &mut dyn ModelContext,
            _input_ids: &Tensor,
            _positions: &Tensor,
        ) -> Result<Tensor, String> {
            Err(no_blocks())
        }
        /// Block `index` (0-based) applied to `hidden` (`[batch, seq, hidden]`).
        fn block(
            &self,
            _ctx: &mut dyn ModelContext,
            _index: usize,
            _hidden: &Tensor,
            _positions: &Tensor,
        ) -> Result<Tensor, String> {
            Err(no_blocks())
        }
        /// A vision-language family (its layout declares `vision`): pixel values and the
        /// images' patch grids `[images, 3]` (`t, h, w`) → image features `[positions,
        /// hidden]`, one row per placeholder position of the images in order, through the
        /// vision tower and projector (slots and `full_attention`).
        fn encode_images(
            &self,
            _ctx: &mut dyn ModelContext,
            _pixel_values: &Tensor,
            _grid_thw: &Tensor,
        ) -> Result<Tensor, String> {
            Err("this model family reads no images".to_string())
        }
        /// The last block's output → the final hidden states (what `forward` returns).
        fn final_norm(
            &self,
            _ctx: &mut dyn ModelContext,
            _hidden: &Tensor,
        ) -> Result<Tensor, String> {
            Err(no_blocks())
        }
    }
}
