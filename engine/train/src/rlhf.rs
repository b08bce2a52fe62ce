//! Preference training (`swift rlhf`): DPO and its variants, ORPO, SimPO, CPO (chosen/rejected
//! pairs), KTO (unpaired rows with a desirable/undesirable label) and reward modelling (pairs
//! scored by a value head, [`crate::reward`]: the per-sequence quantity is the head's score
//! instead of the answer's log-probability, and everything else below is shared). This is the
//! preference [`Objective`] of the one training loop ([`crate::trainer::train`]), which owns the
//! epochs, schedule, learning-rate factors, LISA, accumulation, clipping, seeding, resuming,
//! evaluation, records, checkpoints and charts, as for `swift sft`.
//!
//! Each step encodes nothing: rows arrive encoded (labels only on the final answer). A paired
//! micro-batch holds its chosen and rejected sequences together (chosen first, as TRL's
//! concatenated forward does) and sums each sequence's answer-token log-probabilities
//! ([`sequence_logps`]). With `chunk = 0` the policy runs once over the padded batch with its
//! graph; with `chunk = k` it runs in two passes of `k` sequences at a time ([`first_pass`]), which
//! gives the same gradient of any loss while holding only one chunk's activations (each chunk
//! re-seeds the generator from (seed, step, micro-batch, chunk), so both passes draw the same
//! dropout masks); with gradient checkpointing the second pass also recomputes one block at a
//! time. When the loss needs a reference, the same batch runs again under `no_grad` through the
//! [`Reference`]: the policy with its LoRA adapters switched off (one copy of the base weights)
//! or, for full fine-tuning, a frozen copy of the model. The loss itself is not written here: it
//! is a function of those per-sequence log-probabilities that the caller passes in (the host
//! resolves it in the preference-loss registry).
//!
//! KTO also needs its reference point: each row's prompt with another row's answer (the "KL"
//! rows, built by the caller), scored by policy and reference without gradients;
//! `KL = max(0, mean(policy − reference))`.
//!
//! Logged per step, named as TRL and ms-swift name them: `loss`, `grad_norm`, `learning_rate`,
//! `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected`, `nll_loss` (when the loss uses it) and `kl` (KTO).
//!
//! Evaluation (validation items, batches of `batch_size`, no gradients, dropout off) logs what
//! TRL's trainer of the method logs, `eval_`-prefixed by the loop: the same metrics as training
//! for DPO / ORPO / SimPO / CPO / KTO (`eval_loss`, `eval_rewards/chosen`, ..., `eval_kl`), and
//! for reward modelling RewardTrainer's `eval_loss`, `eval_accuracy` (share of pairs scored
//! chosen > rejected), `eval_margin` (mean chosen − rejected), `eval_min_reward`,
//! `eval_mean_reward`, `eval_max_reward` (over every score, chosen and rejected). `eval_loss`
//! is the batches' losses weighted by their items (as transformers' evaluation loop averages
//! it); the other metrics are pooled over the items.

use serde_json::{json, Map, Value};
use swift_model::LoadedModel;
use swift_plugin_tensors::{PreferenceInputs, PreferenceOutput};
use tch::{Kind, Reduction, Tensor};

use crate::adapter::AttachedAdapter;
use crate::checkpoint::TrainError;
use crate::collate::{tensors, Batch, Collator, EncodedRow};
use crate::reward::ValueHead;
use crate::run_dir::RunDir;
use crate::trainer::{Objective, StepOutput, TrainConfig, TrainHooks, TrainSummary};

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub enum PrefItem {
    /// The same prompt with the preferred and the dispreferred answer.
    Pair {
        chosen: EncodedRow,
        rejected: EncodedRow,
    },
    /// KTO: one answer, desirable or not, and the KL row (this prompt, another row's answer).
    Unpaired {
        row: EncodedRow,
        desirable: bool,
        kl: EncodedRow,
    },
}

/// Where the reference log-probabilities come from.
pub enum Reference<'a> {
    /// The loss is reference-free (ORPO, SimPO, CPO): no reference pass at all.
    Free,
    /// The policy with these adapters switched off (LoRA: one copy of the base weights).
    AdaptersOff(&'a AttachedAdapter),
    /// A separate frozen model (full fine-tuning, or `--ref_model`).
    Model(&'a LoadedModel),
}

impl Reference<'_> {
    /// A short description for the run's records.
    pub fn describe(&self) -> &'static str {
        match self {
            Reference::Free => "none (reference-free loss)",
            Reference::AdaptersOff(_) => "the policy with its adapters disabled",
            Reference::Model(_) => "a frozen copy of the model",
        }
    }
}

