//! Loads the built-in plugins and every plugin source named by the settings and
//! `SWIFT_PLUGIN_PATH`, reporting what loading carried on past as warnings.

use anyhow::Result;
use swift_registry::{discover, LoadReport, PluginLoader};

use crate::config::GlobalSettings;

/// Loads all plugins into fresh registries; bad plugins found by scanning are logged as warnings.
pub fn load(settings: &GlobalSettings) -> Result<LoadReport> {
    let env_path = std::env::var_os("SWIFT_PLUGIN_PATH");
    let sources = discover(&settings.plugin_dir, env_path.as_deref());
    let report = PluginLoader::new(settings.plugin_override.iter().cloned()).load(&sources)?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    for p in &report.plugins {
        tracing::debug!(plugin = %p.name, version = %p.version, path = ?p.path, "loaded plugin");
    }
    Ok(report)
}
