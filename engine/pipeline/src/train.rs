//! `swift sft` and `swift pt`: fine-tune a model (LoRA or full) on datasets, and the pieces
//! `swift rlhf` shares (preparing the model, tuner and template; the run folder; the loop's
//! settings; progress and checkpoint hooks).
//!
//! The tuner is resolved by name in the tuner registry (`swift list tuners`); the registered
//! tuner picks the slots (`--target_modules`) and [`crate::tuning`] attaches the tensors.
//! `pt` trains on every token of each row; `sft` on the answer tokens the template marks, times
//! their loss scale.
//!
//! The run folder (a new `v<N>-<timestamp>/` inside `--output_dir`, default `output/<model>`;
//! `--output_dir` itself with `--add_version false`) gets `args.json`
//! (every resolved setting and the loaded plugins), `logging.jsonl` and `checkpoint-N/` folders
//! (PEFT layout for LoRA; model.safetensors + config + tokenizer files for full training), each
//! with a copy of `args.json` so `swift infer --adapters CKPT` finds the model and template.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use swift_data::{open_datasets, DatasetOptions};
use swift_plugin_tensors::model::SlotKind;
use swift_spec::TrainSpec;
use swift_template::{EncodeOptions, Encoder, LossScale, RenderOptions};
use swift_train::trainer::PackingConfig;
use swift_train::{
    save_safetensors, AttachedAdapter, EncodedRow, RunDir, StepInfo, TrainConfig, TrainError,
    TrainHooks, TrainSummary,
};

use crate::bundle::{model_dir, ModelBundle};
use swift_registry::PluginSettings;

/// What every training command loads before its loop: plugins, the resolved tuner, the model
/// and its tokenizer bound to the template (shared by `sft`, `pt` and `rlhf`).
pub struct Prepared {
    pub report: swift_registry::LoadReport,
    pub tuner_name: String,
    pub tuner: std::sync::Arc<swift_plugin_tensors::TunerHandle>,
    pub tuner_provenance: String,
    pub model_dir: PathBuf,
    pub family: String,
    pub model: swift_model::LoadedModel,
    pub encoder: Encoder,
    pub template_name: String,
    /// The tuner's record (its host adapter and options).
    pub tuner_record: swift_plugin_tensors::TunerRecord,
    /// The model folder the user named (for LLaMA-Pro, `model_dir` is the expanded copy).
    pub source_model_dir: PathBuf,
    /// LLaMA-Pro: the new blocks' layer indices, and the temporary expanded model folder.
    pub llamapro_new_layers: Vec<usize>,
    /// The loaded model's config.json (its `base_model` facts go into `args.json`).
    pub base_config: Value,
    pub _expanded: Option<tempfile::TempDir>,
}

