//! Quantized linear slots on the quantizer contract: [`PluginLinear`] holds a plugin's packed
//! slot ([`PackedSlotHandle`]) and computes `x Wᵀ + b` through it, except in a decoding step of
//! a weight the plugin offers in the host's affine layout (`affine_codes`: u8 codes, f32 scales
//! and mins, groups of whole blocks of 32; `swift_model::in_decoding_step`, no autograd), which
//! runs on swift-kernels' integer kernel (`swift_kernels::affine_matmul`) without expanding the
//! weight. A compute dtype ([`PluginLinear::with_compute`], bfloat16 for QLoRA) casts the input
//! before the plugin's forward (which computes in its input's dtype) and the result back.
//! [`SchemeLoader`] reads each quantized slot's stored tensors (`STEM.*`) and hands them to the
//! scheme; [`save`] writes a quantized model folder.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use swift_model::weights::{Checkpoint, MappedFile};
use swift_model::{LoadedModel, ModelError, QuantizedLinear, QuantizedLoader};
use swift_plugin_tensors::model::SlotKind;
use swift_plugin_tensors::quantizer::{AffineCodes, PackedSlotHandle, SchemeHandle};
use swift_plugin_tensors::SchemeHandleExt;
use tch::{Device, Kind, Tensor};

use crate::{msg, QuantError, Result};

/// A quantized `[out, in]` linear weight held by a quantizer plugin.
pub struct PluginLinear {
    slot: PackedSlotHandle,
    shape: [i64; 2],
    compute: Option<Kind>,
    /// The weight in the host's affine layout, when the plugin offers it and the integer kernel
    /// reads it (checked once).
    kernel: Option<AffineCodes>,
    /// Mapped files the plugin's tensors may borrow.
    _keep: Vec<Arc<MappedFile>>,
}

// SAFETY: a `PluginLinear` is never mutated after construction; its forward only reads the
// tensors (libtorch tensors may be read from several threads at once). tch marks `Tensor`
// `Send` but not `Sync`, and [`QuantizedLinear`] must be both.
unsafe impl Sync for PluginLinear {}

/// Whether the integer kernel reads `a` for a `[out, k]` weight: groups of whole blocks of 32,
/// contiguous CPU tensors of the documented kinds and sizes.
fn kernel_reads(a: &AffineCodes, [out, k]: [i64; 2]) -> bool {
    let group = a.group;
    if group <= 0 || group % swift_kernels::QK as i64 != 0 || !matches!(a.bits, 4 | 8) {
        return false;
    }
    let ng = (k + group - 1) / group;
    let fits = |t: &Tensor, kind: Kind, n: i64| {
        t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous() && t.numel() as i64 == n
    };
    fits(&a.codes, Kind::Uint8, out * k)
        && fits(&a.scales, Kind::Float, out * ng)
        && fits(&a.mins, Kind::Float, out * ng)
        && a.input_scale
            .as_ref()
            .is_none_or(|s| s.device() == Device::Cpu && s.numel() as i64 == k)
}

impl PluginLinear {
    /// Wraps a plugin's packed slot of shape `[out, in]`.
    pub fn new(slot: PackedSlotHandle, shape: [i64; 2]) -> std::result::Result<Self, String> {
        let kernel = slot.affine_codes()?.filter(|a| kernel_reads(a, shape));
        Ok(Self {
            slot,
            shape,
            compute: None,
            kernel,
            _keep: Vec::new(),
        })
    }

    /// Computes in `kind` (the input is cast to it and the result back); never on the kernels.
    pub fn with_compute(mut self, kind: Kind) -> Self {
        self.compute = Some(kind);
        self.kernel = None;
        self
    }

    /// Bytes of the stored tensors.
    pub fn stored_bytes(&self) -> i64 {
        self.tensors()
            .iter()
            .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }

