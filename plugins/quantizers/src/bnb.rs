//! bitsandbytes-style weight formats.
//!
//! * 4-bit (`nf4`, `fp4`): the weight is flattened row-major and cut into blocks of
//!   `blocksize` elements; each block is divided by its absmax and every element is replaced by
//!   the index of the nearest value of the code book (ties go to the lower value). With double
//!   quantization, the absmax values themselves are stored as 8-bit: their mean is subtracted
//!   and each run of 256 is scaled by its own absmax to `-127..=127` (bitsandbytes uses its
//!   dynamic 8-bit map here; the linear map is this crate's simplification, and is exact to
//!   within half a step of `absmax_range/127`).
//! * 8-bit: each output row is scaled by `127 / absmax(row)` and rounded (LLM.int8's weight
//!   format, without the outlier decomposition of its matmul).

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::{Bnb4Type, Result};

/// bitsandbytes' NF4 code book (the 16 quantiles of N(0, 1) normalised to [-1, 1], with an
/// exact zero), indexed by code.
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 (e2m1) code book, indexed by code: bit 3 is the sign, codes 0..8 are
/// `[0, 0.0625, 8, 12, 4, 6, 2, 3] / 12`.
pub const FP4: [f32; 16] = [
    0.0,
    0.0625 / 12.0,
    8.0 / 12.0,
    1.0,
    4.0 / 12.0,
    6.0 / 12.0,
    2.0 / 12.0,
    3.0 / 12.0,
    -0.0,
    -0.0625 / 12.0,
    -8.0 / 12.0,
    -1.0,
    -4.0 / 12.0,
    -6.0 / 12.0,
    -2.0 / 12.0,
    -3.0 / 12.0,
];

/// The code book of `ty`.
pub fn code_book(ty: Bnb4Type) -> &'static [f32; 16] {
    match ty {
        Bnb4Type::Nf4 => &NF4,
        Bnb4Type::Fp4 => &FP4,
    }
}

/// Block absmax values, plain or double-quantized.
pub enum Absmax {
    Plain(Tensor),
    Double {
        /// i8 `[nblocks]`.
        q: Tensor,
        /// f32 `[ceil(nblocks/256)]`: absmax of each run of 256 centred values.
        scale: Tensor,
        /// f32 `[1]`: the mean subtracted first.
        offset: Tensor,
    },
}

/// Blocks of centred absmax values share one 8-bit scale.
pub const DOUBLE_QUANT_BLOCK: i64 = 256;

impl Absmax {
    /// Quantizes `absmax` (f32 `[nblocks]`) again when `double`.
    pub fn new(absmax: Tensor, double: bool) -> Result<Self> {
        if !double {
            return Ok(Self::Plain(absmax));
        }
        let n = absmax.size()[0];
        let offset = absmax.f_mean(Kind::Float)?.f_view([1])?;
        let centred = absmax.f_sub(&offset)?;
        let (blocks, _) = blockify(&centred, DOUBLE_QUANT_BLOCK)?;
        let scale = blocks.f_abs()?.f_amax([1], false)?;
        let q = blocks
            .f_div(&scale.f_clamp_min(1e-12)?.f_unsqueeze(1)?)?
            .f_mul_scalar(127.0)?
            .f_round()?
            .f_reshape([-1])?
            .f_narrow(0, 0, n)?
            .f_to_kind(Kind::Int8)?;
        Ok(Self::Double { q, scale, offset })
    }

    /// The absmax values as f32 `[nblocks]`.
    pub fn values(&self) -> Result<Tensor> {
        match self {
            Self::Plain(a) => Ok(a.shallow_clone()),
            Self::Double { q, scale, offset } => {
                let n = q.size()[0];
                let (blocks, _) = blockify(&q.f_to_kind(Kind::Float)?, DOUBLE_QUANT_BLOCK)?;
                Ok(blocks
                    .f_mul(&scale.f_unsqueeze(1)?)?
                    .f_div_scalar(127.0)?
                    .f_reshape([-1])?
                    .f_narrow(0, 0, n)?
                    .f_add(offset)?)
            }
        }
    }
}

/// `t` flattened, zero-padded to a multiple of `block`, as `[nblocks, block]`; also the
/// original element count.
fn blockify(t: &Tensor, block: i64) -> Result<(Tensor, i64)> {
    let flat = t.f_reshape([-1])?;
    let n = flat.size()[0];
    let nb = (n + block - 1) / block;
    let pad = nb * block - n;
    let flat = if pad > 0 {
        Tensor::f_cat(
            &[
                &flat,
                &Tensor::f_zeros([pad], (flat.kind(), flat.device()))?,
            ],
            0,
        )?
    } else {
        flat
    };
    Ok((flat.f_view([nb, block])?, n))
}

