//! Checkpoints given with `--adapters` (`swift infer`, `deploy`, `export --merge_lora`): the
//! model, template and plugin files their `args.json` recorded (an explicit `--model` wins;
//! PEFT's `base_model_name_or_path` is the fallback), attached to a loaded model or merged.
//! Each is first checked against its manifest (`swift_train::check_checkpoint`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use swift_train::Lora;

use swift_registry::PluginSettings;

/// `swift infer --adapters CKPT...`: the checkpoints, and the model and template their
/// `args.json` names (an explicit `--model` wins).
pub struct Adapters {
    pub model: PathBuf,
    pub template: Option<String>,
    pub dirs: Vec<PathBuf>,
    /// Plugin files the training run loaded (ARCHITECTURE.md §3.5: checkpoints reload their plugins).
    pub plugin_files: Vec<PathBuf>,
}

impl Adapters {
    /// Reads the first checkpoint's `args.json` (or the run folder's, one level up).
    pub fn resolve(model: Option<&Path>, dirs: &[PathBuf]) -> Result<Self> {
        for d in dirs {
            swift_train::check_checkpoint(d)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("--adapters {}", d.display()))?;
        }
        let mut args: Option<Value> = None;
        if let Some(first) = dirs.first() {
            if !first.join("adapter_config.json").is_file() {
                bail!(
                    "--adapters {}: not a LoRA checkpoint (no adapter_config.json)",
                    first.display()
                );
            }
            for p in [first.join("args.json"), first.join("../args.json")] {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    args = Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} is not JSON", p.display()))?,
                    );
                    break;
                }
            }
        }
        let from_args = |k: &str| {
            args.as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(String::from)
        };
        let model = match model {
            Some(m) => m.to_path_buf(),
            None => match from_args("model").or_else(|| {
                // PEFT's own record of the base model.
                let cfg =
                    std::fs::read_to_string(dirs.first()?.join("adapter_config.json")).ok()?;
                serde_json::from_str::<Value>(&cfg).ok()?["base_model_name_or_path"]
                    .as_str()
                    .map(String::from)
            }) {
                Some(m) => PathBuf::from(m),
                None => bail!("pass --model: the adapter's args.json does not name its base model"),
            },
        };
        let plugin_files = args
            .as_ref()
            .and_then(|a| a.get("plugins"))
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("path").and_then(Value::as_str).map(PathBuf::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            model,
            template: from_args("template"),
            dirs: dirs.to_vec(),
            plugin_files,
        })
    }

    /// `settings` plus the recorded plugin files that still exist and are not loaded already
    /// (a missing one is a warning: `--plugin-dir` can supply it).
    pub fn with_plugins(&self, settings: &PluginSettings) -> PluginSettings {
        let mut s = settings.clone();
        let listed: Vec<PathBuf> = s
            .plugin_dir
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        for f in &self.plugin_files {
            let Ok(real) = std::fs::canonicalize(f) else {
                tracing::warn!(
                    "the adapter was trained with plugin {}, which no longer exists",
                    f.display()
                );
                continue;
            };
            let covered = listed
                .iter()
                .any(|l| *l == real || real.parent().is_some_and(|p| p == l));
            if !covered {
                s.plugin_dir.push(real);
            }
        }
        s
    }

    /// Attaches every checkpoint's LoRA weights to `model`.
    pub fn attach(&self, model: &mut swift_model::LoadedModel, merge: bool) -> Result<()> {
        for d in &self.dirs {
            let lora =
                Lora::load(model, d).with_context(|| format!("loading adapter {}", d.display()))?;
            lora.set_training(false);
            if merge {
                lora.merge_into(model)
                    .with_context(|| format!("merging adapter {}", d.display()))?;
            }
            tracing::info!(
                "adapter {}: LoRA r={} on {} slots{}",
                d.display(),
                lora.config.r,
                lora.layers.len(),
                if lora.saved_modules.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> =
                        lora.saved_modules.iter().map(|m| m.slot.as_str()).collect();
                    format!(", {} saved whole", names.join(", "))
                }
            );
        }
        Ok(())
    }
}
