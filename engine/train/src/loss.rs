//! The training loss: token cross-entropy on shifted labels (the logits at position t predict
//! the label at t + 1), times the template's per-token loss scale, *summed*. The caller divides
//! by the labelled tokens of the whole accumulated step, as ms-swift does, so that gradient
//! accumulation over rows of unequal length equals one big batch.

use tch::{Kind, Reduction, Tensor};

use crate::checkpoint::TrainError;

/// A batch's summed loss (with its graph) and token accuracy counts.
pub struct TokenLoss {
    /// Σ scale · CE over labelled positions (scalar, float32).
    pub sum: Tensor,
    /// Labelled positions (after the shift).
    pub tokens: i64,
    /// Of those, where the arg-max of the logits is the label.
    pub correct: i64,
}

/// Labelled positions after the shift: labels `[b, t]` (-100 = not trained), counting t ≥ 1.
pub fn shifted_label_count(labels: &[i64], batch: usize, seq: usize) -> i64 {
    (0..batch)
        .map(|r| {
            labels[r * seq + 1.min(seq)..(r + 1) * seq]
                .iter()
                .filter(|&&l| l != -100)
                .count() as i64
        })
        .sum()
}

/// `logits` `[b, t, v]`, `labels` `[b, t]` (int64), `scale` `[b, t]` (float).
pub fn token_loss(
    logits: &Tensor,
    labels: &Tensor,
    scale: &Tensor,
) -> Result<TokenLoss, TrainError> {
    let size = logits.size();
    let (b, t, v) = (size[0], size[1], size[2]);
    if t < 2 {
        return Ok(TokenLoss {
            sum: logits.f_sum(Kind::Float)?.f_mul_scalar(0.0)?,
            tokens: 0,
            correct: 0,
        });
    }
    let flat = logits.f_narrow(1, 0, t - 1)?.f_reshape([b * (t - 1), v])?;
    let labels = labels.f_narrow(1, 1, t - 1)?.f_reshape([-1])?;
    let scale = scale.f_narrow(1, 1, t - 1)?.f_reshape([-1])?;
    token_loss_flat(&flat, &labels, &scale)
}

/// The positions of `[b, t]` labels whose shifted label is trained, as indices into the
/// flattened `[b · (t − 1)]` predicting positions, with their labels and scales. The trainer
/// applies the output projection to these positions only (the others cost vocabulary-sized
/// logits and contribute nothing).
pub fn labelled_positions(
    labels: &Tensor,
    scale: &Tensor,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let t = labels.size()[1];
    let labels = labels.f_narrow(1, 1, t - 1)?.f_reshape([-1])?;
    let scale = scale.f_narrow(1, 1, t - 1)?.f_reshape([-1])?;
    let idx = labels.f_ne(-100)?.f_nonzero()?.f_squeeze_dim(1)?;
    Ok((
        labels.f_index_select(0, &idx)?,
        scale.f_index_select(0, &idx)?,
        idx,
    ))
}

/// `logits` `[n, v]` already aligned with `labels` `[n]` and `scale` `[n]` (no shift).
pub fn token_loss_flat(
    logits: &Tensor,
    labels: &Tensor,
    scale: &Tensor,
) -> Result<TokenLoss, TrainError> {
    let logits = logits.f_to_kind(Kind::Float)?;
    let ce = logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::None, -100, 0.0)?;
    let sum = ce
        .f_mul(&scale.f_to_kind(Kind::Float)?)?
        .f_sum(Kind::Float)?;
    let valid = labels.f_ne(-100)?;
    let tokens = i64::try_from(valid.f_sum(Kind::Int64)?)?;
    let correct = {
        let _g = tch::no_grad_guard();
        let pred = logits.f_argmax(-1, false)?;
        i64::try_from(
            pred.f_eq_tensor(labels)?
                .f_logical_and(&valid)?
                .f_sum(Kind::Int64)?,
        )?
    };
    Ok(TokenLoss {
        sum,
        tokens,
        correct,
    })
}

