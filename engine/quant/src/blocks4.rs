//! A 4-bit weight in the host's affine layout held as GGUF Q4_1 blocks ([`Q41Weight`]): the
//! own layout's groups (`w = q · scale + min`, `rtn` and `hqq` in `swift-rs/packed-v1`, scales
//! and mins float16) are whole blocks of 32 with one scale and one min each, which is exactly a
//! Q4_1 block (`d`, `m` float16, 16 bytes of codes), so a group of `g` columns becomes `g / 32`
//! blocks with the same pair and the codes move without rounding. The blocks are repacked into
//! swift-kernels' interleaved layout and decode on its Q4_1 kernel (`quant_matmul`; an output
//! projection's largest logits recomputed with finer activations, `quant_matmul_refined`, as the
//! GGUF slots): 5 bits per weight read per token instead of the affine kernel's one byte per
//! code, and nothing else held (the plugin's unpacked codes are dropped).
//!
//! Outside decoding steps an output projection's products of up to
//! [`crate::decode::KERNEL_ROWS`] rows (the logits of a step's last hidden row, computed after
//! the step) take the fine product (about 16-bit activations, as the GGUF slots); every other
//! pass (prompts, NLL) multiplies by the dense weight the blocks stand for, computed as the
//! plugin's forward computes it (`q · scale + min` in float32, then libtorch's product in the
//! input's dtype), so prompts and NLL figures keep the plugin's values bit for bit. Weights whose scales or mins are not float16 values (GPTQ's and AWQ's
//! integer zero points give `min = −z · scale`), with an input scale (AWQ), or of other widths
//! keep the affine kernel ([`crate::linear`]).

use swift_kernels::{
    dequantize_row, interleave, interleaved_row, quant_matmul, quant_matmul_fine,
    quant_matmul_refined, BlockType, Blocks, QK,
};
use swift_plugin_tensors::quantizer::AffineCodes;
use tch::{Kind, Tensor};

use crate::gguf::REFINED_LOGITS;
use crate::msg;

const TY: BlockType = BlockType::Q4_1;

/// A `[out, k]` weight as interleaved Q4_1 blocks.
pub(crate) struct Q41Weight {
    bytes: Vec<u8>,
    out: usize,
    k: usize,
    /// An output projection (or the token embedding a tied one reads).
    output: bool,
}

