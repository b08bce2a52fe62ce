//! `swift rlhf`: preference alignment on the sft machinery (model, dataset, tuner, trainer
//! flags are `swift sft`'s).
//!
//! * `--rlhf_type dpo` (with `--loss_type sigmoid|ipo|hinge|robust` or any registered paired
//!   loss), `orpo`, `simpo`, `cpo` (chosen/rejected pairs) and `kto` (rows with a boolean
//!   `label`). The loss is resolved by name in the preference-loss registry
//!   (`swift list preference-losses`), so a plugin's loss is used the same way.
//! * Data: each row is encoded twice with the same prompt, the chosen and the rejected final
//!   answer (`rejected_response` or `rejected_messages`), with labels only on that final answer
//!   (`last_round`). Rows whose answer is truncated away entirely are dropped and counted.
//!   KTO rows also get their KL row: the prompt with the previous row's answer.
//! * Reference (losses that need one): `--ref_model DIR`, else the policy with its LoRA adapters
//!   switched off (one copy of the base weights), else, for full fine-tuning, a frozen copy.
//! * LoRA dropout is off unless `--disable_dropout false` (TRL and ms-swift disable dropout).
//! * `--rlhf_type rm` (reward modelling): a scalar value head (`score`, hidden → 1) on each
//!   sequence's last token, trained with the tuner (LoRA on the base, the head trained fully)
//!   on chosen/rejected pairs by a loss whose record says `scores` (`bradley_terry`: TRL's
//!   RewardTrainer loss, `--center_rewards_coefficient`). The head is initialised from
//!   `--seed` (normal(0, `initializer_range`)), or read from `--model` when that is a reward
//!   model already. Checkpoints: PEFT `modules_to_save` / `SEQ_CLS` for LoRA, a
//!   `*ForSequenceClassification` folder for full training; `swift infer` scores with them.
//!
//! * Validation: `--val_dataset` is read and encoded as the training set is (KTO rows get their
//!   KL rows within it), else `--split_dataset_ratio` takes the last share of the shuffled items;
//!   evaluated every `--eval_steps` and at the end (and first with `--eval_on_start`), logging
//!   TRL's `eval_` metrics of the method (see swift_train::rlhf).
//! * Training runs in swift-train's one loop, as `swift sft` does: `--resume_from_checkpoint`,
//!   LoRA+'s learning-rate ratio (`--tuner_type lora_plus`), LISA (`--tuner_type lisa`),
//!   checkpoints with the optimiser's state, charts.
//!
//! Run folder and checkpoints as `swift sft` writes them (PEFT layout for LoRA).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use swift_data::open_datasets;
use swift_plugin_tensors::{PreferenceLossHandleExt, StandardRow};
use swift_spec::{PreferenceArgs, RlhfSpec, TrainSpec};
use swift_train::{
    PrefItem, PreferenceSetup, Reference, StepInfo, TrainError, TrainHooks, TrainSummary,
};

use crate::bundle::ModelBundle;
use crate::train::{
    attach_tuner, learning_rate, open_run, prepare, progress_bar, shuffle_rows, split_validation,
    train_config, Hooks, Prepared,
};
use swift_registry::PluginSettings;

/// The preference settings' derived values.
trait PreferenceExt {
    fn loss_name(&self) -> Result<String>;
    fn beta(&self) -> f64;
    fn params(&self) -> Value;
}

impl PreferenceExt for PreferenceArgs {
    /// The registered loss this run uses.
    fn loss_name(&self) -> Result<String> {
        let t = self.rlhf_type.as_str();
        let given = self.loss_type.as_deref();
        Ok(match (t, given) {
            ("rm", g) => g.unwrap_or("bradley_terry").to_string(),
            ("dpo", g) => g.unwrap_or("sigmoid").to_string(),
            ("kto", g) => g.unwrap_or("kto").to_string(),
            ("cpo", None | Some("sigmoid")) => "cpo".into(),
            ("orpo" | "simpo" | "cpo", Some(g)) => g.to_string(),
            ("orpo" | "simpo", None) => t.to_string(),
            (other, _) => {
                bail!("unknown --rlhf_type `{other}`: use dpo, orpo, simpo, cpo, kto or rm")
            }
        })
    }

