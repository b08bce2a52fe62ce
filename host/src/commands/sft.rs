//! `swift sft` and `swift pt`: fine-tune a model (LoRA or full) on datasets.
//!
//! Settings come from flags (ms-swift's names), `--config FILE` and `SWIFT_*` variables
//! (`crate::config::layered`). The tuner is resolved by name in the tuner registry
//! (`swift list tuners`); the registered tuner picks the slots (`--target_modules`), and the
//! trainer (swift-train) attaches the adapter tensors for the registered names `lora` and `full`.
//! `pt` trains on every token of each row; `sft` on the answer tokens the template marks, times
//! their loss scale.
//!
//! The run folder (`--output_dir`, default `output/<model>/v<N>-<timestamp>/`) gets `args.json`
//! (every resolved setting and the loaded plugins), `logging.jsonl` and `checkpoint-N/` folders
//! (PEFT layout for LoRA; model.safetensors + config + tokenizer files for full training), each
//! with a copy of `args.json` so `swift infer --adapters CKPT` finds the model and template.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use swift_data::{open_datasets, DatasetOptions};
use swift_plugin_api::model::SlotKind;
use swift_template::{EncodeOptions, Encoder, LossScale, RenderOptions};
use swift_train::trainer::PackingConfig;
use swift_train::{
    save_safetensors, AdamWConfig, EncodedRow, Lora, RunDir, StepInfo, TrainConfig, TrainError,
    TrainHooks,
};

use crate::cli::parse_bool;
use crate::commands::infer::ModelBundle;
use crate::config::{layered, GlobalSettings};

