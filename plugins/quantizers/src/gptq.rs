//! GPTQ (Frantar et al. 2022): quantizes the columns of a `[out, in]` weight one at a time and
//! spreads each column's rounding error over the columns not yet quantized, weighted by the
//! inverse Hessian `H = 2 XᵀX / n` of the layer's calibration inputs `X`, so that the layer's
//! *output* on those inputs changes as little as possible. As the reference implementation:
//! dead inputs (zero diagonal) are zeroed, `H` is damped by `damp · mean(diag H)`, the upper
//! Cholesky factor of `H⁻¹` drives the updates, and columns are processed in blocks with lazy
//! batch updates. With act-order (`desc_act`) columns go in order of decreasing `diag H`;
//! group parameters are then fixed up front from the original weight ("static groups"), so the
//! stored layout needs no column permutation (`g_idx[i] = i / group`). Without act-order each
//! group's parameters are taken when the sweep reaches the group (the block size is the group
//! size). Parameters are GPTQ's asymmetric ones: the range `[min(w, 0), max(w, 0)]`, a
//! float16 scale and an integer zero point, kept in `1..2^bits` so that GPTQ's standard
//! ("v1") layout, which stores `z − 1`, holds it (a group whose zero would be 0 takes
//! `z = 1` and the scale `max / (2^bits − 2)`).

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::affine::{self, Affine};
use crate::{QuantError, Result};

/// GPTQ's options.
#[derive(Debug, Clone, Copy)]
pub struct GptqParams {
    pub bits: u8,
    pub group: i64,
    pub act_order: bool,
    /// Fraction of the mean Hessian diagonal added to it.
    pub damp: f64,
}

/// GPTQ's parameters of each row of `w` `[out, k]` (one group): `(scale, zero)`, each `[out]`,
/// the scale float16-rounded, the zero an integer in `1..=2^bits − 1`.
pub fn params(w: &Tensor, bits: u8) -> Result<(Tensor, Tensor)> {
    let maxq = affine::max_code(bits);
    let lo = w.f_amin([-1], false)?.f_clamp_max(0.0)?;
    let hi = w.f_amax([-1], false)?.f_clamp_min(0.0)?;
    let scale = affine::f16_round(&hi.f_sub(&lo)?.f_div_scalar(maxq)?.f_clamp_min(1e-5)?)?;
    let zero = lo.f_neg()?.f_div(&scale)?.f_round()?.f_clamp(0.0, maxq)?;
    // z = 0 cannot be stored as z − 1: take z = 1 with a scale that still reaches `hi`.
    let low = zero.f_lt(1.0)?;
    let scale1 = affine::f16_round(&hi.f_div_scalar(maxq - 1.0)?.f_clamp_min(1e-5)?)?;
    let scale = scale1.f_where_self(&low, &scale)?;
    let zero = zero.f_clamp_min(1.0)?;
    Ok((scale, zero))
}

