//! Half-quadratic quantization (HQQ, Badri & Shaji 2023): no calibration data. Starting from
//! round-to-nearest's min/max parameters, the zero point of each group is refined by
//! alternating a sparsity-promoting shrinkage of the quantization error (an ℓp "norm" with
//! p < 1, which tolerates a few large errors) with a closed-form zero update, as the reference
//! implementation's `optimize_weights_proximal` does (β = 10, κ = 1.01, p = 0.7, 20
//! iterations, stopping when the mean absolute error stops falling). The scale stays fixed.

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::affine::{self, Affine};
use crate::Result;

/// HQQ's hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct HqqParams {
    pub lp_norm: f64,
    pub beta: f64,
    pub kappa: f64,
    pub iters: usize,
}

impl Default for HqqParams {
    fn default() -> Self {
        Self {
            lp_norm: 0.7,
            beta: 10.0,
            kappa: 1.01,
            iters: 20,
        }
    }
}

/// Generalised soft-thresholding: `sign(x) · relu(|x| − |x|^(p−1) / β)`.
fn shrink(x: &Tensor, beta: f64, p: f64) -> Result<Tensor> {
    let a = x.f_abs()?;
    let t = a.f_sub(&a.f_pow_tensor_scalar(p - 1.0)?.f_div_scalar(beta)?)?;
    Ok(x.f_sign()?.f_mul(&t.f_relu()?)?)
}

/// Quantizes a `[out, in]` weight with HQQ.
pub fn quantize(w: &Tensor, bits: u8, group: i64, p: HqqParams) -> Result<Affine> {
    let w = w.f_to_kind(Kind::Float)?;
    let n = w.size()[1];
    let group = affine::effective_group(group, n);
    let g = affine::grouped(&w, group)?; // [out, ng, G]
    let (scale, lo) = affine::minmax_params(&g, bits)?; // [out, ng]
    let s = scale.f_unsqueeze(-1)?;
    let maxq = affine::max_code(bits);
    // In HQQ's variables: w ≈ (q − z) · s.
    let mut z = lo.f_neg()?.f_div(&scale)?.f_unsqueeze(-1)?;
    let mut best_z = z.shallow_clone();
    let mut best = f64::INFINITY;
    let mut beta = p.beta;
    for _ in 0..p.iters {
        let q = g.f_div(&s)?.f_add(&z)?.f_round()?.f_clamp(0.0, maxq)?;
        let r = q.f_sub(&z)?.f_mul(&s)?;
        let err = g.f_sub(&r)?;
        let e = shrink(&err, beta, p.lp_norm)?;
        let current = f64::try_from(err.f_abs()?.f_mean(Kind::Float)?)?;
        if current < best {
            best = current;
            best_z = z.shallow_clone();
        } else {
            break;
        }
        z = q
            .f_sub(&g.f_sub(&e)?.f_div(&s)?)?
            .f_mean_dim(&[-1i64][..], true, Kind::Float)?;
        beta *= p.kappa;
    }
    let mins = affine::f16_round(&best_z.f_neg()?.f_mul(&s)?.f_squeeze_dim(-1)?)?;
    affine::from_params(&w, scale, mins, bits, group)
}