/// Flags of `swift sft` / `swift pt` (every one optional here: defaults live in [`SftSettings`]).
#[derive(Debug, Args, Serialize, Default)]
pub struct SftArgs {
    /// A model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The model family (`swift list models`); default: from config.json.
    #[arg(long = "model-type")]
    pub model_type: Option<String>,
    /// The chat template; default: the tokenizer's chat_template, else the family's.
    #[arg(long)]
    pub template: Option<String>,
    /// System message (replaces the template's default).
    #[arg(long)]
    pub system: Option<String>,
    /// Datasets (files or registered names, NAME#N samples N rows). Repeatable.
    #[arg(long, num_args = 1..)]
    pub dataset: Vec<String>,
    /// Validation datasets (evaluated every --eval_steps).
    #[arg(long = "val-dataset", num_args = 1..)]
    pub val_dataset: Vec<String>,
    /// Without --val_dataset: the share of the (shuffled) rows held out for validation.
    #[arg(long = "split-dataset-ratio")]
    pub split_dataset_ratio: Option<f64>,
    /// Evaluate every N steps (default: --save_steps) and at the end, when there are
    /// validation rows.
    #[arg(long = "eval-steps")]
    pub eval_steps: Option<u64>,
    /// Rows per forward/backward pass inside a micro-batch (default 1: the least memory, no
    /// padding; 0: the whole micro-batch at once). The gradient is the same.
    #[arg(long = "rows-per-pass")]
    pub rows_per_pass: Option<usize>,
    /// Recompute each transformer block's activations in the backward pass instead of keeping
    /// them (less memory, about one extra forward pass of time; the gradient is the same).
    /// Default false: with one row per pass the activations are already small, and the extra
    /// forward costs about a quarter of the speed.
    #[arg(long = "gradient-checkpointing", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub gradient_checkpointing: Option<bool>,
    #[arg(long = "max-length")]
    pub max_length: Option<usize>,
    /// Pack rows end to end into sequences of --max_length tokens (each row attends only to
    /// itself; --per_device_train_batch_size then counts packed sequences).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub packing: Option<bool>,
    /// binpack (longest rows first, into the emptiest sequence with room; ms-swift's default)
    /// or sequential (in row order).
    #[arg(long = "packing-strategy")]
    pub packing_strategy: Option<String>,
    /// delete, left or right.
    #[arg(long = "truncation-strategy")]
    pub truncation_strategy: Option<String>,
    #[arg(long = "loss-scale")]
    pub loss_scale: Option<String>,
    /// lora or full (`swift list tuners`); `--train_type` is the old name.
    #[arg(long = "tuner-type", alias = "train-type")]
    pub tuner_type: Option<String>,
    #[arg(long = "lora-rank")]
    pub lora_rank: Option<i64>,
    #[arg(long = "lora-alpha")]
    pub lora_alpha: Option<f64>,
    #[arg(long = "lora-dropout")]
    pub lora_dropout: Option<f64>,
    /// all-linear (every linear slot but the output projection) or slot names (q_proj, ...).
    #[arg(long = "target-modules", num_args = 1..)]
    pub target_modules: Vec<String>,
    /// Layers trained whole beside the LoRA adapters and saved in the adapter (PEFT
    /// `modules_to_save`): slot names or their last parts (lm_head, embed_tokens), or
    /// all-embedding.
    #[arg(long = "modules-to-save", num_args = 1..)]
    pub modules_to_save: Vec<String>,
    /// Scale LoRA by alpha/√r (the `rslora` tuner sets it).
    #[arg(long = "use-rslora", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_rslora: Option<bool>,
    /// DoRA on top of LoRA (the `dora` tuner sets it).
    #[arg(long = "use-dora", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_dora: Option<bool>,
    /// LoRA initialisation: true, gaussian, pissa or olora.
    #[arg(long = "init-weights")]
    pub init_weights: Option<String>,
    /// LoRA+: B's learning rate over A's (the `lora_plus` tuner defaults to 16).
    #[arg(long = "lora-lr-ratio", alias = "lorap-lr-ratio")]
    pub lora_lr_ratio: Option<f64>,
    /// Parameters kept frozen (name prefixes or * patterns), for the full and freeze tuners.
    #[arg(long = "freeze-parameters", num_args = 1..)]
    pub freeze_parameters: Vec<String>,
    /// Parameters trained even if --freeze_parameters matches them.
    #[arg(long = "trainable-parameters", num_args = 1..)]
    pub trainable_parameters: Vec<String>,
    /// Continue from a checkpoint of an earlier run with the same settings (its optimizer state,
    /// schedule, data position and random draws).
    #[arg(long = "resume-from-checkpoint", value_name = "DIR")]
    pub resume_from_checkpoint: Option<PathBuf>,
    /// LISA: decoder layers trained at a time (the `lisa` tuner defaults to 2; 0 = off).
    #[arg(long = "lisa-activated-layers")]
    pub lisa_activated_layers: Option<usize>,
    /// LISA: steps between re-drawing the active layers (default 20).
    #[arg(long = "lisa-step-interval")]
    pub lisa_step_interval: Option<u64>,
    /// LLaMA-Pro: new blocks to insert (must divide the number of layers; default 4).
    #[arg(long = "llamapro-num-new-blocks")]
    pub llamapro_num_new_blocks: Option<usize>,
    #[arg(long = "learning-rate")]
    pub learning_rate: Option<f64>,
    /// cosine, linear or constant.
    #[arg(long = "lr-scheduler-type")]
    pub lr_scheduler_type: Option<String>,
    #[arg(long = "warmup-ratio")]
    pub warmup_ratio: Option<f64>,
    #[arg(long = "warmup-steps")]
    pub warmup_steps: Option<u64>,
    #[arg(long = "num-train-epochs")]
    pub num_train_epochs: Option<f64>,
    /// Overrides --num_train_epochs.
    #[arg(long = "max-steps")]
    pub max_steps: Option<u64>,
    #[arg(long = "per-device-train-batch-size")]
    pub per_device_train_batch_size: Option<usize>,
    #[arg(long = "gradient-accumulation-steps")]
    pub gradient_accumulation_steps: Option<usize>,
    /// 0 turns clipping off.
    #[arg(long = "max-grad-norm")]
    pub max_grad_norm: Option<f64>,
    #[arg(long = "weight-decay")]
    pub weight_decay: Option<f64>,
    #[arg(long = "adam-beta1")]
    pub adam_beta1: Option<f64>,
    #[arg(long = "adam-beta2")]
    pub adam_beta2: Option<f64>,
    #[arg(long = "adam-epsilon")]
    pub adam_epsilon: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of NAME#N sampling.
    #[arg(long = "data-seed")]
    pub data_seed: Option<u64>,
    /// Shuffle the rows once they are read (default true).
    #[arg(long = "dataset-shuffle", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub dataset_shuffle: Option<bool>,
    /// Reshuffle every epoch (default true).
    #[arg(long = "train-dataloader-shuffle", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub train_dataloader_shuffle: Option<bool>,
    #[arg(long = "logging-steps")]
    pub logging_steps: Option<u64>,
    #[arg(long = "save-steps")]
    pub save_steps: Option<u64>,
    #[arg(long = "save-total-limit")]
    pub save_total_limit: Option<usize>,
    #[arg(long = "output-dir")]
    pub output_dir: Option<PathBuf>,
    /// Fills {{name}} in datasets such as `identity`.
    #[arg(long = "model-name")]
    pub model_name: Option<String>,
    /// Fills {{author}} in datasets such as `identity`.
    #[arg(long = "model-author")]
    pub model_author: Option<String>,
    /// float32, bfloat16 or float16.
    #[arg(long = "torch-dtype")]
    pub torch_dtype: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Skip (and count) malformed rows and rows that fail to encode.
    #[arg(long = "skip-bad-rows", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub skip_bad_rows: Option<bool>,
    /// QLoRA: freeze the base's linear slots quantized by this quantizer (`bnb`; `swift list
    /// quantizers`) and train the tuner over them.
    #[arg(long = "quant-method")]
    pub quant_method: Option<String>,
    /// QLoRA: bits of the quantized base (4 or 8).
    #[arg(long = "quant-bits")]
    pub quant_bits: Option<u8>,
}

