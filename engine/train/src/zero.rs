//! ZeRO stages 1 and 2 (`--deepspeed zero1|zero2`, ms-swift's names) over swift-dist's process
//! group: the optimizer state is sharded over the ranks, as DeepSpeed's ZeRO does.
//!
//! * **Shards.** The trainable tensors are split into `world` shards by size (largest first,
//!   each to the rank holding the fewest elements so far; [`partition`]), the way PyTorch's
//!   `ZeroRedundancyOptimizer` partitions parameters: each rank creates the registered
//!   optimizer over its own shard only ([`Optimizer::sharded`]), so it keeps the optimizer
//!   state (AdamW's moments) of about 1/world of the elements. Whole tensors, not slices of
//!   one flat buffer as DeepSpeed does, so every optimizer's per-tensor math (GaLore's
//!   projections included) runs unchanged: a rank's share is 1/world up to one tensor's size.
//! * **Stage 1.** Gradients are all-reduced as in plain data parallel (`crate::parallel`);
//!   each rank clips with the global norm, updates its shard, and the updated values are
//!   all-gathered ([`Zero::gather_params`]: each tensor broadcast from its owner in place; a
//!   flattened bucket per rank, as a first version had, cost more transient memory than the
//!   sharded moments saved).
//! * **Stage 2.** The gradients are reduce-scattered instead ([`Zero::reduce_scatter`]: each
//!   tensor's gradient reduced into its owner's, in place), each rank keeps only its shard's
//!   gradients (the others are freed), and the clipping norm is the square root of the squared
//!   norms summed over the ranks. The gradients are whole on every rank during the backward
//!   passes (no hooks reduce them bucket by bucket as DeepSpeed's do), so stage 2 saves the
//!   gradient memory between the reduction and the next step's backward pass only.
//! * **Checkpoints** are what one process writes: the shards' optimizer states are gathered
//!   to rank 0 on save ([`Zero::full_state`], every rank takes part, rank 0 writes), so a checkpoint
//!   resumes with or without ZeRO and with another number of ranks (each rank's optimizer
//!   picks its own tensors' state from the whole file).
//! * With one process, the one shard is everything (DeepSpeed runs ZeRO with one rank too).
//!
//! Each rank's count of optimizer-state elements is logged by rank 0 at the start
//! ([`Zero::report`]), which the tests check.

use swift_dist::ProcessGroup;
use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;
use crate::optim::{Optimizer, OptimizerSetting, OptimizerState};

/// Which ZeRO stage shards what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroStage {
    /// The optimizer state.
    One,
    /// The optimizer state and the gradients.
    Two,
}

impl ZeroStage {
    pub fn name(self) -> &'static str {
        match self {
            ZeroStage::One => "ZeRO-1",
            ZeroStage::Two => "ZeRO-2",
        }
    }
}

fn dist(e: swift_dist::DistError) -> TrainError {
    TrainError::Step(e.to_string())
}

/// The owner rank of each tensor of `sizes` (elements): largest first, each to the rank with
/// the fewest elements so far (the lowest such rank on a tie), so every rank computes the
/// same shards.
pub fn partition(sizes: &[i64], world: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut load = vec![0i64; world];
    let mut owner = vec![0usize; sizes.len()];
    for i in order {
        let r = (0..world).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        owner[i] = r;
        load[r] += sizes[i];
    }
    owner
}

/// ZeRO's shards of one run's trainable tensors.
pub struct Zero {
    stage: ZeroStage,
    group: Option<&'static ProcessGroup>,
    rank: usize,
    world: usize,
    /// The rank owning each trainable tensor.
    owner: Vec<usize>,
}

