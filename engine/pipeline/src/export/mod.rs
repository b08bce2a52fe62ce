//! `swift export`: one entry point, one module per kind of export.
//!
//! * `--from_gguf FILE --output_dir DIR`: a GGUF file to a Hugging Face folder (swift-gguf).
//! * `--adapters CKPT --merge_lora true`: LoRA merged into the base weights ([`merge`]).
//! * `--adapters CKPT --to_gguf true`: a LoRA checkpoint as a GGUF adapter file for llama.cpp
//!   ([`gguf::run_lora`]).
//! * `--model DIR --to_gguf [--gguf_type T]`: a Hugging Face folder (or the merged one) to one
//!   GGUF file for llama.cpp ([`gguf`]); `--to_ollama true` adds an Ollama `Modelfile`
//!   ([`ollama`]).

pub mod gguf;
pub mod merge;
pub mod ollama;

use anyhow::{bail, Context, Result};

use swift_spec::ExportSpec;

use swift_registry::PluginSettings;

/// `swift export`; returns the lines the command prints (the paths it wrote, or the
/// quantization summary).
pub fn run(args: &ExportSpec, plugins: &PluginSettings) -> Result<Vec<String>> {
    check_flags(args)?;
    if let Some(gguf) = &args.from_gguf {
        return from_gguf(gguf, args);
    }
    if args.quant.quant_method.is_some() {
        if args.merge_lora.unwrap_or(false) || args.to_gguf.unwrap_or(false) {
            bail!("--quant_method writes a quantized folder on its own: export it in a separate command from --merge_lora / --to_gguf");
        }
        return Ok(vec![crate::quantize::run(args, plugins)?]);
    }
    let merge = args.merge_lora.unwrap_or(false);
    let to_ollama = args.to_ollama.unwrap_or(false);
    let to_gguf = args.to_gguf.unwrap_or(false) || to_ollama;
    if !args.adapters.is_empty() && !merge {
        if !to_gguf || to_ollama {
            bail!("--adapters is exported with --merge_lora true (merged into the model) or with --to_gguf true alone (as GGUF LoRA adapter files for llama.cpp)");
        }
        let ty = gguf::parse_type(&args.gguf_type)?;
        return Ok(gguf::run_lora(args, ty, plugins)?
            .iter()
            .map(|p| p.display().to_string())
            .collect());
    }
    if !merge && !to_gguf {
        bail!(
            "nothing to export: pass --adapters CKPT --merge_lora true, --model DIR --to_gguf, \
             --model DIR --quant_method M --quant_bits B, or --from_gguf FILE"
        );
    }
    // Check the GGUF settings before a long merge.
    let gguf_type = if to_gguf {
        Some(gguf::parse_type(&args.gguf_type)?)
    } else {
        None
    };
    let (model, template) = if merge {
        let merged = merge::run(args, plugins)?;
        if !to_gguf {
            return Ok(vec![merged.dir.display().to_string()]);
        }
        (merged.dir, merged.template)
    } else {
        let Some(m) = &args.model else {
            bail!("--to_gguf needs --model DIR (a Hugging Face model folder)");
        };
        (m.clone(), args.template.clone())
    };
    let Some(ty) = gguf_type else {
        return Ok(Vec::new());
    };
    // With --merge_lora, --output_dir is the merged folder; the GGUF goes next to it.
    let gguf_out = if merge {
        None
    } else {
        args.output_dir.as_deref()
    };
    // The template the model was tuned with (--template, or recorded by a merge) goes into the
    // GGUF file when it is not the tokenizer's own.
    let template = template.or_else(|| recorded_template(&model));
    let chat_template = match &template {
        Some(t) => ollama::chat_template_for(&model, t, plugins)?,
        None => None,
    };
    let out = gguf::run(&model, ty, gguf_out, chat_template)?;
    let mut printed = Vec::new();
    if to_ollama {
        let modelfile = ollama::run(&model, &out, template.as_deref(), plugins)?;
        printed.push(modelfile.display().to_string());
    }
    printed.push(out.display().to_string());
    Ok(printed)
}

/// The flags of each kind of export; a flag of another kind is refused by name.
const QUANT_FLAGS: &[&str] = &[
    "quant_method",
    "quant_bits",
    "dataset",
    "group_size",
    "quant_n_samples",
    "max_length",
    "act_order",
    "quant_lm_head",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "device",
];
const MERGE_GGUF_FLAGS: &[&str] = &[
    "adapters",
    "merge_lora",
    "to_gguf",
    "gguf_type",
    "to_ollama",
    "template",
];

fn check_flags(args: &ExportSpec) -> Result<()> {
    let g = &args.given;
    let msg = anyhow::Error::msg;
    if args.from_gguf.is_some() {
        g.refuse(&["model"], "with --from_gguf").map_err(msg)?;
        g.refuse(QUANT_FLAGS, "with --from_gguf").map_err(msg)?;
        return g
            .refuse(
                MERGE_GGUF_FLAGS,
                "with --from_gguf (it takes only --output_dir)",
            )
            .map_err(msg);
    }
    if args.quant.quant_method.is_some() {
        g.refuse(
            MERGE_GGUF_FLAGS,
            "with --quant_method (a quantized folder is written on its own: export it in a separate command)",
        )
        .map_err(msg)?;
        // The quantizer's scheme reads or refuses the quantization flags by name, and the
        // calibration flags are refused when its plan needs no calibration
        // (`crate::quantize::run`).
        return Ok(());
    }
    g.refuse(
        QUANT_FLAGS,
        "without --quant_method (merging and GGUF export run on the CPU, unquantized)",
    )
    .map_err(msg)?;
    if !args.to_gguf.unwrap_or(false) && !args.to_ollama.unwrap_or(false) {
        g.refuse(&["gguf_type"], "without --to_gguf").map_err(msg)?;
    }
    Ok(())
}

/// `swift_template` of a model folder's config.json (written by `--merge_lora`).
fn recorded_template(model: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(model.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("swift_template")?.as_str().map(String::from)
}

/// `--from_gguf FILE`: the GGUF model as a Hugging Face folder.
fn from_gguf(gguf: &std::path::Path, args: &ExportSpec) -> Result<Vec<String>> {
    if args.merge_lora.is_some() || args.to_gguf.is_some() || !args.adapters.is_empty() {
        bail!("--from_gguf takes only --output_dir");
    }
    let out = match &args.output_dir {
        Some(o) => o.clone(),
        None => {
            let stem = gguf
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::path::PathBuf::from(format!("{stem}-hf"))
        }
    };
    let report = swift_gguf::convert_to_hf(gguf, &out)
        .with_context(|| format!("converting {} to a Hugging Face folder", gguf.display()))?;
    tracing::info!("{report}");
    Ok(vec![out.display().to_string()])
}
