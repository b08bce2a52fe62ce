//! `--infer_backend NAME` for `swift infer`, `swift deploy` and `swift eval`: the backend
//! resolved through the registry, what the user asked checked against its declared capabilities
//! (format of `--model`, `--device`, `--torch_dtype`, `--adapters`), and a plugin's backend
//! loaded with a [`LoadRequest`]. [`for_model`] is the one place those commands resolve it, and
//! the template's name, for a model and its adapters. The built-in `pt` backend is the host's
//! own libtorch engine: its model loads through [`crate::bundle::ModelBundle`] (the host's
//! families) and is wrapped in [`swift_serve::pt::PtModel`], so both drive generation through
//! the same [`BackendModelHandle`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use swift_plugin_tensors::backend::{
    AdapterFile, AdapterSupport, BackendHandle, BackendModelHandle, BackendRecord, LoadRequest,
    ModelFormat,
};
use swift_registry::{Provenance, Registries};
use swift_spec::{BackendArgs, GivenFlags, TemplateArgs};

use crate::adapters::Adapters;
use crate::bundle::ModelText;

/// The resolved backend.
pub struct Chosen {
    pub record: BackendRecord,
    handle: Option<std::sync::Arc<BackendHandle>>,
    /// The built-in `pt` (the host's libtorch engine).
    pub is_pt: bool,
}

/// What the user asked of the backend.
struct Wanted<'a> {
    pub model: &'a Path,
    pub device: &'a str,
    pub adapters: usize,
    pub given: &'a GivenFlags,
}

/// What a generating command (`swift infer`, `swift deploy`, `swift eval`) decodes with: the
/// resolved `--infer_backend` and the template's name (`--template`, else the one the
/// adapters' `args.json` recorded, else none: the model's own).
pub struct ForModel {
    pub chosen: Chosen,
    pub template_name: Option<String>,
}

/// Resolves `--infer_backend` for `adapters`' model (and its checkpoints) on `device`, and the
/// template name: the one way infer, deploy and eval choose both.
pub fn for_model(
    regs: &Registries,
    backend: &BackendArgs,
    device: &str,
    template: &TemplateArgs,
    adapters: &Adapters,
    given: &GivenFlags,
) -> Result<ForModel> {
    let chosen = resolve(
        regs,
        &backend.infer_backend,
        &Wanted {
            model: &adapters.model,
            device,
            adapters: adapters.dirs.len(),
            given,
        },
    )?;
    Ok(ForModel {
        chosen,
        template_name: template.template.clone().or(adapters.template.clone()),
    })
}

/// Resolves `--infer_backend` and refuses, by flag, what it does not support.
fn resolve(regs: &Registries, name: &str, wanted: &Wanted) -> Result<Chosen> {
    let entry = regs.backends.resolve(name)?;
    let record = entry.record.clone();
    let is_pt = record.name == "pt" && matches!(entry.provenance, Provenance::Builtin { .. });
    let caps = &record.capabilities;
    let n = &record.name;
    if !wanted.model.exists() {
        bail!("--model {}: no such file or folder", wanted.model.display());
    }
    let format = if wanted.model.is_dir() {
        ModelFormat::Folder
    } else {
        ModelFormat::Gguf
    };
    // A folder reaches a GGUF-only backend through the host's own GGUF export.
    let exportable = format == ModelFormat::Folder && caps.formats.contains(&ModelFormat::Gguf);
    if !(caps.formats.contains(&format) || exportable) {
        let can: Vec<&str> = caps.formats.iter().map(|f| f.as_str()).collect();
        bail!(
            "--infer_backend {n} loads {} models, not {} ({}): convert it (swift export) or choose another backend (swift list backends)",
            can.join(" or "),
            format.as_str(),
            wanted.model.display()
        );
    }
    let device = wanted.device;
    let kind = if device == "auto" || device == "cpu" {
        Some("cpu")
    } else if device == "cuda" || device.starts_with("cuda:") {
        Some("cuda")
    } else {
        None
    };
    match kind {
        // pt's own device parsing names the valid spellings.
        None if is_pt => {}
        None => bail!("unknown --device {device}: cpu, cuda, cuda:N or auto"),
        Some(k) if device != "auto" && !caps.devices.iter().any(|d| d == k) => bail!(
            "--device {device}: --infer_backend {n} runs on {} only",
            caps.devices.join(", ")
        ),
        Some(_) => {}
    }
    if !caps.dtypes {
        wanted
            .given
            .refuse(
                &["torch_dtype"],
                &format!("to --infer_backend {n} (its weights keep the file's types)"),
            )
            .map_err(anyhow::Error::msg)?;
    }
    if wanted.adapters > 0 && caps.adapters == AdapterSupport::None {
        bail!(
            "--adapters: --infer_backend {n} applies no LoRA adapters; merge them into the model first (swift export --adapters CKPT --merge_lora true) or use --infer_backend pt"
        );
    }
    if !is_pt && entry.imp.is_none() {
        bail!("--infer_backend {n}: the backend is listed but its plugin was not loaded (it needs the tensor engine)");
    }
    Ok(Chosen {
        handle: entry.imp.clone(),
        record,
        is_pt,
    })
}