/// The loss of final hidden states at labelled positions, `picked` `[n, hidden]` (with the
/// graph of the blocks that made it), run backward `piece` positions at a time: each piece's
/// logits (`project`, the output projection) and cross-entropy on a detached copy of its rows,
/// its backward at once (a trainable projection gets its gradient there), then the blocks
/// backward from the gathered gradient of `picked`. So the logits of all `n` positions and their
/// gradient are never held together. Returns Σ scale·CE / `denom` (a number) and the correctly
/// predicted labels. With `n` = 0 one empty piece still runs backward (a zero), so every
/// trainable tensor gets a gradient as a whole-graph backward gives it.
pub fn backward_in_pieces(
    picked: &Tensor,
    labels: &Tensor,
    scale: &Tensor,
    denom: f64,
    piece: i64,
    project: &dyn Fn(&Tensor) -> Result<Tensor, TrainError>,
) -> Result<(f64, i64), TrainError> {
    let n = picked.size()[0];
    let (mut loss, mut correct) = (0.0f64, 0i64);
    let mut grads = Vec::new();
    let mut start = 0;
    loop {
        let len = piece.max(1).min(n - start);
        let leaf = picked
            .f_narrow(0, start, len)?
            .f_detach()?
            .set_requires_grad(picked.requires_grad());
        let tl = token_loss_flat(
            &project(&leaf)?,
            &labels.f_narrow(0, start, len)?,
            &scale.f_narrow(0, start, len)?,
        )?;
        let part = tl.sum.f_div_scalar(denom)?;
        loss += f64::try_from(part.f_detach()?.f_to_kind(Kind::Double)?)?;
        correct += tl.correct;
        if part.requires_grad() {
            part.f_backward()?;
        }
        if leaf.requires_grad() {
            grads.push(leaf.grad());
        }
        start += len;
        if start >= n {
            break;
        }
    }
    if picked.requires_grad() && !grads.is_empty() {
        // Σ picked ⊙ g run backward hands the blocks exactly g.
        let g = Tensor::f_cat(&grads, 0)?;
        picked.f_mul(&g)?.f_sum(Kind::Float)?.f_backward()?;
    }
    Ok((loss, correct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_weighted_cross_entropy() {
        // One row of 3 tokens over a vocabulary of 2; labels at t = 1, 2 (t = 0 is never a target).
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 2.0, 0.0, 5.0, 5.0]).view([1, 3, 2]);
        let labels = Tensor::from_slice(&[-100i64, 1, 0]).view([1, 3]);
        let scale = Tensor::from_slice(&[0.0f32, 1.0, 2.0]).view([1, 3]);
        let l = token_loss(&logits, &labels, &scale).unwrap();
        // Position 0 predicts label 1 from [0, 0]: ln 2. Position 1 predicts 0 from [2, 0]:
        // ln(1 + e^-2), weighted 2.
        let want = 2f64.ln() + 2.0 * (1.0 + (-2f64).exp()).ln();
        assert!((f64::try_from(&l.sum).unwrap() - want).abs() < 1e-6);
        assert_eq!((l.tokens, l.correct), (2, 1));
        assert_eq!(shifted_label_count(&[-100, 1, 0, 5, -100, 7], 2, 3), 3);
        // Selecting the labelled positions first gives the same loss.
        let (lab, sc, idx) = labelled_positions(&labels, &scale).unwrap();
        let picked = logits.narrow(1, 0, 2).reshape([2, 2]).index_select(0, &idx);
        let l2 = token_loss_flat(&picked, &lab, &sc).unwrap();
        assert!((f64::try_from(&l2.sum).unwrap() - want).abs() < 1e-6);
    }

    /// Pieces of 128 (and of 1) against one backward through the whole graph: the same loss,
    /// accuracy and gradients of a "block" before the hidden states and of a trainable
    /// projection after them, over 300 positions (three pieces, the last one short).
    #[test]
    fn backward_in_pieces_equals_one_backward() {
        tch::manual_seed(7);
        let opts = (Kind::Double, tch::Device::Cpu);
        let x = Tensor::randn([300, 6], opts);
        let labels = Tensor::randint(50, [300], (Kind::Int64, tch::Device::Cpu));
        let scale = Tensor::rand([300], opts);
        let block0 = Tensor::randn([5, 6], opts);
        let proj0 = Tensor::randn([50, 5], opts);
        let run = |piece: Option<i64>| {
            let block = block0.copy().set_requires_grad(true);
            let proj = proj0.copy().set_requires_grad(true);
            let picked = x.matmul(&block.tr()).tanh();
            let (loss, correct) = match piece {
                None => {
                    let tl = token_loss_flat(&picked.matmul(&proj.tr()), &labels, &scale).unwrap();
                    let part = tl.sum.f_div_scalar(300.0).unwrap();
                    part.backward();
                    (f64::try_from(&part).unwrap(), tl.correct)
                }
                Some(p) => {
                    let project = |h: &Tensor| Ok(h.matmul(&proj.tr()));
                    backward_in_pieces(&picked, &labels, &scale, 300.0, p, &project).unwrap()
                }
            };
            (loss, correct, block.grad(), proj.grad())
        };
        let (l0, c0, b0, p0) = run(None);
        assert!(l0 > 0.5 && c0 > 0, "{l0} {c0}");
        for piece in [128, 1, 1000] {
            let (l, c, b, p) = run(Some(piece));
            assert!((l - l0).abs() < 1e-5, "{piece}: {l} vs {l0}");
            assert_eq!(c, c0);
            assert!(
                b.allclose(&b0, 1e-6, 1e-9, false),
                "{piece}: block gradient"
            );
            assert!(
                p.allclose(&p0, 1e-6, 1e-9, false),
                "{piece}: projection gradient"
            );
        }
        // No labelled position: a zero loss and zero gradients, as one backward gives.
        let block = block0.copy().set_requires_grad(true);
        let picked = x.narrow(0, 0, 0).matmul(&block.tr());
        let project = |h: &Tensor| Ok(h.matmul(&proj0.tr()));
        let empty = labels.narrow(0, 0, 0);
        let (l, c) =
            backward_in_pieces(&picked, &empty, &scale.narrow(0, 0, 0), 1.0, 128, &project)
                .unwrap();
        assert_eq!((l, c), (0.0, 0));
        assert_eq!(block.grad().abs().sum(Kind::Double).double_value(&[]), 0.0);
    }
}
