//! The built-ins' packed slots ([`PackedWeight`], a [`PackedSlot`] on the quantizer contract):
//! a weight in one of the packed formats, its stored tensors in one of three layouts
//! (swift-rs's own, GPTQ's, AutoAWQ's: [`Layout`]), its forward (dequantized on the fly into the
//! input's dtype), and, for the affine formats, the codes in the host's affine layout so that
//! the host decodes on its integer kernels.

use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::affine::{self, Affine};
use crate::bnb::{self, Absmax, Bnb4, Bnb8};
use crate::{layout, msg, pack, Bnb4Type, QuantError, Result};

/// Where a weight's tensors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// swift-rs's own (`format: "swift-rs/packed-v1"`, the crate docs' table).
    Own,
    /// GPTQ's (`qweight`, `qzeros`, `scales`, `g_idx`).
    Gptq,
    /// AutoAWQ's GEMM layout (`qweight`, `qzeros`, `scales`), plus swift-rs's `input_scale`.
    Awq,
}

/// The packed formats.
pub enum Packed {
    Bnb4(Bnb4),
    Bnb8(Bnb8),
    Affine(Affine),
    /// GPTQ with a column order of its own (a checkpoint written with act-order by another
    /// tool): codes `[out, in]`, per-group `scales` and integer `zeros` `[out, ng]`, and each
    /// input column's group `g_idx` (i64 `[in]`).
    Grouped {
        q: Tensor,
        scales: Tensor,
        zeros: Tensor,
        g_idx: Tensor,
        bits: u8,
    },
}

/// A packed `[out, in]` linear weight.
pub struct PackedWeight {
    pub packed: Packed,
    pub shape: [i64; 2],
    pub layout: Layout,
}

impl PackedWeight {
    /// The dense float32 weight the codes stand for (AWQ's input scale not undone).
    fn codes_weight(&self) -> Result<Tensor> {
        match &self.packed {
            Packed::Bnb4(q) => bnb::dequantize_4bit(q, &self.shape),
            Packed::Bnb8(q) => bnb::dequantize_8bit(q),
            Packed::Affine(a) => affine::dequantize(a),
            Packed::Grouped {
                q,
                scales,
                zeros,
                g_idx,
                ..
            } => {
                let s = scales.f_index_select(1, g_idx)?;
                let z = zeros.f_index_select(1, g_idx)?;
                Ok(q.f_to_kind(Kind::Float)?.f_sub(&z)?.f_mul(&s)?)
            }
        }
    }

    fn input_scale(&self) -> Option<&Tensor> {
        match &self.packed {
            Packed::Affine(a) => a.input_scale.as_ref(),
            _ => None,
        }
    }

    fn stored(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let half = |t: &Tensor| t.to_kind(Kind::Half);
        match (&self.packed, self.layout) {
            (Packed::Bnb4(q), _) => {
                out.push(("qweight".into(), q.codes.shallow_clone()));
                match &q.absmax {
                    Absmax::Plain(a) => out.push(("absmax".into(), a.shallow_clone())),
                    Absmax::Double { q, scale, offset } => {
                        out.push(("absmax_q".into(), q.shallow_clone()));
                        out.push(("absmax_scale".into(), scale.shallow_clone()));
                        out.push(("absmax_offset".into(), offset.shallow_clone()));
                    }
                }
            }
            (Packed::Bnb8(q), _) => {
                out.push(("qweight".into(), q.q.shallow_clone()));
                out.push(("scb".into(), q.scb.shallow_clone()));
            }
            (Packed::Affine(a), Layout::Own) => {
                let q = if a.bits == 4 {
                    pack::pack4(&a.q)?
                } else {
                    a.q.shallow_clone()
                };
                out.push(("qweight".into(), q));
                out.push(("scales".into(), half(&a.scales)));
                out.push(("mins".into(), half(&a.mins)));
                if let Some(s) = &a.input_scale {
                    out.push(("input_scale".into(), s.shallow_clone()));
                }
            }
            (Packed::Affine(a), Layout::Gptq) => {
                let zeros = a.zeros.as_ref().ok_or_else(|| {
                    QuantError::Config("GPTQ's layout needs integer zero points".into())
                })?;
                let n = self.shape[1];
                let g_idx = Tensor::f_arange(n, (Kind::Int64, a.q.device()))?
                    .f_div_scalar_mode(a.group, "floor")?
                    .f_to_kind(Kind::Int)?;
                out.push(("qweight".into(), layout::gptq_pack_weight(&a.q, a.bits)?));
                out.push(("qzeros".into(), layout::gptq_pack_zeros(zeros, a.bits)?));
                out.push((
                    "scales".into(),
                    half(&a.scales.f_transpose(0, 1)?.f_contiguous()?),
                ));
                out.push(("g_idx".into(), g_idx));
            }
            (
                Packed::Grouped {
                    q,
                    scales,
                    zeros,
                    g_idx,
                    bits,
                },
                _,
            ) => {
                out.push(("qweight".into(), layout::gptq_pack_weight(q, *bits)?));
                out.push(("qzeros".into(), layout::gptq_pack_zeros(zeros, *bits)?));
                out.push((
                    "scales".into(),
                    half(&scales.f_transpose(0, 1)?.f_contiguous()?),
                ));
                out.push(("g_idx".into(), g_idx.f_to_kind(Kind::Int)?));
            }
            (Packed::Affine(a), Layout::Awq) => {
                let zeros = a.zeros.as_ref().ok_or_else(|| {
                    QuantError::Config("AWQ's layout needs integer zero points".into())
                })?;
                out.push(("qweight".into(), layout::awq_pack_weight(&a.q)?));
                out.push(("qzeros".into(), layout::awq_pack_zeros(zeros)?));
                out.push((
                    "scales".into(),
                    half(&a.scales.f_transpose(0, 1)?.f_contiguous()?),
                ));
                if let Some(s) = &a.input_scale {
                    out.push(("input_scale".into(), s.shallow_clone()));
                }
            }
        }
        Ok(out)
    }
}

