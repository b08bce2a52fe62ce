//! RMSNorm and LayerNorm, with or without weight and bias, as transformers computes them. The
//! host's norm slots (`ModelContext::norm`) run these; a family calls them directly only for a
//! norm it applies without a slot.

use tch::{Kind, Tensor};

use super::Error;

/// `w · x / sqrt(mean(x²) + eps) (+ b)` over the last dimension. As transformers does, the
/// normalisation runs in float32 and is cast back before the weight is applied (one fused
/// libtorch op when everything is float32: the same arithmetic).
pub fn rms_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor, Error> {
    // A decoding step: one pass on raw buffers, bit for bit the expressions below.
    if let (Some(w), None) = (weight, bias) {
        if let Some(y) = super::rms_norm_step(x, w, eps) {
            return Ok(y);
        }
    }
    let float = x.kind() == Kind::Float && weight.is_none_or(|w| w.kind() == Kind::Float);
    let y = if float {
        let dim = *x.size().last().ok_or("rms_norm of a scalar")?;
        x.f_rms_norm([dim], weight, eps)?
    } else {
        let dtype = x.kind();
        let h = x.f_to_kind(Kind::Float)?;
        let var = h.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let h = (h * var.f_add_scalar(eps)?.f_rsqrt()?).f_to_kind(dtype)?;
        match weight {
            Some(w) => h * w,
            None => h,
        }
    };
    Ok(match bias {
        Some(b) => y.f_add(b)?,
        None => y,
    })
}

/// `w · (x − mean) / sqrt(var + eps) + b` over the last dimension (biased variance).
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor, Error> {
    let dim = *x.size().last().ok_or("layer_norm of a scalar")?;
    Ok(x.f_layer_norm([dim], weight, bias, eps, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn norms_match_hand_computed_values() {
        // x = [1, 2, 3, 4]: mean(x²) = 7.5, mean 2.5, variance 1.25.
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 4]);
        let w = Tensor::from_slice(&[1.0f32, 0.5, 2.0, -1.0]);
        let b = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]);
        let eps = 1e-5;
        let r = 1.0 / (7.5f64 + eps).sqrt();
        let s = 1.0 / (1.25f64 + eps).sqrt();
        let xs = [1.0, 2.0, 3.0, 4.0];
        let (wv, bv) = ([1.0, 0.5, 2.0, -1.0], [0.1, 0.2, 0.3, 0.4]);
        let cases: Vec<(Tensor, Vec<f64>)> = vec![
            (
                rms_norm(&x, None, None, eps).unwrap(),
                xs.iter().map(|x| x * r).collect(),
            ),
            (
                rms_norm(&x, Some(&w), Some(&b), eps).unwrap(),
                (0..4).map(|i| xs[i] * r * wv[i] + bv[i]).collect(),
            ),
            (
                // bfloat16 input: normalised in float32, cast back, then scaled.
                rms_norm(
                    &x.to_kind(Kind::BFloat16),
                    Some(&w.to_kind(Kind::BFloat16)),
                    None,
                    eps,
                )
                .unwrap(),
                (0..4).map(|i| xs[i] * r * wv[i]).collect(),
            ),
            (
                layer_norm(&x, None, None, eps).unwrap(),
                xs.iter().map(|x| (x - 2.5) * s).collect(),
            ),
            (
                layer_norm(&x, Some(&w), Some(&b), eps).unwrap(),
                (0..4).map(|i| (xs[i] - 2.5) * s * wv[i] + bv[i]).collect(),
            ),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            let tol = if got.kind() == Kind::BFloat16 {
                2e-2
            } else {
                1e-6
            };
            for (g, w) in v(got).iter().zip(want) {
                assert!(
                    (g - w).abs() <= tol * w.abs().max(1.0),
                    "case {i}: {g} vs {w}"
                );
            }
        }
    }
}
