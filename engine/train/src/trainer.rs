//! The training loop, one for every task: `swift sft` / `swift pt` (the token objective,
//! [`crate::token`]) and `swift rlhf` (the preference objective, [`crate::rlhf`]) run the same
//! [`train`]. What differs between tasks is an [`Objective`]: how many training units there are,
//! one optimiser step's forward and backward passes over its micro-batches, the metrics of a
//! logging window, and evaluation on its validation units. The loop owns everything else, once:
//!
//! * Step planning: epochs over the units, shuffled per epoch from the seed ([`plan`]),
//!   micro-batches of `batch_size` units, `grad_accum` of them per optimiser step.
//! * The learning-rate schedule with warm-up, per-tensor learning-rate factors (LoRA+), LISA's
//!   layer draws ([`lisa_draw`]), gradient-norm clipping, and the registered optimizer the
//!   configuration names (`--optimizer`: `crate::optim`, the plugin's math over the host's tensors).
//! * Seeding: libtorch's generator (dropout) is re-seeded from (seed, step) before every
//!   optimiser step, so a step's draws do not depend on what ran before it (an earlier step, an
//!   evaluation, a resumed run's restart).
//! * Resuming (`resume_from`): a checkpoint also holds `optimizer.safetensors` (the trained
//!   tensors and the optimizer's state) and `trainer_state.json` (the step). The data order is a
//!   function of the seed and the epoch and the draws of the step, so a resumed run skips the
//!   steps already taken and then computes exactly what the uninterrupted run computed.
//! * Evaluation on the objective's validation units (and the caller's benchmarks,
//!   [`TrainHooks::benchmarks`], with or without validation units) every `eval_steps` steps and
//!   at the end (and
//!   before the first step with `eval_on_start`): no gradients, training-only behaviour off
//!   through [`TrainHooks::set_training`], records with `eval_`-prefixed metrics. It leaves the
//!   training untouched: a run with a validation set takes exactly the steps of one without.
//! * `logging.jsonl` records every `logging_steps` steps (and at steps 1 and last), checkpoints
//!   written crash-safely (crate::run_dir) every `save_steps` and at the end (with `save_total_limit` rotation and
//!   the trainer state), the run's summary record (throughputs over the time spent inside the
//!   steps), the charts of `images/` (crate::plot) when the run ends, and the error for a loss
//!   that is not finite.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;
use crate::collate::PackingStrategy;
use crate::optim::{Optimizer, OptimizerSetting};
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
    /// The registered optimizer and its options.
    pub optimizer: OptimizerSetting,
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
    /// Evaluate on the validation units every this many steps (and at the end); 0: only at the end.
    pub eval_steps: u64,
    /// Also evaluate before the first step (transformers' `eval_on_start`), logged at the step
    /// the run starts from (0, or a resumed run's checkpoint step).
    pub eval_on_start: bool,
    /// Rows per forward/backward pass inside a micro-batch (0: the whole micro-batch at once).
    /// The loss is normalised over the labelled tokens of the whole step, so the gradient is the
    /// same either way; fewer rows per pass hold fewer activations (and pad less).
    pub rows_per_pass: usize,
    /// At most this many tokens in a pass of several rows (a longer row makes a pass alone; 0: no
    /// limit), so the activations a pass holds stay bounded whatever the rows' lengths.
    pub max_pass_tokens: usize,
    /// `--packing`: train on rows packed into sequences (then `batch_size` counts sequences).
    pub packing: Option<PackingConfig>,
    /// Recompute each block's activations during the backward pass instead of keeping them
    /// (`LoadedModel::backward_checkpointed`): less memory, about one more forward pass of time.
    pub gradient_checkpointing: bool,
    /// `--deepspeed zero1|zero2`: the optimizer state (and gradients) sharded over the ranks
    /// (`crate::zero`).
    pub zero: Option<crate::zero::ZeroStage>,
}

/// `--packing`'s settings: rows are packed once, before the first epoch, into sequences of at
/// most `max_length` tokens grouped by `strategy`; the packed sequences are what the epochs
/// shuffle and the batches hold, as in ms-swift's `PackingDataset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackingConfig {
    pub max_length: usize,
    pub strategy: PackingStrategy,
}