impl PackedSlot for PackedWeight {
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> std::result::Result<Tensor, String> {
        let kind = x.kind();
        let w = self
            .codes_weight()
            .and_then(|w| Ok(w.f_to_kind(kind)?))
            .map_err(msg)?;
        let xin = match self.input_scale() {
            Some(s) => x.f_div(s).and_then(|t| t.f_to_kind(kind)).map_err(msg)?,
            None => x.shallow_clone(),
        };
        let b = match bias {
            Some(b) => Some(b.f_to_kind(kind).map_err(msg)?),
            None => None,
        };
        xin.f_linear(&w, b.as_ref()).map_err(msg)
    }

    fn dequantize(&self) -> std::result::Result<Tensor, String> {
        let w = self.codes_weight().map_err(msg)?;
        match self.input_scale() {
            Some(s) => w.f_div(s).map_err(msg),
            None => Ok(w),
        }
    }

    fn tensors(&self) -> std::result::Result<Vec<(String, Tensor)>, String> {
        self.stored().map_err(msg)
    }

    fn affine_codes(&self) -> Option<AffineCodes> {
        let Packed::Affine(a) = &self.packed else {
            return None;
        };
        let f32c = |t: &Tensor| t.f_to_kind(Kind::Float).and_then(|t| t.f_contiguous()).ok();
        Some(AffineCodes {
            codes: a.q.f_contiguous().ok()?,
            scales: f32c(&a.scales)?,
            mins: f32c(&a.mins)?,
            input_scale: a.input_scale.as_ref().map(Tensor::shallow_clone),
            group: affine::effective_group(a.group, self.shape[1]),
            bits: a.bits,
        })
    }
}

/// A stored tensor by name, or an error naming it.
pub fn take<'a>(slot: &str, tensors: &'a [(String, Tensor)], name: &str) -> Result<&'a Tensor> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            let have: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
            QuantError::Config(format!(
                "quantized weight `{slot}` has no `{name}` tensor (it has {})",
                have.join(", ")
            ))
        })
}

fn optional<'a>(tensors: &'a [(String, Tensor)], name: &str) -> Option<&'a Tensor> {
    tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

fn check_shape(slot: &str, name: &str, t: &Tensor, want: &[i64]) -> Result<()> {
    if t.size() != want {
        return Err(QuantError::Config(format!(
            "quantized weight `{slot}`: `{name}` has shape {:?}, the slot needs {want:?}",
            t.size()
        )));
    }
    Ok(())
}

/// Reads a slot stored in swift-rs's own layout.
pub fn load_own(
    slot: &str,
    shape: [i64; 2],
    tensors: &[(String, Tensor)],
    cfg: &crate::QuantConfig,
) -> Result<PackedWeight> {
    let [out, inp] = shape;
    let get = |n: &str| take(slot, tensors, n);
    let packed = match (cfg.quant_method.as_str(), cfg.bits) {
        ("bnb", 4) => {
            let codes = get("qweight")?.f_to_kind(Kind::Uint8)?;
            if codes.numel() as i64 != (out * inp + 1) / 2 {
                return Err(QuantError::Config(format!(
                    "quantized weight `{slot}`: {} packed bytes for {out}x{inp}",
                    codes.numel()
                )));
            }
            let absmax = match optional(tensors, "absmax_q") {
                Some(q) => Absmax::Double {
                    q: q.f_to_kind(Kind::Int8)?,
                    scale: get("absmax_scale")?.f_to_kind(Kind::Float)?,
                    offset: get("absmax_offset")?.f_to_kind(Kind::Float)?,
                },
                None => Absmax::Plain(get("absmax")?.f_to_kind(Kind::Float)?),
            };
            Packed::Bnb4(Bnb4 {
                codes,
                absmax,
                ty: cfg.bnb_4bit_quant_type.unwrap_or(Bnb4Type::Nf4),
                blocksize: cfg.blocksize.unwrap_or(64),
            })
        }
        ("bnb", _) => Packed::Bnb8(Bnb8 {
            q: get("qweight")?.f_to_kind(Kind::Int8)?,
            scb: get("scb")?.f_to_kind(Kind::Float)?,
        }),
        (_, bits) => {
            let raw = get("qweight")?.f_to_kind(Kind::Uint8)?;
            let q = if bits == 4 {
                pack::unpack4(&raw, inp)?
            } else {
                raw
            };
            check_shape(slot, "qweight (unpacked)", &q, &[out, inp])?;
            Packed::Affine(Affine {
                q: q.f_contiguous()?,
                scales: get("scales")?.f_to_kind(Kind::Float)?,
                mins: get("mins")?.f_to_kind(Kind::Float)?,
                bits,
                group: affine::effective_group(cfg.group_size, inp),
                input_scale: match optional(tensors, "input_scale") {
                    Some(s) => Some(s.f_to_kind(Kind::Float)?),
                    None => None,
                },
                zeros: None,
            })
        }
    };
    Ok(PackedWeight {
        packed,
        shape,
        layout: Layout::Own,
    })
}

