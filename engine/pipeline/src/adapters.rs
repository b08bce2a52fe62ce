//! Checkpoints given with `--adapters` (`swift infer`, `deploy`, `export --merge_lora`): the
//! model, template and plugin files their `args.json` recorded (an explicit `--model` wins;
//! PEFT's `base_model_name_or_path` is the fallback), checked against the base they are given
//! ([`check_base`]: the family and the base facts `args.json` records, `base_model`; the
//! tensors' rank and shapes are checked by the tuner that reads them and by the host against
//! what that tuner declares), attached to a loaded model or merged, through the tuner contract
//! ([`tuner_for`]: the tuner `args.json` records, else the one registered for the checkpoint's
//! `peft_type`).
//! Each is first checked against its manifest (`swift_train::check_checkpoint`).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use swift_plugin_tensors::TunerHandle;
use swift_train::{AdapterFiles, AttachedAdapter};

use swift_registry::{PluginSettings, Registries};

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
            args = recorded_args(first)?;
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

    /// [`check_base`] for every checkpoint against the loaded `bundle`.
    pub fn check_base(&self, bundle: &crate::bundle::ModelBundle, ignore: bool) -> Result<()> {
        for d in &self.dirs {
            check_base(d, &bundle.dir, &bundle.family, &bundle.config, ignore)?;
        }
        Ok(())
    }

    /// Attaches every checkpoint's adapter to `model` (merged into the weights when `merge`).
    pub fn attach(
        &self,
        regs: &Registries,
        model: &mut swift_model::LoadedModel,
        merge: bool,
    ) -> Result<()> {
        for d in &self.dirs {
            let files = AdapterFiles::open(d, model.layout())?;
            let tuner = tuner_for(regs, &files)?;
            let adapter = AttachedAdapter::load(model, &tuner, &files)
                .with_context(|| format!("loading adapter {}", d.display()))?;
            adapter.set_training(false);
            if merge {
                adapter
                    .merge_into(model)
                    .with_context(|| format!("merging adapter {}", d.display()))?;
            }
            tracing::info!(
                "adapter {}: {} on {} slots{}",
                d.display(),
                adapter.plan().summary,
                adapter.plan().slots.len(),
                if adapter.saved_modules.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = adapter
                        .saved_modules
                        .iter()
                        .map(|m| m.slot.as_str())
                        .collect();
                    format!(", {} saved whole", names.join(", "))
                }
            );
        }
        Ok(())
    }
}

/// The tuner whose math reads the checkpoint `files`: the tuner its `args.json` records
/// (`tuner_type`, following the record's `adapter`), else the tuner registered for its
/// adapter_config.json's `peft_type`.
pub fn tuner_for(regs: &Registries, files: &AdapterFiles) -> Result<Arc<TunerHandle>> {
    let recorded = recorded_args(&files.dir)?.and_then(|a| {
        a.get("tuner_type")
            .and_then(Value::as_str)
            .map(String::from)
    });
    if let Some(name) = recorded {
        if let Ok(entry) = regs.tuners.resolve(&name) {
            if let Some(h) = crate::tuning::adapter_of(regs, &entry.record)? {
                return Ok(h);
            }
        }
    }
    let peft_type = files.peft_type();
    let found = regs.tuners.iter().find(|e| {
        e.record.peft_type.as_deref() == Some(peft_type.as_str())
            && e.imp.as_ref().is_some_and(|h| h.has_adapter())
    });
    match found.and_then(|e| e.imp.clone()) {
        Some(h) => Ok(h),
        None => bail!(
            "{}: peft_type {peft_type} is read by no loaded tuner (those with their own math read {}); a plugin's tuner is loaded with --plugin-dir",
            files.config_path.display(),
            regs.tuners
                .iter()
                .filter_map(|e| e.record.peft_type.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A checkpoint's `args.json` (or its run folder's, one level up), if it has one.
pub fn recorded_args(ckpt: &Path) -> Result<Option<Value>> {
    for p in [ckpt.join("args.json"), ckpt.join("../args.json")] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            let v = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The config.json entries a training run records of its base (`args.json`'s `base_model`), and
/// an adapter is checked against: the model type and architecture, and the sizes that fix every
/// parameter's shape.
pub const BASE_KEYS: &[&str] = &[
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
];

/// `args.json`'s `base_model`: the [`BASE_KEYS`] of the base's config.json.
pub fn base_record(config: &Value) -> Value {
    let m: serde_json::Map<String, Value> = BASE_KEYS
        .iter()
        .filter_map(|k| Some((k.to_string(), config.get(*k)?.clone())))
        .collect();
    Value::Object(m)
}

/// Checks that the adapter checkpoint `ckpt` was trained on a base like the one loaded from
/// `base_dir` (family `family`, config.json `config`): the family its `args.json` records
/// (`model_type`) and every recorded `base_model` entry must match. A mismatch is an error
/// naming each difference, unless `ignore` (`--ignore_adapter_mismatch`), then a warning. A
/// checkpoint without `args.json` (PEFT's own) has only its tensors to check (the tuner's).
pub fn check_base(
    ckpt: &Path,
    base_dir: &Path,
    family: &str,
    config: &Value,
    ignore: bool,
) -> Result<()> {
    let Some(args) = recorded_args(ckpt)? else {
        return Ok(());
    };
    let mut diffs = Vec::new();
    if let Some(trained) = args.get("model_type").and_then(Value::as_str) {
        if !trained.eq_ignore_ascii_case(family) {
            diffs.push(format!("family `{trained}` (this model: `{family}`)"));
        }
    }
    if let Some(Value::Object(recorded)) = args.get("base_model") {
        for (k, v) in recorded {
            let here = config.get(k).unwrap_or(&Value::Null);
            if here != v {
                diffs.push(format!("{k} {v} (this model: {here})"));
            }
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "adapter {} was trained on another base than {}: its args.json records {}; pass --model with the model it was trained on, or --ignore_adapter_mismatch true to load it anyway",
        ckpt.display(),
        base_dir.display(),
        diffs.join(", ")
    );
    if ignore {
        tracing::warn!("{msg} (ignored)");
        return Ok(());
    }
    bail!(msg)
}