/// Writes the optimiser's state (`tensors`: `Optimizer::state`, or ZeRO's gathered one) and
/// the step into checkpoint folder `dir`.
fn save_trainer_state(
    dir: &Path,
    tensors: &[(String, Tensor)],
    optimizer: &str,
    step: u64,
    epoch: f64,
) -> Result<(), TrainError> {
    crate::checkpoint::save_safetensors(&dir.join("optimizer.safetensors"), tensors)?;
    let state = json!({
        "global_step": step,
        "epoch": epoch,
        "optimizer": optimizer,
    });
    let path = dir.join("trainer_state.json");
    std::fs::write(&path, format!("{state:#}\n")).map_err(|e| TrainError::io(&path, e))
}

/// Loads what [`save_trainer_state`] wrote into `opt`; returns the step the checkpoint ended at.
fn load_trainer_state(dir: &Path, opt: &mut Optimizer, optimizer: &str) -> Result<u64, TrainError> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::Config(format!(
            "cannot resume from {}: {} ({e}; checkpoints written by swift sft, pt and rlhf hold it)",
            dir.display(),
            path.display()
        ))
    })?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let step = state["global_step"]
        .as_u64()
        .ok_or_else(|| TrainError::Config(format!("{}: no global_step", path.display())))?;
    let saved_with = state["optimizer"].as_str().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no `optimizer` (a checkpoint written before optimizers were plugins cannot be resumed)",
            path.display()
        ))
    })?;
    if saved_with != optimizer {
        return Err(TrainError::Config(format!(
            "{} was trained with --optimizer {saved_with}; resume it with the same optimizer (this run asks for {optimizer})",
            dir.display()
        )));
    }
    let file = dir.join("optimizer.safetensors");
    let ckpt = swift_model::weights::Checkpoint::open(std::slice::from_ref(&file))?;
    let get = |name: &str| -> Option<Tensor> {
        ckpt.load(name, Kind::Float, tch::Device::Cpu)
            .ok()
            .map(|l| l.tensor.copy())
    };
    let names: Vec<String> = ckpt.names().map(String::from).collect();
    opt.restore(&names, &get, step)?;
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

/// The most parameters LISA trains in one interval: every trainable tensor outside the decoder
/// layers (embeddings, final norm, output head) and the `k` largest layers' tensors.
pub fn lisa_trainable_at_once(trainable: &[(String, tch::Tensor)], k: usize) -> i64 {
    let mut per_layer = std::collections::BTreeMap::<usize, i64>::new();
    let mut outside = 0i64;
    for (name, t) in trainable {
        let n = t.numel() as i64;
        match layer_of(name) {
            Some(l) => *per_layer.entry(l).or_default() += n,
            None => outside += n,
        }
    }
    let mut sizes: Vec<i64> = per_layer.into_values().collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    outside + sizes.iter().take(k).sum::<i64>()
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
    /// Called after every optimiser step with the step's own metrics ([`Objective::metrics`]:
    /// `loss` and `token_acc`, or preference training's `rewards/accuracies`, ...).
    fn on_metrics(&mut self, _step: u64, _metrics: &serde_json::Map<String, serde_json::Value>) {}
    /// After the step's forward and backward passes, before clipping and the update: the
    /// tuner's extra loss term is run backward into the gradients (its value is returned, added
    /// to the logged loss).
    fn after_backward(&mut self, _step: u64, _total_steps: u64) -> Result<f64, TrainError> {
        Ok(0.0)
    }
    /// After the optimiser's update, before the gradients are cleared: the tuner's
    /// after-backward hook sees the (clipped) gradients and the updated tensors (the tuner
    /// contract; where PEFT's documented loop calls AdaLoRA's `update_and_allocate`).
    fn after_update(&mut self, _step: u64, _total_steps: u64) -> Result<(), TrainError> {
        Ok(())
    }
    /// Whether benchmarks run at each evaluation (`--eval_use_evalscope`), with or without
    /// validation units.
    fn has_benchmarks(&self) -> bool {
        false
    }
    /// Runs the benchmarks on the model as it is at `step` (training-only behaviour is off);
    /// their metrics (`BENCHMARK_METRIC`) are logged with the `eval_` prefix beside the
    /// validation metrics.
    fn benchmarks(&mut self, _step: u64) -> Result<Map<String, Value>, TrainError> {
        Ok(Map::new())
    }
}