/// Every setting, with ms-swift's defaults (where it has hidden ones, see shared/PEER.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SftSettings {
    pub model: Option<PathBuf>,
    pub model_type: Option<String>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub dataset: Vec<String>,
    pub val_dataset: Vec<String>,
    pub split_dataset_ratio: f64,
    pub eval_steps: Option<u64>,
    pub rows_per_pass: usize,
    pub gradient_checkpointing: bool,
    pub max_length: usize,
    pub packing: bool,
    pub packing_strategy: String,
    pub truncation_strategy: String,
    pub loss_scale: String,
    pub tuner_type: String,
    pub lora_rank: i64,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    pub modules_to_save: Vec<String>,
    pub use_rslora: Option<bool>,
    pub use_dora: Option<bool>,
    pub init_weights: Option<String>,
    pub lora_lr_ratio: Option<f64>,
    pub freeze_parameters: Vec<String>,
    pub trainable_parameters: Vec<String>,
    pub lisa_activated_layers: Option<usize>,
    pub lisa_step_interval: Option<u64>,
    pub llamapro_num_new_blocks: Option<usize>,
    pub resume_from_checkpoint: Option<PathBuf>,
    /// Default: 1e-4 for adapters, 1e-5 for full training.
    pub learning_rate: Option<f64>,
    pub lr_scheduler_type: String,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<u64>,
    pub num_train_epochs: f64,
    pub max_steps: Option<u64>,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub seed: u64,
    pub data_seed: Option<u64>,
    pub dataset_shuffle: bool,
    pub train_dataloader_shuffle: bool,
    pub logging_steps: u64,
    pub save_steps: u64,
    pub save_total_limit: Option<usize>,
    pub output_dir: Option<PathBuf>,
    pub model_name: Option<String>,
    pub model_author: Option<String>,
    pub torch_dtype: Option<String>,
    pub device: String,
    pub skip_bad_rows: bool,
    pub quant_method: Option<String>,
    pub quant_bits: Option<u8>,
}

impl Default for SftSettings {
    fn default() -> Self {
        Self {
            model: None,
            model_type: None,
            template: None,
            system: None,
            dataset: Vec::new(),
            val_dataset: Vec::new(),
            split_dataset_ratio: 0.0,
            eval_steps: None,
            rows_per_pass: 1,
            gradient_checkpointing: false,
            max_length: 2048,
            packing: false,
            packing_strategy: "binpack".into(),
            truncation_strategy: "delete".into(),
            loss_scale: "default".into(),
            tuner_type: "lora".into(),
            lora_rank: 8,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            target_modules: vec!["all-linear".into()],
            modules_to_save: Vec::new(),
            use_rslora: None,
            use_dora: None,
            init_weights: None,
            lora_lr_ratio: None,
            freeze_parameters: Vec::new(),
            trainable_parameters: Vec::new(),
            lisa_activated_layers: None,
            lisa_step_interval: None,
            llamapro_num_new_blocks: None,
            resume_from_checkpoint: None,
            learning_rate: None,
            lr_scheduler_type: "cosine".into(),
            warmup_ratio: 0.0,
            warmup_steps: None,
            num_train_epochs: 3.0,
            max_steps: None,
            per_device_train_batch_size: 1,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.1,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_epsilon: 1e-8,
            seed: 42,
            data_seed: None,
            dataset_shuffle: true,
            train_dataloader_shuffle: true,
            logging_steps: 5,
            save_steps: 500,
            save_total_limit: None,
            output_dir: None,
            model_name: None,
            model_author: None,
            torch_dtype: None,
            device: "auto".into(),
            skip_bad_rows: false,
            quant_method: None,
            quant_bits: None,
        }
    }
}

