//! `swift deploy`: serve a model (and LoRA adapters by name) over an OpenAI-compatible HTTP API.
//!
//! The model, template and adapters load as in `swift infer` (adapters' args.json supply the
//! model and template when not given); swift-serve does the serving: continuous batching,
//! per-request adapter choice, streaming, and a clean shutdown on Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use swift_serve::{ServeOptions, ServedModel};
use swift_template::{EncodeOptions, Encoder, RenderOptions, Truncation};

use crate::cli::parse_bool;
use crate::commands::infer::ModelBundle;
use crate::config::GlobalSettings;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
    #[arg(
        long,
        value_name = "DIR|FILE.gguf",
        required_unless_present = "adapters"
    )]
    pub model: Option<PathBuf>,
    /// LoRA checkpoints served beside the base model, as NAME=CKPT (or CKPT: named after its
    /// folder). A request's `model` field picks one by name; the base model's name picks none.
    #[arg(long, num_args = 1.., value_name = "NAME=CKPT")]
    pub adapters: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port; the address is printed as `listening on http://HOST:PORT`.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on the /v1 routes.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The name requests use for the base model (default: the model folder's name).
    #[arg(long = "served-model-name")]
    pub served_model_name: Option<String>,
    /// The inference backend (`swift list backends`); `pt` is the built-in one.
    #[arg(long = "infer-backend", default_value = "pt")]
    pub infer_backend: String,
    /// The model family (`swift list models`); default: from config.json.
    #[arg(long = "model-type")]
    pub model_type: Option<String>,
    /// The chat template (`swift list templates`); default: the tokenizer's chat_template, else
    /// the family's default.
    #[arg(long)]
    pub template: Option<String>,
    /// System message used when a request has none (replaces the template's default).
    #[arg(long)]
    pub system: Option<String>,
    /// Most requests (rows) decoded together.
    #[arg(long = "max-batch-size", default_value_t = 16)]
    pub max_batch_size: usize,
    /// Requests that may wait for room in the batch; beyond that the server answers 503.
    #[arg(long = "max-queue", default_value_t = 256)]
    pub max_queue: usize,
    /// Prompt plus answer tokens per request (default: config.json's max_position_embeddings).
    #[arg(long = "max-model-len", alias = "max-length")]
    pub max_model_len: Option<usize>,
    /// float32, bfloat16 or float16 (default: float32 on the CPU, config.json's on CUDA).
    #[arg(long = "torch-dtype")]
    pub torch_dtype: Option<String>,
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Qwen3 thinking switch (templates that support it).
    #[arg(long = "enable-thinking", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_thinking: Option<bool>,
    /// Test hook: sleep this many milliseconds after every decoding step, so tests can hold
    /// requests in flight (queue limits, draining on shutdown).
    #[arg(long = "debug-step-delay-ms", hide = true)]
    pub debug_step_delay_ms: Option<u64>,
}

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

pub fn run(args: &DeployArgs, settings: &GlobalSettings) -> Result<()> {
    let adapters = parse_adapters(&args.adapters)?;
    let dirs: Vec<PathBuf> = adapters.iter().map(|(_, p)| p.clone()).collect();
    let resolved = crate::commands::sft::Adapters::resolve(args.model.as_deref(), &dirs)?;
    let settings = &resolved.with_plugins(settings);
    let report = crate::plugins::load(settings)?;
    let regs = &report.registries;
    let backend = regs.backends.resolve(&args.infer_backend)?;
    if backend.record.name != "pt" {
        bail!(
            "--infer_backend {}: this swift serves with the built-in `pt` backend only",
            backend.record.name
        );
    }
    let bundle = ModelBundle::load(
        &resolved.model,
        args.model_type.as_deref(),
        args.torch_dtype.as_deref(),
        &args.device,
        regs,
    )?;
    let template_name = args.template.clone().or(resolved.template.clone());
    let template = bundle.template(regs, template_name.as_deref())?;
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: true,
            system: args.system.clone(),
            enable_thinking: args.enable_thinking,
        },
        max_length: None,
        truncation: Truncation::Left,
        ..Default::default()
    };
    let config_len = bundle
        .config
        .get("max_position_embeddings")
        .or_else(|| bundle.config.get("n_positions"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let max_model_len = match (args.max_model_len, config_len) {
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
    let name = match &args.served_model_name {
        Some(n) if !n.is_empty() => n.clone(),
        Some(_) => bail!("--served_model_name must not be empty"),
        None => resolved
            .model
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| bundle.family.clone()),
    };
    if args.max_batch_size == 0 {
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
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        adapters,
        max_batch_size: args.max_batch_size,
        max_queue: args.max_queue,
        step_delay: args.debug_step_delay_ms.map(Duration::from_millis),
    };
    swift_serve::run(served, options).context("swift deploy")
}
