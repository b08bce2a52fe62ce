//! # swift-registry: typed registries and plugin loading
//!
//! The mechanism between the contract (`swift-plugin-api`) and the engine (`host`):
//!
//! * [`Registry`]: one kind's entries by name and alias, with provenance and resolution errors
//!   that list close names.
//! * [`Registries`]: one registry per kind (model families, templates, datasets, preprocessors,
//!   tuners, quantizers, inference backends).
//! * [`PluginLoader`]: built-ins (collected with `inventory`), compiled plugins from every
//!   `--plugin-dir` and `SWIFT_PLUGIN_PATH` entry, and text-only plugin files, all checked and
//!   registered through one path.
//! * [`PluginSettings`]: the plugin flags of one command, and loading them.
//! * [`set_tensor_engine`]: how a process that does not link libtorch (the `swift` binary)
//!   reaches the tensor engine for plugins that need it; [`ListedPlugin`]: the engine's
//!   built-ins, known there by their records only.

mod loader;
mod registry;
mod settings;
mod text;

pub use loader::{
    check_manifest, discover, open_checked, set_tensor_engine, ListRow, ListedPlugin, LoadReport,
    LoadedPlugin, PluginLoader, PluginSource, Registries, RegistryError, TensorEngine,
    TensorVersions,
};
pub use registry::{Conflict, Entry, Provenance, Registry, UnknownName};
pub use settings::PluginSettings;
pub use text::parse_text_plugin;