/// Reads a slot stored in GPTQ's layout.
pub fn load_gptq(
    slot: &str,
    shape: [i64; 2],
    tensors: &[(String, Tensor)],
    bits: u8,
    group_size: i64,
) -> Result<PackedWeight> {
    let [out, inp] = shape;
    let pw = 32 / bits as i64;
    let qweight = take(slot, tensors, "qweight")?;
    check_shape(slot, "qweight", qweight, &[inp / pw, out])?;
    let q = layout::gptq_unpack_weight(qweight, bits)?;
    let scales = take(slot, tensors, "scales")?
        .f_to_kind(Kind::Float)?
        .f_transpose(0, 1)?
        .f_contiguous()?;
    let ng = scales.size()[1];
    check_shape(slot, "scales", &scales.f_transpose(0, 1)?, &[ng, out])?;
    let qzeros = take(slot, tensors, "qzeros")?;
    check_shape(slot, "qzeros", qzeros, &[ng, out / pw])?;
    let zeros = layout::gptq_unpack_zeros(qzeros, bits)?;
    let group = affine::effective_group(group_size, inp);
    let contiguous =
        Tensor::f_arange(inp, (Kind::Int64, q.device()))?.f_div_scalar_mode(group, "floor")?;
    let g_idx = match optional(tensors, "g_idx") {
        Some(g) => {
            check_shape(slot, "g_idx", g, &[inp])?;
            g.f_to_kind(Kind::Int64)?
        }
        None => contiguous.shallow_clone(),
    };
    let max_g = i64::try_from(g_idx.f_max()?)?;
    if max_g >= ng || i64::try_from(g_idx.f_min()?)? < 0 {
        return Err(QuantError::Config(format!(
            "quantized weight `{slot}`: g_idx names group {max_g} of {ng}"
        )));
    }
    let trivial = (ng == (inp + group - 1) / group) && g_idx.f_equal(&contiguous)?;
    let packed = if trivial {
        let mins = zeros.f_neg()?.f_mul(&scales)?;
        Packed::Affine(Affine {
            q,
            scales,
            mins,
            bits,
            group,
            input_scale: None,
            zeros: Some(zeros),
        })
    } else {
        Packed::Grouped {
            q,
            scales,
            zeros,
            g_idx,
            bits,
        }
    };
    Ok(PackedWeight {
        packed,
        shape,
        layout: Layout::Gptq,
    })
}

/// Reads a slot stored in AutoAWQ's GEMM layout (and swift-rs's `input_scale`, when present).
pub fn load_awq(
    slot: &str,
    shape: [i64; 2],
    tensors: &[(String, Tensor)],
    group_size: i64,
) -> Result<PackedWeight> {
    let [out, inp] = shape;
    let qweight = take(slot, tensors, "qweight")?;
    check_shape(slot, "qweight", qweight, &[inp, out / 8])?;
    let q = layout::awq_unpack_weight(qweight)?;
    let group = affine::effective_group(group_size, inp);
    let ng = (inp + group - 1) / group;
    let s = take(slot, tensors, "scales")?;
    check_shape(slot, "scales", s, &[ng, out])?;
    let scales = s
        .f_to_kind(Kind::Float)?
        .f_transpose(0, 1)?
        .f_contiguous()?;
    let qzeros = take(slot, tensors, "qzeros")?;
    check_shape(slot, "qzeros", qzeros, &[ng, out / 8])?;
    let zeros = layout::awq_unpack_zeros(qzeros)?;
    let input_scale = match optional(tensors, "input_scale") {
        Some(s) => {
            check_shape(slot, "input_scale", s, &[inp])?;
            Some(s.f_to_kind(Kind::Float)?)
        }
        None => None,
    };
    let mins = zeros.f_neg()?.f_mul(&scales)?;
    Ok(PackedWeight {
        packed: Packed::Affine(Affine {
            q,
            scales,
            mins,
            bits: 4,
            group,
            input_scale,
            zeros: Some(zeros),
        }),
        shape,
        layout: Layout::Awq,
    })
}