impl Chosen {
    /// Loads `model` with a plugin's backend (not `pt`): the model's text side (tokenizer,
    /// config, template) is the host's; a folder given to a GGUF-only backend is exported to a
    /// cached float32 GGUF file first.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        &self,
        text: &ModelText,
        model: &Path,
        device: &str,
        dtype: Option<&str>,
        adapters: &[(String, PathBuf)],
        max_batch: usize,
        max_len: usize,
    ) -> Result<BackendModelHandle> {
        let handle = self
            .handle
            .as_ref()
            .ok_or_else(|| anyhow!("--infer_backend {} has no behaviour", self.record.name))?;
        let n = &self.record.name;
        handle
            .check_model(&text.config)
            .map_err(|e| anyhow!("--infer_backend {n} cannot serve {}: {e}", model.display()))?;
        let caps = &self.record.capabilities;
        let (format, path) = if model.is_dir() && !caps.formats.contains(&ModelFormat::Folder) {
            (ModelFormat::Gguf, exported_gguf(model)?)
        } else if model.is_dir() {
            (ModelFormat::Folder, model.to_path_buf())
        } else {
            (ModelFormat::Gguf, model.to_path_buf())
        };
        let request = LoadRequest {
            model: model.to_path_buf(),
            format,
            path,
            dir: text.dir.clone(),
            config: text.config.clone(),
            adapters: adapters
                .iter()
                .map(|(name, path)| AdapterFile {
                    name: name.clone(),
                    path: path.clone(),
                })
                .collect(),
            device: if device == "auto" { "cpu" } else { device }.to_string(),
            dtype: dtype.map(str::to_string),
            max_batch,
            max_len,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let started = std::time::Instant::now();
        let loaded = handle
            .load(&request)
            .map_err(|e| anyhow!("--infer_backend {n}: loading {}: {e}", model.display()))?;
        tracing::info!(
            "--infer_backend {n}: {} ({:.2}s)",
            loaded.info().description,
            started.elapsed().as_secs_f64()
        );
        Ok(loaded)
    }
}

/// A folder's float32 GGUF export, kept under `$SWIFT_RS_CACHE/converted/` (keyed by the
/// folder's path and its config.json's modification time).
fn exported_gguf(dir: &Path) -> Result<PathBuf> {
    let config = dir.join("config.json");
    let mtime = std::fs::metadata(&config)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let key: u64 = abs
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    let stem = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let out = crate::bundle::cache_dir()
        .join("converted")
        .join(format!("{stem}-{key:016x}-{mtime}.f32.gguf"));
    if !out.is_file() {
        tracing::info!("exporting {} to {}", dir.display(), out.display());
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        let opts = swift_gguf::HfToGgufOptions {
            ty: swift_gguf::GgmlType::F32,
            name: None,
            chat_template: None,
        };
        swift_gguf::convert_hf_to_gguf(dir, &out, &opts)
            .with_context(|| format!("exporting {} to GGUF", dir.display()))?;
    }
    Ok(out)
}
