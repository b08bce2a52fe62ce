//! The training loop: epochs over encoded rows (shuffled per epoch from the seed), padded
//! micro-batches (with `--packing`: epochs over sequences of rows packed end to end), gradient
//! accumulation with the loss normalised over the labelled tokens of the whole optimiser step,
//! clipping, AdamW with a warm-up schedule, `logging.jsonl` records, and checkpoints written
//! atomically every `save_steps` and at the end, and the charts of `images/` (crate::plot) when
//! the run ends.
//!
//! Resuming (`resume_from`): a checkpoint also holds `optimizer.safetensors` (the trained tensors
//! and AdamW's moments) and `trainer_state.json` (the step). The data order is a function of the
//! seed and the epoch, and libtorch's generator (dropout) is re-seeded from (seed, step) before
//! every optimiser step, so a resumed run skips the steps already taken and then computes exactly
//! what the uninterrupted run computed.
//!
//! Gradient checkpointing (`gradient_checkpointing`): each micro-batch runs through
//! `LoadedModel::backward_checkpointed`, which keeps only the blocks' inputs and recomputes one
//! block at a time in the backward pass (same gradient; its dropout masks come from per-block
//! seeds drawn from the same per-step generator, so runs stay reproducible and resumable).

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use swift_model::LoadedModel;
use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;
use crate::collate::{Batch, Collator, EncodedRow, PackingStrategy};
use crate::loss::{labelled_positions, shifted_label_count, token_loss_flat};
use crate::optim::{AdamW, AdamWConfig};
use crate::run_dir::RunDir;
use crate::schedule::{LrSchedule, ScheduleKind};

/// Everything the loop needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub learning_rate: f64,
    pub lr_scheduler: ScheduleKind,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<u64>,
    pub num_train_epochs: f64,
    /// Overrides the epochs when given.
    pub max_steps: Option<u64>,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// 0 turns clipping off.
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    pub seed: u64,
    pub shuffle: bool,
    pub logging_steps: u64,
    pub save_steps: u64,
    pub save_total_limit: Option<usize>,
    pub pad_id: u32,
    /// Learning-rate factors: every trainable tensor whose name contains the pattern learns
    /// `factor` times faster (LoRA+: `(".lora_B.", ratio)`).
    pub lr_factors: Vec<(String, f64)>,
    /// LISA: train only a few randomly drawn decoder layers at a time.
    pub lisa: Option<LisaConfig>,
    /// A checkpoint of an earlier run with the same settings to continue from.
    pub resume_from: Option<std::path::PathBuf>,
    /// Evaluate on the validation rows every this many steps (and at the end); 0: only at the end.
    pub eval_steps: u64,
    /// Rows per forward/backward pass inside a micro-batch (0: the whole micro-batch at once).
    /// The loss is normalised over the labelled tokens of the whole step, so the gradient is the
    /// same either way; fewer rows per pass hold fewer activations (and pad less).
    pub rows_per_pass: usize,
    /// `--packing`: train on rows packed into sequences (then `batch_size` counts sequences).
    pub packing: Option<PackingConfig>,
    /// Recompute each block's activations during the backward pass instead of keeping them
    /// (`LoadedModel::backward_checkpointed`): less memory, about one more forward pass of time.
    pub gradient_checkpointing: bool,
}

/// `--packing`'s settings: rows are packed once, before the first epoch, into sequences of at
/// most `max_length` tokens grouped by `strategy`; the packed sequences are what the epochs
/// shuffle and the batches hold, as in ms-swift's `PackingDataset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackingConfig {
    pub max_length: usize,
    pub strategy: PackingStrategy,
}