/// The preference loss: per-sequence log-probabilities in, loss and rewards out.
pub type LossFn<'a> = dyn Fn(&PreferenceInputs) -> Result<PreferenceOutput, String> + 'a;

/// What the loop needs besides [`TrainConfig`].
pub struct PreferenceSetup<'a> {
    pub loss: &'a LossFn<'a>,
    pub reference: Reference<'a>,
    /// Log `nll_loss` (the loss uses the chosen answers' NLL: ORPO, CPO, SimPO, RPO).
    pub log_nll: bool,
    /// Paired data: run the policy's gradient pass over this many sequences at a time (0: the
    /// whole micro-batch at once, TRL's concatenated forward). See [`first_pass`].
    pub chunk: usize,
    /// Reward modelling: the loss reads this value head's scores instead of log-probabilities.
    pub value_head: Option<&'a ValueHead>,
}

/// What the loss reads per sequence of a padded batch, with the sequences' token counts:
/// the answer's summed log-probabilities, or (reward modelling) the value head's score.
fn per_sequence(
    model: &LoadedModel,
    head: Option<&ValueHead>,
    batch: &Batch,
) -> Result<(Tensor, Tensor), TrainError> {
    match head {
        Some(h) => h.scores(model, batch),
        None => sequence_logps(model, batch),
    }
}

/// Sums of the answer tokens' log-probabilities per sequence of a padded batch (`[b]`, with
/// the graph when gradients are on) and the answer tokens per sequence (`[b]`, float).
pub fn sequence_logps(model: &LoadedModel, batch: &Batch) -> Result<(Tensor, Tensor), TrainError> {
    let (ids, labels, _scale, mask) = tensors(batch, model.device())?;
    let hidden = crate::token::forward_padded(model, batch, &ids, &mask)?;
    hidden_logps(model, &hidden, &labels)
}

/// [`sequence_logps`] from the final hidden states `[batch, seq, hidden]` and the labels.
fn hidden_logps(
    model: &LoadedModel,
    hidden: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor), TrainError> {
    let s = hidden.size();
    let (hb, ht, hd) = (s[0], s[1], s[2]);
    let zeros = || Tensor::f_zeros([hb], (Kind::Float, model.device()));
    if ht < 2 {
        return Ok((zeros()?, zeros()?));
    }
    let lab = labels.f_narrow(1, 1, ht - 1)?.f_reshape([-1])?;
    let idx = lab.f_ne(-100)?.f_nonzero()?.f_squeeze_dim(1)?;
    // The output projection only where an answer token is predicted.
    let picked = hidden
        .f_narrow(1, 0, ht - 1)?
        .f_reshape([hb * (ht - 1), hd])?
        .f_index_select(0, &idx)?;
    let logits = model.logits_train(&picked)?.f_to_kind(Kind::Float)?;
    let target = lab.f_index_select(0, &idx)?;
    let token_logps = logits
        .f_cross_entropy_loss::<Tensor>(&target, None, Reduction::None, -100, 0.0)?
        .f_neg()?;
    let rows = idx.f_floor_divide_scalar(ht - 1)?;
    let logps = zeros()?.f_index_add(0, &rows, &token_logps)?;
    let counts = zeros()?.f_index_add(0, &rows, &token_logps.f_ones_like()?.f_detach()?)?;
    Ok((logps, counts))
}

/// Reference log-probabilities for `batch` (no gradients), or `None` for [`Reference::Free`].
fn reference_logps(
    model: &LoadedModel,
    reference: &Reference<'_>,
    batch: &Batch,
) -> Result<Option<Tensor>, TrainError> {
    let _g = tch::no_grad_guard();
    match reference {
        Reference::Free => Ok(None),
        Reference::AdaptersOff(lora) => {
            lora.set_enabled(false);
            let r = sequence_logps(model, batch);
            lora.set_enabled(true);
            Ok(Some(r?.0))
        }
        Reference::Model(m) => Ok(Some(sequence_logps(m, batch)?.0)),
    }
}