/// Loads plugins, resolves the tuner, loads the model and binds its template with
/// `loss_scale` (sft: the user's; rlhf: `last_round`).
pub fn prepare(s: &TrainSpec, plugins: &PluginSettings, loss_scale: &str) -> Result<Prepared> {
    let Some(model_path) = s.model.model.clone() else {
        bail!("pass --model DIR (a Hugging Face model folder or a .gguf file)");
    };
    if s.data.dataset.is_empty() {
        bail!("pass --dataset SPEC (a file or a registered dataset name, optionally NAME#N; `swift list datasets`)");
    }
    if let Some(ck) = &s.trainer.resume_from_checkpoint {
        check_resume(s, ck)?;
    }
    let report = plugins.load()?;
    let regs = &report.registries;
    let tuner_entry = regs.tuners.resolve(&s.tuner.tuner_type)?;
    let tuner_name = tuner_entry.record.name.clone();
    let tuner_provenance = tuner_entry.provenance.to_string();
    let tuner = tuner_entry
        .imp
        .clone()
        .ok_or_else(|| anyhow!("tuner `{tuner_name}` has no behaviour"))?;
    let tuner_record = tuner_entry.record.clone();
    // LLaMA-Pro trains an expanded copy of the model, written to a temporary folder first.
    // Otherwise the bundle resolves (and checks) the folder itself: once, since checking a full
    // checkpoint hashes every file.
    let mut llamapro_new_layers = Vec::new();
    let (llamapro_source, expanded) = if tuner_record.adapter() == "llamapro" {
        let source_model_dir = model_dir(&model_path)?;
        let dir = tempfile::Builder::new()
            .prefix("swift-llamapro-")
            .tempdir()
            .context("creating a folder for the expanded model")?;
        llamapro_new_layers = swift_train::llamapro::expand(
            &source_model_dir,
            dir.path(),
            s.tuner.llamapro_num_new_blocks.unwrap_or(4),
        )?;
        tracing::info!(
            "LLaMA-Pro: new blocks at layers {llamapro_new_layers:?} of {}",
            source_model_dir.display()
        );
        (Some(source_model_dir), Some(dir))
    } else {
        (None, None)
    };
    let bundle = ModelBundle::load(
        expanded
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(model_path.as_path()),
        s.model.model_type.as_deref(),
        s.model.torch_dtype.as_deref(),
        &s.model.device,
        s.model.allow_unused_weights,
        regs,
    )?;
    let source_model_dir = llamapro_source.unwrap_or_else(|| bundle.dir.clone());
    let template = bundle.template(regs, s.template.template.as_deref())?;
    let template_name = template.name.clone();
    let ModelBundle {
        dir: model_dir,
        family,
        mut model,
        tokenizer,
        config: base_config,
        ..
    } = bundle;
    if let Some(q) = &s.quant.quant_method {
        crate::quantize::qlora_base(&mut model, regs, q, s.quant.quant_bits, &tuner_name)?;
    }
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: false,
            system: s.template.system.clone(),
            enable_thinking: s.template.enable_thinking,
        },
        max_length: Some(s.encoding.train_max_length()),
        truncation: s.encoding.truncation_strategy.parse()?,
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
        base_config,
        _expanded: expanded,
    })
}

/// Refuses the training flags that cannot apply to this run (sft and pt; rlhf adds its own).
pub fn check_flags(s: &TrainSpec, pretrain: bool) -> Result<()> {
    let g = &s.given;
    let msg = anyhow::Error::msg;
    if pretrain {
        g.refuse(&["loss_scale"], "to swift pt (it trains on every token)")
            .map_err(msg)?;
    }
    if !s.trainer.packing {
        g.refuse(&["packing_strategy"], "without --packing")
            .map_err(msg)?;
    }
    // --eval_dataset's two meanings first (its refusal says which flag is the loss set).
    crate::eval_train::check_flags(s)?;
    if !s.validation.val_dataset.is_empty() {
        g.refuse(
            &["split_dataset_ratio"],
            "with --val_dataset (the validation rows come from it)",
        )
        .map_err(msg)?;
    } else if s.validation.split_dataset_ratio <= 0.0 && !s.evalscope.eval_use_evalscope {
        g.refuse(
            &["eval_steps", "eval_on_start"],
            "without validation rows (pass --val_dataset or --split_dataset_ratio) or benchmarks (--eval_use_evalscope true --eval_dataset NAME)",
        )
        .map_err(msg)?;
    }
    if s.trainer.add_version {
        g.refuse(
            &["overwrite_output_dir"],
            "with --add_version true (every run writes into a new v<N>-<timestamp> folder; pass --add_version false to write into --output_dir itself)",
        )
        .map_err(msg)?;
    }
    if s.quant.quant_method.is_none() {
        g.refuse(
            &["quant_bits"],
            "without --quant_method (QLoRA's quantizer)",
        )
        .map_err(msg)?;
    }
    Ok(())
}

/// `--split_dataset_ratio`: takes the last `ratio` of the (shuffled) `rows` off as the
/// validation set (at least one row, and at least one left to train on).
pub fn split_validation<T>(rows: &mut Vec<T>, ratio: f64) -> Result<Vec<T>> {
    if ratio >= 1.0 {
        bail!("--split_dataset_ratio must be below 1, got {ratio}");
    }
    let n = ((rows.len() as f64) * ratio).ceil() as usize;
    if n >= rows.len() {
        bail!(
            "--split_dataset_ratio {ratio} leaves no training rows out of {}",
            rows.len()
        );
    }
    Ok(rows.split_off(rows.len() - n))
}