    fn beta(&self) -> f64 {
        self.beta
            .unwrap_or(if self.rlhf_type == "simpo" { 2.0 } else { 0.1 })
    }

    /// The loss's parameters as the registry's losses read them.
    fn params(&self) -> Value {
        json!({
            "beta": self.beta(),
            "label_smoothing": self.label_smoothing,
            "rpo_alpha": self.rpo_alpha.unwrap_or(0.0),
            "simpo_gamma": self.simpo_gamma,
            "cpo_alpha": self.cpo_alpha,
            "desirable_weight": self.desirable_weight,
            "undesirable_weight": self.undesirable_weight,
            "center_rewards_coefficient": self.center_rewards_coefficient,
        })
    }
}

/// The preference flags that cannot apply to this `--rlhf_type` with its built-in loss,
/// refused by name (a plugin's loss reads what it reads: its flags all pass).
fn check_flags(spec: &RlhfSpec) -> Result<()> {
    let g = &spec.train.given;
    let r = &spec.preference;
    let msg = anyhow::Error::msg;
    g.refuse(
        &["rows_per_pass", "max_pass_tokens", "packing_strategy"],
        "to swift rlhf (pairs are scored --rlhf_chunk_size sequences at a time)",
    )
    .map_err(msg)?;
    if r.loss_type.is_some() && !matches!(r.rlhf_type.as_str(), "dpo" | "cpo" | "simpo" | "orpo") {
        // kto and rm have one built-in loss each; a plugin's loss may read any of them.
        return Ok(());
    }
    let reads: &[&str] = match r.rlhf_type.as_str() {
        "dpo" => &["beta", "label_smoothing", "rpo_alpha"],
        "orpo" => &["beta"],
        "simpo" => &["beta", "label_smoothing", "simpo_gamma", "cpo_alpha"],
        "cpo" => &["beta", "label_smoothing", "cpo_alpha"],
        "kto" => &["beta", "desirable_weight", "undesirable_weight"],
        "rm" => &["center_rewards_coefficient"],
        _ => return Ok(()),
    };
    let all = [
        "beta",
        "label_smoothing",
        "rpo_alpha",
        "simpo_gamma",
        "cpo_alpha",
        "desirable_weight",
        "undesirable_weight",
    ];
    let unread: Vec<&str> = all.into_iter().filter(|f| !reads.contains(f)).collect();
    g.refuse(&unread, &format!("to --rlhf_type {}", r.rlhf_type))
        .map_err(msg)?;
    if r.rlhf_type == "kto" {
        g.refuse(
            &["rlhf_chunk_size"],
            "to --rlhf_type kto (its rows are scored in one pass)",
        )
        .map_err(msg)?;
    }
    if r.rlhf_type == "rm" {
        g.refuse(
            &["ref_model"],
            "to --rlhf_type rm (a reward model has no reference)",
        )
        .map_err(msg)?;
    }
    Ok(())
}

/// The final assistant answer of a row.
fn final_answer(row: &StandardRow) -> Option<&str> {
    row.messages
        .last()
        .filter(|m| m.role == "assistant")
        .map(|m| m.content.as_str())
}

fn trains_something(labels: &[i64]) -> bool {
    labels.iter().skip(1).any(|&l| l != -100)
}

fn to_row(e: swift_template::Encoded) -> swift_train::EncodedRow {
    to_row_with(e, Vec::new())
}

fn to_row_with(
    e: swift_template::Encoded,
    images: Vec<swift_train::RowImage>,
) -> swift_train::EncodedRow {
    swift_train::EncodedRow {
        input_ids: e.input_ids,
        labels: e.labels,
        loss_scale: e.loss_scale,
        images,
    }
}

/// What [`read_items`] read: chosen/rejected pairs, or KTO rows (the source row, its encoding
/// and its label) that still need their KL rows ([`with_kl_rows`]).
struct ReadItems {
    pairs: Vec<PrefItem>,
    unpaired: Vec<(StandardRow, swift_train::EncodedRow, bool)>,
    dropped: usize,
    failed: usize,
}