/// [`reference_logps`] `chunk` sequences at a time (the two-pass route): the reference's output
/// projection holds one chunk's logits at a time instead of the whole micro-batch's.
fn chunked_reference(
    model: &LoadedModel,
    reference: &Reference<'_>,
    seqs: &[EncodedRow],
    collator: &Collator,
    chunk: usize,
) -> Result<Option<Tensor>, TrainError> {
    let mut parts = Vec::new();
    for part in seqs.chunks(chunk.max(1)) {
        match reference_logps(model, reference, &collator.pad(part))? {
            Some(r) => parts.push(r),
            None => return Ok(None),
        }
    }
    Ok(Some(Tensor::f_cat(&parts, 0)?))
}

/// Sums over a logging window (or one step) of what the metrics average.
#[derive(Debug, Default, Clone)]
struct Window {
    loss: f64,
    steps: u64,
    micro: u64,
    rewards_chosen: (f64, f64),
    rewards_rejected: (f64, f64),
    accuracies: (f64, f64),
    margins: (f64, f64),
    logps_chosen: (f64, f64),
    logps_rejected: (f64, f64),
    nll: f64,
    kl: f64,
    tokens: usize,
    pairs: usize,
    /// Reward modelling: the sum and count of every score (chosen and rejected), and their
    /// smallest and largest.
    scores: (f64, f64),
    score_range: Option<(f64, f64)>,
}

fn sum_count(t: &Tensor) -> Result<(f64, f64), TrainError> {
    let n = t.numel() as f64;
    if n == 0.0 {
        return Ok((0.0, 0.0));
    }
    Ok((f64::try_from(t.f_sum(Kind::Double)?)?, n))
}

fn add(a: &mut (f64, f64), b: (f64, f64)) {
    a.0 += b.0;
    a.1 += b.1;
}

impl Window {
    fn merge(&mut self, o: &Window) {
        self.loss += o.loss;
        self.steps += o.steps;
        self.micro += o.micro;
        add(&mut self.rewards_chosen, o.rewards_chosen);
        add(&mut self.rewards_rejected, o.rewards_rejected);
        add(&mut self.accuracies, o.accuracies);
        add(&mut self.margins, o.margins);
        add(&mut self.logps_chosen, o.logps_chosen);
        add(&mut self.logps_rejected, o.logps_rejected);
        self.nll += o.nll;
        self.kl += o.kl;
        self.tokens += o.tokens;
        self.pairs += o.pairs;
        add(&mut self.scores, o.scores);
        self.score_range = match (self.score_range, o.score_range) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
    }

    /// The metrics under TRL's names.
    fn metrics(&self, unpaired: bool, log_nll: bool, scores: bool) -> Map<String, Value> {
        let avg = |(s, n): (f64, f64)| if n > 0.0 { json!(s / n) } else { Value::Null };
        let mut m = Map::new();
        m.insert("loss".into(), json!(self.loss / self.steps.max(1) as f64));
        m.insert("rewards/chosen".into(), avg(self.rewards_chosen));
        m.insert("rewards/rejected".into(), avg(self.rewards_rejected));
        if !unpaired {
            m.insert("rewards/accuracies".into(), avg(self.accuracies));
        }
        m.insert("rewards/margins".into(), avg(self.margins));
        if !scores {
            m.insert("logps/chosen".into(), avg(self.logps_chosen));
            m.insert("logps/rejected".into(), avg(self.logps_rejected));
        }
        if log_nll {
            m.insert(
                "nll_loss".into(),
                json!(self.nll / self.micro.max(1) as f64),
            );
        }
        if unpaired {
            m.insert("kl".into(), json!(self.kl / self.micro.max(1) as f64));
        }
        m
    }
}

impl Window {
    /// The evaluation metrics (without the `eval_` prefix the loop adds) with the evaluation's
    /// loss: reward modelling's as TRL's RewardTrainer names them, else those of training.
    fn eval_metrics(
        &self,
        loss: f64,
        unpaired: bool,
        log_nll: bool,
        scores: bool,
    ) -> Map<String, Value> {
        if !scores {
            let mut m = self.metrics(unpaired, log_nll, false);
            m.insert("loss".into(), json!(loss));
            return m;
        }
        let avg = |(s, n): (f64, f64)| if n > 0.0 { json!(s / n) } else { Value::Null };
        let mut m = Map::new();
        m.insert("loss".into(), json!(loss));
        m.insert("accuracy".into(), avg(self.accuracies));
        m.insert("margin".into(), avg(self.margins));
        let (lo, hi) = self
            .score_range
            .map_or((Value::Null, Value::Null), |(a, b)| (json!(a), json!(b)));
        m.insert("min_reward".into(), lo);
        m.insert("mean_reward".into(), avg(self.scores));
        m.insert("max_reward".into(), hi);
        m
    }
}

