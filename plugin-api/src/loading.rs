//! The host's side of loading: opening a plugin file, checking it, and calling its entry points.
//!
//! Each file is opened with its own `lib_header_from_path` + `init_root_module` (abi_stable's
//! `RootModule::load_from_*` helpers cache one library per root-module type, so every later file
//! would silently return the first). Libraries are never unloaded. Built-in plugins yield the same
//! [`PluginLibrary`] value, so everything after opening is one code path.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};

use crate::abi::{
    manifest_from_ffi, BuiltinPlugin, HostServices, HostServicesRef, PluginModuleRef,
};
use crate::registrar::{HostSink, SinkAdapter};
use crate::Manifest;

/// Why a plugin file could not be loaded. Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The file could not be opened as a shared library at all.
    NotALibrary { path: PathBuf, reason: String },
    /// A shared library, but it exports no swift-rs root module.
    NotAPlugin { path: PathBuf, reason: String },
    /// A plugin built with an incompatible plugin-api or abi_stable (version or type layout).
    Incompatible { path: PathBuf, reason: String },
    /// The plugin's root module failed to initialise (its loader returned an error or panicked).
    Broken { path: PathBuf, reason: String },
}

impl LoadError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::NotALibrary { path, .. }
            | LoadError::NotAPlugin { path, .. }
            | LoadError::Incompatible { path, .. }
            | LoadError::Broken { path, .. } => path,
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::NotALibrary { path, reason } => {
                write!(
                    f,
                    "{}: not a loadable shared library: {reason}",
                    path.display()
                )
            }
            LoadError::NotAPlugin { path, reason } => write!(
                f,
                "{}: a shared library but not a swift-rs plugin (no root module; build it with \
                 swift_plugin_api::export_plugin!): {reason}",
                path.display()
            ),
            LoadError::Incompatible { path, reason } => write!(
                f,
                "{}: built against an incompatible plugin API; rebuild it against this swift-rs \
                 checkout: {reason}",
                path.display()
            ),
            LoadError::Broken { path, reason } => {
                write!(
                    f,
                    "{}: the plugin failed to initialise: {reason}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// A plugin whose root module has been found and checked by abi_stable.
#[derive(Clone, Copy)]
pub struct PluginLibrary {
    module: PluginModuleRef,
}

impl PluginLibrary {
    /// Opens a plugin file. The library stays loaded for the life of the process.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let header = lib_header_from_path(path).map_err(|e| classify(path, e))?;
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| classify(path, e))?;
        Ok(Self { module })
    }

    /// The plugins linked into this binary (crates that used `builtin_plugin!`).
    pub fn builtins() -> Vec<Self> {
        inventory::iter::<BuiltinPlugin>
            .into_iter()
            .map(|b| Self {
                module: (b.module)(),
            })
            .collect()
    }

    /// Calls the plugin's `manifest` entry point.
    pub fn manifest(&self) -> Result<Manifest, String> {
        let f = self.module.manifest();
        f().into_result()
            .map(manifest_from_ffi)
            .map_err(|e| e.into_string())
    }

    /// Calls the plugin's `register` entry point, feeding `sink`. `plugin` names the plugin in
    /// errors about its records.
    pub fn register(&self, plugin: &str, sink: &mut dyn HostSink) -> Result<(), String> {
        use abi_stable::{prefix_type::PrefixTypeTrait, sabi_trait::TD_Opaque};
        let host: HostServicesRef = HostServices {
            log: crate::log::forward_to_tracing,
        }
        .leak_into_prefix();
        let mut adapter = SinkAdapter {
            sink,
            plugin: plugin.to_string(),
        };
        let registrar = crate::abi::FfiRegistrar_TO::from_ptr(&mut adapter, TD_Opaque);
        let f = self.module.register();
        f(host, registrar)
            .into_result()
            .map_err(|e| e.into_string())
    }
}

fn classify(path: &Path, e: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    let full = e.to_string();
    // abi_stable's layout report runs to hundreds of lines: keep a summary, log the rest.
    let reason = if let LibraryError::AbiInstability(_) = e {
        tracing::debug!("abi_stable's layout report for {}:\n{full}", path.display());
        "its root module's type layout differs from this swift's (run with --log-level debug for \
         abi_stable's full report)"
            .to_string()
    } else {
        full.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    match e {
        LibraryError::OpenError { .. } => LoadError::NotALibrary { path, reason },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path, reason },
        LibraryError::RootModule { .. } => LoadError::Broken { path, reason },
        _ => LoadError::Incompatible { path, reason },
    }
}