/// The flags the user gave, as a JSON object (unset flags and empty lists left out).
pub(crate) fn given_flags<T: Serialize>(args: &T) -> Result<Value> {
    let Value::Object(m) = serde_json::to_value(args)? else {
        bail!("flags did not serialise to an object");
    };
    Ok(Value::Object(
        m.into_iter()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .collect(),
    ))
}

/// What every training command loads before its loop: plugins, the resolved tuner, the model
/// and its tokenizer bound to the template (shared by `sft`, `pt` and `rlhf`).
pub(crate) struct Prepared {
    pub report: swift_registry::LoadReport,
    pub tuner_name: String,
    pub tuner: std::sync::Arc<swift_plugin_api::TunerHandle>,
    pub tuner_provenance: String,
    pub model_dir: PathBuf,
    pub family: String,
    pub model: swift_model::LoadedModel,
    pub encoder: Encoder,
    pub template_name: String,
    /// The tuner's record (its host adapter and options).
    pub tuner_record: swift_plugin_api::TunerRecord,
    /// The model folder the user named (for LLaMA-Pro, `model_dir` is the expanded copy).
    pub source_model_dir: PathBuf,
    /// LLaMA-Pro: the new blocks' layer indices, and the temporary expanded model folder.
    pub llamapro_new_layers: Vec<usize>,
    pub _expanded: Option<tempfile::TempDir>,
}

/// Loads plugins, resolves the tuner, loads the model and binds its template with
/// `loss_scale` (sft: the user's; rlhf: `last_round`).
pub(crate) fn prepare(
    s: &SftSettings,
    settings: &GlobalSettings,
    loss_scale: &str,
) -> Result<Prepared> {
    let Some(model_path) = s.model.clone() else {
        bail!("pass --model DIR (a Hugging Face model folder or a .gguf file)");
    };
    if s.dataset.is_empty() {
        bail!("pass --dataset SPEC (a file or a registered dataset name, optionally NAME#N; `swift list datasets`)");
    }
    let report = crate::plugins::load(settings)?;
    let regs = &report.registries;
    let tuner_entry = regs.tuners.resolve(&s.tuner_type)?;
    let tuner_name = tuner_entry.record.name.clone();
    let tuner_provenance = tuner_entry.provenance.to_string();
    let tuner = tuner_entry
        .imp
        .clone()
        .ok_or_else(|| anyhow!("tuner `{tuner_name}` has no behaviour"))?;
    let tuner_record = tuner_entry.record.clone();
    let source_model_dir = crate::commands::infer::model_dir(&model_path)?;
    // LLaMA-Pro trains an expanded copy of the model, written to a temporary folder first.
    let mut llamapro_new_layers = Vec::new();
    let expanded = if tuner_record.adapter() == "llamapro" {
        let dir = tempfile::Builder::new()
            .prefix("swift-llamapro-")
            .tempdir()
            .context("creating a folder for the expanded model")?;
        llamapro_new_layers = swift_train::llamapro::expand(
            &source_model_dir,
            dir.path(),
            s.llamapro_num_new_blocks.unwrap_or(4),
        )?;
        tracing::info!(
            "LLaMA-Pro: new blocks at layers {llamapro_new_layers:?} of {}",
            source_model_dir.display()
        );
        Some(dir)
    } else {
        None
    };
    let bundle = ModelBundle::load(
        expanded
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(&source_model_dir),
        s.model_type.as_deref(),
        s.torch_dtype.as_deref(),
        &s.device,
        regs,
    )?;
    let template = bundle.template(regs, s.template.as_deref())?;
    let template_name = template.name.clone();
    let ModelBundle {
        dir: model_dir,
        family,
        mut model,
        tokenizer,
        ..
    } = bundle;
    if let Some(q) = &s.quant_method {
        crate::commands::quantize::qlora_base(&mut model, regs, q, s.quant_bits, &tuner_name)?;
    }
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: false,
            system: s.system.clone(),
            enable_thinking: None,
        },
        max_length: Some(s.max_length),
        truncation: s.truncation_strategy.parse()?,
        loss_scale: LossScale::parse(loss_scale)?,
    };
    let encoder = Encoder::new(template, tokenizer, options)?;
    Ok(Prepared {
        report,
        tuner_name,
        tuner,
        tuner_provenance,
        model_dir,
        family,
        model,
        encoder,
        template_name,
        tuner_record,
        source_model_dir,
        llamapro_new_layers,
        _expanded: expanded,
    })
}

