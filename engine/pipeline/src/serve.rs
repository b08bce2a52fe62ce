//! `swift deploy`: the model (and LoRA adapters by name) handed to swift-serve, which serves
//! them over an OpenAI-compatible HTTP API (continuous batching, per-request adapter choice,
//! streaming, a clean shutdown on Ctrl-C). The model, template and adapters load as in
//! `swift infer` (adapters' args.json supply the model and template when not given).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use swift_serve::{ServeOptions, ServedModel};
use swift_spec::DeploySpec;
use swift_template::Encoder;

use crate::adapters::Adapters;
use crate::bundle::ModelBundle;
use swift_registry::PluginSettings;

/// `NAME=PATH` or `PATH` (named after the folder; `checkpoint-N` folders after their run).
fn parse_adapters(specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(p)),
            _ => {
                let p = PathBuf::from(spec);
                let base = |p: &std::path::Path| {
                    p.file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                let mut name = base(&p);
                if name.starts_with("checkpoint-") {
                    if let Some(run) = p.parent().map(base).filter(|r| !r.is_empty()) {
                        name = format!("{run}-{name}");
                    }
                }
                (name, p)
            }
        };
        if name.is_empty() {
            bail!("--adapters {spec}: give the adapter a name (NAME=CKPT)");
        }
        if !path.join("adapter_config.json").is_file() {
            bail!(
                "--adapters {spec}: {} is not a LoRA checkpoint (no adapter_config.json)",
                path.display()
            );
        }
        if out.iter().any(|(n, _)| *n == name) {
            bail!(
                "--adapters: the name `{name}` is used twice (write NAME=CKPT to tell them apart)"
            );
        }
        out.push((name, path));
    }
    Ok(out)
}

/// `swift deploy`: serves until Ctrl-C.
pub fn run(args: &DeploySpec, plugins: &PluginSettings) -> Result<()> {
    let adapters = parse_adapters(&args.server.adapters)?;
    let dirs: Vec<PathBuf> = adapters.iter().map(|(_, p)| p.clone()).collect();
    let resolved = Adapters::resolve(args.model.model.as_deref(), &dirs)?;
    let report = resolved.with_plugins(plugins).load()?;
    let regs = &report.registries;
    let backend = regs.backends.resolve(&args.backend.infer_backend)?;
    if backend.record.name != "pt" {
        bail!(
            "--infer_backend {}: this swift serves with the built-in `pt` backend only",
            backend.record.name
        );
    }
    let bundle = ModelBundle::load_for_decoding(
        &resolved.model,
        args.model.model_type.as_deref(),
        args.model.torch_dtype.as_deref(),
        &args.model.device,
        args.model.allow_unused_weights,
        regs,
    )?;
    resolved.check_base(&bundle, args.adapter_check.ignore_adapter_mismatch)?;
    let template_name = args.template.template.clone().or(resolved.template.clone());
    let template = bundle.template(regs, template_name.as_deref())?;
    let options = crate::bundle::prompt_options(&args.template);
    let config_len = bundle
        .config
        .get("max_position_embeddings")
        .or_else(|| bundle.config.get("n_positions"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let max_model_len = match (args.server.max_model_len, config_len) {
        (Some(m), _) => m,
        (None, Some(c)) => c,
        (None, None) => bail!(
            "{}/config.json gives no max_position_embeddings: pass --max_model_len N",
            bundle.dir.display()
        ),
    };
    if max_model_len < 2 {
        bail!("--max_model_len must be at least 2");
    }
    let name = match &args.server.served_model_name {
        Some(n) if !n.is_empty() => n.clone(),
        Some(_) => bail!("--served_model_name must not be empty"),
        None => resolved
            .model
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| bundle.family.clone()),
    };
    if args.server.max_batch_size == 0 {
        bail!("--max_batch_size must be at least 1");
    }
    let encoder = Encoder::new(template, bundle.tokenizer, options)?;
    let served = ServedModel {
        model: bundle.model,
        encoder,
        eos_ids: bundle.eos_ids,
        max_model_len,
        name,
    };
    let options = ServeOptions {
        host: args.server.host.clone(),
        port: args.server.port,
        api_key: args.server.api_key.clone().filter(|k| !k.is_empty()),
        adapters,
        max_batch_size: args.server.max_batch_size,
        max_queue: args.server.max_queue,
        step_delay: args.server.debug_step_delay_ms.map(Duration::from_millis),
    };
    swift_serve::run(served, options).context("swift deploy")
}
