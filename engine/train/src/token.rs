//! The token objective (`swift sft`, `swift pt`): shifted token cross-entropy times the loss
//! scale over encoded rows, for the one training loop of [`crate::trainer`].
//!
//! * Units: the encoded rows, or with `--packing` the sequences they are packed into once,
//!   before the first epoch (ms-swift's `PackingDataset`).
//! * One optimiser step: its micro-batches are split into passes of `rows_per_pass` rows and at
//!   most `max_pass_tokens` tokens ([`passes`]), each
//!   pass's rows laid end to end in one sequence without padding (padded instead with gradient
//!   checkpointing or a training attention of the tuner's; `--packing`'s sequences stacked),
//!   and each pass's loss, Σ scale·CE divided by the labelled
//!   tokens of the *whole step*, is back-propagated at once; so accumulation over rows of
//!   unequal length equals one big batch, and fewer rows per pass only hold fewer activations.
//! * Gradient checkpointing (`gradient_checkpointing`): each pass runs through
//!   `LoadedModel::backward_checkpointed`, which keeps only the blocks' inputs and recomputes one
//!   block at a time in the backward pass (same gradient; its dropout masks come from per-block
//!   seeds drawn from the loop's per-step generator, so runs stay reproducible and resumable).
//! * Logged: `loss` (the window's mean step loss) and `token_acc` (correct over labelled tokens
//!   of the window); evaluation: `loss` and `token_acc` over every labelled token of the
//!   validation rows ([`evaluate`]), which the loop logs as `eval_loss`, `eval_token_acc`.
//! * Dropout is re-seeded before every pass from a seed drawn once per step (the loop seeds the
//!   step) and the pass's first unit index, so a pass draws the same masks on whichever rank
//!   runs it: with one row per pass two ranks equal one process with dropout on (with the
//!   default two rows per pass, when each rank's passes are the same rows as one process's).
//! * The output projection and cross-entropy run on pieces of 128 labelled positions, each
//!   piece's backward at once ([`backward_loss`]), so a pass never holds the logits of all its
//!   labelled positions: what lets two rows per pass be the default within the memory target.
//! * Data parallel evaluation: each rank evaluates its share of the validation batches and the
//!   sums are added over the ranks.

use serde_json::{json, Map, Value};
use swift_model::LoadedModel;
use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;
use crate::collate::{tensors, Batch, Collator, EncodedRow};
use crate::loss::{backward_in_pieces, labelled_positions, shifted_label_count, token_loss_flat};
use crate::run_dir::RunDir;
use crate::trainer::{Objective, StepOutput, TrainConfig, TrainHooks, TrainSummary};

/// The forward pass of one padded (or packed) batch and its weighted token loss (the output
/// projection is applied only where a label is trained); `None` for sequences too short to
/// predict anything.
fn batch_loss(
    model: &LoadedModel,
    b: &Batch,
) -> Result<Option<crate::loss::TokenLoss>, TrainError> {
    let (hidden, labels, scale) = forward_hidden(model, b)?;
    hidden_loss(model, &hidden, &labels, &scale)
}

/// The forward pass of one padded (or packed) batch up to the final hidden states, with the
/// batch's labels and loss scales as tensors.
fn forward_hidden(model: &LoadedModel, b: &Batch) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let (ids, labels, scale, mask) = tensors(b, model.device())?;
    let hidden = if b.packed {
        let shape = [b.batch as i64, b.seq_len as i64];
        let positions = Tensor::from_slice(&b.position_ids).f_view(shape)?;
        let seq_ids = Tensor::from_slice(&b.seq_ids).f_view(shape)?;
        model.forward_train_packed(&ids, &positions, &seq_ids)?
    } else {
        forward_padded(model, b, &ids, &mask)?
    };
    Ok((hidden, labels, scale))
}