/// The dataset options of the settings.
pub(crate) fn data_options(s: &SftSettings) -> DatasetOptions {
    let mut data_opts = DatasetOptions {
        skip_bad_rows: s.skip_bad_rows,
        model_name: s.model_name.clone(),
        model_author: s.model_author.clone(),
        ..Default::default()
    };
    if let Some(seed) = s.data_seed {
        data_opts.data_seed = seed;
    }
    data_opts
}

/// `rows` in the seeded order of `--dataset_shuffle` (unchanged when it is off).
pub(crate) fn shuffle_rows<T>(rows: Vec<T>, s: &SftSettings) -> Vec<T> {
    if !s.dataset_shuffle {
        return rows;
    }
    let order = swift_train::trainer::shuffled(rows.len(), s.seed);
    let mut slots: Vec<Option<T>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The tuner's adapter attached to the model.
pub(crate) struct Tuned {
    pub adapter: Option<Lora>,
    pub trainable: Vec<(String, tch::Tensor)>,
    pub targets: Vec<String>,
    pub linear: Vec<String>,
    /// Learning-rate factors (LoRA+) and LISA, for the loop.
    pub lr_factors: Vec<(String, f64)>,
    pub lisa: Option<swift_train::trainer::LisaConfig>,
    /// The base weights themselves train (full, freeze, lisa, llamapro).
    pub full: bool,
}

/// Picks the tuner's slots and attaches its trainable tensors (seeded by `--seed`).
pub(crate) fn attach_tuner(s: &SftSettings, p: &mut Prepared) -> Result<Tuned> {
    tch::manual_seed(s.seed as i64);
    let layout = p.model.layout().clone();
    let linear: Vec<String> = layout
        .slots
        .iter()
        .filter(|sl| sl.kind == SlotKind::Linear)
        .map(|sl| sl.name.clone())
        .collect();
    let tuner_name = &p.tuner_name;
    let targets = p
        .tuner
        .targets(
            &json!({"target_modules": s.target_modules, "output_slot": layout.output_slot}),
            &linear,
        )
        .map_err(|e| anyhow!("tuner `{tuner_name}`: {e}"))?;
    let attached = crate::commands::tuning::attach(
        &mut p.model,
        &p.tuner_record,
        &targets,
        s,
        &p.llamapro_new_layers,
    )
    .with_context(|| format!("tuner `{tuner_name}` ({})", p.tuner_provenance))?;
    let (adapter, trainable) = (attached.lora, attached.trainable);
    let n_train: i64 = trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    let n_total = p.model.num_parameters() + if adapter.is_some() { n_train } else { 0 };
    tracing::info!(
        "tuner `{tuner_name}` on {} slots: {n_train} trainable parameters of {n_total} ({:.4}%)",
        targets.len(),
        100.0 * n_train as f64 / n_total.max(1) as f64
    );
    Ok(Tuned {
        adapter,
        trainable,
        targets,
        linear,
        lr_factors: attached.lr_factors,
        lisa: attached.lisa,
        full: attached.full,
    })
}

/// The learning rate: `--learning_rate`, else 1e-4 for adapters and 1e-5 for full training.
pub(crate) fn learning_rate(s: &SftSettings, tuned: &Tuned) -> f64 {
    s.learning_rate
        .unwrap_or(if tuned.full { 1e-5 } else { 1e-4 })
}

/// Opens the run folder and writes `args.json`: the settings, what was resolved, and `extra`.
pub(crate) fn open_run(
    s: &SftSettings,
    command: &str,
    p: &Prepared,
    tuned: &Tuned,
    train_rows: usize,
    extra: Value,
) -> Result<(RunDir, PathBuf)> {
    let model_label = p
        .source_model_dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let run = RunDir::open(s.output_dir.as_deref(), Path::new("output"), &model_label)?;
    let abs_model = std::fs::canonicalize(&p.model_dir).unwrap_or(p.model_dir.clone());
    let abs_source =
        std::fs::canonicalize(&p.source_model_dir).unwrap_or(p.source_model_dir.clone());
    let n_train: i64 = tuned.trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    let mut args_json = serde_json::to_value(s)?;
    args_json["command"] = json!(command);
    args_json["model"] = json!(abs_source);
    args_json["model_type"] = json!(p.family);
    args_json["template"] = json!(p.template_name);
    args_json["tuner_type"] = json!(p.tuner_name);
    args_json["learning_rate"] = json!(learning_rate(s, tuned));
    if !p.llamapro_new_layers.is_empty() {
        // The run trains an expanded copy; its checkpoints are complete model folders.
        args_json["llamapro_new_layers"] = json!(p.llamapro_new_layers);
    }
    args_json["torch_dtype"] = json!(swift_model::dtype_name(p.model.kind()));
    args_json["device"] = json!(format!("{:?}", p.model.device()));
    args_json["target_slots"] = json!(tuned.targets.len());
    args_json["trainable_parameters"] = json!(n_train);
    args_json["train_rows"] = json!(train_rows);
    args_json["plugins"] = json!(p
        .report
        .plugins
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version, "path": p.path, "sha256": p.sha256}))
        .collect::<Vec<_>>());
    args_json["output_dir"] = json!(run.path());
    if let Value::Object(m) = extra {
        for (k, v) in m {
            args_json[k] = v;
        }
    }
    run.write_args(&args_json)?;
    tracing::info!("run folder: {}", run.path().display());
    Ok((run, abs_model))
}