/// Reads and encodes the preference rows of `specs` for `--rlhf_type rlhf_type`: each pair's
/// chosen and rejected answer with the same prompt, or a KTO row; rows whose answer is truncated
/// away are dropped and counted, bad rows fail (or are skipped and counted with
/// --skip_bad_rows).
fn read_items(
    specs: &[String],
    p: &Prepared,
    data_opts: &swift_data::DatasetOptions,
    s: &TrainSpec,
    rlhf_type: &str,
) -> Result<ReadItems> {
    let unpaired_wanted = rlhf_type == "kto";
    let mut out = ReadItems {
        pairs: Vec::new(),
        unpaired: Vec::new(),
        dropped: 0,
        failed: 0,
    };
    let images = crate::images::ImageEncoder::for_model(
        &p.model_dir,
        p.model.layout(),
        s.vision.image.max_pixels,
    )?;
    for item in open_datasets(specs, &p.report.registries, data_opts)? {
        let item = item?;
        let at = || format!("row at {}:{}", item.file.display(), item.line);
        let row = &item.row;
        let encoded: Result<Option<PrefItem>> = (|| {
            if unpaired_wanted {
                let Some(label) = row.label else {
                    bail!("--rlhf_type kto needs rows with a boolean `label` (as kto-en-demo has)");
                };
                if final_answer(row).is_none() {
                    bail!("the row does not end with an assistant answer");
                }
                if !row.images.is_empty() {
                    bail!("--rlhf_type kto does not take rows with images yet (its KL rows would pair one row's images with another's answer); use dpo");
                }
                match p.encoder.encode(row)? {
                    Some(e) if trains_something(&e.labels) => {
                        out.unpaired.push((row.clone(), to_row(e), label));
                    }
                    _ => out.dropped += 1,
                }
                return Ok(None);
            }
            if row.rejected_response.is_none() && row.rejected_messages.is_none() {
                bail!(
                    "--rlhf_type {rlhf_type} needs preference rows (chosen and rejected answers, as dpo-en-demo has)"
                );
            }
            // Both sides carry the row's images (a vision-language model), encoded alike.
            let (chosen, rejected) = match &images {
                Some(im) => {
                    let rejected_row = swift_template::Encoder::rejected_row(row);
                    let rj = match &rejected_row {
                        Some(r) => im.encode(&p.encoder, r)?,
                        None => None,
                    };
                    (im.encode(&p.encoder, row)?, rj)
                }
                None => {
                    crate::images::refuse_images(row, &p.model_dir)?;
                    (
                        p.encoder.encode(row)?.map(|e| (e, Vec::new())),
                        p.encoder.encode_rejected(row)?.map(|e| (e, Vec::new())),
                    )
                }
            };
            Ok(match (chosen, rejected) {
                (Some((c, ci)), Some((rj, ri)))
                    if trains_something(&c.labels) && trains_something(&rj.labels) =>
                {
                    Some(PrefItem::Pair {
                        chosen: to_row_with(c, ci),
                        rejected: to_row_with(rj, ri),
                    })
                }
                _ => None,
            })
        })();
        match encoded {
            Ok(Some(pair)) => out.pairs.push(pair),
            Ok(None) if !unpaired_wanted => out.dropped += 1,
            Ok(None) => {}
            Err(e) if s.data.skip_bad_rows => {
                tracing::warn!("skipped {}: {e:#}", at());
                out.failed += 1;
            }
            Err(e) => return Err(e).with_context(at),
        }
    }
    Ok(out)
}

/// KTO's items: each row with its KL row, this prompt with the previous row's answer (TRL's
/// shift, within `rows`); rows whose KL row trains nothing are dropped and counted.
fn with_kl_rows(
    rows: &[(StandardRow, swift_train::EncodedRow, bool)],
    p: &Prepared,
    dropped: &mut usize,
) -> Result<Vec<PrefItem>> {
    let n = rows.len();
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let (row, enc, desirable) = &rows[i];
        let other = final_answer(&rows[(i + n - 1) % n].0).unwrap_or_default();
        let kl_source = StandardRow {
            rejected_response: Some(other.to_string()),
            rejected_messages: None,
            ..row.clone()
        };
        match p.encoder.encode_rejected(&kl_source)? {
            Some(k) if trains_something(&k.labels) => items.push(PrefItem::Unpaired {
                row: enc.clone(),
                desirable: *desirable,
                kl: to_row(k),
            }),
            _ => *dropped += 1,
        }
    }
    Ok(items)
}

