//! The built-in optimizers, registered through the plugin contract (the same `register` path a
//! third-party plugin uses; ARCHITECTURE.md §3.8):
//!
//! * `adamw` (`adamw.rs`): AdamW as `torch.optim.AdamW`, the default `--optimizer`;
//! * `galore` (`galore.rs`): GaLore, as `galore_torch.GaLoreAdamW`; `--use_galore true`;
//! * `q_galore` (`galore.rs`): Q-GaLore (int4 projections, adaptive gap, int8 weights);
//!   `--use_galore true --galore_quantization true`.
//!
//! Each is an `OptimizerKind` whose record (`records.rs`, which the `swift` binary also compiles
//! to list them without libtorch) declares its options; the host passes every option's value
//! (the flag of the same name, else the record's default).

pub mod adamw;
pub mod galore;
mod options;
pub mod records;

use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{Kind, Tensor};

const F32: (Kind, swift_plugin_tensors::tch::Device) =
    (Kind::Float, swift_plugin_tensors::tch::Device::Cpu);

/// An update count as a state tensor (`[1]`, float: exact up to 2²⁴).
fn count_tensor(n: i64) -> Tensor {
    Tensor::from_slice(&[n as f32])
}

/// An update count back from its state tensor.
fn count_of(t: &Tensor) -> Result<i64, String> {
    t.f_to_kind(Kind::Double)
        .and_then(|t| t.f_sum(Kind::Double))
        .and_then(|t| t.f_double_value(&[]))
        .map(|v| v.round() as i64)
        .map_err(|e| e.to_string())
}

/// The kind registered under `name` (for tests and tools that do not load the registries).
pub fn kind(name: &str) -> Option<swift_plugin_tensors::OptimizerKindHandle> {
    use swift_plugin_tensors::optimizer::local_kind;
    match name {
        "adamw" => Some(local_kind(adamw::AdamWKind)),
        "galore" => Some(local_kind(galore::GaLoreKind { quantized: false })),
        "q_galore" => Some(local_kind(galore::GaLoreKind { quantized: true })),
        _ => None,
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for record in records::all() {
        match record.name.as_str() {
            "adamw" => r.optimizer(record, adamw::AdamWKind)?,
            "galore" => r.optimizer(record, galore::GaLoreKind { quantized: false })?,
            "q_galore" => r.optimizer(record, galore::GaLoreKind { quantized: true })?,
            other => return Err(format!("no behaviour for optimizer record `{other}`").into()),
        }
    }
    Ok(())
}

swift_plugin_tensors::builtin_plugin!(register);

#[cfg(test)]
mod tests;
