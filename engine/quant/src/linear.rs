//! Quantized linear slots: [`PackedLinear`] holds a weight in one of the packed formats and
//! computes `x Wᵀ + b` on swift-kernels' integer kernels in a decoding step of an affine weight
//! (`swift_model::in_decoding_step`, no autograd, groups of whole blocks of 32:
//! `swift_kernels::affine_matmul`), else by
//! dequantizing it on the fly (into the compute dtype: the input's, or
//! the one set with [`PackedLinear::with_compute`], e.g. bfloat16 for QLoRA, where autograd then
//! keeps only a bfloat16 copy for the backward pass). [`Loader`] reads the layout documented in
//! the crate docs back from a checkpoint; [`save`] writes a quantized model folder.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use swift_model::weights::{Checkpoint, MappedFile};
use swift_model::{LoadedModel, ModelError, QuantizedLinear, QuantizedLoader};
use swift_plugin_tensors::model::SlotKind;
use tch::{Device, Kind, Tensor};

use crate::affine::{self, Affine};
use crate::bnb::{self, Absmax, Bnb4, Bnb8};
use crate::pack;
use crate::{msg, Bnb4Type, Method, QuantConfig, QuantError, Result};

/// The packed formats.
pub enum Packed {
    Bnb4(Bnb4),
    Bnb8(Bnb8),
    Affine(Affine),
}

/// A quantized `[out, in]` linear weight.
pub struct PackedLinear {
    pub packed: Packed,
    pub shape: [i64; 2],
    compute: Option<Kind>,
    /// Mapped files the packed tensors borrow.
    _keep: Vec<Arc<MappedFile>>,
}

// SAFETY: a `PackedLinear` is never mutated after construction; its forward only reads the
// tensors (libtorch tensors may be read from several threads at once). tch marks `Tensor`
// `Send` but not `Sync`, and [`QuantizedLinear`] must be both.
unsafe impl Sync for PackedLinear {}

impl PackedLinear {
    pub fn new(packed: Packed, shape: [i64; 2]) -> Self {
        Self {
            packed,
            shape,
            compute: None,
            _keep: Vec::new(),
        }
    }

    /// Computes in `kind` (the input is cast to it and the result back).
    pub fn with_compute(mut self, kind: Kind) -> Self {
        self.compute = Some(kind);
        self
    }

    /// Quantizes a float `[out, in]` weight without calibration data (bnb, hqq, rtn).
    pub fn quantize(w: &Tensor, cfg: &QuantConfig) -> Result<Self> {
        let size = w.size();
        let shape = [size[0], size[1]];
        let _g = tch::no_grad_guard();
        let packed = match (cfg.quant_method, cfg.bits) {
            (Method::Bnb, 4) => Packed::Bnb4(bnb::quantize_4bit(
                w,
                cfg.bnb_4bit_quant_type.unwrap_or(Bnb4Type::Nf4),
                cfg.blocksize.unwrap_or(64),
                cfg.bnb_4bit_use_double_quant,
            )?),
            (Method::Bnb, 8) => Packed::Bnb8(bnb::quantize_8bit(w)?),
            (Method::Hqq, bits) => Packed::Affine(crate::hqq::quantize(
                w,
                bits,
                cfg.group_size,
                Default::default(),
            )?),
            (Method::Rtn, bits) => Packed::Affine(affine::rtn(w, bits, cfg.group_size)?),
            (m, _) => {
                return Err(QuantError::Config(format!(
                    "{} needs calibration data",
                    m.name()
                )))
            }
        };
        Ok(Self::new(packed, shape))
    }

    /// The dense float32 weight.
    pub fn weight(&self) -> Result<Tensor> {
        match &self.packed {
            Packed::Bnb4(q) => bnb::dequantize_4bit(q, &self.shape),
            Packed::Bnb8(q) => bnb::dequantize_8bit(q),
            Packed::Affine(a) => affine::dequantize(a),
        }
    }

