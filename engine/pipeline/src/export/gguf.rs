//! `swift export --model DIR --to_gguf [--gguf_type T] [--output_dir OUT]`: a Hugging Face model
//! folder as one GGUF file (swift-gguf's `convert_hf_to_gguf`).
//!
//! `--output_dir` names the file when it ends in `.gguf`, else the folder that receives
//! `<model>-<type>.gguf` (default: `<model folder>-gguf/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use swift_gguf::{GgmlType, HfToGgufOptions};

/// `--gguf_type`: f32, f16, q8_0, q4_0 or q4_1 (any case).
pub fn parse_type(s: &str) -> Result<GgmlType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        _ => bail!("--gguf_type {s}: choose f32, f16, q8_0, q4_0 or q4_1"),
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
