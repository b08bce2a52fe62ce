//! `swift export --model DIR --to_gguf [--gguf_type T] [--output_dir OUT]`: a Hugging Face model
//! folder as one GGUF file (swift-gguf's `convert_hf_to_gguf`).
//!
//! `--output_dir` names the file when it ends in `.gguf`, else the folder that receives
//! `<model>-<type>.gguf` (default: `<model folder>-gguf/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use swift_gguf::{GgmlType, HfToGgufOptions};

/// `--gguf_type`: f32, f16, q8_0, q4_0, q4_1, q4_k or q6_k (any case).
pub fn parse_type(s: &str) -> Result<GgmlType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q4_k" => GgmlType::Q4_K,
        "q6_k" => GgmlType::Q6_K,
        _ => bail!("--gguf_type {s}: choose f32, f16, q8_0, q4_0, q4_1, q4_k or q6_k"),
    })
}

/// Writes the GGUF file for `model` and returns its path.
/// `chat_template` replaces the tokenizer's own in the file.
pub fn run(
    model: &Path,
    ty: GgmlType,
    output: Option<&Path>,
    chat_template: Option<String>,
) -> Result<PathBuf> {
    if !model.join("config.json").is_file() {
        bail!(
            "--model {}: not a Hugging Face model folder (no config.json)",
            model.display()
        );
    }
    let name = model
        .canonicalize()
        .unwrap_or_else(|_| model.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let file_name = format!("{name}-{}.gguf", ty.name().to_ascii_lowercase());
    let out = match output {
        Some(o) if o.extension().is_some_and(|e| e == "gguf") => o.to_path_buf(),
        Some(o) => o.join(&file_name),
        None => model
            .with_file_name(format!("{name}-gguf"))
            .join(&file_name),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let opts = HfToGgufOptions {
        ty,
        name: Some(name),
        chat_template,
    };
    let report = swift_gguf::convert_hf_to_gguf(model, &out, &opts)
        .with_context(|| format!("exporting {} to GGUF", model.display()))?;
    tracing::info!("{report}");
    Ok(out)
}

/// `swift export --adapters CKPT... --to_gguf [--gguf_type f32|f16] [--output_dir OUT]`: each LoRA
/// checkpoint as the GGUF adapter file llama.cpp loads with `--lora` (swift-gguf's
/// `convert_peft_lora_to_gguf`), checked against its base model as `--adapters` is. `--output_dir`
/// names the file when it ends in `.gguf` (one checkpoint), else the folder that receives
/// `<checkpoint>-lora-<type>.gguf` (default: `<checkpoint folder>-gguf/`). Returns the files.
pub fn run_lora(
    args: &swift_spec::ExportSpec,
    ty: GgmlType,
    plugins: &swift_registry::PluginSettings,
) -> Result<Vec<PathBuf>> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16) {
        bail!(
            "--gguf_type {}: a GGUF LoRA adapter is written as f32 or f16",
            ty.name().to_ascii_lowercase()
        );
    }
    args.given
        .refuse(
            &["template"],
            "with --adapters --to_gguf (a GGUF adapter file holds no chat template)",
        )
        .map_err(anyhow::Error::msg)?;
    for d in &args.adapters {
        if !d.is_dir() {
            bail!("--adapters {}: no such checkpoint folder", d.display());
        }
    }
    let single_file = args
        .output_dir
        .as_deref()
        .filter(|o| o.extension().is_some_and(|e| e == "gguf"));
    if single_file.is_some() && args.adapters.len() > 1 {
        bail!(
            "--output_dir names one .gguf file, but {} checkpoints were given: name a folder",
            args.adapters.len()
        );
    }
    let adapters = crate::adapters::Adapters::resolve(args.model.as_deref(), &args.adapters)?;
    let report = adapters.with_plugins(plugins).load()?;
    let base = crate::bundle::model_dir(&adapters.model)?;
    let config_path = base.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let (family, _, _) = crate::bundle::resolve_family(&report.registries, &config, None)?;
    let mut written = Vec::new();
    for dir in &args.adapters {
        crate::adapters::check_base(
            dir,
            &base,
            &family,
            &config,
            args.adapter_check.ignore_adapter_mismatch,
        )?;
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into());
        let file_name = format!("{name}-lora-{}.gguf", ty.name().to_ascii_lowercase());
        let out = match (single_file, args.output_dir.as_deref()) {
            (Some(f), _) => f.to_path_buf(),
            (None, Some(o)) => o.join(&file_name),
            (None, None) => dir.with_file_name(format!("{name}-gguf")).join(&file_name),
        };
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let r = swift_gguf::convert_peft_lora_to_gguf(dir, &config, &out, ty)
            .with_context(|| format!("exporting the adapter {} to GGUF", dir.display()))?;
        tracing::info!(
            "wrote {} ({}): {} LoRA pairs, alpha {}, {} Q/K lora_b permuted for llama.cpp",
            r.path.display(),
            r.architecture,
            r.pairs,
            r.alpha,
            r.permuted
        );
        written.push(out);
    }
    Ok(written)
}