/// The run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub steps: u64,
    pub losses: Vec<f64>,
    pub seconds: f64,
    pub tokens: usize,
    pub last_checkpoint: Option<std::path::PathBuf>,
    /// The run folder.
    pub run_dir: std::path::PathBuf,
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

/// Peak resident memory of this process in MiB (Linux), for the log.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What one optimiser step of an [`Objective`] computed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput<W> {
    /// The step's loss (what its gradient is the gradient of).
    pub loss: f64,
    /// Non-padding input tokens of the step.
    pub tokens: usize,
    /// Training units of the step (rows, packed sequences, pairs, KTO rows).
    pub units: usize,
    /// The step's own sums of what the metrics average ([`Objective::metrics`]).
    pub window: W,
}

/// A task's part of training: what [`train`] does not own.
pub trait Objective {
    /// Sums over the steps of a logging window of what the window's metrics average.
    type Window: Default;

    /// The training units the epochs shuffle and the micro-batches hold (rows, packed
    /// sequences, preference pairs, KTO rows).
    fn units(&self) -> usize;

    /// A name for the units in the throughput records (`pairs`: `pairs_per_sec` in each record,
    /// `train_pairs` and `train_pairs_per_sec` in the summary); `None` logs no unit rates.
    fn unit_name(&self) -> Option<&'static str> {
        None
    }

    /// One optimiser step's forward and backward passes over `micro` (the unit indices of each
    /// micro-batch): the gradient of the step's loss accumulates into the trainable tensors; the
    /// loop then clips, updates and clears it. `step` counts from 1. The generator is already
    /// seeded for the step.
    fn step(
        &mut self,
        step: u64,
        micro: &[Vec<usize>],
    ) -> Result<StepOutput<Self::Window>, TrainError>;

    /// Adds a step's sums into a window's.
    fn merge(&self, into: &mut Self::Window, step: &Self::Window);

    /// The metrics of a window (or of one step), under the names `logging.jsonl` uses; `loss`
    /// among them.
    fn metrics(&self, window: &Self::Window) -> Map<String, Value>;

    /// Whether there are validation units.
    fn has_validation(&self) -> bool {
        false
    }

    /// The metrics on the validation units (`loss` among them), without gradients; the loop
    /// logs them with an `eval_` prefix. Must leave the training state as it found it.
    fn evaluate(&mut self) -> Result<Map<String, Value>, TrainError> {
        Ok(Map::new())
    }

    /// Data parallel ([`crate::parallel`]): what this rank's step loss is normalised by (the
    /// token objective: its labelled tokens; by default its units), so the ranks' gradients
    /// combine into the gradient of the global batch.
    fn step_weight(&self, out: &StepOutput<Self::Window>) -> f64 {
        out.units as f64
    }

    /// Data parallel: the counts of a step's window that add up over the ranks.
    fn window_counts(&self, _window: &Self::Window) -> Vec<f64> {
        Vec::new()
    }

    /// Data parallel: sets a step's window from the global step `loss` and the sums over the
    /// ranks of [`Objective::window_counts`].
    fn set_window_counts(&self, _window: &mut Self::Window, _loss: f64, _counts: &[f64]) {}

    /// What the error for a loss that is not finite suggests.
    fn divergence_hint(&self) -> &'static str {
        "try a lower --learning_rate"
    }
}

/// Evaluates and writes the `eval_…` record of `step`.
fn log_evaluation<O: Objective>(
    objective: &mut O,
    hooks: &mut dyn TrainHooks,
    run: &mut RunDir,
    step: u64,
    total_steps: u64,
    epoch: f64,
) -> Result<(), TrainError> {
    hooks.set_training(false);
    let metrics = if objective.has_validation() {
        objective.evaluate()
    } else {
        Ok(Map::new())
    };
    let benchmarks = match &metrics {
        Ok(_) if hooks.has_benchmarks() => hooks.benchmarks(step),
        _ => Ok(Map::new()),
    };
    hooks.set_training(true);
    let mut metrics = metrics?;
    metrics.extend(benchmarks?);
    let mut rec = Map::new();
    let mut shown = String::new();
    for (k, v) in metrics {
        if let Some(x) = v.as_f64() {
            shown.push_str(&format!(", eval_{k} {x:.4}"));
        }
        rec.insert(format!("eval_{k}"), v);
    }
    tracing::info!("step {step}: {}", shown.trim_start_matches(", "));
    rec.insert("epoch".into(), json!(epoch));
    rec.insert("step".into(), json!(step));
    rec.insert(
        "global_step/max_steps".into(),
        json!(format!("{step}/{total_steps}")),
    );
    run.log(&Value::Object(rec))?;
    Ok(())
}