impl Zero {
    /// The shards of `trainable` over `group`'s ranks (one shard without a group).
    pub fn new(
        stage: ZeroStage,
        trainable: &[(String, Tensor)],
        group: Option<&'static ProcessGroup>,
    ) -> Self {
        let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world()));
        let sizes: Vec<i64> = trainable.iter().map(|(_, t)| t.numel() as i64).collect();
        Self {
            stage,
            group,
            rank,
            world,
            owner: partition(&sizes, world),
        }
    }

    pub fn stage(&self) -> ZeroStage {
        self.stage
    }

    /// The registered optimizer over this rank's shard.
    pub fn optimizer(
        &self,
        trainable: &[(String, Tensor)],
        setting: &OptimizerSetting,
    ) -> Result<Optimizer, TrainError> {
        let owned: Vec<bool> = self.owner.iter().map(|&r| r == self.rank).collect();
        Optimizer::sharded(trainable, setting, &owned)
    }

    /// Logs (rank 0) every rank's count of optimizer-state elements and of tensors.
    pub fn report(&self, opt: &mut Optimizer) -> Result<(), TrainError> {
        let own: i64 = opt.own_state()?.iter().map(|(_, t)| t.numel() as i64).sum();
        let tensors = self.owner.iter().filter(|&&r| r == self.rank).count();
        let mut mine = vec![0.0; 2 * self.world];
        mine[self.rank] = own as f64;
        mine[self.world + self.rank] = tensors as f64;
        let all = match self.group {
            Some(g) => g.sum_f64(&mine).map_err(dist)?,
            None => mine,
        };
        let elements: Vec<u64> = all[..self.world].iter().map(|&x| x as u64).collect();
        let per_rank: Vec<u64> = all[self.world..].iter().map(|&x| x as u64).collect();
        if swift_dist::is_writer() {
            tracing::info!(
                "{} over {} rank(s): optimizer-state elements per rank {:?} of {}; trainable tensors per rank {:?}",
                self.stage.name(),
                self.world,
                elements,
                elements.iter().sum::<u64>(),
                per_rank
            );
        }
        Ok(())
    }

    /// The indices of the tensors that train this step (LISA switches some off).
    fn training(trainable: &[(String, Tensor)]) -> impl Iterator<Item = usize> + '_ {
        trainable
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| t.requires_grad())
            .map(|(i, _)| i)
    }

    /// Stage 2: each training tensor's gradient summed over the ranks into its owner's (one
    /// reduce per tensor, in place: no flattened copy of the gradients) and freed on the other
    /// ranks. The gradients must be defined on every rank.
    pub(crate) fn reduce_scatter(
        &self,
        g: &ProcessGroup,
        trainable: &[(String, Tensor)],
    ) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        for i in Self::training(trainable) {
            let t = &trainable[i].1;
            g.reduce_sum(&t.grad(), self.owner[i]).map_err(dist)?;
            if self.owner[i] != self.rank {
                swift_dist::drop_grad(t).map_err(dist)?;
            }
        }
        Ok(())
    }

    /// The global gradient norm (clipped as `clip_grad_norm_` does): stage 2 sums the squared
    /// norms of the ranks' shards (gradients of other shards a hook re-created are freed
    /// first); stage 1 holds every gradient.
    pub(crate) fn clip(
        &self,
        opt: &mut Optimizer,
        trainable: &[(String, Tensor)],
        max_norm: f64,
    ) -> Result<f64, TrainError> {
        match (self.stage, self.group) {
            (ZeroStage::Two, Some(g)) => {
                for (i, (_, t)) in trainable.iter().enumerate() {
                    if self.owner[i] != self.rank && t.grad().defined() {
                        swift_dist::drop_grad(t).map_err(dist)?;
                    }
                }
                opt.clip_grad_norm_with(max_norm, &|sq| Ok(g.sum_f64(&[sq]).map_err(dist)?[0]))
            }
            _ => opt.clip_grad_norm(max_norm),
        }
    }

    /// After the update: every training tensor broadcast from its owner, in place (one
    /// collective per tensor: no flattened copies of the shards, which would cost more memory
    /// than the sharded state saves).
    pub(crate) fn gather_params(&self, trainable: &[(String, Tensor)]) -> Result<(), TrainError> {
        let Some(g) = self.group else {
            return Ok(());
        };
        let _guard = tch::no_grad_guard();
        for i in Self::training(trainable) {
            g.broadcast(&trainable[i].1.f_detach()?, self.owner[i])
                .map_err(dist)?;
        }
        Ok(())
    }

    /// What one process would checkpoint: every tensor and the whole optimizer state, the
    /// shards' states gathered from every rank to rank 0, the writer (a collective: every rank
    /// calls it; the others get their tensors only).
    pub(crate) fn full_state(&self, opt: &mut Optimizer) -> Result<OptimizerState, TrainError> {
        let Some(g) = self.group else {
            return opt.state();
        };
        let mut out: OptimizerState = opt
            .state()?
            .into_iter()
            .filter(|(n, _)| n.starts_with("param."))
            .collect();
        let gathered = gather_named(g, opt.own_state()?)?;
        for (name, t) in gathered {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, t));
            }
        }
        Ok(out)
    }
}

