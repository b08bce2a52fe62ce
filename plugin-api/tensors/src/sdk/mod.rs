//! The plugin SDK: what every decoder needs besides the host's context, written once and used
//! by the built-in families and the example GPT-2 alike.
//!
//! * [`Error`]: one error type for a family's code, with `From` for tch's errors, `String` and
//!   `&str`, and into `String` (what `Model::forward` returns), so plugin code uses `?`;
//! * [`Config`]: config.json values with errors that name the key, and [`Config::typed`] for a
//!   serde struct;
//! * [`Rope`]: rotary embeddings as transformers computes them, with the `rope_scaling` types
//!   `linear`, `dynamic`, `llama3` and `yarn`, partial rotary (`partial_rotary_factor`) and both
//!   layouts ([`RopeStyle::HalfSplit`], Llama/NeoX's `rotate_half`, and
//!   [`RopeStyle::Interleaved`], GPT-J's `rotate_every_two`);
//! * [`rms_norm`] and [`layer_norm`], with or without weight and bias: the arithmetic of the
//!   host's norm slots (`ModelContext::norm` runs these), for norms a family applies itself;
//! * [`Activation`]: the usual `hidden_act` values (`silu`, `gelu`, `gelu_new`, ...), and
//!   [`Activation::gated`] for a gated MLP's `act(gate) · up`.
//!
//! A decoding step's rotary embedding (`plain`), RMS norm, gated product and residual adds
//! ([`residual`]; `step`) run on raw buffers, one pass and at most one allocation each instead of
//! several libtorch operations, rounding bit for bit as those operations do.

mod activation;
mod config;
mod error;
mod norm;
mod plain;
mod rope;
mod shape;
mod step;

pub use activation::Activation;
pub use config::Config;
pub use error::Error;
pub use norm::{layer_norm, rms_norm};
pub use rope::{Rope, RopeStyle};
pub use shape::{numel, shape, Shape};
pub use step::rms_norm_step;

/// `h + y`, a residual connection: one pass on raw buffers for a decoding step's float32
/// activations (the same rounding), libtorch's `add` otherwise.
pub fn residual(h: &tch::Tensor, y: &tch::Tensor) -> Result<tch::Tensor, Error> {
    match step::add(h, y) {
        Some(out) => Ok(out),
        None => Ok(h.f_add(y)?),
    }
}
