//! Which plugins a command loads: the global `--plugin-dir` / `--plugin-override` flags (plus,
//! for commands given a checkpoint, the plugin files its `args.json` recorded) and
//! `SWIFT_PLUGIN_PATH`; loading them into fresh registries, with what loading carried on past
//! logged as warnings.

use std::path::PathBuf;

use crate::loader::{discover, ListedPlugin, LoadReport, PluginLoader, RegistryError};

/// The plugin settings of one command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSettings {
    /// Plugin directories or files.
    pub plugin_dir: Vec<PathBuf>,
    /// Names allowed to replace registered entries.
    pub plugin_override: Vec<String>,
}

impl PluginSettings {
    /// Loads the built-in plugins and every plugin source named here and in
    /// `SWIFT_PLUGIN_PATH`; bad plugins found by scanning are logged as warnings.
    pub fn load(&self) -> Result<LoadReport, RegistryError> {
        self.load_listing(Vec::new())
    }

    /// [`load`](Self::load), with the records of built-in plugins that live in the tensor engine
    /// registered as built-ins without behaviour (for `swift list` in a process without it).
    pub fn load_listing(&self, listed: Vec<ListedPlugin>) -> Result<LoadReport, RegistryError> {
        let env_path = std::env::var_os("SWIFT_PLUGIN_PATH");
        let sources = discover(&self.plugin_dir, env_path.as_deref());
        let mut loader = PluginLoader::new(self.plugin_override.iter().cloned());
        loader.listed = listed;
        let report = loader.load(&sources)?;
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        for p in &report.plugins {
            tracing::debug!(plugin = %p.name, version = %p.version, path = ?p.path, "loaded plugin");
        }
        Ok(report)
    }
}