/// `rows` in the seeded order of `--dataset_shuffle` (unchanged when it is off).
pub fn shuffle_rows<T>(rows: Vec<T>, s: &TrainSpec) -> Vec<T> {
    if !s.trainer.dataset_shuffle {
        return rows;
    }
    let order = swift_train::trainer::shuffled(rows.len(), s.trainer.seed);
    let mut slots: Vec<Option<T>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The tuner's adapter attached to the model.
pub struct Tuned {
    pub adapter: Option<AttachedAdapter>,
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
pub fn attach_tuner(s: &TrainSpec, p: &mut Prepared) -> Result<Tuned> {
    tch::manual_seed(s.trainer.seed as i64);
    let layout = p.model.layout().clone();
    let linear: Vec<String> = layout
        .slots
        .iter()
        .filter(|sl| sl.kind == SlotKind::Linear)
        .map(|sl| sl.name.clone())
        .collect();
    let tuner_name = &p.tuner_name;
    // Names may be given as transformers' modules (`model.language_model.layers.0.mlp`, as
    // PEFT and ms-swift users write them): slots carry the stored names.
    let slot_names =
        |names: &[String]| -> Vec<String> { names.iter().map(|n| layout.stored_name(n)).collect() };
    let target_modules = slot_names(&s.tuner.target_modules);
    let targets = p
        .tuner
        .targets(
            &json!({"target_modules": target_modules, "output_slot": layout.output_slot}),
            &linear,
        )
        .map_err(|e| anyhow!("tuner `{tuner_name}`: {e}"))?;
    let math = crate::tuning::adapter_of(&p.report.registries, &p.tuner_record)?;
    // --freeze_vit/--freeze_aligner/--freeze_llm: no adapters on a frozen part's slots (from
    // all-linear), a whole-parameter tuner's frozen parts added to --freeze_parameters.
    let model_name = s
        .model
        .model
        .as_deref()
        .map(|m| m.display().to_string())
        .unwrap_or_default();
    crate::vision_train::check(&layout, &s.given, &model_name)?;
    let targets =
        crate::vision_train::filter_targets(&layout, &s.vision, &s.tuner.target_modules, targets)?;
    let mut tuner_flags = s.tuner.clone();
    tuner_flags.target_modules = target_modules;
    tuner_flags.modules_to_save = slot_names(&s.tuner.modules_to_save);
    if math.is_none() {
        let names: Vec<String> = p.model.state_dict()?.into_iter().map(|(n, _)| n).collect();
        tuner_flags
            .freeze_parameters
            .extend(crate::vision_train::frozen_parameters(
                &layout, &s.vision, &names,
            ));
    }
    let attached = crate::tuning::attach(
        &mut p.model,
        &p.tuner_record,
        math.as_deref(),
        &targets,
        &tuner_flags,
        &s.given,
        &p.llamapro_new_layers,
    )
    .with_context(|| format!("tuner `{tuner_name}` ({})", p.tuner_provenance))?;
    let (adapter, trainable) = (attached.adapter, attached.trainable);
    let mut lr_factors = attached.lr_factors;
    let lr = default_learning_rate(s, attached.full);
    let names: Vec<String> = trainable.iter().map(|(n, _)| n.clone()).collect();
    lr_factors.extend(crate::vision_train::lr_factors(
        &layout, &s.vision, lr, &names,
    ));
    if let Some(a) = &adapter {
        crate::training_modes::training_attention(&mut p.model, a, s.encoding.train_max_length())?;
    }
    let n_train: i64 = trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    let n_total = p.model.num_parameters() + if adapter.is_some() { n_train } else { 0 };
    tracing::info!(
        "tuner `{tuner_name}` on {} slots: {n_train} trainable parameters of {n_total} ({:.4}%)",
        targets.len(),
        100.0 * n_train as f64 / n_total.max(1) as f64
    );
    if let Some(lisa) = &attached.lisa {
        let at_once =
            swift_train::trainer::lisa_trainable_at_once(&trainable, lisa.activated_layers);
        tracing::info!(
            "LISA trains at most {at_once} of them at a time ({:.4}%): {} decoder layers per {} steps, with the tensors outside the layers",
            100.0 * at_once as f64 / n_total.max(1) as f64,
            lisa.activated_layers,
            lisa.step_interval
        );
    }
    Ok(Tuned {
        adapter,
        trainable,
        targets,
        linear,
        lr_factors,
        lisa: attached.lisa,
        full: attached.full,
    })
}

/// `--resume_from_checkpoint CKPT`: complete (its manifest verified), and not inside the folder
/// this run will write into (with `--add_version false`), which the run would delete or mix with.
fn check_resume(s: &TrainSpec, ck: &Path) -> Result<()> {
    swift_train::check_checkpoint(ck)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("--resume_from_checkpoint {}", ck.display()))?;
    if let (false, Some(out)) = (s.trainer.add_version, &s.trainer.output_dir) {
        if let (Ok(ck), Ok(out)) = (std::fs::canonicalize(ck), std::fs::canonicalize(out)) {
            if ck.starts_with(&out) {
                bail!(
                    "--resume_from_checkpoint {} lies inside --output_dir {}, which --add_version false makes this run write into: leave --add_version on (a resumed run gets its own v<N>-<timestamp> folder) or pass another --output_dir",
                    ck.display(),
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// The learning rate: `--learning_rate`, else 1e-4 for adapters and 1e-5 for full training.
pub fn learning_rate(s: &TrainSpec, tuned: &Tuned) -> f64 {
    default_learning_rate(s, tuned.full)
}

/// `--learning_rate`, else 1e-4 for adapters and 1e-5 when the base weights train (`full`).
fn default_learning_rate(s: &TrainSpec, full: bool) -> f64 {
    s.trainer
        .learning_rate
        .unwrap_or(if full { 1e-5 } else { 1e-4 })
}

/// Opens the run folder and writes `args.json`: the settings, what was resolved, and `extra`.
pub fn open_run(
    s: &TrainSpec,
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
    let parent = match &s.trainer.output_dir {
        Some(d) => d.clone(),
        None => Path::new("output").join(&model_label),
    };
    let run = RunDir::open(
        &parent,
        s.trainer.add_version,
        s.trainer.overwrite_output_dir,
    )?;
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
    // The optimizer that runs (`--use_galore true` is `galore`).
    args_json["optimizer"] = json!(crate::optimizer::name(s)?);
    args_json["learning_rate"] = json!(learning_rate(s, tuned));
    args_json["base_model"] = crate::adapters::base_record(&p.base_config);
    if !p.llamapro_new_layers.is_empty() {
        // The run trains an expanded copy; its checkpoints are complete model folders.
        args_json["llamapro_new_layers"] = json!(p.llamapro_new_layers);
    }
    args_json["torch_dtype"] = json!(swift_model::dtype_name(p.model.kind()));
    args_json["device"] = json!(format!("{:?}", p.model.device()));
    args_json["target_slots"] = json!(tuned.targets.len());
    args_json["trainable_parameters"] = json!(n_train);
    if let Some(lisa) = &tuned.lisa {
        // LISA trains every parameter over the run but only a few layers at a time.
        args_json["trainable_parameters_at_once"] = json!(
            swift_train::trainer::lisa_trainable_at_once(&tuned.trainable, lisa.activated_layers)
        );
    }
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
    if run.writes() {
        tracing::info!("run folder: {}", run.path().display());
    }
    Ok((run, abs_model))
}

/// The loop's settings.
pub fn train_config(
    s: &TrainSpec,
    learning_rate: f64,
    optimizer: swift_train::OptimizerSetting,
) -> Result<TrainConfig> {
    Ok(TrainConfig {
        learning_rate,
        lr_scheduler: s
            .trainer
            .lr_scheduler_type
            .parse()
            .map_err(|e: String| anyhow!(e))?,
        warmup_ratio: s.trainer.warmup_ratio,
        warmup_steps: s.trainer.warmup_steps,
        num_train_epochs: s.trainer.num_train_epochs,
        max_steps: s.trainer.max_steps,
        batch_size: s.trainer.per_device_train_batch_size,
        grad_accum: s.trainer.gradient_accumulation_steps,
        max_grad_norm: s.trainer.max_grad_norm,
        optimizer,
        seed: s.trainer.seed,
        shuffle: s.trainer.train_dataloader_shuffle,
        logging_steps: s.trainer.logging_steps,
        save_steps: s.trainer.save_steps,
        save_total_limit: s.trainer.save_total_limit,
        pad_id: 0,
        lr_factors: Vec::new(),
        lisa: None,
        resume_from: s.trainer.resume_from_checkpoint.clone(),
        eval_steps: s.validation.eval_steps.unwrap_or(s.trainer.save_steps),
        eval_on_start: s.validation.eval_on_start,
        rows_per_pass: s.trainer.rows_per_pass,
        max_pass_tokens: s.trainer.max_pass_tokens,
        packing: if s.trainer.packing {
            Some(PackingConfig {
                max_length: s.encoding.train_max_length(),
                strategy: s
                    .trainer
                    .packing_strategy
                    .parse()
                    .map_err(|e: String| anyhow!(e))?,
            })
        } else {
            None
        },
        gradient_checkpointing: s.trainer.gradient_checkpointing,
        zero: crate::parallel::zero_stage(s)?,
    })
}

/// The progress bar of a training command.
pub fn progress_bar(prefix: &str) -> indicatif::ProgressBar {
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
    s: &TrainSpec,
    pretrain: bool,
) -> Result<(Vec<EncodedRow>, usize, usize)> {
    let mut rows: Vec<EncodedRow> = Vec::new();
    let (mut deleted, mut failed) = (0usize, 0usize);
    let images = crate::images::ImageEncoder::for_model(
        &p.model_dir,
        p.model.layout(),
        s.vision.image.max_pixels,
    )?;
    let encode = |row: &swift_plugin_tensors::StandardRow| -> Result<Option<(swift_template::Encoded, Vec<swift_train::RowImage>)>> {
        match &images {
            Some(im) => im.encode(&p.encoder, row),
            None => {
                crate::images::refuse_images(row, &p.model_dir)?;
                Ok(p.encoder.encode(row)?.map(|e| (e, Vec::new())))
            }
        }
    };
    for item in open_datasets(specs, &p.report.registries, data_opts)? {
        let item = item?;
        match encode(&item.row) {
            Ok(Some((e, images))) => {
                let mut row = EncodedRow {
                    labels: e.labels,
                    loss_scale: e.loss_scale,
                    input_ids: e.input_ids,
                    images,
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
            Err(e) if s.data.skip_bad_rows => {
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
pub fn run(s: &TrainSpec, plugins: &PluginSettings, pretrain: bool) -> Result<TrainSummary> {
    let command = if pretrain { "pt" } else { "sft" };
    check_flags(s, pretrain)?;
    crate::parallel::join(s, command)?;
    // Settings errors before anything loads.
    s.trainer
        .packing_strategy
        .parse::<swift_train::PackingStrategy>()
        .map_err(|e| anyhow!(e))?;
    let mut p = prepare(
        s,
        plugins,
        s.encoding.loss_scale.as_deref().unwrap_or("default"),
    )?;
    crate::parallel::check_device(p.model.device())?;

    // Data: read, encode, keep in memory.
    let data_opts = DatasetOptions::from_spec(&s.data)?;
    let (rows, deleted, failed) = encode_rows(&s.data.dataset, &p, &data_opts, s, pretrain)?;
    crate::images::refuse_with_images(&rows, s)?;
    if rows.is_empty() {
        bail!("no trainable rows: {deleted} rows were longer than --max_length {} or had nothing to train (use --truncation_strategy right), {failed} failed", s.encoding.train_max_length());
    }
    let mut rows = shuffle_rows(rows, s);
    // Validation rows: --val_dataset, else the last --split_dataset_ratio of the shuffled rows.
    let val_rows: Vec<EncodedRow> = if !s.validation.val_dataset.is_empty() {
        let (val, _, _) = encode_rows(&s.validation.val_dataset, &p, &data_opts, s, pretrain)?;
        val
    } else if s.validation.split_dataset_ratio > 0.0 {
        split_validation(&mut rows, s.validation.split_dataset_ratio)?
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
                s.encoding.train_max_length()
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

    let benchmarks = crate::eval_train::TrainingBenchmarks::prepare(s, &p)?;
    let tuned = attach_tuner(s, &mut p)?;
    let (mut run, abs_model) = open_run(s, command, &p, &tuned, rows.len(), json!({}))?;
    let optimizer = crate::optimizer::setting(s, &p.report.registries)?;
    let mut cfg = train_config(s, learning_rate(s, &tuned), optimizer)?;
    crate::parallel::check_zero(&cfg, tuned.adapter.as_ref())?;
    cfg.lr_factors = tuned.lr_factors.clone();
    cfg.lisa = tuned.lisa;
    let bar = progress_bar(command);
    let mut hooks = Hooks::new(&bar, &p, &tuned, &abs_model, run.path(), cfg.logging_steps)
        .with_benchmarks(benchmarks, run.path());
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
    Ok(summary)
}

/// Progress display and checkpoint writing for the training loops.
pub struct Hooks<'a> {
    pub bar: indicatif::ProgressBar,
    lora: Option<&'a AttachedAdapter>,
    model: &'a swift_model::LoadedModel,
    model_dir: &'a Path,
    base_name: String,
    args_path: PathBuf,
    logging_steps: u64,
    tokenizer: &'a swift_template::Tokenizer,
    /// `--eval_use_evalscope`'s benchmarks.
    benchmarks: Option<crate::eval_train::TrainingBenchmarks>,
}

impl<'a> Hooks<'a> {
    pub fn new(
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
            args_path: run_path.join("args.json"),
            logging_steps,
            tokenizer: &p.encoder.tokenizer,
            benchmarks: None,
        }
    }

    /// Runs `--eval_use_evalscope`'s benchmarks at each evaluation (their predictions under
    /// `run_path/eval/`).
    pub fn with_benchmarks(
        mut self,
        benchmarks: Option<crate::eval_train::TrainingBenchmarks>,
        run_path: &Path,
    ) -> Self {
        self.benchmarks = benchmarks.map(|mut b| {
            b.set_run_dir(run_path);
            b
        });
        self
    }
}

impl TrainHooks for Hooks<'_> {
    fn set_training(&mut self, on: bool) {
        if let Some(l) = self.lora {
            l.set_training(on);
        }
    }

    fn has_benchmarks(&self) -> bool {
        self.benchmarks.is_some()
    }

    fn benchmarks(&mut self, step: u64) -> Result<Map<String, Value>, TrainError> {
        match &self.benchmarks {
            Some(b) => {
                let bar = &self.bar;
                let out = bar.suspend(|| b.run(self.model, self.tokenizer, step));
                out.map_err(|e| TrainError::Step(format!("benchmarks at step {step}: {e:#}")))
            }
            None => Ok(Map::new()),
        }
    }

    fn after_backward(&mut self, step: u64, total_steps: u64) -> Result<f64, TrainError> {
        let Some(l) = self.lora else {
            return Ok(0.0);
        };
        let mut value = 0.0;
        if let Some(loss) = l.extra_loss(step, total_steps)? {
            value = loss.f_double_value(&[])?;
            loss.f_backward()?;
        }
        Ok(value)
    }

    fn after_update(&mut self, step: u64, total_steps: u64) -> Result<(), TrainError> {
        match self.lora {
            Some(l) => l.after_backward(step, total_steps),
            None => Ok(()),
        }
    }

    fn on_step(&mut self, info: &StepInfo) {
        self.bar.set_length(info.total_steps);
        self.bar.set_position(info.step);
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.2}s/step",
            info.loss, info.learning_rate, info.step_time
        ));
        if info.step % self.logging_steps.max(1) == 0
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
            Some(l) => l.save(dir, &self.base_name),
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