/// Writes the optimiser's state and the step into checkpoint folder `dir`.
fn save_trainer_state(dir: &Path, opt: &AdamW, step: u64, epoch: f64) -> Result<(), TrainError> {
    let (tensors, steps) = opt.state();
    crate::checkpoint::save_safetensors(&dir.join("optimizer.safetensors"), &tensors)?;
    let state = json!({
        "global_step": step,
        "epoch": epoch,
        "param_steps": steps.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    let path = dir.join("trainer_state.json");
    std::fs::write(&path, format!("{state:#}\n")).map_err(|e| TrainError::io(&path, e))
}

/// Loads what [`save_trainer_state`] wrote into `opt`; returns the step the checkpoint ended at.
fn load_trainer_state(dir: &Path, opt: &mut AdamW) -> Result<u64, TrainError> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::Config(format!(
            "cannot resume from {}: {} ({e}; checkpoints written by swift sft hold it)",
            dir.display(),
            path.display()
        ))
    })?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let step = state["global_step"]
        .as_u64()
        .ok_or_else(|| TrainError::Config(format!("{}: no global_step", path.display())))?;
    let file = dir.join("optimizer.safetensors");
    let ckpt = swift_model::weights::Checkpoint::open(std::slice::from_ref(&file))?;
    let get = |name: &str| -> Option<Tensor> {
        ckpt.load(name, Kind::Float, tch::Device::Cpu)
            .ok()
            .map(|l| l.tensor.copy())
    };
    let steps =
        |name: &str| -> Option<i32> { state["param_steps"][name].as_i64().map(|n| n as i32) };
    opt.restore(&get, &steps, step)?;
    Ok(step)
}

/// LISA's settings: `activated_layers` decoder layers (named `….layers.N.…`) train at a time,
/// re-drawn every `step_interval` optimiser steps from the seed; parameters outside the
/// decoder layers (embeddings, final norm, output head) always train, as in LMFlow's LISA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LisaConfig {
    pub activated_layers: usize,
    pub step_interval: u64,
}

/// The decoder layer a parameter name belongs to (`model.layers.3.mlp…` → 3).
fn layer_of(name: &str) -> Option<usize> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    rest.split('.').next()?.parse().ok()
}

/// LISA's draw for the interval starting at optimiser step `step` (0-based): `k` distinct
/// layers of `layers`, from a generator seeded by (seed, step).
pub fn lisa_draw(layers: &[usize], k: usize, seed: u64, step: u64) -> Vec<usize> {
    let order = shuffled(
        layers.len(),
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut out: Vec<usize> = order.into_iter().take(k).map(|i| layers[i]).collect();
    out.sort_unstable();
    out
}

/// One optimiser step's figures (as logged).
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub token_acc: f64,
    pub epoch: f64,
    pub step_time: f64,
    /// Non-padding input tokens of the step.
    pub tokens: usize,
}

/// What the caller plugs into the loop: progress display and checkpoint contents.
pub trait TrainHooks {
    /// Called after every optimiser step.
    fn on_step(&mut self, info: &StepInfo);
    /// Writes a checkpoint's files into `dir` (the loop makes it appear atomically).
    fn save(&mut self, step: u64, dir: &Path) -> Result<(), TrainError>;
    /// Switches training-only behaviour (LoRA dropout) on or off around evaluation.
    fn set_training(&mut self, _on: bool) {}
    /// Called after every optimiser step with the step's own metrics (preference training:
    /// `rewards/accuracies`, `rewards/margins`, ...).
    fn on_metrics(&mut self, _step: u64, _metrics: &serde_json::Map<String, serde_json::Value>) {}
}

/// The run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub steps: u64,
    pub losses: Vec<f64>,
    pub seconds: f64,
    pub tokens: usize,
    pub last_checkpoint: Option<std::path::PathBuf>,
}

/// Optimiser steps for `rows` rows: ⌈⌈rows / batch⌉ / accumulation⌉ per epoch.
pub fn steps_per_epoch(rows: usize, batch_size: usize, grad_accum: usize) -> u64 {
    let batches = rows.div_ceil(batch_size.max(1));
    batches.div_ceil(grad_accum.max(1)).max(1) as u64
}