/// A dtype's name in the gathered headers.
fn kind_code(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "f32",
        Kind::Double => "f64",
        Kind::Half => "f16",
        Kind::BFloat16 => "bf16",
        Kind::Int64 => "i64",
        Kind::Int => "i32",
        Kind::Int8 => "i8",
        Kind::Uint8 => "u8",
        Kind::Bool => "bool",
        _ => return None,
    })
}

fn code_kind(code: &str) -> Option<Kind> {
    [
        Kind::Float,
        Kind::Double,
        Kind::Half,
        Kind::BFloat16,
        Kind::Int64,
        Kind::Int,
        Kind::Int8,
        Kind::Uint8,
        Kind::Bool,
    ]
    .into_iter()
    .find(|&k| kind_code(k) == Some(code))
}

/// Every rank's named tensors (names, dtypes and shapes may differ per rank), rank 0's first,
/// on rank 0 (the others get none): one all-gather of the headers (JSON, padded), then one
/// broadcast per entry from its rank.
fn gather_named(
    g: &ProcessGroup,
    local: Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let (rank, world) = (g.rank(), g.world());
    let mut header = Vec::new();
    for (name, t) in &local {
        let code = kind_code(t.kind()).ok_or_else(|| {
            TrainError::Step(format!(
                "ZeRO cannot gather the optimizer state `{name}` of dtype {:?}: train without --deepspeed",
                t.kind()
            ))
        })?;
        header.push(serde_json::json!([name, code, t.size()]));
    }
    let bytes = serde_json::to_vec(&header).map_err(|e| TrainError::Step(e.to_string()))?;
    let mut lens = vec![0.0; world];
    lens[rank] = bytes.len() as f64;
    let lens: Vec<usize> = g
        .sum_f64(&lens)
        .map_err(dist)?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let max = lens.iter().copied().max().unwrap_or(0).max(1);
    let mut padded = bytes;
    padded.resize(max, b' ');
    let all = g.all_gather(&Tensor::from_slice(&padded)).map_err(dist)?;
    let mut headers: Vec<Vec<(String, Kind, Vec<i64>)>> = Vec::new();
    for (r, t) in all.iter().enumerate() {
        let b = Vec::<u8>::try_from(t)?;
        let v: Vec<(String, String, Vec<i64>)> = serde_json::from_slice(&b[..lens[r]])
            .map_err(|e| TrainError::Step(format!("ZeRO: rank {r}'s state header: {e}")))?;
        let mut entries = Vec::new();
        for (name, code, shape) in v {
            let kind = code_kind(&code).ok_or_else(|| {
                TrainError::Step(format!("ZeRO: rank {r} sent dtype {code} for `{name}`"))
            })?;
            entries.push((name, kind, shape));
        }
        headers.push(entries);
    }
    // Each entry broadcast from its rank, one at a time: rank 0 keeps them all, the others
    // hold one entry at a time (the whole state never sits on them).
    let mut values: Vec<Vec<Option<Tensor>>> = Vec::new();
    for (r, h) in headers.iter().enumerate() {
        let mut got = Vec::new();
        for (j, (_, kind, shape)) in h.iter().enumerate() {
            let buf = if r == rank {
                local[j].1.f_detach()?.f_contiguous()?
            } else {
                Tensor::f_empty(shape.as_slice(), (*kind, tch::Device::Cpu))?
            };
            g.broadcast(&buf, r).map_err(dist)?;
            got.push((rank == 0).then_some(buf));
        }
        values.push(got);
    }
    let mut out = Vec::new();
    for (h, v) in headers.into_iter().zip(values) {
        for ((name, _, _), t) in h.into_iter().zip(v) {
            if let Some(t) = t {
                out.push((name, t));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_balances_largest_first() {
        // 10 → r0; 8 → r1; 5 → r1 (8 < 10); 4 → r0 (10 < 13); 1 → r1 (13 < 14): 14 and 14.
        assert_eq!(partition(&[5, 10, 1, 8, 4], 2), vec![1, 0, 1, 1, 0]);
        assert_eq!(partition(&[3, 3, 3], 1), vec![0, 0, 0]);
        // More ranks than tensors: some shards stay empty.
        assert_eq!(partition(&[2, 7], 3), vec![1, 0]);
    }
}