/// The loop's settings.
pub(crate) fn train_config(s: &SftSettings, learning_rate: f64) -> Result<TrainConfig> {
    Ok(TrainConfig {
        learning_rate,
        lr_scheduler: s
            .lr_scheduler_type
            .parse()
            .map_err(|e: String| anyhow!(e))?,
        warmup_ratio: s.warmup_ratio,
        warmup_steps: s.warmup_steps,
        num_train_epochs: s.num_train_epochs,
        max_steps: s.max_steps,
        batch_size: s.per_device_train_batch_size.max(1),
        grad_accum: s.gradient_accumulation_steps.max(1),
        max_grad_norm: s.max_grad_norm,
        adamw: AdamWConfig {
            beta1: s.adam_beta1,
            beta2: s.adam_beta2,
            eps: s.adam_epsilon,
            weight_decay: s.weight_decay,
        },
        seed: s.seed,
        shuffle: s.train_dataloader_shuffle,
        logging_steps: s.logging_steps.max(1),
        save_steps: s.save_steps,
        save_total_limit: s.save_total_limit,
        pad_id: 0,
        lr_factors: Vec::new(),
        lisa: None,
        resume_from: s.resume_from_checkpoint.clone(),
        eval_steps: s.eval_steps.unwrap_or(s.save_steps),
        eval_on_start: false,
        rows_per_pass: s.rows_per_pass,
        packing: if s.packing {
            Some(PackingConfig {
                max_length: s.max_length,
                strategy: s.packing_strategy.parse().map_err(|e: String| anyhow!(e))?,
            })
        } else {
            None
        },
        gradient_checkpointing: s.gradient_checkpointing,
    })
}