/// A permutation of `0..n` from `seed` (SplitMix64 + Fisher–Yates).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The micro-batches of every optimiser step, in order, as row indices.
pub(crate) fn plan(rows: usize, cfg: &TrainConfig, total_steps: u64) -> Vec<Vec<Vec<usize>>> {
    let per_epoch = steps_per_epoch(rows, cfg.batch_size, cfg.grad_accum);
    let mut steps = Vec::new();
    let mut epoch = 0u64;
    while (steps.len() as u64) < total_steps && rows > 0 {
        let order = if cfg.shuffle {
            shuffled(rows, cfg.seed.wrapping_add(epoch))
        } else {
            (0..rows).collect()
        };
        let micro: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        for group in micro.chunks(cfg.grad_accum.max(1)) {
            if steps.len() as u64 >= total_steps {
                break;
            }
            steps.push(group.to_vec());
        }
        debug_assert!(steps.len() as u64 <= (epoch + 1) * per_epoch);
        epoch += 1;
    }
    steps
}

pub(crate) fn tensors(
    batch: &Batch,
    device: tch::Device,
) -> Result<(Tensor, Tensor, Tensor, Tensor), TrainError> {
    let shape = [batch.batch as i64, batch.seq_len as i64];
    let ids = Tensor::from_slice(&batch.input_ids)
        .f_view(shape)?
        .f_to_device(device)?;
    let labels = Tensor::from_slice(&batch.labels)
        .f_view(shape)?
        .f_to_device(device)?;
    let scale = Tensor::from_slice(&batch.loss_scale)
        .f_view(shape)?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&batch.attention_mask)
        .f_view(shape)?
        .f_to_device(device)?;
    Ok((ids, labels, scale, mask))
}

/// Peak resident memory of this process in MiB (Linux), for the log.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The outcome of one optimiser step.
pub struct StepOutcome {
    /// Σ scale·CE / labelled tokens of the step.
    pub loss: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub labelled: i64,
    pub correct: i64,
}

/// The forward pass of one padded (or packed) batch and its weighted token loss (the output
/// projection is applied only where a label is trained); `None` for sequences too short to
/// predict anything.
fn batch_loss(
    model: &LoadedModel,
    b: &Batch,
) -> Result<Option<crate::loss::TokenLoss>, TrainError> {
    let (ids, labels, scale, mask) = tensors(b, model.device())?;
    let hidden = if b.packed {
        let shape = [b.batch as i64, b.seq_len as i64];
        let positions = Tensor::from_slice(&b.position_ids).f_view(shape)?;
        let seq_ids = Tensor::from_slice(&b.seq_ids).f_view(shape)?;
        model.forward_train_packed(&ids, &positions, &seq_ids)?
    } else {
        let padded = b.attention_mask.contains(&0);
        model.forward_train(&ids, padded.then_some(&mask))?
    };
    hidden_loss(model, &hidden, &labels, &scale)
}

/// The weighted token loss of final hidden states `[batch, seq, hidden]` (the output projection
/// applied only where a label is trained); `None` for sequences too short to predict anything.
fn hidden_loss(
    model: &LoadedModel,
    hidden: &Tensor,
    labels: &Tensor,
    scale: &Tensor,
) -> Result<Option<crate::loss::TokenLoss>, TrainError> {
    let s = hidden.size();
    let (hb, ht, hd) = (s[0], s[1], s[2]);
    if ht < 2 {
        return Ok(None);
    }
    let (lab, sc, idx) = labelled_positions(labels, scale)?;
    let picked = hidden
        .f_narrow(1, 0, ht - 1)?
        .f_reshape([hb * (ht - 1), hd])?
        .f_index_select(0, &idx)?;
    Ok(Some(token_loss_flat(
        &model.logits_train(&picked)?,
        &lab,
        &sc,
    )?))
}