/// `a` as float32 values (a contiguous CPU float tensor, as `kernel_reads` checked).
fn floats(t: &Tensor) -> &[f32] {
    // SAFETY: callers pass tensors `linear::kernel_reads` accepted: contiguous float32 on the
    // CPU, alive while the borrow lasts and never written.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

impl Q41Weight {
    /// The blocks of `a` (a `[out, k]` weight the integer kernel reads, as
    /// `linear::kernel_reads` checked), or `None` when it is not exactly Q4_1: other than 4
    /// bits, an input scale, a width that is not whole blocks, a scale or min that is not a
    /// float16 value, or a code above 15.
    pub(crate) fn from_affine(a: &AffineCodes, [out, k]: [i64; 2], output: bool) -> Option<Self> {
        let (out, k) = (usize::try_from(out).ok()?, usize::try_from(k).ok()?);
        let group = usize::try_from(a.group).ok()?;
        if a.bits != 4 || a.input_scale.is_some() || k % QK != 0 || group % QK != 0 || group == 0 {
            return None;
        }
        let ng = k.div_ceil(group);
        let (scales, mins) = (floats(&a.scales), floats(&a.mins));
        // SAFETY: as `floats`: `kernel_reads` checked a contiguous U8 CPU tensor of `out · k`.
        let codes = unsafe { std::slice::from_raw_parts(a.codes.data_ptr() as *const u8, out * k) };
        if scales.len() != out * ng || mins.len() != out * ng {
            return None;
        }
        let half = |v: f32| {
            let h = half::f16::from_f32(v);
            (h.to_f32().to_bits() == v.to_bits()).then_some(h.to_le_bytes())
        };
        let (bb, nb) = (TY.block_bytes(), k / QK);
        let mut bytes = vec![0u8; out * nb * bb];
        for (r, row) in bytes.chunks_exact_mut(nb * bb).enumerate() {
            let q = &codes[r * k..(r + 1) * k];
            for (b, blk) in row.chunks_exact_mut(bb).enumerate() {
                let g = r * ng + b * QK / group;
                blk[0..2].copy_from_slice(&half(scales[g])?);
                blk[2..4].copy_from_slice(&half(mins[g])?);
                let c = &q[b * QK..(b + 1) * QK];
                for j in 0..QK / 2 {
                    let (lo, hi) = (c[j], c[j + QK / 2]);
                    if lo > 15 || hi > 15 {
                        return None;
                    }
                    blk[4 + j] = lo | hi << 4;
                }
            }
        }
        interleave(TY, &mut bytes, k).ok()?;
        Some(Self {
            bytes,
            out,
            k,
            output,
        })
    }

    fn blocks(&self) -> Blocks<'_> {
        Blocks {
            ty: TY,
            data: &self.bytes,
            interleaved: true,
        }
    }

    /// The rows `ids` as float32, `[ids.len() · k]`.
    fn rows_f32(&self, ids: &[i64]) -> Result<Vec<f32>, String> {
        let mut out = vec![0f32; ids.len() * self.k];
        let mut row = vec![0u8; TY.row_bytes(self.k)];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            let r = usize::try_from(id)
                .ok()
                .filter(|&r| r < self.out)
                .ok_or_else(|| format!("index {id} is out of range for {} rows", self.out))?;
            interleaved_row(TY, &self.bytes, self.k, r, &mut row);
            dequantize_row(TY, &row, o);
        }
        Ok(out)
    }

    /// The dense float32 `[out, k]` weight.
    pub(crate) fn dense(&self) -> Result<Tensor, String> {
        let ids: Vec<i64> = (0..self.out as i64).collect();
        Tensor::f_from_slice(&self.rows_f32(&ids)?)
            .and_then(|t| t.f_view([self.out as i64, self.k as i64]))
            .map_err(msg)
    }

    /// `x · wᵀ (+ bias)`: in decoding steps on the Q4_1 kernel (8-bit activations, an output
    /// projection's largest outputs recomputed finer, as the GGUF slots); an output
    /// projection's products of up to [`crate::decode::KERNEL_ROWS`] rows outside them (the
    /// logits of a step's last hidden row, which the model computes after the step) on the
    /// fine product (about 16-bit activations); everything else (prompts, NLL passes) through
    /// the dense weight, as the plugin's forward.
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        let (w, k) = (self.blocks(), self.k);
        let decoding = swift_model::in_decoding_step();
        if !decoding && !self.output {
            return self.dense_forward(x, bias);
        }
        let per_call = if decoding {
            swift_kernels::MAX_ROWS
        } else {
            swift_kernels::WIDE_ROWS
        };
        let on_kernels = crate::decode::product(x, self.out, k, bias, per_call, |xs, m, b, ys| {
            if !decoding {
                quant_matmul_fine(xs, m, k, w, b, ys)
            } else if self.output {
                quant_matmul_refined(xs, m, k, w, b, ys, REFINED_LOGITS)
            } else {
                quant_matmul(xs, m, k, w, b, ys)
            }
        });
        if let Some(y) = on_kernels {
            return y;
        }
        self.dense_forward(x, bias)
    }

    /// `x · wᵀ (+ bias)` through the dense weight in `x`'s dtype (the plugin's forward).
    fn dense_forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        let kind = x.kind();
        let w = self
            .dense()?
            .f_to_device(x.device())
            .and_then(|w| w.f_to_kind(kind))
            .map_err(msg)?;
        let b = match bias {
            Some(b) => Some(b.f_to_kind(kind).map_err(msg)?),
            None => None,
        };
        x.f_linear(&w, b.as_ref()).map_err(msg)
    }

    /// The rows `ids` (`[..ids, k]`) in `kind`.
    pub(crate) fn embedding(&self, ids: &Tensor, kind: Kind) -> Result<Tensor, String> {
        let flat = Vec::<i64>::try_from(
            ids.f_to_kind(Kind::Int64)
                .and_then(|t| t.f_flatten(0, -1))
                .map_err(msg)?,
        )
        .map_err(msg)?;
        let mut size = ids.size();
        size.push(self.k as i64);
        Tensor::f_from_slice(&self.rows_f32(&flat)?)
            .and_then(|t| t.f_view(size.as_slice()))
            .and_then(|t| t.f_to_kind(kind))
            .and_then(|t| t.f_to_device(ids.device()))
            .map_err(msg)
    }
}