    /// Bytes of the stored tensors.
    pub fn stored_bytes(&self) -> i64 {
        self.tensors()
            .iter()
            .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }
}

impl PackedLinear {
    /// The affine weight's codes, scales and mins as the integer kernel reads them, when it
    /// can: a decoding slot (no compute dtype set, as QLoRA's is), groups of whole blocks of
    /// 32, contiguous CPU tensors of the documented kinds.
    fn affine_codes(&self) -> Option<(swift_kernels::AffineCodes<'_>, Option<&Tensor>)> {
        let Packed::Affine(a) = &self.packed else {
            return None;
        };
        let [out, k] = self.shape;
        let group = affine::effective_group(a.group, k);
        let ng = (k + group - 1) / group;
        let fits = |t: &Tensor, kind: Kind, n: i64| {
            t.device() == Device::Cpu
                && t.kind() == kind
                && t.is_contiguous()
                && t.numel() as i64 == n
        };
        let ok = self.compute.is_none()
            && group % swift_kernels::QK as i64 == 0
            && fits(&a.q, Kind::Uint8, out * k)
            && fits(&a.scales, Kind::Float, out * ng)
            && fits(&a.mins, Kind::Float, out * ng);
        if !ok {
            return None;
        }
        // SAFETY: contiguous CPU tensors of the kinds and lengths checked above, owned by
        // `self` and never written after construction.
        let codes = unsafe {
            swift_kernels::AffineCodes {
                codes: std::slice::from_raw_parts(a.q.data_ptr() as *const u8, (out * k) as usize),
                scales: std::slice::from_raw_parts(
                    a.scales.data_ptr() as *const f32,
                    (out * ng) as usize,
                ),
                mins: std::slice::from_raw_parts(
                    a.mins.data_ptr() as *const f32,
                    (out * ng) as usize,
                ),
                group: group as usize,
                bits: a.bits,
            }
        };
        Some((codes, a.input_scale.as_ref()))
    }
}

impl QuantizedLinear for PackedLinear {
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> std::result::Result<Tensor, String> {
        // Decoding steps on the integer kernels (the codes stay as they are), when they apply;
        // other passes (prefill, NLL, logits) keep the exact float path.
        let codes = swift_model::in_decoding_step()
            .then(|| self.affine_codes())
            .flatten();
        if let Some((codes, input_scale)) = codes {
            let xin = match input_scale {
                Some(s) => x.f_div(s).map_err(msg)?,
                None => x.shallow_clone(),
            };
            let [n, k] = self.shape;
            let y = crate::decode::product(&xin, n as usize, k as usize, bias, |xs, m, b, ys| {
                swift_kernels::affine_matmul(xs, m, k as usize, codes, b, ys)
            });
            if let Some(y) = y {
                return y;
            }
        }
        let kind = self.compute.unwrap_or(x.kind());
        let mut w = self.weight().map_err(msg)?;
        if w.kind() != kind {
            w = w.f_to_kind(kind).map_err(msg)?;
        }
        let mut xin = x.shallow_clone();
        if let Packed::Affine(Affine {
            input_scale: Some(s),
            ..
        }) = &self.packed
        {
            xin = xin.f_div(s).map_err(msg)?;
        }
        if xin.kind() != kind {
            xin = xin.f_to_kind(kind).map_err(msg)?;
        }
        let b = match bias {
            Some(b) if b.kind() != kind => Some(b.f_to_kind(kind).map_err(msg)?),
            Some(b) => Some(b.shallow_clone()),
            None => None,
        };
        let y = xin.f_linear(&w, b.as_ref()).map_err(msg)?;
        if y.kind() != x.kind() {
            y.f_to_kind(x.kind()).map_err(msg)
        } else {
            Ok(y)
        }
    }

    fn decodes_on_kernels(&self) -> bool {
        self.affine_codes().is_some()
    }