/// One micro-batch's forward and backward with gradient checkpointing: the loss (Σ scale·CE
/// divided by `denom`, detached) and the correctly predicted labels; `None` for sequences too
/// short to predict anything.
fn checkpointed_loss(
    model: &LoadedModel,
    b: &Batch,
    denom: f64,
) -> Result<Option<(Tensor, i64)>, TrainError> {
    if b.seq_len < 2 {
        return Ok(None);
    }
    let (ids, labels, scale, mask) = tensors(b, model.device())?;
    let padded = b.attention_mask.contains(&0);
    let mut correct = 0;
    let loss = model.backward_checkpointed(&ids, padded.then_some(&mask), |hidden| {
        let tl = hidden_loss(model, hidden, &labels, &scale)?
            .ok_or_else(|| TrainError::Step("a sequence of fewer than 2 tokens".into()))?;
        correct = tl.correct;
        Ok::<_, TrainError>(tl.sum.f_div_scalar(denom)?)
    })?;
    Ok(Some((loss, correct)))
}

/// One optimiser step over `micro` batches: forward and backward each (loss divided by the
/// labelled tokens of all of them; with `checkpointing`, block activations are recomputed in
/// the backward pass), clip, update with `lr`, clear the gradients.
pub fn train_step(
    model: &LoadedModel,
    opt: &mut AdamW,
    micro: &[Batch],
    lr: f64,
    max_grad_norm: f64,
    checkpointing: bool,
) -> Result<StepOutcome, TrainError> {
    let labelled: i64 = micro
        .iter()
        .map(|b| shifted_label_count(&b.labels, b.batch, b.seq_len))
        .sum();
    let denom = labelled.max(1) as f64;
    let (mut loss, mut correct, mut tokens) = (0.0f64, 0i64, 0usize);
    for b in micro {
        if checkpointing {
            if let Some((part, c)) = checkpointed_loss(model, b, denom)? {
                loss += f64::try_from(part.f_to_kind(Kind::Double)?)?;
                correct += c;
                tokens += b.num_tokens;
            }
            continue;
        }
        let Some(tl) = batch_loss(model, b)? else {
            continue;
        };
        let part = tl.sum.f_div_scalar(denom)?;
        loss += f64::try_from(part.f_detach()?.f_to_kind(Kind::Double)?)?;
        part.f_backward()?;
        correct += tl.correct;
        tokens += b.num_tokens;
    }
    let grad_norm = opt.clip_grad_norm(max_grad_norm)?;
    opt.step(lr)?;
    opt.zero_grad();
    Ok(StepOutcome {
        loss,
        grad_norm,
        tokens,
        labelled,
        correct,
    })
}

/// Loss and token accuracy on `rows` without gradients, batches of `batch_size` (the same
/// normalisation as training: Σ scale·CE over every labelled token of the set, divided by their
/// count).
pub fn evaluate(
    model: &LoadedModel,
    rows: &[EncodedRow],
    batch_size: usize,
    pad_id: u32,
) -> Result<(f64, f64), TrainError> {
    let _g = tch::no_grad_guard();
    let collator = Collator {
        pad_id,
        packing: false,
        max_length: usize::MAX,
    };
    let (mut sum, mut labelled, mut correct) = (0.0f64, 0i64, 0i64);
    for chunk in rows.chunks(batch_size.max(1)) {
        let b = collator.pad(chunk);
        let Some(tl) = batch_loss(model, &b)? else {
            continue;
        };
        sum += f64::try_from(tl.sum.f_to_kind(Kind::Double)?)?;
        correct += tl.correct;
        labelled += shifted_label_count(&b.labels, b.batch, b.seq_len);
    }
    let n = labelled.max(1) as f64;
    Ok((sum / n, correct as f64 / n))
}

