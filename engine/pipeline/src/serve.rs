//! `swift deploy`: the model (and LoRA adapters by name) handed to swift-serve, which serves
//! them over an OpenAI-compatible HTTP API (continuous batching, per-request adapter choice,
//! streaming, a clean shutdown on Ctrl-C). The model, template and adapters load as in
//! `swift infer` (adapters' args.json supply the model and template when not given).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use swift_serve::{ServeOptions, ServedModel};
use swift_spec::DeploySpec;
use swift_template::Encoder;

use crate::adapters::Adapters;
use crate::bundle::{ModelBundle, ModelText};
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
    let crate::backend::ForModel {
        chosen,
        template_name,
    } = crate::backend::for_model(
        regs,
        &args.backend,
        &args.model.device,
        &args.template,
        &resolved,
        &args.given,
    )?;
    let text = if chosen.is_pt {
        None
    } else {
        args.given
            .refuse(
                &["allow_unused_weights"],
                &format!("to --infer_backend {}", chosen.record.name),
            )
            .map_err(anyhow::Error::msg)?;
        Some(ModelText::open(
            &resolved.model,
            args.model.model_type.as_deref(),
            regs,
        )?)
    };
    let bundle = match text {
        Some(_) => None,
        None => Some(ModelBundle::load_for_decoding(
            &resolved.model,
            args.model.model_type.as_deref(),
            args.model.torch_dtype.as_deref(),
            &args.model.device,
            args.model.allow_unused_weights,
            regs,
        )?),
    };
    let (dir, family, config) = match (&bundle, &text) {
        (Some(b), _) => (&b.dir, &b.family, &b.config),
        (None, Some(t)) => (&t.dir, &t.family, &t.config),
        (None, None) => bail!("no model loaded"),
    };
    for d in &resolved.dirs {
        crate::adapters::check_base(
            d,
            dir,
            family,
            config,
            args.adapter_check.ignore_adapter_mismatch,
        )?;
    }
    let config_len = crate::generate::config_len(config);
    let max_model_len = match (args.server.max_model_len, config_len) {
        (Some(m), _) => m,
        (None, Some(c)) => c,
        (None, None) => bail!(
            "{}/config.json gives no max_position_embeddings: pass --max_model_len N",
            dir.display()
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
            .unwrap_or_else(|| family.clone()),
    };
    if args.server.max_batch_size == 0 {
        bail!("--max_batch_size must be at least 1");
    }
    let (model, template, tokenizer, eos_ids, images, join_at_once) = match (bundle, text) {
        (Some(mut bundle), _) => {
            let template = bundle.template(regs, template_name.as_deref())?;
            // Per-row adapters: the server's switches on the libtorch model.
            let selection = if adapters.is_empty() {
                None
            } else {
                // Each checkpoint read by the tuner that wrote it (the tuner contract).
                let served = adapters
                    .iter()
                    .map(|(name, path)| {
                        let files = swift_train::AdapterFiles::open(path, bundle.model.layout())
                            .with_context(|| format!("--adapters {name}={}", path.display()))?;
                        let tuner = crate::adapters::tuner_for(regs, &files)?;
                        Ok((name.clone(), path.clone(), tuner))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (infos, sel) = swift_serve::adapters::attach(&mut bundle.model, &served)?;
                for a in &infos {
                    tracing::info!(
                        "adapter `{}`: {} ({}on {} slots)",
                        a.name,
                        a.path.display(),
                        a.rank.map(|r| format!("r={r} ")).unwrap_or_default(),
                        a.slots
                    );
                }
                Some(sel)
            };
            let vocab = crate::generate::vocab_size(&bundle.config);
            let description = format!("{} ({}) on libtorch", bundle.dir.display(), bundle.family);
            let images = crate::images::prompt_images(&bundle, args.image.max_pixels, &args.given)?
                .map(std::sync::Arc::new);
            let pt = swift_serve::pt::PtModel::new(bundle.model, selection, vocab, description);
            let join_at_once = pt.small_joins_cheap();
            tracing::debug!(
                "waiting requests join the running batch {}",
                if join_at_once {
                    "at every step (mixed passes on the decoding kernels)"
                } else {
                    "a few at a time"
                }
            );
            let model = swift_plugin_tensors::backend::BackendModelHandle::from_model(Box::new(pt))
                .map_err(anyhow::Error::msg)?;
            (
                model,
                template,
                bundle.tokenizer,
                bundle.eos_ids,
                images,
                join_at_once,
            )
        }
        (None, Some(text)) => {
            let model = chosen.load(
                &text,
                &resolved.model,
                &args.model.device,
                args.model.torch_dtype.as_deref(),
                &adapters,
                args.server.max_batch_size,
                max_model_len,
            )?;
            let template = text.template(regs, template_name.as_deref())?;
            args.given
                .refuse(
                    &["max_pixels"],
                    &format!(
                        "to --infer_backend {}, which takes no images",
                        chosen.record.name
                    ),
                )
                .map_err(anyhow::Error::msg)?;
            let images = Err(format!(
                "--infer_backend {} does not take images",
                chosen.record.name
            ));
            (model, template, text.tokenizer, text.eos_ids, images, false)
        }
        (None, None) => bail!("no model loaded"),
    };
    let options = crate::bundle::prompt_options(&args.template);
    let encoder = Encoder::new(template, tokenizer, options)?;
    let served = ServedModel {
        model,
        capabilities: chosen.record.capabilities.clone(),
        backend: chosen.record.name.clone(),
        encoder,
        images,
        eos_ids,
        max_model_len,
        name,
        join_at_once,
    };
    let options = ServeOptions {
        host: args.server.host.clone(),
        port: args.server.port,
        api_key: args.api.api_key.clone().filter(|k| !k.is_empty()),
        adapters,
        max_batch_size: args.server.max_batch_size,
        max_queue: args.server.max_queue,
        step_delay: args.server.debug_step_delay_ms.map(Duration::from_millis),
    };
    swift_serve::run(served, options).context("swift deploy")
}