/// The progress bar of a training command.
pub(crate) fn progress_bar(prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// Reads and encodes the rows of `specs`; returns them with the numbers dropped (too long or
/// nothing to train) and failed (skipped with --skip_bad_rows).
fn encode_rows(
    specs: &[String],
    p: &Prepared,
    data_opts: &DatasetOptions,
    s: &SftSettings,
    pretrain: bool,
) -> Result<(Vec<EncodedRow>, usize, usize)> {
    let mut rows: Vec<EncodedRow> = Vec::new();
    let (mut deleted, mut failed) = (0usize, 0usize);
    for item in open_datasets(specs, &p.report.registries, data_opts)? {
        let item = item?;
        match p.encoder.encode(&item.row) {
            Ok(Some(e)) => {
                let mut row = EncodedRow {
                    labels: e.labels,
                    loss_scale: e.loss_scale,
                    input_ids: e.input_ids,
                };
                if pretrain {
                    row.labels = row.input_ids.iter().map(|&t| t as i64).collect();
                    row.loss_scale = vec![1.0; row.input_ids.len()];
                }
                if row.labels.iter().skip(1).any(|&l| l != -100) {
                    rows.push(row);
                } else {
                    deleted += 1;
                }
            }
            Ok(None) => deleted += 1,
            Err(e) if s.skip_bad_rows => {
                tracing::warn!("skipped row at {}:{}: {e}", item.file.display(), item.line);
                failed += 1;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("row at {}:{}", item.file.display(), item.line))
            }
        }
    }
    Ok((rows, deleted, failed))
}

/// `swift sft` (`pretrain = false`) or `swift pt` (`pretrain = true`).
pub fn run(
    args: &SftArgs,
    global: &crate::cli::GlobalArgs,
    settings: &GlobalSettings,
    pretrain: bool,
) -> Result<()> {
    let s: SftSettings = layered(global.config.as_deref(), given_flags(args)?)?;
    let command = if pretrain { "pt" } else { "sft" };
    // Settings errors before anything loads.
    s.packing_strategy
        .parse::<swift_train::PackingStrategy>()
        .map_err(|e| anyhow!(e))?;
    let mut p = prepare(&s, settings, &s.loss_scale)?;

    // Data: read, encode, keep in memory.
    let data_opts = data_options(&s);
    let (rows, deleted, failed) = encode_rows(&s.dataset, &p, &data_opts, &s, pretrain)?;
    if rows.is_empty() {
        bail!("no trainable rows: {deleted} rows were longer than --max_length {} or had nothing to train (use --truncation_strategy right), {failed} failed", s.max_length);
    }
    let mut rows = shuffle_rows(rows, &s);
    // Validation rows: --val_dataset, else the last --split_dataset_ratio of the shuffled rows.
    let val_rows: Vec<EncodedRow> = if !s.val_dataset.is_empty() {
        let (val, _, _) = encode_rows(&s.val_dataset, &p, &data_opts, &s, pretrain)?;
        val
    } else if s.split_dataset_ratio > 0.0 {
        if s.split_dataset_ratio >= 1.0 {
            bail!(
                "--split_dataset_ratio must be below 1, got {}",
                s.split_dataset_ratio
            );
        }
        let n = ((rows.len() as f64) * s.split_dataset_ratio).ceil() as usize;
        if n >= rows.len() {
            bail!(
                "--split_dataset_ratio {} leaves no training rows out of {}",
                s.split_dataset_ratio,
                rows.len()
            );
        }
        rows.split_off(rows.len() - n)
    } else {
        Vec::new()
    };
    if !val_rows.is_empty() {
        tracing::info!("{} validation rows", val_rows.len());
    }
    let tokens: usize = rows.iter().map(|r| r.input_ids.len()).sum();
    tracing::info!(
        "{} rows encoded with template `{}` ({tokens} tokens){}{}",
        rows.len(),
        p.template_name,
        if deleted > 0 {
            format!(
                "; {deleted} rows dropped (too long for --max_length {} or nothing to train)",
                s.max_length
            )
        } else {
            String::new()
        },
        if failed > 0 {
            format!("; {failed} rows failed to encode")
        } else {
            String::new()
        }
    );

    let tuned = attach_tuner(&s, &mut p)?;
    let (mut run, abs_model) = open_run(&s, command, &p, &tuned, rows.len(), json!({}))?;
    let mut cfg = train_config(&s, learning_rate(&s, &tuned))?;
    cfg.lr_factors = tuned.lr_factors.clone();
    cfg.lisa = tuned.lisa;
    let bar = progress_bar(command);
    let mut hooks = Hooks::new(&bar, &p, &tuned, &abs_model, run.path(), cfg.logging_steps);
    if let Some(l) = &tuned.adapter {
        l.set_training(true);
    }
    let summary = swift_train::train_with_eval(
        &p.model,
        &rows,
        &val_rows,
        &tuned.trainable,
        &cfg,
        &mut run,
        &mut hooks,
    )?;
    bar.finish_and_clear();
    let first = summary.losses.first().copied().unwrap_or(f64::NAN);
    let last = summary.losses.last().copied().unwrap_or(f64::NAN);
    eprintln!(
        "{command}: {} steps in {:.1}s ({:.2} s/step, {:.0} tokens/s); loss {first:.4} -> {last:.4}",
        summary.steps,
        summary.seconds,
        summary.seconds / summary.steps.max(1) as f64,
        summary.tokens as f64 / summary.seconds.max(1e-9)
    );
    if let Some(c) = &summary.last_checkpoint {
        eprintln!("last checkpoint: {}", c.display());
        println!("{}", c.display());
    }
    Ok(())
}