/// The seed of chunk `k` of micro-batch `micro` of `step`: the same dropout masks in both passes.
fn chunk_seed(seed: u64, step: u64, micro: usize, k: usize) -> i64 {
    let mut z = seed
        ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (micro as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ (k as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 1) as i64
}

/// Where a micro-batch is in the run (for [`chunk_seed`]), and whether its chunked passes use
/// gradient checkpointing.
#[derive(Debug, Clone, Copy)]
struct At {
    seed: u64,
    step: u64,
    micro: usize,
    checkpointing: bool,
}

/// With gradient checkpointing, pass 1 scores through the same per-block pass (same dropout
/// seeds) that pass 2 recomputes, so both see the same masks.
fn scoring_logps(
    model: &LoadedModel,
    batch: &Batch,
    at: At,
) -> Result<(Tensor, Tensor), TrainError> {
    if !at.checkpointing {
        return sequence_logps(model, batch);
    }
    let (ids, labels, _scale, mask) = tensors(batch, model.device())?;
    let padded = batch.attention_mask.contains(&0);
    let hidden = model.forward_by_blocks(&ids, padded.then_some(&mask))?;
    hidden_logps(model, &hidden, &labels)
}

/// The policy's log-probabilities of `seqs` with the gradient of any loss of them, in bounded
/// memory: pass 1 scores every chunk of `chunk` sequences without a graph; the loss's gradient
/// with respect to each sequence's log-probability `g_i` is then cheap (a function of `[2n]`
/// numbers); pass 2 re-runs each chunk with its graph and back-propagates `Σ g_i · logp_i`. The
/// parameters' gradient is exactly that of the one-pass loss (chunks reseed the generator, so
/// LoRA dropout draws the same masks in both passes), for one extra forward without a graph,
/// and the activations held at once are one chunk's instead of the whole batch's.
///
/// Returns the log-probabilities (without a graph) and the answer tokens per sequence; the
/// caller makes a leaf of the first, runs the loss backward into it and hands its gradient to
/// [`second_pass`].
fn first_pass(
    model: &LoadedModel,
    head: Option<&ValueHead>,
    seqs: &[EncodedRow],
    collator: &Collator,
    chunk: usize,
    at: At,
) -> Result<(Tensor, Tensor), TrainError> {
    let _g = tch::no_grad_guard();
    score_chunks(model, head, seqs, collator, chunk, Some(at))
}

/// What the loss reads per sequence of `seqs` (and their token counts), `chunk` sequences per
/// forward pass. In training (`at`), each chunk re-seeds the generator as [`second_pass`] does
/// and scores through the per-block pass when checkpointing; in evaluation (`None`, dropout off,
/// the caller holds `no_grad`) the chunks only bound the memory.
fn score_chunks(
    model: &LoadedModel,
    head: Option<&ValueHead>,
    seqs: &[EncodedRow],
    collator: &Collator,
    chunk: usize,
    at: Option<At>,
) -> Result<(Tensor, Tensor), TrainError> {
    let (mut logps, mut counts) = (Vec::new(), Vec::new());
    for (k, part) in seqs.chunks(chunk.max(1)).enumerate() {
        let batch = collator.pad(part);
        let (l, c) = match (head, at) {
            (Some(h), at) => {
                if let Some(at) = at {
                    tch::manual_seed(chunk_seed(at.seed, at.step, at.micro, k));
                }
                h.scores(model, &batch)?
            }
            (None, Some(at)) => {
                tch::manual_seed(chunk_seed(at.seed, at.step, at.micro, k));
                scoring_logps(model, &batch, at)?
            }
            (None, None) => sequence_logps(model, &batch)?,
        };
        logps.push(l);
        counts.push(c);
    }
    Ok((Tensor::f_cat(&logps, 0)?, Tensor::f_cat(&counts, 0)?))
}

/// Pass 2 of [`first_pass`]: back-propagates `Σ grad_i · logp_i` chunk by chunk.
fn second_pass(
    model: &LoadedModel,
    head: Option<&ValueHead>,
    seqs: &[EncodedRow],
    collator: &Collator,
    chunk: usize,
    at: At,
    grad: &Tensor,
) -> Result<(), TrainError> {
    for (k, part) in seqs.chunks(chunk).enumerate() {
        let g = grad.f_narrow(0, (k * chunk) as i64, part.len() as i64)?;
        if f64::try_from(g.f_abs()?.f_sum(Kind::Double)?)? == 0.0 {
            continue;
        }
        tch::manual_seed(chunk_seed(at.seed, at.step, at.micro, k));
        let batch = collator.pad(part);
        if at.checkpointing && head.is_none() {
            // The blocks' activations are recomputed one block at a time in the backward pass.
            let (ids, labels, _scale, mask) = tensors(&batch, model.device())?;
            let padded = batch.attention_mask.contains(&0);
            let _ = model.backward_checkpointed(&ids, padded.then_some(&mask), |hidden| {
                let (l, _) = hidden_logps(model, hidden, &labels)?;
                Ok::<_, TrainError>(l.f_mul(&g)?.f_sum(Kind::Float)?)
            })?;
        } else {
            let (l, _) = per_sequence(model, head, &batch)?;
            l.f_mul(&g)?.f_sum(Kind::Float)?.f_backward()?;
        }
    }
    Ok(())
}

/// One micro-batch: forward, reference, loss (divided by `n_micro`), backward; its metrics.
/// Without `at` it evaluates: the same forward passes and loss, no backward (the caller holds
/// `no_grad`), and no re-seeding (dropout is off).
fn micro_step(
    model: &LoadedModel,
    setup: &PreferenceSetup<'_>,
    items: &[&PrefItem],
    collator: &Collator,
    n_micro: usize,
    at: Option<At>,
) -> Result<Window, TrainError> {
    let mut w = Window {
        micro: 1,
        ..Default::default()
    };
    let device = model.device();
    let step_err = |e: String| TrainError::Step(format!("preference loss: {e}"));
    // Set for the chunked pass: the sequences and the leaf their log-probabilities hang on.
    let mut deferred: Option<(Vec<EncodedRow>, Tensor, usize, At)> = None;
    let inputs = match items.first() {
        None => return Ok(w),
        Some(PrefItem::Pair { .. }) => {
            let mut seqs: Vec<EncodedRow> = Vec::with_capacity(items.len() * 2);
            let mut rejected: Vec<EncodedRow> = Vec::with_capacity(items.len());
            for it in items {
                let PrefItem::Pair {
                    chosen,
                    rejected: r,
                } = it
                else {
                    return Err(TrainError::Config(
                        "a batch mixes paired and unpaired rows".into(),
                    ));
                };
                seqs.push(chosen.clone());
                rejected.push(r.clone());
            }
            let n = seqs.len() as i64;
            seqs.extend(rejected);
            let batch = collator.pad(&seqs);
            w.tokens = batch.num_tokens;
            w.pairs = items.len();
            // Gradient checkpointing always takes the two-pass route (chunk 0: one chunk).
            let chunk = if setup.chunk == 0 {
                seqs.len()
            } else {
                setup.chunk
            };
            let (logps, counts, reference) = match at {
                Some(at) if chunk < seqs.len() || at.checkpointing => {
                    let (l, c) = first_pass(model, setup.value_head, &seqs, collator, chunk, at)?;
                    let reference =
                        chunked_reference(model, &setup.reference, &seqs, collator, chunk)?;
                    let leaf = l.f_detach()?.set_requires_grad(true);
                    deferred = Some((seqs, leaf.shallow_clone(), chunk, at));
                    (leaf, c, reference)
                }
                None if chunk < seqs.len() => {
                    // Evaluation: no graph to bound, but the chunks bound the logits held.
                    let (l, c) =
                        score_chunks(model, setup.value_head, &seqs, collator, chunk, None)?;
                    let reference =
                        chunked_reference(model, &setup.reference, &seqs, collator, chunk)?;
                    (l, c, reference)
                }
                _ => {
                    let (l, c) = per_sequence(model, setup.value_head, &batch)?;
                    (l, c, reference_logps(model, &setup.reference, &batch)?)
                }
            };
            PreferenceInputs {
                chosen_logps: logps.f_narrow(0, 0, n)?,
                rejected_logps: logps.f_narrow(0, n, n)?,
                chosen_tokens: counts.f_narrow(0, 0, n)?,
                rejected_tokens: counts.f_narrow(0, n, n)?,
                ref_chosen_logps: reference
                    .as_ref()
                    .map(|r| r.f_narrow(0, 0, n))
                    .transpose()?,
                ref_rejected_logps: reference
                    .as_ref()
                    .map(|r| r.f_narrow(0, n, n))
                    .transpose()?,
                kl: None,
            }
        }
        Some(PrefItem::Unpaired { .. }) => {
            let (mut rows, mut kls, mut desirable) = (Vec::new(), Vec::new(), Vec::new());
            for it in items {
                let PrefItem::Unpaired {
                    row,
                    desirable: d,
                    kl,
                } = it
                else {
                    return Err(TrainError::Config(
                        "a batch mixes paired and unpaired rows".into(),
                    ));
                };
                rows.push(row.clone());
                kls.push(kl.clone());
                desirable.push(*d);
            }
            let batch = collator.pad(&rows);
            let kl_batch = collator.pad(&kls);
            w.tokens = batch.num_tokens;
            w.pairs = items.len();
            let (logps, counts) = sequence_logps(model, &batch)?;
            let kl = {
                let _g = tch::no_grad_guard();
                let policy_kl = sequence_logps(model, &kl_batch)?.0;
                match reference_logps(model, &setup.reference, &kl_batch)? {
                    Some(ref_kl) => policy_kl
                        .f_sub(&ref_kl)?
                        .f_mean(Kind::Float)?
                        .f_clamp_min(0.0)?,
                    None => Tensor::f_zeros([], (Kind::Float, device))?,
                }
            };
            w.kl = f64::try_from(&kl)?;
            let reference = reference_logps(model, &setup.reference, &batch)?;
            let pick = |want: bool| -> Result<Tensor, TrainError> {
                let idx: Vec<i64> = desirable
                    .iter()
                    .enumerate()
                    .filter(|(_, &d)| d == want)
                    .map(|(i, _)| i as i64)
                    .collect();
                Ok(Tensor::from_slice(&idx).f_to_device(device)?)
            };
            let (ci, ri) = (pick(true)?, pick(false)?);
            let sel = |t: &Tensor, i: &Tensor| t.f_index_select(0, i);
            PreferenceInputs {
                chosen_logps: sel(&logps, &ci)?,
                rejected_logps: sel(&logps, &ri)?,
                chosen_tokens: sel(&counts, &ci)?,
                rejected_tokens: sel(&counts, &ri)?,
                ref_chosen_logps: reference.as_ref().map(|r| sel(r, &ci)).transpose()?,
                ref_rejected_logps: reference.as_ref().map(|r| sel(r, &ri)).transpose()?,
                kl: Some(kl),
            }
        }
    };
    let out = (setup.loss)(&inputs).map_err(step_err)?;
    let loss = out.loss.f_div_scalar(n_micro as f64)?;
    w.loss = f64::try_from(loss.f_detach()?.f_to_kind(Kind::Double)?)?;
    if at.is_some() {
        loss.f_backward()?;
    }
    if let Some((seqs, leaf, chunk, at)) = &deferred {
        second_pass(
            model,
            setup.value_head,
            seqs,
            collator,
            *chunk,
            *at,
            &leaf.grad(),
        )?;
    }
    let _g = tch::no_grad_guard();
    let (cr, rr) = (
        out.chosen_rewards.f_detach()?.f_to_kind(Kind::Float)?,
        out.rejected_rewards.f_detach()?.f_to_kind(Kind::Float)?,
    );
    w.rewards_chosen = sum_count(&cr)?;
    w.rewards_rejected = sum_count(&rr)?;
    if cr.size() == rr.size() && !matches!(items.first(), Some(PrefItem::Unpaired { .. })) {
        w.accuracies = sum_count(&cr.f_gt_tensor(&rr)?.f_to_kind(Kind::Float)?)?;
        w.margins = sum_count(&cr.f_sub(&rr)?)?;
    } else {
        // Unpaired: the difference of the means.
        let (c, r) = (w.rewards_chosen, w.rewards_rejected);
        if c.1 > 0.0 && r.1 > 0.0 {
            w.margins = (c.0 / c.1 - r.0 / r.1, 1.0);
        }
    }
    w.logps_chosen = sum_count(&inputs.chosen_logps.f_detach()?)?;
    w.logps_rejected = sum_count(&inputs.rejected_logps.f_detach()?)?;
    if setup.value_head.is_some() {
        // Reward modelling: the per-sequence quantities are the scores.
        let all = Tensor::f_cat(
            &[
                inputs.chosen_logps.f_detach()?.f_to_kind(Kind::Double)?,
                inputs.rejected_logps.f_detach()?.f_to_kind(Kind::Double)?,
            ],
            0,
        )?;
        w.scores = sum_count(&all)?;
        if all.numel() > 0 {
            w.score_range = Some((f64::try_from(all.f_min()?)?, f64::try_from(all.f_max()?)?));
        }
    }
    let tokens = f64::try_from(inputs.chosen_tokens.f_sum(Kind::Double)?)?;
    if tokens > 0.0 {
        w.nll = -w.logps_chosen.0 / tokens;
    }
    Ok(w)
}

/// The preference objective: pairs (DPO, ORPO, SimPO, CPO, reward modelling) or KTO's unpaired
/// rows, with optional validation items of the same kind.
pub struct PreferenceObjective<'a> {
    model: &'a LoadedModel,
    items: &'a [PrefItem],
    eval_items: &'a [PrefItem],
    setup: &'a PreferenceSetup<'a>,
    collator: Collator,
    seed: u64,
    checkpointing: bool,
    eval_batch: usize,
    unpaired: bool,
    scores: bool,
}