    fn dequantize(&self) -> std::result::Result<Tensor, String> {
        match &self.packed {
            Packed::Affine(a) => affine::effective_weight(a).map_err(msg),
            _ => self.weight().map_err(msg),
        }
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        match &self.packed {
            Packed::Bnb4(q) => {
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
            Packed::Bnb8(q) => {
                out.push(("qweight".into(), q.q.shallow_clone()));
                out.push(("scb".into(), q.scb.shallow_clone()));
            }
            Packed::Affine(a) => {
                let q = if a.bits == 4 {
                    pack::pack4(&a.q).unwrap_or_else(|_| a.q.shallow_clone())
                } else {
                    a.q.shallow_clone()
                };
                out.push(("qweight".into(), q));
                let half = |t: &Tensor| t.to_kind(Kind::Half);
                out.push(("scales".into(), half(&a.scales)));
                out.push(("mins".into(), half(&a.mins)));
                if let Some(s) = &a.input_scale {
                    out.push(("input_scale".into(), s.shallow_clone()));
                }
            }
        }
        out
    }
}

/// Reads packed slots back (the [`QuantizedLoader`] of quantized model folders).
pub struct Loader {
    pub config: QuantConfig,
    /// Compute dtype of the loaded slots (default: the input's).
    pub compute: Option<Kind>,
}

impl Loader {
    pub fn new(config: QuantConfig) -> Self {
        Self {
            config,
            compute: None,
        }
    }
}

fn get(
    ckpt: &Checkpoint,
    name: &str,
    kind: Kind,
    device: Device,
    keep: &mut Vec<Arc<MappedFile>>,
) -> std::result::Result<Tensor, ModelError> {
    let l = ckpt.load(name, kind, device)?;
    if let Some(k) = l.keep {
        if !keep.iter().any(|f| Arc::ptr_eq(f, &k)) {
            keep.push(k);
        }
    }
    Ok(l.tensor)
}

fn bad(stem: &str, what: String) -> ModelError {
    ModelError::Config(format!("quantized weight `{stem}`: {what}"))
}

impl QuantizedLoader for Loader {
    fn load(
        &self,
        ckpt: &Checkpoint,
        stem: &str,
        shape: &[i64],
        device: Device,
    ) -> std::result::Result<Option<Arc<dyn QuantizedLinear>>, ModelError> {
        let [out, inp] = match shape {
            [a, b] => [*a, *b],
            _ => return Err(bad(stem, format!("slot shape {shape:?} is not 2-D"))),
        };
        let mut keep = Vec::new();
        let c = &self.config;
        let name = |s: &str| format!("{stem}.{s}");
        let packed = match (c.quant_method, c.bits) {
            (Method::Bnb, 4) => {
                let codes = get(ckpt, &name("qweight"), Kind::Uint8, device, &mut keep)?;
                if codes.numel() as i64 != (out * inp + 1) / 2 {
                    return Err(bad(
                        stem,
                        format!("{} packed bytes for {out}x{inp}", codes.numel()),
                    ));
                }
                let absmax = if ckpt.contains(&name("absmax_q")) {
                    Absmax::Double {
                        q: get(ckpt, &name("absmax_q"), Kind::Int8, device, &mut keep)?,
                        scale: get(ckpt, &name("absmax_scale"), Kind::Float, device, &mut keep)?,
                        offset: get(ckpt, &name("absmax_offset"), Kind::Float, device, &mut keep)?,
                    }
                } else {
                    Absmax::Plain(get(ckpt, &name("absmax"), Kind::Float, device, &mut keep)?)
                };
                Packed::Bnb4(Bnb4 {
                    codes,
                    absmax,
                    ty: c.bnb_4bit_quant_type.unwrap_or(Bnb4Type::Nf4),
                    blocksize: c.blocksize.unwrap_or(64),
                })
            }
            (Method::Bnb, _) => Packed::Bnb8(Bnb8 {
                q: get(ckpt, &name("qweight"), Kind::Int8, device, &mut keep)?,
                scb: get(ckpt, &name("scb"), Kind::Float, device, &mut keep)?,
            }),
            (_, bits) => {
                let raw = get(ckpt, &name("qweight"), Kind::Uint8, device, &mut keep)?;
                let q = if bits == 4 {
                    pack::unpack4(&raw, inp)?
                } else {
                    raw
                };
                if q.size() != [out, inp] {
                    return Err(bad(
                        stem,
                        format!("codes of shape {:?} for {out}x{inp}", q.size()),
                    ));
                }
                let input_scale = if ckpt.contains(&name("input_scale")) {
                    Some(get(
                        ckpt,
                        &name("input_scale"),
                        Kind::Float,
                        device,
                        &mut keep,
                    )?)
                } else {
                    None
                };
                Packed::Affine(Affine {
                    q,
                    scales: get(ckpt, &name("scales"), Kind::Float, device, &mut keep)?,
                    mins: get(ckpt, &name("mins"), Kind::Float, device, &mut keep)?,
                    bits,
                    group: affine::effective_group(c.group_size, inp),
                    input_scale,
                })
            }
        };
        let mut p = PackedLinear::new(packed, [out, inp]);
        p._keep = keep;
        p.compute = self.compute;
        Ok(Some(Arc::new(p)))
    }
}

/// Writes `model` (some slots quantized) into `out` as `model.safetensors`: each quantized
/// slot's tensors under its weight stem, everything else as plain tensors in `dtype`. Returns
/// the file's size in bytes.
pub fn save(model: &LoadedModel, out: &Path, dtype: Kind) -> Result<u64> {
    let layout = model.layout();
    let mut seen = HashSet::new();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let plain = |t: &Tensor| -> Result<Tensor> {
        let t = t.f_to_device(Device::Cpu)?;
        Ok(if t.is_floating_point() {
            t.f_to_kind(dtype)?
        } else {
            t
        })
    };
    for decl in &layout.slots {
        let Some(s) = model.slot(&decl.name) else {
            continue;
        };
        if !seen.insert(decl.weight.clone()) {
            continue;
        }
        match &s.quantized {
            Some(q) => {
                let stem = decl.weight.strip_suffix(".weight").unwrap_or(&decl.weight);
                for (suffix, t) in q.tensors() {
                    tensors.push((format!("{stem}.{suffix}"), t.f_to_device(Device::Cpu)?));
                }
            }
            None => {
                let w = if decl.transposed && decl.kind == SlotKind::Linear {
                    s.weight.f_transpose(0, 1)?
                } else {
                    s.weight.shallow_clone()
                };
                tensors.push((decl.weight.clone(), plain(&w)?));
            }
        }
        if let (Some(b), Some(bias)) = (&decl.bias, &s.bias) {
            if seen.insert(b.clone()) {
                tensors.push((b.clone(), plain(bias)?));
            }
        }
    }
    for p in &layout.params {
        if let Some(t) = model.param(&p.name) {
            if seen.insert(p.name.clone()) {
                tensors.push((p.name.clone(), plain(t)?));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| QuantError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let path = out.join("model.safetensors");
    write_safetensors(&tensors, &path)?;
    let len = std::fs::metadata(&path)
        .map_err(|e| QuantError::Io {
            path: path.clone(),
            source: e,
        })?
        .len();
    Ok(len)
}

fn dtype_of(k: Kind) -> Result<safetensors::Dtype> {
    use safetensors::Dtype;
    Ok(match k {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        other => {
            return Err(QuantError::Config(format!(
                "cannot store a tensor of kind {other:?}"
            )))
        }
    })
}

/// Writes named tensors to a safetensors file (contiguous copies, names sorted).
pub fn write_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let t = t.f_contiguous()?;
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut bytes = vec![0u8; n];
        t.f_copy_data_u8(&mut bytes, t.numel())?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        data.push((name.clone(), dtype_of(t.kind())?, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| QuantError::Config(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| QuantError::Config(format!("writing {}: {e}", path.display())))
}