/// The training forward pass of a padded batch, with its images when it has some.
pub(crate) fn forward_padded(
    model: &LoadedModel,
    b: &Batch,
    ids: &Tensor,
    mask: &Tensor,
) -> Result<Tensor, TrainError> {
    let padded = b.attention_mask.contains(&0);
    Ok(
        match crate::collate::image_batch(&b.images, model.device())? {
            Some(images) => {
                model.forward_train_with_images(ids, padded.then_some(mask), Some(&images))?
            }
            None => model.forward_train(ids, padded.then_some(mask))?,
        },
    )
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

/// Labelled positions whose logits one piece of [`backward_loss`] holds at a time: 128 of them
/// are 24 MiB of float32 logits over a 49,152-token vocabulary (times four with log-softmax and
/// both gradients), and 128 rows keep the output projection's product tall.
const LOSS_CHUNK: i64 = 128;

/// One pass's forward and backward without gradient checkpointing: the loss (Σ scale·CE divided
/// by `denom`, as a number) and the correctly predicted labels; `None` for sequences too short to
/// predict anything.
///
/// The output projection and cross-entropy run [`LOSS_CHUNK`] labelled positions at a time on a
/// detached copy of the final hidden states, each piece's backward run at once (so the logits of
/// the whole pass, `[labelled × vocabulary]`, and their gradient are never held together, and
/// a trainable output projection gets its gradient there); the blocks then run backward from the
/// hidden states' gradient. The same gradient as one backward through the whole graph, in a
/// different order of summation only for a trainable output projection's weight.
fn backward_loss(
    model: &LoadedModel,
    b: &Batch,
    denom: f64,
) -> Result<Option<(f64, i64)>, TrainError> {
    let (hidden, labels, scale) = forward_hidden(model, b)?;
    let s = hidden.size();
    let (hb, ht, hd) = (s[0], s[1], s[2]);
    if ht < 2 {
        return Ok(None);
    }
    let (lab, sc, idx) = labelled_positions(&labels, &scale)?;
    let picked = hidden
        .f_narrow(1, 0, ht - 1)?
        .f_reshape([hb * (ht - 1), hd])?
        .f_index_select(0, &idx)?;
    drop(hidden);
    let project = |h: &Tensor| Ok(model.logits_train(h)?);
    Ok(Some(backward_in_pieces(
        &picked, &lab, &sc, denom, LOSS_CHUNK, &project,
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
    // Data parallel: rank r evaluates batches r, r + world, … of the same batches one process
    // forms, and the sums are added over the ranks.
    let group = swift_dist::current();
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
    for (i, chunk) in rows.chunks(batch_size.max(1)).enumerate() {
        if i % world != rank {
            continue;
        }
        let b = collator.pad(chunk);
        let Some(tl) = batch_loss(model, &b)? else {
            continue;
        };
        sum += f64::try_from(tl.sum.f_to_kind(Kind::Double)?)?;
        correct += tl.correct;
        labelled += shifted_label_count(&b.labels, b.batch, b.seq_len);
    }
    if let Some(g) = group {
        let all = g
            .sum_f64(&[sum, correct as f64, labelled as f64])
            .map_err(|e| TrainError::Step(e.to_string()))?;
        (sum, correct, labelled) = (all[0], all[1] as i64, all[2] as i64);
    }
    let n = labelled.max(1) as f64;
    Ok((sum / n, correct as f64 / n))
}

/// A micro-batch's units `idx` split into passes, in order: each pass takes units while it has
/// fewer than `rows` of them (0: no limit) and their tokens (`tokens(unit)`) total at most
/// `budget` (0: no limit); a unit longer than `budget` makes a pass alone.
pub(crate) fn passes(
    idx: &[usize],
    rows: usize,
    budget: usize,
    tokens: impl Fn(usize) -> usize,
) -> Vec<&[usize]> {
    let mut out = Vec::new();
    let (mut start, mut total) = (0, 0);
    for (i, &k) in idx.iter().enumerate() {
        let n = tokens(k);
        let full = rows != 0 && i - start >= rows;
        let over = budget != 0 && total + n > budget;
        if i > start && (full || over) {
            out.push(&idx[start..i]);
            (start, total) = (i, 0);
        }
        total += n;
    }
    if start < idx.len() {
        out.push(&idx[start..]);
    }
    out
}

/// What a logging window of the token objective sums.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TokenWindow {
    pub loss: f64,
    pub steps: u64,
    pub correct: i64,
    pub labelled: i64,
}

/// Token cross-entropy over encoded rows (padded or packed), with optional validation rows.
pub struct TokenObjective<'a> {
    model: &'a LoadedModel,
    rows: &'a [EncodedRow],
    eval_rows: &'a [EncodedRow],
    /// With `--packing`: the packed sequences, which are then the units.
    packs: Option<Vec<Batch>>,
    collator: Collator,
    pad_id: u32,
    rows_per_pass: usize,
    max_pass_tokens: usize,
    checkpointing: bool,
    /// A pass over several rows lays them end to end (no padding) instead of padding them:
    /// not with gradient checkpointing (its recomputed blocks take no packed mask) nor with a
    /// training attention of its own (LongLoRA's groups count padded positions).
    end_to_end: bool,
    eval_batch: usize,
}

impl<'a> TokenObjective<'a> {
    /// Checks the settings and packs the rows when `cfg.packing` asks for it.
    pub fn new(
        model: &'a LoadedModel,
        rows: &'a [EncodedRow],
        eval_rows: &'a [EncodedRow],
        cfg: &TrainConfig,
    ) -> Result<Self, TrainError> {
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
            Some(p) if !rows.is_empty() => {
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
            _ => None,
        };
        Ok(Self {
            model,
            rows,
            eval_rows,
            packs,
            collator: Collator {
                pad_id: cfg.pad_id,
                packing: false,
                max_length: usize::MAX,
            },
            pad_id: cfg.pad_id,
            rows_per_pass: cfg.rows_per_pass,
            max_pass_tokens: cfg.max_pass_tokens,
            checkpointing: cfg.gradient_checkpointing,
            end_to_end: !cfg.gradient_checkpointing && !model.has_training_attention(),
            eval_batch: cfg.batch_size.max(1),
        })
    }
}

impl Objective for TokenObjective<'_> {
    type Window = TokenWindow;

    fn units(&self) -> usize {
        self.packs.as_ref().map_or(self.rows.len(), Vec::len)
    }

    fn step(
        &mut self,
        _step: u64,
        group: &[Vec<usize>],
    ) -> Result<StepOutput<TokenWindow>, TrainError> {
        // Dropout: each pass re-seeds from the step's seed and its first unit's index (the same
        // on every rank), so its masks do not depend on which rank runs it or what ran before.
        let base = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu))?
            .f_int64_value(&[0])?;
        let unit_tokens = |k: usize| match &self.packs {
            Some(packs) => packs[k].num_tokens,
            None => self.rows[k].input_ids.len(),
        };
        let passes: Vec<&[usize]> = group
            .iter()
            .flat_map(|idx| passes(idx, self.rows_per_pass, self.max_pass_tokens, unit_tokens))
            .collect();
        let firsts: Vec<usize> = passes
            .iter()
            .map(|idx| idx.first().copied().unwrap_or(0))
            .collect();
        let micro: Vec<Batch> = passes
            .iter()
            .map(|idx| match &self.packs {
                Some(packs) => {
                    let chosen: Vec<Batch> = idx.iter().map(|&k| packs[k].clone()).collect();
                    Batch::stack(&chosen, self.pad_id)
                }
                None => {
                    let chosen: Vec<EncodedRow> =
                        idx.iter().map(|&k| self.rows[k].clone()).collect();
                    if chosen.len() > 1 && self.end_to_end {
                        self.collator.concat(&chosen)
                    } else {
                        self.collator.pad(&chosen)
                    }
                }
            })
            .collect();
        // The loss of every pass is normalised over the labelled tokens of the whole step.
        let labelled: i64 = micro
            .iter()
            .map(|b| shifted_label_count(&b.labels, b.batch, b.seq_len))
            .sum();
        let denom = labelled.max(1) as f64;
        let (mut loss, mut correct, mut tokens) = (0.0f64, 0i64, 0usize);
        for (b, &first) in micro.iter().zip(&firsts) {
            tch::manual_seed(base.wrapping_add((first as i64).wrapping_mul(0x9E37_79B9)));
            if self.checkpointing {
                if let Some((part, c)) = checkpointed_loss(self.model, b, denom)? {
                    loss += f64::try_from(part.f_to_kind(Kind::Double)?)?;
                    correct += c;
                    tokens += b.num_tokens;
                }
                continue;
            }
            let Some((part, c)) = backward_loss(self.model, b, denom)? else {
                continue;
            };
            loss += part;
            correct += c;
            tokens += b.num_tokens;
        }
        Ok(StepOutput {
            loss,
            tokens,
            units: group.iter().map(Vec::len).sum(),
            window: TokenWindow {
                loss,
                steps: 1,
                correct,
                labelled,
            },
        })
    }

    fn merge(&self, into: &mut TokenWindow, step: &TokenWindow) {
        into.loss += step.loss;
        into.steps += step.steps;
        into.correct += step.correct;
        into.labelled += step.labelled;
    }

    fn metrics(&self, w: &TokenWindow) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("loss".into(), json!(w.loss / w.steps.max(1) as f64));
        m.insert(
            "token_acc".into(),
            json!(w.correct as f64 / w.labelled.max(1) as f64),
        );
        m
    }

    fn step_weight(&self, out: &StepOutput<TokenWindow>) -> f64 {
        out.window.labelled as f64
    }

    fn window_counts(&self, w: &TokenWindow) -> Vec<f64> {
        vec![w.correct as f64, w.labelled as f64]
    }

    fn set_window_counts(&self, w: &mut TokenWindow, loss: f64, counts: &[f64]) {
        w.loss = loss;
        w.correct = counts[0] as i64;
        w.labelled = counts[1] as i64;
    }

    fn has_validation(&self) -> bool {
        !self.eval_rows.is_empty()
    }

    fn evaluate(&mut self) -> Result<Map<String, Value>, TrainError> {
        let (loss, acc) = evaluate(self.model, self.eval_rows, self.eval_batch, self.pad_id)?;
        let mut m = Map::new();
        m.insert("loss".into(), json!(loss));
        m.insert("token_acc".into(), json!(acc));
        Ok(m)
    }
}

