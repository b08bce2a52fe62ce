//! Group-wise asymmetric integer quantization, the format shared by `rtn`, `hqq`, `gptq` and
//! `awq`: the input columns of a `[out, in]` weight are cut into groups of `group` (the last
//! group may be shorter), and each row of each group has a `scale` and a `min` (both rounded to
//! float16, as stored) with `w ≈ q · scale + min`, `q ∈ 0..2^bits`.
//!
//! Round-to-nearest (`rtn`) takes `min` and `max` of each group:
//! `scale = (max - min) / (2^bits - 1)`, `q = round((w - min) / scale)`.
//!
//! GPTQ's and AWQ's standard layouts store an integer zero point `z` instead of `min`
//! (`w ≈ (q − z) · scale`): [`from_int_params`] makes such a weight, with `min = −z · scale`
//! and `zeros` kept for the packing.

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::Result;

/// A weight in the affine format.
pub struct Affine {
    /// u8 codes `[out, in]` (unpacked).
    pub q: Tensor,
    /// f32 `[out, ngroups]`, float16-representable.
    pub scales: Tensor,
    /// f32 `[out, ngroups]`, float16-representable.
    pub mins: Tensor,
    pub bits: u8,
    /// Columns per group (the last group may be shorter).
    pub group: i64,
    /// AWQ: `[in]`; the stored weight is `W · diag(s)` and the input is divided by `s`.
    pub input_scale: Option<Tensor>,
    /// GPTQ / AWQ: the integer zero points `[out, ngroups]` (f32), `mins = −zeros · scales`.
    pub zeros: Option<Tensor>,
}

/// The group size actually used for `in_features` columns (`0` or too large: one group).
pub fn effective_group(group: i64, in_features: i64) -> i64 {
    if group <= 0 || group >= in_features {
        in_features
    } else {
        group
    }
}

/// The largest code.
pub fn max_code(bits: u8) -> f64 {
    ((1u32 << bits) - 1) as f64
}

/// Rounds to the nearest float16 value (what is stored), kept as f32.
pub fn f16_round(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_to_kind(Kind::Half)?.f_to_kind(Kind::Float)?)
}

/// `[out, ngroups]` → `[out, in]`, each group's value repeated over its columns.
pub fn expand_groups(t: &Tensor, group: i64, in_features: i64) -> Result<Tensor> {
    Ok(t.f_repeat_interleave_self_int(group, 1, None)?
        .f_narrow(1, 0, in_features)?)
}

/// `w` `[out, in]` as `[out, ngroups, group]`, the last group padded by repeating the last
/// column (which changes no group's min or max).
pub fn grouped(w: &Tensor, group: i64) -> Result<Tensor> {
    let (out, n) = (w.size()[0], w.size()[1]);
    let ng = (n + group - 1) / group;
    let pad = ng * group - n;
    let w = if pad > 0 {
        let last = w.f_narrow(1, n - 1, 1)?.f_expand([out, pad], false)?;
        Tensor::f_cat(&[w, &last], 1)?
    } else {
        w.shallow_clone()
    };
    Ok(w.f_reshape([out, ng, group])?)
}

/// Min/max parameters of each row of `w` `[out, k]` (one group): `(scale, min)`, each `[out]`,
/// float16-rounded.
pub fn minmax_params(w: &Tensor, bits: u8) -> Result<(Tensor, Tensor)> {
    let lo = w.f_amin([-1], false)?;
    let hi = w.f_amax([-1], false)?;
    let scale = f16_round(
        &hi.f_sub(&lo)?
            .f_div_scalar(max_code(bits))?
            .f_clamp_min(1e-5)?,
    )?;
    Ok((scale, f16_round(&lo)?))
}

/// Codes of `w` (`[.., k]`) for per-row `scale` and `min` broadcast against it.
pub fn codes(w: &Tensor, scale: &Tensor, min: &Tensor, bits: u8) -> Result<Tensor> {
    Ok(w.f_sub(min)?
        .f_div(scale)?
        .f_round()?
        .f_clamp(0.0, max_code(bits))?)
}

/// Round-to-nearest of a `[out, in]` weight.
pub fn rtn(w: &Tensor, bits: u8, group: i64) -> Result<Affine> {
    let w = w.f_to_kind(Kind::Float)?;
    let n = w.size()[1];
    let group = effective_group(group, n);
    let g = grouped(&w, group)?;
    let (scales, mins) = minmax_params(&g, bits)?;
    from_params(&w, scales, mins, bits, group)
}

/// The codes of `w` for given `[out, ngroups]` parameters.
pub fn from_params(
    w: &Tensor,
    scales: Tensor,
    mins: Tensor,
    bits: u8,
    group: i64,
) -> Result<Affine> {
    let n = w.size()[1];
    let s = expand_groups(&scales, group, n)?;
    let m = expand_groups(&mins, group, n)?;
    let q = codes(w, &s, &m, bits)?.f_to_kind(Kind::Uint8)?;
    Ok(Affine {
        q,
        scales,
        mins,
        bits,
        group,
        input_scale: None,
        zeros: None,
    })
}

/// The codes of `w` for given `[out, ngroups]` scales and integer zero points:
/// `q = clamp(round(w / scale) + z, 0, 2^bits − 1)`.
pub fn from_int_params(
    w: &Tensor,
    scales: Tensor,
    zeros: Tensor,
    bits: u8,
    group: i64,
) -> Result<Affine> {
    let n = w.size()[1];
    let s = expand_groups(&scales, group, n)?;
    let z = expand_groups(&zeros, group, n)?;
    let q = w
        .f_div(&s)?
        .f_round()?
        .f_add(&z)?
        .f_clamp(0.0, max_code(bits))?
        .f_to_kind(Kind::Uint8)?;
    let mins = zeros.f_neg()?.f_mul(&scales)?;
    Ok(Affine {
        q,
        scales,
        mins,
        bits,
        group,
        input_scale: None,
        zeros: Some(zeros),
    })
}

/// The float32 `[out, in]` weight the codes stand for (before undoing an AWQ input scale):
/// `q · scale + min`, or `(q − z) · scale` with integer zero points.
pub fn dequantize(a: &Affine) -> Result<Tensor> {
    let n = a.q.size()[1];
    let s = expand_groups(&a.scales, a.group, n)?;
    let q = a.q.f_to_kind(Kind::Float)?;
    if let Some(z) = &a.zeros {
        let z = expand_groups(z, a.group, n)?;
        return Ok(q.f_sub(&z)?.f_mul(&s)?);
    }
    let m = expand_groups(&a.mins, a.group, n)?;
    Ok(q.f_mul(&s)?.f_add(&m)?)
}

/// The weight the codes stand for, in the original orientation (an AWQ input scale undone).
pub fn effective_weight(a: &Affine) -> Result<Tensor> {
    let w = dequantize(a)?;
    Ok(match &a.input_scale {
        Some(s) => w.f_div(s)?,
        None => w,
    })
}