/// `swift rlhf`.
pub fn run(spec: &RlhfSpec, plugins: &PluginSettings) -> Result<TrainSummary> {
    let mut s: TrainSpec = spec.train.clone();
    let s = &mut s;
    let r = &spec.preference;
    crate::train::check_flags(s, false)?;
    check_flags(spec)?;
    if r.rlhf_type == "kto" {
        // KTO's KL term is estimated over each batch's mismatched pairs: a rank's shard would
        // estimate another number than the global batch.
        crate::parallel::refuse("rlhf --rlhf_type kto")?;
    }
    crate::parallel::join(s, "rlhf")?;
    // Preference data trains only the final answer (ms-swift's rlhf default).
    let loss_scale = s
        .encoding
        .loss_scale
        .get_or_insert_with(|| "last_round".into())
        .clone();
    if r.disable_dropout && s.given.contains("lora_dropout") && s.tuner.lora_dropout > 0.0 {
        bail!(
            "--lora_dropout {} would be switched off by --disable_dropout (true by default for preference training, as in TRL): pass --disable_dropout false to train with dropout",
            s.tuner.lora_dropout
        );
    }
    if r.disable_dropout && s.tuner.lora_dropout > 0.0 {
        tracing::info!(
            "LoRA dropout off for preference training (--disable_dropout true, as TRL does)"
        );
        s.tuner.lora_dropout = 0.0;
    }
    if s.trainer.packing {
        bail!("--packing is for swift sft / pt; preference training keeps each pair whole (drop --packing)");
    }
    let loss_name = r.loss_name()?;
    let unpaired_wanted = r.rlhf_type == "kto";
    let reward_model = r.rlhf_type == "rm";
    let mut p = prepare(s, plugins, &loss_scale)?;
    crate::parallel::check_device(p.model.device())?;
    let loss_entry = p
        .report
        .registries
        .preference_losses
        .resolve(&loss_name)
        .with_context(|| format!("--rlhf_type {} --loss_type", r.rlhf_type))?;
    let loss_record = loss_entry.record.clone();
    let loss_provenance = loss_entry.provenance.to_string();
    let loss_handle = loss_entry
        .imp
        .clone()
        .ok_or_else(|| anyhow!("preference loss `{}` has no behaviour", loss_record.name))?;
    if loss_record.unpaired != unpaired_wanted {
        bail!(
            "--rlhf_type {} needs {} data, but loss `{}` ({}) is for {} data",
            r.rlhf_type,
            if unpaired_wanted {
                "unpaired (KTO)"
            } else {
                "paired"
            },
            loss_record.name,
            loss_provenance,
            if loss_record.unpaired {
                "unpaired (KTO)"
            } else {
                "paired"
            },
        );
    }
    if loss_record.scores != reward_model {
        bail!(
            "--rlhf_type {} {}, but loss `{}` ({}) {}",
            r.rlhf_type,
            if reward_model {
                "trains a value head and needs a loss of its scores (bradley_terry)"
            } else {
                "needs a loss of log-probabilities"
            },
            loss_record.name,
            loss_provenance,
            if loss_record.scores {
                "is a reward-model loss (use it with --rlhf_type rm)"
            } else {
                "reads log-probabilities"
            },
        );
    }
    if r.ref_model.is_some() && !loss_record.reference {
        bail!(
            "--ref_model does not apply to loss `{}` ({}): it needs no reference model, drop it",
            loss_record.name,
            loss_provenance
        );
    }
    if spec.train.given.contains("disable_dropout")
        && crate::tuning::adapter_of(&p.report.registries, &p.tuner_record)?.is_none()
    {
        bail!(
            "--disable_dropout does not apply to tuner `{}`: only adapter tuners (LoRA, ...) have dropout here, drop it",
            p.tuner_name
        );
    }
    match r.center_rewards_coefficient {
        Some(_) if !reward_model => bail!("--center_rewards_coefficient is for --rlhf_type rm"),
        Some(c) if !(c >= 0.0 && c.is_finite()) => {
            bail!("--center_rewards_coefficient must be a non-negative number, got {c}")
        }
        _ => {}
    }
    let params = r.params();

    // Data: the training items, and the validation items (--val_dataset read and encoded the
    // same way, else the last --split_dataset_ratio of the shuffled items); KTO rows get their
    // KL rows within their own set.
    let data_opts = swift_data::DatasetOptions::from_spec(&s.data)?;
    let read = read_items(&s.data.dataset, &p, &data_opts, s, &r.rlhf_type)?;
    let image_rows: Vec<swift_train::EncodedRow> = read
        .pairs
        .iter()
        .filter_map(|i| match i {
            PrefItem::Pair { chosen, .. } if !chosen.images.is_empty() => Some(chosen.clone()),
            _ => None,
        })
        .take(1)
        .collect();
    crate::images::refuse_with_images(&image_rows, s)?;
    let (mut dropped, failed) = (read.dropped, read.failed);
    let val_given = !s.validation.val_dataset.is_empty();
    let val_read = if val_given {
        Some(read_items(
            &s.validation.val_dataset,
            &p,
            &data_opts,
            s,
            &r.rlhf_type,
        )?)
    } else {
        None
    };
    let ratio = s.validation.split_dataset_ratio;
    let (items, val_items): (Vec<PrefItem>, Vec<PrefItem>) = if unpaired_wanted {
        let mut rows = shuffle_rows(read.unpaired, s);
        let val_rows = match val_read {
            Some(v) => v.unpaired,
            None if ratio > 0.0 && !rows.is_empty() => split_validation(&mut rows, ratio)?,
            None => Vec::new(),
        };
        let mut val_dropped = 0;
        (
            with_kl_rows(&rows, &p, &mut dropped)?,
            with_kl_rows(&val_rows, &p, &mut val_dropped)?,
        )
    } else {
        let mut items = shuffle_rows(read.pairs, s);
        let val = match val_read {
            Some(v) => v.pairs,
            None if ratio > 0.0 && !items.is_empty() => split_validation(&mut items, ratio)?,
            None => Vec::new(),
        };
        (items, val)
    };
    if items.is_empty() {
        bail!(
            "no trainable rows: {dropped} rows were dropped (longer than --max_length {} with --truncation_strategy {}, or their answer was truncated away; try --truncation_strategy left), {failed} failed",
            s.encoding.train_max_length(), s.encoding.truncation_strategy
        );
    }
    if val_given && val_items.is_empty() {
        tracing::warn!("--val_dataset: no row is left to evaluate on (every row was dropped or skipped); training without validation");
    }
    let what = if unpaired_wanted { "rows" } else { "pairs" };
    tracing::info!(
        "{} {what} encoded with template `{}`{}{}",
        items.len(),
        p.template_name,
        if dropped > 0 {
            format!(
                "; {dropped} dropped (too long for --max_length {} or no answer token left)",
                s.encoding.train_max_length()
            )
        } else {
            String::new()
        },
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    if !val_items.is_empty() {
        tracing::info!("{} validation {what}", val_items.len());
    }

    // Tuner, value head and reference.
    let benchmarks = crate::eval_train::TrainingBenchmarks::prepare(s, &p)?;
    let mut tuned = attach_tuner(s, &mut p)?;
    let value_head = if reward_model {
        let head = value_head(&p, s.trainer.seed)?;
        let name = if tuned.adapter.is_some() {
            swift_train::reward::PEFT_SCORE_WEIGHT
        } else {
            swift_train::reward::SCORE_WEIGHT
        };
        tuned
            .trainable
            .push((name.to_string(), head.weight.shallow_clone()));
        Some(head)
    } else {
        None
    };
    let ref_bundle = match (&r.ref_model, loss_record.reference, &tuned.adapter) {
        (_, false, _) => None,
        (Some(dir), true, _) => Some(load_reference(dir, s, &p.report.registries)?),
        (None, true, Some(_)) => None,
        (None, true, None) => Some(load_reference(&p.model_dir, s, &p.report.registries)?),
    };
    let reference = match (&ref_bundle, loss_record.reference, &tuned.adapter) {
        (_, false, _) => Reference::Free,
        (Some(b), true, _) => Reference::Model(&b.model),
        (None, true, Some(l)) => Reference::AdaptersOff(l),
        (None, true, None) => bail!("internal: full fine-tuning without a reference model"),
    };
    let models_loaded = 1 + usize::from(ref_bundle.is_some());
    tracing::info!(
        "loss `{}` ({}){}; reference: {}",
        loss_record.name,
        loss_provenance,
        if reward_model {
            String::new()
        } else {
            format!(", beta {}", r.beta())
        },
        reference.describe()
    );
    let log_nll = match loss_record.name.as_str() {
        _ if reward_model => false,
        "orpo" => true,
        "cpo" | "simpo" => r.cpo_alpha > 0.0,
        _ => r.rpo_alpha.unwrap_or(0.0) > 0.0,
    };
    let mut extra = serde_json::to_value(r)?;
    extra["loss_type"] = json!(loss_record.name);
    extra["beta"] = json!(r.beta());
    extra["reference"] = json!(reference.describe());
    extra["models_loaded"] = json!(models_loaded);
    let (mut run, abs_model) = open_run(s, "rlhf", &p, &tuned, items.len(), extra)?;
    let optimizer = crate::optimizer::setting(s, &p.report.registries)?;
    let mut cfg = train_config(s, learning_rate(s, &tuned), optimizer)?;
    crate::parallel::check_zero(&cfg, tuned.adapter.as_ref())?;
    cfg.lr_factors = tuned.lr_factors.clone();
    cfg.lisa = tuned.lisa;
    let bar = progress_bar(&format!("rlhf {}", r.rlhf_type));
    let mut hooks = RlhfHooks {
        inner: Hooks::new(&bar, &p, &tuned, &abs_model, run.path(), cfg.logging_steps)
            .with_benchmarks(benchmarks, run.path()),
        bar: bar.clone(),
        logging_steps: cfg.logging_steps,
        last: None,
        reward: value_head.as_ref().map(|head| RewardSave {
            head,
            lora: tuned.adapter.is_some(),
            model: &p.model,
            model_dir: &p.model_dir,
            template: &p.template_name,
            args_path: run.path().join("args.json"),
        }),
    };
    if let Some(l) = &tuned.adapter {
        l.set_training(true);
    }
    let loss_fn = |x: &swift_plugin_tensors::PreferenceInputs| loss_handle.loss(x, &params);
    let setup = PreferenceSetup {
        loss: &loss_fn,
        reference,
        log_nll,
        chunk: r.rlhf_chunk_size,
        value_head: value_head.as_ref(),
    };
    let summary = swift_train::train_preference(
        &p.model,
        &items,
        &val_items,
        &tuned.trainable,
        &cfg,
        &setup,
        &mut run,
        &mut hooks,
    )?;
    bar.finish_and_clear();
    Ok(summary)
}

/// The value head of a reward model: read from `--model` when it is a reward model already
/// (`score.weight`), else drawn from normal(0, `initializer_range`) seeded by `--seed`.
fn value_head(p: &Prepared, seed: u64) -> Result<swift_train::ValueHead> {
    use swift_train::reward::{is_reward_config, num_labels, SCORE_WEIGHT};
    let model = &p.model;
    let hidden = swift_train::ValueHead::hidden_size(model)?;
    let config: Value = std::fs::read_to_string(p.model_dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    if is_reward_config(&config) {
        if num_labels(&config) != 1 {
            bail!(
                "{} is a sequence classifier with {} labels; a reward model has one",
                p.model_dir.display(),
                num_labels(&config)
            );
        }
        let files = swift_model::weights::checkpoint_files(&p.model_dir)?;
        let ckpt = swift_model::weights::Checkpoint::open(&files)?;
        if ckpt.contains(SCORE_WEIGHT) {
            tracing::info!("value head: `{SCORE_WEIGHT}` of {}", p.model_dir.display());
            let head = swift_train::ValueHead::read(
                &ckpt,
                SCORE_WEIGHT,
                hidden,
                model.kind(),
                model.device(),
            )?;
            return Ok(swift_train::ValueHead {
                weight: head.weight.set_requires_grad(true),
            });
        }
    }
    let std = config
        .get("initializer_range")
        .and_then(Value::as_f64)
        .unwrap_or(0.02);
    tracing::info!("value head: new `score` [1, {hidden}] from normal(0, {std}), seed {seed}");
    Ok(swift_train::ValueHead::init(
        hidden,
        std,
        seed,
        model.kind(),
        model.device(),
    )?)
}

/// A frozen reference model (same dtype and device as the policy).
fn load_reference(
    dir: &Path,
    s: &TrainSpec,
    regs: &swift_registry::Registries,
) -> Result<ModelBundle> {
    tracing::info!("loading the reference model {}", dir.display());
    ModelBundle::load(
        dir,
        s.model.model_type.as_deref(),
        s.model.torch_dtype.as_deref(),
        &s.model.device,
        s.model.allow_unused_weights,
        regs,
    )
    .with_context(|| format!("loading the reference model {}", dir.display()))
}

/// The progress bar shows the preference metrics; checkpoints are written as sft writes them
/// (a reward model's with its value head).
struct RlhfHooks<'a> {
    inner: Hooks<'a>,
    bar: indicatif::ProgressBar,
    logging_steps: u64,
    last: Option<StepInfo>,
    reward: Option<RewardSave<'a>>,
}

/// What a reward model's checkpoint needs besides sft's.
struct RewardSave<'a> {
    head: &'a swift_train::ValueHead,
    lora: bool,
    model: &'a swift_model::LoadedModel,
    model_dir: &'a Path,
    template: &'a str,
    args_path: PathBuf,
}