    /// The integer kernel's product, when it applies to this call.
    fn on_kernels(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
    ) -> Option<std::result::Result<Tensor, String>> {
        let a = self.kernel.as_ref()?;
        if !swift_model::in_decoding_step() {
            return None;
        }
        let [n, k] = self.shape;
        let ng = (k + a.group - 1) / a.group;
        // SAFETY: `kernel_reads` checked that these are contiguous CPU tensors of these kinds
        // and lengths; they are owned by `self` and never written after construction.
        let codes = unsafe {
            swift_kernels::AffineCodes {
                codes: std::slice::from_raw_parts(
                    a.codes.data_ptr() as *const u8,
                    (n * k) as usize,
                ),
                scales: std::slice::from_raw_parts(
                    a.scales.data_ptr() as *const f32,
                    (n * ng) as usize,
                ),
                mins: std::slice::from_raw_parts(
                    a.mins.data_ptr() as *const f32,
                    (n * ng) as usize,
                ),
                group: a.group as usize,
                bits: a.bits,
            }
        };
        let xin = match &a.input_scale {
            Some(s) => match x.f_div(s) {
                Ok(t) => t,
                Err(e) => return Some(Err(msg(e))),
            },
            None => x.shallow_clone(),
        };
        crate::decode::product(
            &xin,
            n as usize,
            k as usize,
            bias,
            swift_kernels::MAX_ROWS,
            |xs, m, b, ys| swift_kernels::affine_matmul(xs, m, k as usize, codes, b, ys),
        )
    }
}

impl QuantizedLinear for PluginLinear {
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> std::result::Result<Tensor, String> {
        // Decoding steps on the integer kernels (the codes stay as they are), when they apply;
        // other passes (prefill, NLL, logits) take the plugin's forward.
        if let Some(y) = self.on_kernels(x, bias) {
            return y;
        }
        let kind = self.compute.unwrap_or(x.kind());
        let xin = if x.kind() != kind {
            x.f_to_kind(kind).map_err(msg)?
        } else {
            x.shallow_clone()
        };
        let y = self.slot.forward(&xin, bias)?;
        if y.kind() != x.kind() {
            y.f_to_kind(x.kind()).map_err(msg)
        } else {
            Ok(y)
        }
    }

    fn decodes_on_kernels(&self) -> bool {
        self.kernel.is_some()
    }

    fn dequantize(&self) -> std::result::Result<Tensor, String> {
        self.slot.dequantize()
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        match self.slot.tensors() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("a quantized slot could not list its tensors: {e}");
                Vec::new()
            }
        }
    }
}

/// Reads quantized slots through a quantizer's scheme (the [`QuantizedLoader`] of quantized
/// model folders): every stored tensor `STEM.<name>` of a slot is handed to the scheme as
/// `<name>`, in its stored dtype, borrowing the mapped file where it can.
pub struct SchemeLoader {
    pub scheme: SchemeHandle,
    /// Compute dtype of the loaded slots (default: the input's).
    pub compute: Option<Kind>,
}

impl QuantizedLoader for SchemeLoader {
    fn load(
        &self,
        ckpt: &Checkpoint,
        stem: &str,
        shape: &[i64],
        device: Device,
    ) -> std::result::Result<Option<Arc<dyn QuantizedLinear>>, ModelError> {
        let bad = |what: String| ModelError::Config(format!("quantized weight `{stem}`: {what}"));
        let shape = match shape {
            [a, b] => [*a, *b],
            _ => return Err(bad(format!("slot shape {shape:?} is not 2-D"))),
        };
        let prefix = format!("{stem}.");
        let mut names: Vec<&str> = ckpt
            .names()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(".bias"))
            .collect();
        names.sort_unstable();
        let mut keep: Vec<Arc<MappedFile>> = Vec::new();
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let kind = ckpt
                .stored_kind(name)
                .ok_or_else(|| bad(format!("`{name}` has a dtype this loader does not read")))?;
            let l = ckpt.load(name, kind, device)?;
            if let Some(k) = l.keep {
                if !keep.iter().any(|f| Arc::ptr_eq(f, &k)) {
                    keep.push(k);
                }
            }
            tensors.push((name[prefix.len()..].to_string(), l.tensor));
        }
        let slot = self.scheme.load(stem, shape, &tensors).map_err(bad)?;
        let mut p = PluginLinear::new(slot, shape).map_err(bad)?;
        if let Some(k) = self.compute {
            p = p.with_compute(k);
        }
        p._keep = keep;
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
                let stored = q.tensors();
                if stored.is_empty() {
                    return Err(QuantError::Config(format!(
                        "the quantized slot `{}` has no tensors to store",
                        decl.name
                    )));
                }
                for (suffix, t) in stored {
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