/// Quantizes `w` `[out, in]` given the Hessian `h` `[in, in]` of its inputs.
pub fn quantize(w: &Tensor, h: &Tensor, p: GptqParams) -> Result<Affine> {
    let mut w = w.f_to_kind(Kind::Float)?.f_contiguous()?.copy();
    let (rows, n) = (w.size()[0], w.size()[1]);
    if h.size() != [n, n] {
        return Err(QuantError::Config(format!(
            "GPTQ: Hessian of shape {:?} for a weight with {n} input columns",
            h.size()
        )));
    }
    let group = affine::effective_group(p.group, n);
    let ng = (n + group - 1) / group;
    let mut h = h.f_to_kind(Kind::Double)?.copy();
    let diag = h.f_diagonal(0, 0, 1)?;
    let dead = diag.f_eq(0.0)?;
    let mut diag_view = h.f_diagonal(0, 0, 1)?;
    let _ = diag_view.f_masked_fill_(&dead, 1.0)?;
    let dead_cols = dead.f_to_device(w.device())?.f_unsqueeze(0)?;
    let _ = w.f_masked_fill_(&dead_cols, 0.0)?;

    // Static group parameters (act-order) from the original weight.
    let static_params = if p.act_order {
        Some(params(&affine::grouped(&w, group)?, p.bits)?)
    } else {
        None
    };
    let perm: Vec<i64> = if p.act_order {
        let d = h.f_diagonal(0, 0, 1)?;
        let (_, idx) = d.f_sort(0, true)?;
        Vec::<i64>::try_from(idx)?
    } else {
        (0..n).collect()
    };
    let perm_t = Tensor::from_slice(&perm).f_to_device(w.device())?;
    if p.act_order {
        w = w.f_index_select(1, &perm_t)?;
        h = h.f_index_select(0, &perm_t)?.f_index_select(1, &perm_t)?;
    }
    let hinv = inverse_cholesky(&h, p.damp)?.f_to_kind(Kind::Float)?;

    let codes = Tensor::f_zeros([rows, n], (Kind::Float, w.device()))?;
    let mut scales = Tensor::f_zeros([rows, ng], (Kind::Float, w.device()))?;
    let mut zeros = Tensor::f_zeros([rows, ng], (Kind::Float, w.device()))?;
    if let Some((s, z)) = &static_params {
        scales = s.shallow_clone();
        zeros = z.shallow_clone();
    }
    let block = if p.act_order { 128.min(n) } else { group };
    let mut i1 = 0;
    while i1 < n {
        let i2 = (i1 + block).min(n);
        let count = i2 - i1;
        let w1 = w.f_narrow(1, i1, count)?.copy();
        let err1 = Tensor::f_zeros([rows, count], (Kind::Float, w.device()))?;
        let hinv1 = hinv.f_narrow(0, i1, count)?.f_narrow(1, i1, count)?;
        if !p.act_order {
            // The group starts here: parameters from its current (error-updated) columns.
            let (s, z) = params(&w1, p.bits)?;
            let g = i1 / group;
            scales.f_narrow(1, g, 1)?.f_copy_(&s.f_unsqueeze(1)?)?;
            zeros.f_narrow(1, g, 1)?.f_copy_(&z.f_unsqueeze(1)?)?;
        }
        for i in 0..count {
            let col = perm[(i1 + i) as usize];
            let g = col / group;
            let s = scales.f_select(1, g)?;
            let z = zeros.f_select(1, g)?;
            let wcol = w1.f_select(1, i)?;
            let q = wcol
                .f_div(&s)?
                .f_round()?
                .f_add(&z)?
                .f_clamp(0.0, affine::max_code(p.bits))?;
            codes.f_select(1, col)?.f_copy_(&q)?;
            let deq = q.f_sub(&z)?.f_mul(&s)?;
            let d = hinv1.f_get(i)?.f_get(i)?;
            let e = wcol.f_sub(&deq)?.f_div(&d)?;
            let row = hinv1.f_get(i)?.f_narrow(0, i, count - i)?;
            let upd = e.f_unsqueeze(1)?.f_matmul(&row.f_unsqueeze(0)?)?;
            let _ = w1.f_narrow(1, i, count - i)?.f_sub_(&upd)?;
            err1.f_select(1, i)?.f_copy_(&e)?;
        }
        if i2 < n {
            let rest = hinv.f_narrow(0, i1, count)?.f_narrow(1, i2, n - i2)?;
            let _ = w.f_narrow(1, i2, n - i2)?.f_sub_(&err1.f_matmul(&rest)?)?;
        }
        i1 = i2;
    }
    let mins = zeros.f_neg()?.f_mul(&scales)?;
    Ok(Affine {
        q: codes.f_to_kind(Kind::Uint8)?,
        scales,
        mins,
        bits: p.bits,
        group,
        input_scale: None,
        zeros: Some(zeros),
    })
}

/// The upper Cholesky factor of `(H + λI)⁻¹`, raising the damping until `H + λI` is positive
/// definite.
fn inverse_cholesky(h: &Tensor, damp: f64) -> Result<Tensor> {
    let n = h.size()[0];
    let mean_diag = f64::try_from(h.f_diagonal(0, 0, 1)?.f_mean(Kind::Double)?)?;
    let eye = Tensor::f_eye(n, (Kind::Double, h.device()))?;
    let mut lambda = damp.max(1e-6) * mean_diag.max(1e-12);
    for _ in 0..8 {
        let hd = h.f_add(&eye.f_mul_scalar(lambda)?)?;
        if let Ok(l) = hd.f_linalg_cholesky(false) {
            let inv = l.f_cholesky_inverse(false)?;
            if let Ok(u) = inv.f_linalg_cholesky(true) {
                return Ok(u);
            }
        }
        lambda *= 10.0;
    }
    Err(QuantError::Config(
        "GPTQ: the calibration Hessian is not positive definite even with heavy damping; use more calibration samples".into(),
    ))
}

/// The mean squared output error `‖X (W − Ŵ)ᵀ‖² / (n · out)` expressed through the Hessian
/// `H = 2 XᵀX / n`: `tr(D H Dᵀ) / (2 · out)` with `D = W − Ŵ`.
pub fn output_error(w: &Tensor, w_hat: &Tensor, h: &Tensor) -> Result<f64> {
    let d = w
        .f_to_kind(Kind::Double)?
        .f_sub(&w_hat.f_to_kind(Kind::Double)?)?;
    let t = d
        .f_matmul(&h.f_to_kind(Kind::Double)?)?
        .f_mul(&d)?
        .f_sum(Kind::Double)?;
    Ok(f64::try_from(t)? / (2.0 * w.size()[0] as f64))
}
