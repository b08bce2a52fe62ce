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
}
