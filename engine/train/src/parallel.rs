//! Data parallel for the one training loop ([`crate::trainer`]), over the process group of
//! swift-dist (`swift_dist::current()`, joined by the pipeline from the launch environment).
//!
//! * **Shards.** The loop plans global micro-batches of `per_device × world` units (so the
//!   global batch is `per_device × world × accumulation`, as in ms-swift); rank `r` takes
//!   units `[r·per_device, (r+1)·per_device)` of each ([`shard`]). The ranks together see
//!   exactly the rows one process with the global batch sees, step by step.
//! * **Gradients.** After a step's backward passes, each rank's gradient is the gradient of its
//!   own loss normalised by its own weight (the token objective: its labelled tokens). One
//!   float64 all-reduce sums the weights and the step's figures, then one bucketed all-reduce
//!   (one flattened buffer per dtype) sums the gradients scaled by `own weight / total weight`
//!   ([`reduce_step`]): the result is the gradient of the whole global batch's loss, normalised
//!   over all of its tokens, which is what one process computes. The loop then clips, updates
//!   and clears as usual; every rank applies the same update to the same tensors.
//! * **Start.** The trainable tensors are broadcast from rank 0 before the first step
//!   ([`sync_start`]), as torch's DDP does when it wraps a model, so initialisations that differ
//!   per process cannot split the ranks.
//! * Rank 0 alone writes logs, charts and checkpoints (`swift_dist::is_writer`, used by the loop
//!   and the run folder); evaluation of the token objective is sharded by batch and its sums
//!   added over the ranks (`crate::token::evaluate`).
//! * ZeRO (`crate::zero`): with stage 2 the gradients are reduce-scattered instead of
//!   all-reduced.

use swift_dist::ProcessGroup;
use tch::Tensor;

use crate::checkpoint::TrainError;
use crate::trainer::{Objective, StepOutput};

fn dist(e: swift_dist::DistError) -> TrainError {
    TrainError::Step(e.to_string())
}

/// This rank's share of every micro-batch of `steps`, planned with `per_device × world` units
/// per micro-batch: units `[rank·per_device, (rank+1)·per_device)` of each (possibly none, for
/// a short last batch).
pub(crate) fn shard(
    steps: Vec<Vec<Vec<usize>>>,
    rank: usize,
    per_device: usize,
) -> Vec<Vec<Vec<usize>>> {
    steps
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|micro| {
                    let lo = (rank * per_device).min(micro.len());
                    let hi = ((rank + 1) * per_device).min(micro.len());
                    micro[lo..hi].to_vec()
                })
                .collect()
        })
        .collect()
}

/// Bucketed per dtype: rank 0's values of `tensors` on every rank.
pub(crate) fn sync_start(
    g: &ProcessGroup,
    trainable: &[(String, Tensor)],
) -> Result<(), TrainError> {
    let _guard = tch::no_grad_guard();
    let mut kinds = Vec::new();
    for (_, t) in trainable {
        if !kinds.contains(&t.kind()) {
            kinds.push(t.kind());
        }
    }
    for kind in kinds {
        let group: Vec<&Tensor> = trainable
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.kind() == kind)
            .collect();
        let flat = Tensor::f_cat(
            &group
                .iter()
                .map(|t| t.f_detach()?.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        g.broadcast(&flat, 0).map_err(dist)?;
        let mut off = 0i64;
        for t in group {
            let n = t.numel() as i64;
            t.shallow_clone()
                .f_copy_(&flat.f_narrow(0, off, n)?.f_view(t.size().as_slice())?)?;
            off += n;
        }
    }
    Ok(())
}

/// Turns this rank's step into the global step: its figures summed over the ranks and its
/// gradients replaced by the gradient of the global batch's loss (module documentation).
pub(crate) fn reduce_step<O: Objective>(
    g: &ProcessGroup,
    objective: &O,
    out: &mut StepOutput<O::Window>,
    trainable: &[(String, Tensor)],
    zero: Option<&crate::zero::Zero>,
) -> Result<(), TrainError> {
    let weight = objective.step_weight(out);
    let counts = objective.window_counts(&out.window);
    let mut mine = vec![
        weight,
        out.loss * weight,
        out.tokens as f64,
        out.units as f64,
    ];
    mine.extend_from_slice(&counts);
    let sums = g.sum_f64(&mine).map_err(dist)?;
    let total = sums[0];
    let loss = if total > 0.0 { sums[1] / total } else { 0.0 };
    out.loss = loss;
    out.tokens = sums[2] as usize;
    out.units = sums[3] as usize;
    objective.set_window_counts(&mut out.window, loss, &sums[4..]);
    // The gradients of every tensor that trains this step; a rank without data (a short last
    // batch) has none yet, so it gives zeros of the right shapes (one backward pass of a zero).
    let training: Vec<&Tensor> = trainable
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.requires_grad())
        .collect();
    let missing: Vec<&&Tensor> = training.iter().filter(|t| !t.grad().defined()).collect();
    if !missing.is_empty() {
        let mut zero = missing[0].f_sum(None)?.f_mul_scalar(0.0)?;
        for t in &missing[1..] {
            zero = zero.f_add(&t.f_sum(None)?.f_mul_scalar(0.0)?)?;
        }
        zero.f_backward()?;
    }
    let grads: Vec<Tensor> = training.iter().map(|t| t.grad()).collect();
    let scale = if total > 0.0 { weight / total } else { 0.0 };
    {
        let _guard = tch::no_grad_guard();
        for gr in &grads {
            let _ = gr.shallow_clone().f_mul_scalar_(scale)?;
        }
    }
    match zero.filter(|z| z.stage() == crate::zero::ZeroStage::Two) {
        // ZeRO-2: each rank keeps the sum of its own shard's gradients only.
        Some(z) => z.reduce_scatter(g, trainable)?,
        None => g.all_reduce_sum(&grads).map_err(dist)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_each_global_micro_batch_in_rank_order() {
        let steps = vec![vec![vec![0, 1, 2, 3], vec![4, 5, 6]], vec![vec![7]]];
        assert_eq!(
            shard(steps.clone(), 0, 2),
            vec![vec![vec![0, 1], vec![4, 5]], vec![vec![7]]]
        );
        assert_eq!(
            shard(steps, 1, 2),
            vec![vec![vec![2, 3], vec![6]], vec![vec![]]]
        );
    }
}