/// Progress display and checkpoint writing for the training loops.
pub(crate) struct Hooks<'a> {
    pub bar: indicatif::ProgressBar,
    lora: Option<&'a Lora>,
    model: &'a swift_model::LoadedModel,
    model_dir: &'a Path,
    base_name: String,
    linear: &'a [String],
    args_path: PathBuf,
    logging_steps: u64,
}

impl<'a> Hooks<'a> {
    pub(crate) fn new(
        bar: &indicatif::ProgressBar,
        p: &'a Prepared,
        tuned: &'a Tuned,
        abs_model: &Path,
        run_path: &Path,
        logging_steps: u64,
    ) -> Self {
        Self {
            bar: bar.clone(),
            lora: tuned.adapter.as_ref(),
            model: &p.model,
            model_dir: &p.model_dir,
            base_name: abs_model.to_string_lossy().into_owned(),
            linear: &tuned.linear,
            args_path: run_path.join("args.json"),
            logging_steps,
        }
    }
}

impl TrainHooks for Hooks<'_> {
    fn set_training(&mut self, on: bool) {
        if let Some(l) = self.lora {
            l.set_training(on);
        }
    }

    fn on_step(&mut self, info: &StepInfo) {
        self.bar.set_length(info.total_steps);
        self.bar.set_position(info.step);
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.2}s/step",
            info.loss, info.learning_rate, info.step_time
        ));
        if info.step.is_multiple_of(self.logging_steps)
            || info.step == 1
            || info.step == info.total_steps
        {
            self.bar.suspend(|| {
                tracing::info!(
                    "step {}/{}: loss {:.4}, grad_norm {:.4}, lr {:.3e}, token_acc {:.3}, epoch {:.2}, {:.2}s/step, {:.0} tokens/s",
                    info.step,
                    info.total_steps,
                    info.loss,
                    info.grad_norm,
                    info.learning_rate,
                    info.token_acc,
                    info.epoch,
                    info.step_time,
                    info.tokens as f64 / info.step_time.max(1e-9)
                )
            });
        }
    }

    fn save(&mut self, _step: u64, dir: &Path) -> Result<(), TrainError> {
        let copy = |from: &Path, name: &str| -> Result<(), TrainError> {
            if from.is_file() {
                std::fs::copy(from, dir.join(name)).map_err(|e| TrainError::Io {
                    path: from.to_path_buf(),
                    source: e,
                })?;
            }
            Ok(())
        };
        copy(&self.args_path, "args.json")?;
        match self.lora {
            Some(l) => l.save(dir, &self.base_name, self.linear),
            None => {
                save_safetensors(&dir.join("model.safetensors"), &self.model.state_dict()?)?;
                for f in [
                    "config.json",
                    "generation_config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "vocab.json",
                    "merges.txt",
                ] {
                    copy(&self.model_dir.join(f), f)?;
                }
                Ok(())
            }
        }
    }
}

/// `swift infer --adapters CKPT...`: the checkpoints, and the model and template their
/// `args.json` names (an explicit `--model` wins).
pub struct Adapters {
    pub model: PathBuf,
    pub template: Option<String>,
    pub dirs: Vec<PathBuf>,
    /// Plugin files the training run loaded (DESIGN.md §2: checkpoints reload their plugins).
    pub plugin_files: Vec<PathBuf>,
}

impl Adapters {
    /// Reads the first checkpoint's `args.json` (or the run folder's, one level up).
    pub fn resolve(model: Option<&Path>, dirs: &[PathBuf]) -> Result<Self> {
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
    pub fn with_plugins(&self, settings: &GlobalSettings) -> GlobalSettings {
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