/// Trains the `trainable` tensors with `objective`: the one training loop (see the module's
/// documentation for what it owns).
pub fn train<O: Objective>(
    objective: &mut O,
    trainable: &[(String, Tensor)],
    cfg: &TrainConfig,
    run: &mut RunDir,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainSummary, TrainError> {
    let units = objective.units();
    if units == 0 {
        return Err(TrainError::Config("the training set has no rows".into()));
    }
    if trainable.is_empty() {
        return Err(TrainError::Config(
            "nothing to train: no trainable tensors".into(),
        ));
    }
    // Data parallel: the loop plans global micro-batches of per-device × world units and this
    // rank trains its shard of each (crate::parallel).
    let group = swift_dist::current();
    let world = group.map_or(1, |g| g.world());
    let mut global = cfg.clone();
    global.batch_size = cfg.batch_size.max(1) * world;
    let per_epoch = steps_per_epoch(units, global.batch_size, cfg.grad_accum);
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
    let zero = cfg
        .zero
        .map(|stage| crate::zero::Zero::new(stage, trainable, group));
    let mut opt = match &zero {
        Some(z) => z.optimizer(trainable, &cfg.optimizer)?,
        None => Optimizer::new(trainable, &cfg.optimizer)?,
    };
    if let Some(z) = &zero {
        z.report(&mut opt)?;
    }
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
    let mut steps = plan(units, &global, total_steps);
    if let Some(g) = group {
        steps = crate::parallel::shard(steps, g.rank(), cfg.batch_size.max(1));
        crate::parallel::sync_start(g, trainable)?;
        tracing::info!(
            "data parallel: rank {} of {}, {} units per device, global batch {}",
            g.rank(),
            world,
            cfg.batch_size,
            global.batch_size * cfg.grad_accum.max(1)
        );
    }
    let start = match &cfg.resume_from {
        Some(dir) => {
            let done = load_trainer_state(dir, &mut opt, &cfg.optimizer.name)?;
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
        run_dir: run.path().to_path_buf(),
    };
    if cfg.eval_on_start && (objective.has_validation() || hooks.has_benchmarks()) {
        let at = start as u64;
        log_evaluation(
            objective,
            hooks,
            run,
            at,
            total_steps,
            at as f64 / per_epoch as f64,
        )?;
    }
    // Accumulated between log records (the objective's sums, and the loop's).
    let mut window = O::Window::default();
    let (mut w_steps, mut w_time, mut w_tokens, mut w_units) = (0u64, 0.0f64, 0usize, 0usize);
    // The whole run's time inside the steps and units trained.
    let (mut train_time, mut units_done) = (0.0f64, 0usize);
    // LISA's layers of the current interval (logged with every record).
    let mut lisa_active: Option<Vec<usize>> = None;
    let mut threads = crate::threads::TrainThreads::new();
    crate::memory::keep_freed_memory();
    for (i, micro) in steps.iter().enumerate().skip(start) {
        let step = i as u64 + 1;
        threads.before_step(step);
        // Dropout's draws depend on (seed, step) only, so a resumed run repeats them.
        tch::manual_seed(cfg.seed.wrapping_add(i as u64 * 1_000_003) as i64);
        let t0 = Instant::now();
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
        let mut out = objective.step(step, micro)?;
        if let Some(g) = group {
            crate::parallel::reduce_step(g, objective, &mut out, trainable, zero.as_ref())?;
        }
        out.loss += hooks.after_backward(step, total_steps)?;
        let grad_norm = match &zero {
            Some(z) => z.clip(&mut opt, trainable, cfg.max_grad_norm)?,
            None => opt.clip_grad_norm(cfg.max_grad_norm)?,
        };
        opt.step(lr)?;
        if let Some(z) = &zero {
            z.gather_params(trainable)?;
        }
        hooks.after_update(step, total_steps)?;
        opt.zero_grad();
        if !out.loss.is_finite() {
            return Err(TrainError::Step(format!(
                "step {step}: the loss is {} ({})",
                out.loss,
                objective.divergence_hint()
            )));
        }
        let dt = t0.elapsed().as_secs_f64();
        let own = objective.metrics(&out.window);
        let info = StepInfo {
            step,
            total_steps,
            loss: out.loss,
            grad_norm,
            learning_rate: lr,
            token_acc: own.get("token_acc").and_then(Value::as_f64).unwrap_or(0.0),
            epoch: step as f64 / per_epoch as f64,
            step_time: dt,
            tokens: out.tokens,
        };
        summary.losses.push(out.loss);
        summary.tokens += out.tokens;
        summary.steps = step;
        train_time += dt;
        units_done += out.units;
        hooks.on_step(&info);
        hooks.on_metrics(step, &own);
        objective.merge(&mut window, &out.window);
        w_steps += 1;
        w_time += dt;
        w_tokens += out.tokens;
        w_units += out.units;
        let last = step == total_steps;
        if step.is_multiple_of(cfg.logging_steps.max(1)) || last || step == 1 {
            let elapsed = started.elapsed().as_secs_f64();
            let mut rec = objective.metrics(&window);
            let mut put = |k: &str, v: Value| {
                rec.insert(k.to_string(), v);
            };
            put("grad_norm", json!(grad_norm));
            put("learning_rate", json!(lr));
            put("epoch", json!(info.epoch));
            put("step", json!(step));
            put(
                "global_step/max_steps",
                json!(format!("{step}/{total_steps}")),
            );
            put("step_time", json!(w_time / w_steps as f64));
            put("tokens_per_sec", json!(w_tokens as f64 / w_time.max(1e-9)));
            if let Some(unit) = objective.unit_name() {
                put(
                    &format!("{unit}_per_sec"),
                    json!(w_units as f64 / w_time.max(1e-9)),
                );
            }
            put("elapsed_time", json!(elapsed));
            put(
                "remaining_time",
                json!(elapsed / (step - start as u64) as f64 * (total_steps - step) as f64),
            );
            if let Some(m) = peak_rss_mib() {
                put("memory_mib", json!(m));
            }
            if let Some(active) = &lisa_active {
                put("lisa_layers", json!(active));
            }
            run.log(&Value::Object(rec))?;
            window = O::Window::default();
            (w_steps, w_time, w_tokens, w_units) = (0, 0.0, 0, 0);
        }
        if (objective.has_validation() || hooks.has_benchmarks())
            && ((cfg.eval_steps > 0 && step.is_multiple_of(cfg.eval_steps)) || last)
        {
            log_evaluation(objective, hooks, run, step, total_steps, info.epoch)?;
        }
        let save = (cfg.save_steps > 0 && step.is_multiple_of(cfg.save_steps)) || last;
        // ZeRO: every rank hands its shard of the optimizer state to the checkpoint.
        let state = match &zero {
            Some(z) if save => Some(z.full_state(&mut opt)?),
            _ => None,
        };
        if save && run.writes() {
            let w = run.begin_checkpoint(step)?;
            hooks.save(step, w.dir())?;
            let state = match state {
                Some(s) => s,
                None => opt.state()?,
            };
            save_trainer_state(w.dir(), &state, &cfg.optimizer.name, step, info.epoch)?;
            summary.last_checkpoint = Some(w.commit()?);
            if let Some(limit) = cfg.save_total_limit {
                run.rotate(limit.max(1))?;
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let n = summary.losses.len().max(1) as f64;
    let mut rec = json!({
        "train_runtime": summary.seconds,
        "train_loss": summary.losses.iter().sum::<f64>() / n,
        "train_steps": summary.steps,
        "train_tokens": summary.tokens,
        "train_tokens_per_sec": summary.tokens as f64 / train_time.max(1e-9),
        "memory_mib": peak_rss_mib(),
    });
    if let Some(unit) = objective.unit_name() {
        rec[format!("train_{unit}")] = json!(units_done);
        rec[format!("train_{unit}_per_sec")] = json!(units_done as f64 / train_time.max(1e-9));
    }
    run.log(&rec)?;
    if let Some(g) = group {
        // The other ranks end when rank 0 has written its last checkpoint.
        g.barrier().map_err(|e| TrainError::Step(e.to_string()))?;
    }
    if !run.writes() {
        return Ok(summary);
    }
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
            optimizer: crate::optim::tests_support::adamw(),
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
            eval_on_start: false,
            rows_per_pass: 0,
            max_pass_tokens: 0,
            packing: None,
            gradient_checkpointing: false,
            zero: None,
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