impl RewardSave<'_> {
    /// LoRA: sft's PEFT checkpoint plus the head as `modules_to_save`. Full: a
    /// `*ForSequenceClassification` folder with the tokenizer files and args.json.
    fn save(&self, inner: &mut Hooks<'_>, step: u64, dir: &Path) -> Result<(), TrainError> {
        if self.lora {
            inner.save(step, dir)?;
            return self.head.add_to_adapter(dir);
        }
        let config_path = self.model_dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
        self.head
            .save_full(dir, self.model, &config, self.template)?;
        let copy = |from: &Path, name: &str| -> Result<(), TrainError> {
            if from.is_file() {
                std::fs::copy(from, dir.join(name))
                    .map_err(|e| TrainError::Config(format!("{}: {e}", from.display())))?;
            }
            Ok(())
        };
        copy(&self.args_path, "args.json")?;
        // The same files as sft's full checkpoints, but config.json (written above).
        for f in [
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

impl TrainHooks for RlhfHooks<'_> {
    fn set_training(&mut self, on: bool) {
        self.inner.set_training(on);
    }

    fn after_backward(&mut self, step: u64, total_steps: u64) -> Result<f64, TrainError> {
        self.inner.after_backward(step, total_steps)
    }

    fn after_update(&mut self, step: u64, total_steps: u64) -> Result<(), TrainError> {
        self.inner.after_update(step, total_steps)
    }

    fn has_benchmarks(&self) -> bool {
        self.inner.has_benchmarks()
    }

    fn benchmarks(&mut self, step: u64) -> Result<Map<String, Value>, TrainError> {
        self.inner.benchmarks(step)
    }

    fn on_step(&mut self, info: &StepInfo) {
        self.bar.set_length(info.total_steps);
        self.bar.set_position(info.step);
        self.last = Some(info.clone());
    }

    fn on_metrics(&mut self, step: u64, m: &Map<String, Value>) {
        let f = |k: &str| m.get(k).and_then(Value::as_f64);
        let mut msg = String::new();
        for k in [
            "loss",
            "rewards/accuracies",
            "rewards/margins",
            "rewards/chosen",
            "rewards/rejected",
            "nll_loss",
            "kl",
        ] {
            if let Some(v) = f(k) {
                msg.push_str(&format!("{k} {v:.4} "));
            }
        }
        if let Some(info) = &self.last {
            msg.push_str(&format!("{:.2}s/step", info.step_time));
        }
        self.bar.set_message(msg.clone());
        let total = self.last.as_ref().map_or(step, |i| i.total_steps);
        if step % self.logging_steps.max(1) == 0 || step == 1 || step == total {
            self.bar
                .suspend(|| tracing::info!("step {step}/{total}: {}", msg.trim_end()));
        }
    }

    fn save(&mut self, step: u64, dir: &Path) -> Result<(), TrainError> {
        match &self.reward {
            Some(rs) => rs.save(&mut self.inner, step, dir),
            None => self.inner.save(step, dir),
        }
    }
}