impl<'a> PreferenceObjective<'a> {
    /// Checks that the items, the validation items and the setup fit together.
    pub fn new(
        model: &'a LoadedModel,
        items: &'a [PrefItem],
        eval_items: &'a [PrefItem],
        setup: &'a PreferenceSetup<'a>,
        cfg: &TrainConfig,
    ) -> Result<Self, TrainError> {
        let unpaired = matches!(items.first(), Some(PrefItem::Unpaired { .. }));
        let scores = setup.value_head.is_some();
        if scores && (unpaired || !matches!(setup.reference, Reference::Free)) {
            return Err(TrainError::Config(
                "reward modelling trains on chosen/rejected pairs without a reference model".into(),
            ));
        }
        if eval_items
            .iter()
            .chain(items)
            .any(|it| matches!(it, PrefItem::Unpaired { .. }) != unpaired)
        {
            return Err(TrainError::Config(
                "the training and validation items mix paired and unpaired (KTO) rows".into(),
            ));
        }
        if cfg.gradient_checkpointing && scores {
            tracing::warn!("--gradient_checkpointing does not apply to reward modelling yet: the value head's passes keep their activations");
        } else if cfg.gradient_checkpointing && unpaired {
            tracing::warn!("--gradient_checkpointing applies to paired data; KTO's policy pass keeps its activations");
        } else if cfg.gradient_checkpointing && !model.supports_checkpointing() {
            tracing::warn!("this model family has no per-block entry points: --gradient_checkpointing has no effect");
        }
        Ok(Self {
            model,
            items,
            eval_items,
            setup,
            collator: Collator {
                pad_id: cfg.pad_id,
                packing: false,
                max_length: usize::MAX,
            },
            seed: cfg.seed,
            checkpointing: cfg.gradient_checkpointing,
            eval_batch: cfg.batch_size.max(1),
            unpaired,
            scores,
        })
    }
}