/// Trains the `trainable` tensors of `model` on `rows` with the token objective, evaluating on
/// `eval_rows` (when there are any) every `cfg.eval_steps` steps and at the end (`eval_loss`,
/// `eval_token_acc`): [`TokenObjective`] in [`crate::trainer::train`].
pub fn train_with_eval(
    model: &LoadedModel,
    rows: &[EncodedRow],
    eval_rows: &[EncodedRow],
    trainable: &[(String, Tensor)],
    cfg: &TrainConfig,
    run: &mut RunDir,
    hooks: &mut dyn TrainHooks,
) -> Result<TrainSummary, TrainError> {
    let mut objective = TokenObjective::new(model, rows, eval_rows, cfg)?;
    crate::trainer::train(&mut objective, trainable, cfg, run, hooks)
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn passes_by_rows_and_tokens() {
        let idx = [0, 1, 2, 3, 4];
        let len = |k: usize| [100, 200, 50, 300, 10][k];
        let split = |rows, budget| passes(&idx, rows, budget, len);
        assert_eq!(split(1, 0), vec![&[0][..], &[1], &[2], &[3], &[4]]);
        assert_eq!(split(2, 0), vec![&[0, 1][..], &[2, 3], &[4]]);
        assert_eq!(split(0, 0), vec![&idx[..]]);
        // 100 + 200 fits 300; 50 + 300 does not, nor 300 + 10.
        assert_eq!(split(0, 300), vec![&[0, 1][..], &[2], &[3], &[4]]);
        assert_eq!(split(0, 310), vec![&[0, 1][..], &[2], &[3, 4]]);
        assert_eq!(split(1, 310), split(1, 0));
        // A unit longer than the budget makes a pass alone.
        assert_eq!(split(0, 60), vec![&[0][..], &[1], &[2], &[3], &[4]]);
        assert!(passes(&[], 2, 384, len).is_empty());
    }
}
