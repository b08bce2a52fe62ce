//! The host's side of loading: opening a plugin file, checking it, and calling its entry points.
//!
//! Opening a file is two steps, so that the manifest is read before the layout check:
//! [`PluginFile::open`] loads the library and reads its manifest from the plain C symbol
//! [`MANIFEST_SYMBOL`](crate::MANIFEST_SYMBOL) (absent in plugins built before it existed);
//! [`PluginFile::root_module`] then finds the root module with its own
//! `lib_header_from_raw_library` + `init_root_module` (abi_stable's `RootModule::load_from_*`
//! helpers cache one library per root-module type, so every later file would silently return the
//! first), where abi_stable checks its type layout. Libraries are never unloaded. Built-in
//! plugins yield the same [`PluginLibrary`] value, so everything after opening is one code path.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};

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
    /// `differences` are the lines of abi_stable's layout report that say what differs.
    Incompatible {
        path: PathBuf,
        reason: String,
        differences: Vec<String>,
    },
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
            LoadError::Incompatible {
                path,
                reason,
                differences,
            } => {
                write!(
                    f,
                    "{}: built against an incompatible plugin API; rebuild it against this \
                     swift-rs checkout: {reason}",
                    path.display()
                )?;
                if !differences.is_empty() {
                    write!(f, " (abi_stable: {})", differences.join("; "))?;
                }
                Ok(())
            }
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

/// A plugin file that is loaded but whose root module is not yet checked: its manifest can be
/// read first.
pub struct PluginFile {
    path: PathBuf,
    raw: &'static RawLibrary,
}

impl PluginFile {
    /// Loads a shared library. It stays loaded for the life of the process.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let raw = RawLibrary::load_at(path).map_err(|e| classify(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            raw: Box::leak(Box::new(raw)),
        })
    }

    /// The manifest exported under [`MANIFEST_SYMBOL`](crate::MANIFEST_SYMBOL), read without
    /// touching the root module; `Ok(None)` for a plugin built before that symbol existed (or a
    /// library that is no plugin).
    pub fn early_manifest(&self) -> Result<Option<Manifest>, String> {
        let symbol = format!("{}\0", crate::MANIFEST_SYMBOL);
        // SAFETY: the symbol is `extern "C" fn() -> *const c_char` in every plugin that exports
        // it (the export macro writes it); the library is never unloaded.
        let f = match unsafe {
            self.raw
                .get::<extern "C" fn() -> *const std::ffi::c_char>(symbol.as_bytes())
        } {
            Ok(f) => *f,
            Err(_) => return Ok(None),
        };
        let p = f();
        if p.is_null() {
            return Err("its manifest symbol failed (it panicked)".into());
        }
        // SAFETY: a NUL-terminated string the plugin keeps for the life of the process.
        let text = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("its manifest symbol holds no manifest ({e}): {text}"))
    }

    /// Finds the root module; abi_stable checks its type layout here.
    pub fn root_module(&self) -> Result<PluginLibrary, LoadError> {
        // SAFETY: the library is leaked, so the header's 'static references stay valid.
        let header = unsafe { lib_header_from_raw_library(self.raw) }
            .map_err(|e| classify(&self.path, e))?;
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| classify(&self.path, e))?;
        Ok(PluginLibrary { module })
    }
}

impl PluginLibrary {
    /// Opens a plugin file and finds its root module (no early manifest: see [`PluginFile`]).
    /// The library stays loaded for the life of the process.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        PluginFile::open(path)?.root_module()
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
    // abi_stable's layout report runs to hundreds of lines: keep what differs, log the rest.
    if let LibraryError::AbiInstability(_) = e {
        tracing::debug!("abi_stable's layout report for {}:\n{full}", path.display());
        return LoadError::Incompatible {
            path,
            reason: "its root module's type layout differs from this swift's (run with \
                     --log-level debug for abi_stable's full report)"
                .to_string(),
            differences: layout_differences(&full),
        };
    }
    let reason = full.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        LibraryError::OpenError { .. } => LoadError::NotALibrary { path, reason },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path, reason },
        LibraryError::RootModule { .. } => LoadError::Broken { path, reason },
        _ => LoadError::Incompatible {
            path,
            reason,
            differences: Vec::new(),
        },
    }
}

/// The lines of abi_stable's layout report that say what differs: where (the chain of fields
/// from the root module down to the mismatch, `in PluginModule.register`) and each error
/// (`mismatched package: expected swift-plugin-api, found acme`), without the layouts.
pub fn layout_differences(report: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut lines = report.lines().peekable();
    let mut in_trace = false;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.ends_with("error(s)inside:") {
            in_trace = true;
            continue;
        }
        if in_trace {
            if t.starts_with("Layout of expected type:") {
                in_trace = false;
                if !path.is_empty() {
                    out.push(format!("in {}", path.join(" > ")));
                }
                path.clear();
            } else if let Some(f) = t.strip_prefix("field_name:") {
                path.push(format!("field `{f}`"));
            } else if let Some(ty) = t.strip_prefix("type:") {
                if let Some(last) = path.last_mut() {
                    last.push_str(&format!(" ({ty})"));
                }
            }
            continue;
        }
        if let Some(what) = t.strip_prefix("Error:") {
            let mut block = |label: &str| -> String {
                let mut text = Vec::new();
                if lines.peek().map(|l| l.trim()) == Some(label) {
                    lines.next();
                    while let Some(l) = lines.peek() {
                        let l = l.trim();
                        if l.is_empty() || l == "Found:" || l.starts_with("Error:") {
                            break;
                        }
                        text.push(l.to_string());
                        lines.next();
                    }
                }
                text.join(" ")
            };
            let expected = block("Expected:");
            let found = block("Found:");
            out.push(format!("{what}: expected {expected}, found {found}"));
        } else if t == "Extra:" {
            let mut text = Vec::new();
            while let Some(l) = lines.peek() {
                if l.trim().is_empty() {
                    break;
                }
                text.push(l.trim().to_string());
                lines.next();
            }
            if !text.is_empty() {
                out.push(text.join(" "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::layout_differences;

    #[test]
    fn layout_report_keeps_where_and_what_differs() {
        // Shape of abi_stable 0.11's report (layouts elided).
        let report = "\
Compared <this>:
    --- Type Layout ---
    type:PrefixRef<'a, PluginModule>
0 error(s).

1 error(s)inside:
    <other>

    field_name:0
    type:PluginModule
    size:16 align:8

Layout of expected type:
    --- Type Layout ---
    type:PluginModule
        fields:
            field_name:manifest

Layout of found type:
    type:PluginModule


Error:mismatched package
Expected:
    swift-plugin-api
Found:
    acme

";
        assert_eq!(
            layout_differences(report),
            vec![
                "in field `0` (PluginModule)".to_string(),
                "mismatched package: expected swift-plugin-api, found acme".to_string(),
            ]
        );
    }
}
