//! AWQ (Lin et al. 2023): activation-aware weight quantization. Input channels that carry
//! large activations matter most, so before rounding the weight is scaled up along those
//! channels, `W' = W · diag(s)` with `s = mean|x|^α` (normalised so that
//! `max(s) · min(s) = 1`), and the input is divided by `s`; `α` is searched on a grid in
//! `[0, 1]` to minimise the layer's output error `‖X Wᵀ − (X/s) Q(W·s)ᵀ‖²` on calibration
//! inputs `X` (α = 0 is plain round-to-nearest, so the search never does worse on `X`).
//! The reference implementation folds `1/s` into the preceding norm or linear layer; here the
//! slot keeps `s` (`input_scale`) and divides its input, which is the same product.
//! Then, as AWQ's `auto_clip`, the weight range of each group is shrunk by the ratio (searched
//! on a grid) that minimises the same output error. Parameters are AutoAWQ's: a float16 scale
//! `(max − min) / (2^bits − 1)` and an integer zero point `clamp(−round(min / scale))`.

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::affine::{self, Affine};
use crate::Result;

/// AWQ's options.
#[derive(Debug, Clone, Copy)]
pub struct AwqParams {
    pub bits: u8,
    pub group: i64,
    /// Grid points for α in [0, 1].
    pub grid: usize,
    /// Clip ratios tried from 1.0 down to `1 − clip_steps · 0.05` (0: no clipping search).
    pub clip_steps: usize,
}

impl Default for AwqParams {
    fn default() -> Self {
        Self {
            bits: 4,
            group: 128,
            grid: 20,
            clip_steps: 10,
        }
    }
}

fn output_error(x: &Tensor, w: &Tensor, w_hat: &Tensor) -> Result<f64> {
    let d = w.f_sub(w_hat)?;
    let y = x.f_matmul(&d.f_tr()?)?;
    Ok(f64::try_from(y.f_square()?.f_mean(Kind::Float)?)?)
}

/// Round-to-nearest of `w` with every group's range shrunk towards its middle by `ratio`
/// (`ratio` is `[out, ngroups, 1]` or a scalar tensor).
fn rtn_clipped(w: &Tensor, bits: u8, group: i64, ratio: &Tensor) -> Result<Affine> {
    let g = affine::grouped(w, group)?;
    let lo = g.f_amin([-1], true)?;
    let hi = g.f_amax([-1], true)?;
    let mid = lo.f_add(&hi)?.f_div_scalar(2.0)?;
    let half = hi.f_sub(&lo)?.f_div_scalar(2.0)?.f_mul(ratio)?;
    let lo = mid.f_sub(&half)?;
    let hi = mid.f_add(&half)?;
    let maxq = affine::max_code(bits);
    let scale = affine::f16_round(&hi.f_sub(&lo)?.f_div_scalar(maxq)?.f_clamp_min(1e-5)?)?;
    let zeros = lo
        .f_div(&scale)?
        .f_round()?
        .f_neg()?
        .f_clamp(0.0, maxq)?
        .f_squeeze_dim(-1)?;
    affine::from_int_params(w, scale.f_squeeze_dim(-1)?, zeros, bits, group)
}

/// Quantizes `w` `[out, in]` given the mean absolute input per channel `x_mean` `[in]` and
/// sample inputs `x` `[rows, in]`.
pub fn quantize(w: &Tensor, x_mean: &Tensor, x: &Tensor, p: AwqParams) -> Result<Affine> {
    let w = w.f_to_kind(Kind::Float)?;
    let x = x.f_to_kind(Kind::Float)?;
    let n = w.size()[1];
    let group = affine::effective_group(p.group, n);
    let one = Tensor::f_ones([1], (Kind::Float, w.device()))?;
    let x_mean = x_mean.f_to_kind(Kind::Float)?.f_clamp_min(1e-4)?;
    let mut best = (
        f64::INFINITY,
        Tensor::f_ones([n], (Kind::Float, w.device()))?,
    );
    for k in 0..=p.grid {
        let alpha = k as f64 / p.grid.max(1) as f64;
        let s = x_mean.f_pow_tensor_scalar(alpha)?;
        let norm = (f64::try_from(s.f_max()?)? * f64::try_from(s.f_min()?)?).sqrt();
        let s = s.f_div_scalar(norm.max(1e-12))?;
        let q = rtn_clipped(&w.f_mul(&s)?, p.bits, group, &one)?;
        let w_hat = affine::dequantize(&q)?.f_div(&s)?;
        let err = output_error(&x, &w, &w_hat)?;
        if err < best.0 {
            best = (err, s);
        }
    }
    let s = best.1;
    let ws = w.f_mul(&s)?;
    let xs = x.f_div(&s)?;
    // Clipping search, per output row and group, on the scaled problem.
    let rows = ws.size()[0];
    let ng = (n + group - 1) / group;
    let mut ratio = Tensor::f_ones([rows, ng, 1], (Kind::Float, w.device()))?;
    if p.clip_steps > 0 {
        let gx = affine::grouped(&xs, group)?; // [rows_x, ng, G]
        let gw = affine::grouped(&ws, group)?; // [out, ng, G]
        let mut best_err = Tensor::f_full([rows, ng, 1], f64::INFINITY, (Kind::Float, w.device()))?;
        for step in 0..=p.clip_steps {
            let r = 1.0 - 0.05 * step as f64;
            let rt = Tensor::f_full([1], r, (Kind::Float, w.device()))?;
            let q = rtn_clipped(&ws, p.bits, group, &rt)?;
            let gq = affine::grouped(&affine::dequantize(&q)?, group)?;
            // Per (row, group) output error: Σ_x (x_g · (w_g − ŵ_g))².
            let d = gw.f_sub(&gq)?; // [out, ng, G]
            let y = gx
                .f_permute([1, 0, 2])?
                .f_matmul(&d.f_permute([1, 2, 0])?)?; // [ng, rows_x, out]
            let e = y
                .f_square()?
                .f_mean_dim(&[1i64][..], false, Kind::Float)?
                .f_transpose(0, 1)?
                .f_unsqueeze(-1)?; // [out, ng, 1]
            let better = e.f_lt_tensor(&best_err)?;
            best_err = best_err.f_where_self(&better.f_logical_not()?, &e)?;
            ratio = ratio.f_where_self(&better.f_logical_not()?, &rt.f_expand_as(&ratio)?)?;
        }
    }
    let mut q = rtn_clipped(&ws, p.bits, group, &ratio)?;
    q.input_scale = Some(s);
    Ok(q)
}