/// A 4-bit bnb weight.
pub struct Bnb4 {
    /// Packed codes `[ceil(numel/2)]` (see [`crate::pack`]).
    pub codes: Tensor,
    pub absmax: Absmax,
    pub ty: Bnb4Type,
    pub blocksize: i64,
}

/// The code of the nearest code-book value for each element of `x` (values in [-1, 1]).
pub fn nearest_codes(x: &Tensor, ty: Bnb4Type) -> Result<Tensor> {
    // Distinct values in ascending order with their codes (-0.0 duplicates 0.0).
    let mut pairs: Vec<(f32, u8)> = code_book(ty)
        .iter()
        .enumerate()
        .filter(|(c, v)| !(**v == 0.0 && v.is_sign_negative() && *c != 0))
        .map(|(c, v)| (*v, c as u8))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mids: Vec<f32> = pairs.windows(2).map(|w| (w[0].0 + w[1].0) / 2.0).collect();
    let codes: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
    let device = x.device();
    let boundaries = Tensor::from_slice(&mids).f_to_device(device)?;
    let idx = x.f_contiguous()?.f_bucketize(&boundaries, false, false)?;
    Ok(Tensor::from_slice(&codes)
        .f_to_device(device)?
        .f_index_select(0, &idx.f_reshape([-1])?)?
        .f_reshape(x.size())?)
}

/// Quantizes `w` (any shape, float) to 4-bit codes with block-wise absmax.
pub fn quantize_4bit(w: &Tensor, ty: Bnb4Type, blocksize: i64, double: bool) -> Result<Bnb4> {
    let (blocks, n) = blockify(&w.f_to_kind(Kind::Float)?, blocksize)?;
    let absmax = blocks.f_abs()?.f_amax([1], false)?;
    let x = blocks.f_div(&absmax.f_clamp_min(1e-12)?.f_unsqueeze(1)?)?;
    let codes = nearest_codes(&x, ty)?.f_reshape([-1])?.f_narrow(0, 0, n)?;
    Ok(Bnb4 {
        codes: crate::pack::pack4(&codes)?,
        absmax: Absmax::new(absmax, double)?,
        ty,
        blocksize,
    })
}

/// The float32 values of a 4-bit weight, shaped `shape`.
pub fn dequantize_4bit(q: &Bnb4, shape: &[i64]) -> Result<Tensor> {
    let n: i64 = shape.iter().product();
    let device = q.codes.device();
    let codes = crate::pack::unpack4(&q.codes, n)?.f_to_kind(Kind::Int64)?;
    let table = Tensor::from_slice(code_book(q.ty)).f_to_device(device)?;
    let values = table.f_index_select(0, &codes)?;
    let (blocks, _) = blockify(&values, q.blocksize)?;
    let absmax = q.absmax.values()?;
    Ok(blocks
        .f_mul(&absmax.f_unsqueeze(1)?)?
        .f_reshape([-1])?
        .f_narrow(0, 0, n)?
        .f_reshape(shape)?)
}

/// An 8-bit bnb weight: `w ≈ q · scb / 127` row by row.
pub struct Bnb8 {
    /// i8 `[out, in]`.
    pub q: Tensor,
    /// f32 `[out]`: row absmax.
    pub scb: Tensor,
}

/// Quantizes a `[out, in]` weight to 8-bit row-wise absmax.
pub fn quantize_8bit(w: &Tensor) -> Result<Bnb8> {
    let w = w.f_to_kind(Kind::Float)?;
    let scb = w.f_abs()?.f_amax([1], false)?;
    let q = w
        .f_mul_scalar(127.0)?
        .f_div(&scb.f_clamp_min(1e-12)?.f_unsqueeze(1)?)?
        .f_round()?
        .f_to_kind(Kind::Int8)?;
    Ok(Bnb8 { q, scb })
}

/// The float32 values of an 8-bit weight.
pub fn dequantize_8bit(q: &Bnb8) -> Result<Tensor> {
    Ok(q.q
        .f_to_kind(Kind::Float)?
        .f_mul(&q.scb.f_unsqueeze(1)?)?
        .f_div_scalar(127.0)?)
}