/// Trains the `trainable` tensors of `model` on `rows`.
pub fn train(
    model: &LoadedModel,
    rows: &[EncodedRow],
    trainable: &[(String, Tensor)],
    cfg: &TrainConfig,
    run: &mut RunDir,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainSummary, TrainError> {
    train_with_eval(model, rows, &[], trainable, cfg, run, hooks)
}

/// [`train`], evaluating on `eval_rows` (when there are any) every `cfg.eval_steps` steps and at
/// the end: `eval_loss` and `eval_token_acc` records in `logging.jsonl`.
pub fn train_with_eval(
    model: &LoadedModel,
    rows: &[EncodedRow],
    eval_rows: &[EncodedRow],
    trainable: &[(String, Tensor)],
    cfg: &TrainConfig,
    run: &mut RunDir,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainSummary, TrainError> {
    if rows.is_empty() {
        return Err(TrainError::Config("the training set has no rows".into()));
    }
    if trainable.is_empty() {
        return Err(TrainError::Config(
            "nothing to train: no trainable tensors".into(),
        ));
    }
    if cfg.gradient_checkpointing && cfg.packing.is_some() {
        return Err(TrainError::Config(
            "--packing and --gradient_checkpointing cannot be combined yet (the recomputed blocks do not take the packed mask): drop one of them".into(),
        ));
    }
    if cfg.gradient_checkpointing && !model.supports_checkpointing() {
        tracing::warn!("this model family has no per-block entry points: --gradient_checkpointing has no effect");
    }
    // With packing, the epochs run over packed sequences instead of rows.
    let packs = match &cfg.packing {
        Some(p) => {
            let packer = Collator {
                pad_id: cfg.pad_id,
                packing: true,
                max_length: p.max_length,
            };
            let packs = packer
                .pack_with(rows, p.strategy)
                .map_err(|e| TrainError::Config(format!("--packing: {e}")))?;
            let tokens: usize = packs.iter().map(|b| b.num_tokens).sum();
            tracing::info!(
                "packing: {} rows into {} sequences of at most {} tokens ({:.1}% filled)",
                rows.len(),
                packs.len(),
                p.max_length,
                100.0 * tokens as f64 / (packs.len() * p.max_length).max(1) as f64
            );
            Some(packs)
        }
        None => None,
    };
    let units = packs.as_ref().map_or(rows.len(), Vec::len);
    let per_epoch = steps_per_epoch(units, cfg.batch_size, cfg.grad_accum);
    let total_steps = cfg
        .max_steps
        .filter(|&s| s > 0)
        .unwrap_or_else(|| ((cfg.num_train_epochs * per_epoch as f64).ceil() as u64).max(1));
    let schedule = LrSchedule::new(
        cfg.lr_scheduler,
        cfg.learning_rate,
        total_steps,
        cfg.warmup_steps,
        cfg.warmup_ratio,
    );
    let mut opt = AdamW::new(trainable, cfg.adamw)?;
    for (pattern, factor) in &cfg.lr_factors {
        let n = opt.scale_lr(pattern, *factor);
        tracing::info!("learning rate × {factor} for {n} tensors matching `{pattern}`");
    }
    // LISA: the decoder layers among the trainable tensors.
    let lisa_layers: Vec<usize> = {
        let mut l: Vec<usize> = trainable.iter().filter_map(|(n, _)| layer_of(n)).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    if let Some(lisa) = &cfg.lisa {
        if lisa.activated_layers == 0 || lisa.step_interval == 0 {
            return Err(TrainError::Config(
                "LISA needs --lisa_activated_layers and --lisa_step_interval above 0".into(),
            ));
        }
        if lisa_layers.is_empty() {
            return Err(TrainError::Config(
                "LISA found no decoder layers (`….layers.N.…`) among the trainable tensors".into(),
            ));
        }
    }
    let collator = Collator {
        pad_id: cfg.pad_id,
        packing: false,
        max_length: usize::MAX,
    };
    let steps = plan(units, cfg, total_steps);
    let start = match &cfg.resume_from {
        Some(dir) => {
            let done = load_trainer_state(dir, &mut opt)?;
            if done >= total_steps {
                return Err(TrainError::Config(format!(
                    "{} ended at step {done}; this run has {total_steps} steps, so nothing is left (raise --max_steps or --num_train_epochs)",
                    dir.display()
                )));
            }
            tracing::info!("resuming from {} at step {}", dir.display(), done + 1);
            done as usize
        }
        None => 0,
    };
    let started = Instant::now();
    let mut summary = TrainSummary {
        steps: 0,
        losses: Vec::new(),
        seconds: 0.0,
        tokens: 0,
        last_checkpoint: None,
    };
    // Accumulated between log records.
    let (mut w_loss, mut w_steps, mut w_correct, mut w_labelled, mut w_time, mut w_tokens) =
        (0.0f64, 0u64, 0i64, 0i64, 0.0f64, 0usize);
    // LISA's layers of the current interval (logged with every record).
    let mut lisa_active: Option<Vec<usize>> = None;
    for (i, group) in steps.iter().enumerate().skip(start) {
        let step = i as u64 + 1;
        // Dropout's draws depend on (seed, step) only, so a resumed run repeats them.
        tch::manual_seed(cfg.seed.wrapping_add(i as u64 * 1_000_003) as i64);
        let t0 = Instant::now();
        let micro: Vec<Batch> = group
            .iter()
            .flat_map(|idx| {
                idx.chunks(if cfg.rows_per_pass == 0 {
                    idx.len().max(1)
                } else {
                    cfg.rows_per_pass
                })
            })
            .map(|idx| match &packs {
                Some(packs) => {
                    let chosen: Vec<Batch> = idx.iter().map(|&k| packs[k].clone()).collect();
                    Batch::stack(&chosen, cfg.pad_id)
                }
                None => {
                    let chosen: Vec<EncodedRow> = idx.iter().map(|&k| rows[k].clone()).collect();
                    collator.pad(&chosen)
                }
            })
            .collect();
        let lr = schedule.lr(i as u64);
        let resumed_here = i == start && start > 0;
        if let Some(lisa) = cfg
            .lisa
            .filter(|l| (i as u64).is_multiple_of(l.step_interval) || resumed_here)
        {
            let interval_start = i as u64 - i as u64 % lisa.step_interval;
            let active = lisa_draw(
                &lisa_layers,
                lisa.activated_layers,
                cfg.seed,
                interval_start,
            );
            for (name, t) in trainable {
                let on = layer_of(name).is_none_or(|l| active.contains(&l));
                let _ = t.set_requires_grad(on);
            }
            if !resumed_here || i as u64 == interval_start {
                opt.reset_state()?;
            }
            tracing::info!("LISA: step {step} trains layers {active:?}");
            lisa_active = Some(active);
        }
        let out = train_step(
            model,
            &mut opt,
            &micro,
            lr,
            cfg.max_grad_norm,
            cfg.gradient_checkpointing,
        )?;
        if !out.loss.is_finite() {
            return Err(TrainError::Step(format!(
                "step {step}: the loss is {} (try a lower --learning_rate)",
                out.loss
            )));
        }
        let dt = t0.elapsed().as_secs_f64();
        let info = StepInfo {
            step,
            total_steps,
            loss: out.loss,
            grad_norm: out.grad_norm,
            learning_rate: lr,
            token_acc: out.correct as f64 / out.labelled.max(1) as f64,
            epoch: step as f64 / per_epoch as f64,
            step_time: dt,
            tokens: out.tokens,
        };
        summary.losses.push(out.loss);
        summary.tokens += out.tokens;
        summary.steps = step;
        hooks.on_step(&info);
        w_loss += out.loss;
        w_steps += 1;
        w_correct += out.correct;
        w_labelled += out.labelled;
        w_time += dt;
        w_tokens += out.tokens;
        let last = step == total_steps;
        if step.is_multiple_of(cfg.logging_steps.max(1)) || last || step == 1 {
            let elapsed = started.elapsed().as_secs_f64();
            let mut rec = json!({
                "loss": w_loss / w_steps as f64,
                "grad_norm": out.grad_norm,
                "learning_rate": lr,
                "token_acc": w_correct as f64 / w_labelled.max(1) as f64,
                "epoch": info.epoch,
                "step": step,
                "global_step/max_steps": format!("{step}/{total_steps}"),
                "step_time": w_time / w_steps as f64,
                "tokens_per_sec": w_tokens as f64 / w_time.max(1e-9),
                "elapsed_time": elapsed,
                "remaining_time": elapsed / step as f64 * (total_steps - step) as f64,
            });
            if let Some(m) = peak_rss_mib() {
                rec["memory_mib"] = json!(m);
            }
            if let Some(active) = &lisa_active {
                rec["lisa_layers"] = json!(active);
            }
            run.log(&rec)?;
            (w_loss, w_steps, w_correct, w_labelled, w_time, w_tokens) = (0.0, 0, 0, 0, 0.0, 0);
        }
        if !eval_rows.is_empty()
            && ((cfg.eval_steps > 0 && step.is_multiple_of(cfg.eval_steps)) || last)
        {
            hooks.set_training(false);
            let (eval_loss, eval_acc) = evaluate(model, eval_rows, cfg.batch_size, cfg.pad_id)?;
            hooks.set_training(true);
            tracing::info!("step {step}: eval_loss {eval_loss:.4}, eval_token_acc {eval_acc:.3}");
            run.log(&json!({
                "eval_loss": eval_loss,
                "eval_token_acc": eval_acc,
                "epoch": info.epoch,
                "step": step,
                "global_step/max_steps": format!("{step}/{total_steps}"),
            }))?;
        }
        if (cfg.save_steps > 0 && step.is_multiple_of(cfg.save_steps)) || last {
            let w = run.begin_checkpoint(step)?;
            hooks.save(step, w.dir())?;
            save_trainer_state(w.dir(), &opt, step, info.epoch)?;
            summary.last_checkpoint = Some(w.commit()?);
            if let Some(limit) = cfg.save_total_limit {
                run.rotate(limit.max(1))?;
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let n = summary.losses.len().max(1) as f64;
    run.log(&json!({
        "train_runtime": summary.seconds,
        "train_loss": summary.losses.iter().sum::<f64>() / n,
        "train_steps": summary.steps,
        "train_tokens": summary.tokens,
        "train_tokens_per_sec": summary.tokens as f64 / summary.seconds.max(1e-9),
        "memory_mib": peak_rss_mib(),
    }))?;
    match crate::plot::plot_run(run.path()) {
        Ok(files) => tracing::info!(
            "{} charts in {}",
            files.len(),
            run.path().join("images").display()
        ),
        Err(e) => tracing::warn!("could not draw the loss curve: {e}"),
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(batch: usize, accum: usize, shuffle: bool) -> TrainConfig {
        TrainConfig {
            learning_rate: 1e-4,
            lr_scheduler: ScheduleKind::Constant,
            warmup_ratio: 0.0,
            warmup_steps: None,
            num_train_epochs: 1.0,
            max_steps: None,
            batch_size: batch,
            grad_accum: accum,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            seed: 42,
            shuffle,
            logging_steps: 1,
            save_steps: 0,
            save_total_limit: None,
            pad_id: 0,
            lr_factors: Vec::new(),
            lisa: None,
            resume_from: None,
            eval_steps: 0,
            rows_per_pass: 0,
            packing: None,
            gradient_checkpointing: false,
        }
    }

    #[test]
    fn lisa_draws_distinct_layers_and_finds_them_in_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("model.embed_tokens.weight"), None);
        let layers: Vec<usize> = (0..30).collect();
        let a = lisa_draw(&layers, 2, 42, 0);
        assert_eq!(a.len(), 2);
        assert!(a[0] < a[1], "distinct and sorted: {a:?}");
        assert_eq!(a, lisa_draw(&layers, 2, 42, 0), "seeded");
        let draws: std::collections::BTreeSet<Vec<usize>> =
            (0..8).map(|s| lisa_draw(&layers, 2, 42, s)).collect();
        assert!(draws.len() > 1, "re-drawn per interval");
    }

    #[test]
    fn step_counts_and_plans() {
        assert_eq!(steps_per_epoch(16, 4, 1), 4);
        assert_eq!(steps_per_epoch(17, 4, 2), 3);
        let p = plan(5, &cfg(2, 2, false), 3);
        assert_eq!(
            p,
            vec![
                vec![vec![0, 1], vec![2, 3]],
                vec![vec![4]],
                vec![vec![0, 1], vec![2, 3]]
            ]
        );
        let s = shuffled(10, 7);
        let mut sorted = s.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(s, (0..10).collect::<Vec<_>>());
        assert_eq!(s, shuffled(10, 7), "same seed, same order");
    }
}