/// A logging window of the preference objective (sums over its steps and micro-batches).
#[derive(Debug, Default, Clone)]
pub struct PreferenceWindow(Window);

impl Objective for PreferenceObjective<'_> {
    type Window = PreferenceWindow;

    fn units(&self) -> usize {
        self.items.len()
    }

    fn unit_name(&self) -> Option<&'static str> {
        Some("pairs")
    }

    fn step(
        &mut self,
        step: u64,
        group: &[Vec<usize>],
    ) -> Result<StepOutput<PreferenceWindow>, TrainError> {
        let mut sw = Window::default();
        for (micro, idx) in group.iter().enumerate() {
            let batch: Vec<&PrefItem> = idx.iter().map(|&k| &self.items[k]).collect();
            let at = At {
                seed: self.seed,
                step,
                micro,
                checkpointing: self.checkpointing,
            };
            sw.merge(&micro_step(
                self.model,
                self.setup,
                &batch,
                &self.collator,
                group.len(),
                Some(at),
            )?);
        }
        sw.steps = 1;
        Ok(StepOutput {
            loss: sw.loss,
            tokens: sw.tokens,
            units: sw.pairs,
            window: PreferenceWindow(sw),
        })
    }

    fn merge(&self, into: &mut PreferenceWindow, step: &PreferenceWindow) {
        into.0.merge(&step.0);
    }

    fn window_counts(&self, w: &PreferenceWindow) -> Vec<f64> {
        let w = &w.0;
        let mut v = Vec::with_capacity(19);
        for (sum, n) in [
            w.rewards_chosen,
            w.rewards_rejected,
            w.accuracies,
            w.margins,
            w.logps_chosen,
            w.logps_rejected,
            w.scores,
        ] {
            v.extend([sum, n]);
        }
        v.extend([w.nll, w.kl, w.micro as f64, w.tokens as f64, w.pairs as f64]);
        v
    }

    fn set_window_counts(&self, w: &mut PreferenceWindow, loss: f64, c: &[f64]) {
        let w = &mut w.0;
        w.loss = loss;
        let pair = |i: usize| (c[2 * i], c[2 * i + 1]);
        w.rewards_chosen = pair(0);
        w.rewards_rejected = pair(1);
        w.accuracies = pair(2);
        w.margins = pair(3);
        w.logps_chosen = pair(4);
        w.logps_rejected = pair(5);
        w.scores = pair(6);
        w.nll = c[14];
        w.kl = c[15];
        w.micro = c[16] as u64;
        w.tokens = c[17] as usize;
        w.pairs = c[18] as usize;
    }

    fn metrics(&self, w: &PreferenceWindow) -> Map<String, Value> {
        w.0.metrics(self.unpaired, self.setup.log_nll, self.scores)
    }

    fn has_validation(&self) -> bool {
        !self.eval_items.is_empty()
    }

    fn evaluate(&mut self) -> Result<Map<String, Value>, TrainError> {
        let _g = tch::no_grad_guard();
        let mut total = Window::default();
        let (mut loss, mut n) = (0.0f64, 0usize);
        // Data parallel: rank r evaluates batches r, r + world, … and the sums are added over
        // the ranks (the scores' range through an all-gather).
        let group = swift_dist::current();
        let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
        for (i, chunk) in self.eval_items.chunks(self.eval_batch).enumerate() {
            if i % world != rank {
                continue;
            }
            let batch: Vec<&PrefItem> = chunk.iter().collect();
            let w = micro_step(self.model, self.setup, &batch, &self.collator, 1, None)?;
            loss += w.loss * w.pairs as f64;
            n += w.pairs;
            total.merge(&w);
        }
        if let Some(g) = group {
            let err = |e: swift_dist::DistError| TrainError::Step(e.to_string());
            let wrapped = PreferenceWindow(total);
            let mut counts = self.window_counts(&wrapped);
            counts.push(loss);
            let sums = g.sum_f64(&counts).map_err(err)?;
            let k = sums.len() - 1;
            loss = sums[k];
            let mut wrapped = wrapped;
            self.set_window_counts(&mut wrapped, 0.0, &sums[..k]);
            total = wrapped.0;
            n = total.pairs;
            let (lo, hi) = total.score_range.unwrap_or((f64::NAN, f64::NAN));
            let all = g.all_gather(&Tensor::from_slice(&[lo, hi])).map_err(err)?;
            let mut range: Option<(f64, f64)> = None;
            for t in all {
                let v = Vec::<f64>::try_from(&t)?;
                if v[0].is_nan() {
                    continue;
                }
                range = Some(range.map_or((v[0], v[1]), |(a, b)| (a.min(v[0]), b.max(v[1]))));
            }
            total.score_range = range;
        }
        Ok(total.eval_metrics(
            loss / n.max(1) as f64,
            self.unpaired,
            self.setup.log_nll,
            self.scores,
        ))
    }

    fn divergence_hint(&self) -> &'static str {
        "try a lower --learning_rate or --beta"
    }
}

/// Trains the `trainable` tensors of `model` on preference `items`, evaluating on
/// `eval_items` (when there are any) every `cfg.eval_steps` steps and at the end:
/// [`PreferenceObjective`] in [`crate::trainer::train`].
#[allow(clippy::too_many_arguments)]
pub fn train_preference(
    model: &LoadedModel,
    items: &[PrefItem],
    eval_items: &[PrefItem],
    trainable: &[(String, Tensor)],
    cfg: &TrainConfig,
    setup: &PreferenceSetup<'_>,
    run: &mut RunDir,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainSummary, TrainError> {
    let mut objective = PreferenceObjective::new(model, items, eval_items, setup, cfg)?;
    crate::trainer::train(&mut objective, trainable, cfg, run, hooks)
}
