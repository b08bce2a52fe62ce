//! The built-in plugins that live in the tensor engine (swift-runtime) because their behaviour
//! needs libtorch: the model families with the `pt` backend, the preference losses, the tuners, the optimizers and the quantizers. The host
//! knows them by their records only, so that `swift list` lists every registry without loading
//! libtorch. The records are those plugins' own `records.rs` files, compiled here as well (plain
//! data: they use nothing of swift-plugin-api but its record types), so they are written once.

use swift_registry::ListedPlugin;

#[path = "../../plugins/models/src/records.rs"]
mod models;

#[path = "../../plugins/losses/src/records.rs"]
mod losses;

#[path = "../../plugins/tuners/src/records.rs"]
mod tuners;

#[path = "../../plugins/optimizers/src/records.rs"]
mod optimizers;

#[path = "../../plugins/quantizers/src/records.rs"]
mod quantizers;

/// The engine's tensor built-ins, as records without behaviour.
pub fn listed() -> Vec<ListedPlugin> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    vec![
        ListedPlugin {
            name: models::PLUGIN.to_string(),
            version: version.clone(),
            models: models::families(),
            backends: vec![models::pt_backend()],
            ..Default::default()
        },
        ListedPlugin {
            name: losses::PLUGIN.to_string(),
            version: version.clone(),
            preference_losses: losses::all(),
            ..Default::default()
        },
        ListedPlugin {
            name: tuners::PLUGIN.to_string(),
            version: version.clone(),
            tuners: tuners::all(),
            ..Default::default()
        },
        ListedPlugin {
            name: optimizers::PLUGIN.to_string(),
            version: version.clone(),
            optimizers: optimizers::all(),
            ..Default::default()
        },
        ListedPlugin {
            name: quantizers::PLUGIN.to_string(),
            version: version.clone(),
            quantizers: quantizers::all(),
            ..Default::default()
        },
    ]
}
