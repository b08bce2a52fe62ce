//! Quantized linear slots on the quantizer contract: [`PluginLinear`] holds a plugin's packed
//! slot ([`PackedSlotHandle`]) and computes `x Wᵀ + b` through it, except in a decoding step of
//! a weight the plugin offers in the host's affine layout (`affine_codes`: u8 codes, f32 scales
//! and mins, groups of whole blocks of 32; `swift_model::in_decoding_step`, no autograd), which
//! runs on swift-kernels' integer kernel (`swift_kernels::affine_matmul`) without expanding the
//! weight. A compute dtype ([`PluginLinear::with_compute`], bfloat16 for QLoRA) casts the input
//! before the plugin's forward (which computes in its input's dtype) and the result back.
//! [`SchemeLoader`] reads each quantized slot's stored tensors (`STEM.*`) and hands them to the
//! scheme; [`save`] writes a quantized model folder.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use swift_model::weights::{Checkpoint, MappedFile};
use swift_model::{LoadedModel, ModelError, QuantizedLinear, QuantizedLoader};
use swift_plugin_tensors::model::SlotKind;
use swift_plugin_tensors::quantizer::{AffineCodes, PackedSlotHandle, SchemeHandle};
use swift_plugin_tensors::SchemeHandleExt;
use tch::{Device, Kind, Tensor};

use crate::{msg, QuantError, Result};

/// A quantized `[out, in]` linear weight held by a quantizer plugin.
pub struct PluginLinear {
    /// The plugin's packed slot; `None` once a loaded weight is held as Q4_1 blocks alone.
    slot: Option<PackedSlotHandle>,
    /// The weight as Q4_1 blocks (4-bit affine weights whose scales and mins are float16
    /// values, read from a folder: [`crate::blocks4`]), which then serve every call.
    blocks: Option<crate::blocks4::Q41Weight>,
    /// The stored tensors, by name without the stem, when `slot` is `None` (what `tensors()`
    /// hands back).
    stored: Vec<(String, Tensor)>,
    /// The dtype of embedding rows handed out (the model's).
    kind: Kind,
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
            slot: Some(slot),
            blocks: None,
            stored: Vec::new(),
            kind: Kind::Float,
            shape,
            compute: None,
            kernel,
            _keep: Vec::new(),
        })
    }

    /// A slot read from a folder (`stored`: its tensors, names without the stem; `output`: an
    /// output projection, or the token embedding a tied one reads; `kind`: the model's dtype):
    /// a 4-bit affine weight that is exactly Q4_1 blocks is held as those alone (the plugin's
    /// slot dropped, [`crate::blocks4`]), anything else as [`PluginLinear::new`].
    fn loaded(
        slot: PackedSlotHandle,
        shape: [i64; 2],
        stored: Vec<(String, Tensor)>,
        output: bool,
        kind: Kind,
    ) -> std::result::Result<Self, String> {
        let mut p = Self::new(slot, shape)?;
        p.kind = kind;
        let blocks = p
            .kernel
            .as_ref()
            .and_then(|a| crate::blocks4::Q41Weight::from_affine(a, shape, output));
        if blocks.is_some() {
            p.blocks = blocks;
            p.kernel = None;
            p.slot = None;
            p.stored = stored;
        }
        Ok(p)
    }

    /// Computes in `kind` (the input is cast to it and the result back); never on the kernels.
    pub fn with_compute(mut self, kind: Kind) -> Self {
        self.compute = Some(kind);
        self.kernel = None;
        self
    }

    /// Whether the weight is held as Q4_1 blocks (decoding on swift-kernels' Q4_1 kernel).
    pub fn holds_blocks(&self) -> bool {
        self.blocks.is_some()
    }

    /// The plugin's slot (present unless the weight is held as blocks, which serve every call).
    fn plugin(&self) -> std::result::Result<&PackedSlotHandle, String> {
        self.slot
            .as_ref()
            .ok_or_else(|| "the quantized slot is held as Q4_1 blocks".to_string())
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
        if let Some(b) = &self.blocks {
            return b.forward(x, bias);
        }
        let kind = self.compute.unwrap_or(x.kind());
        let xin = if x.kind() != kind {
            x.f_to_kind(kind).map_err(msg)?
        } else {
            x.shallow_clone()
        };
        let y = self.plugin()?.forward(&xin, bias)?;
        if y.kind() != x.kind() {
            y.f_to_kind(x.kind()).map_err(msg)
        } else {
            Ok(y)
        }
    }

    fn decodes_on_kernels(&self) -> bool {
        self.kernel.is_some() || self.blocks.is_some()
    }

    fn dequantize(&self) -> std::result::Result<Tensor, String> {
        match &self.blocks {
            Some(b) => b.dense(),
            None => self.plugin()?.dequantize(),
        }
    }

    fn embedding(&self, ids: &Tensor) -> std::result::Result<Tensor, String> {
        if let Some(b) = &self.blocks {
            return b.embedding(ids, self.kind);
        }
        // The rows of the codes and their groups' scales and mins, when the weight is offered
        // in the affine layout; else the dequantized weight's rows.
        let rows = match &self.kernel {
            Some(a) => {
                let idx = ids.f_flatten(0, -1).map_err(msg)?;
                let k = self.shape[1];
                let pick = |t: &Tensor| {
                    t.f_index_select(0, &idx).and_then(|t| {
                        t.f_repeat_interleave_self_int(a.group, 1, None)?
                            .f_narrow(1, 0, k)
                    })
                };
                let q = a
                    .codes
                    .f_index_select(0, &idx)
                    .and_then(|q| q.f_to_kind(Kind::Float))
                    .map_err(msg)?;
                let s = pick(&a.scales).map_err(msg)?;
                let m = pick(&a.mins).map_err(msg)?;
                let mut w = q.f_mul(&s).and_then(|w| w.f_add(&m)).map_err(msg)?;
                if let Some(is) = &a.input_scale {
                    w = w.f_div(is).map_err(msg)?;
                }
                w
            }
            None => self
                .plugin()?
                .dequantize()?
                .f_index_select(0, &ids.f_flatten(0, -1).map_err(msg)?)
                .map_err(msg)?,
        };
        let mut size = ids.size();
        size.push(self.shape[1]);
        rows.f_view(size.as_slice())
            .and_then(|t| t.f_to_kind(self.kind))
            .map_err(msg)
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let Some(slot) = &self.slot else {
            return self
                .stored
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect();
        };
        match slot.tensors() {
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
/// `<name>`, in its stored dtype, borrowing the mapped file where it can. A stored weight read
/// by two slots (a tied output projection and its token embedding) is loaded once and shared.
pub struct SchemeLoader {
    pub scheme: SchemeHandle,
    /// Compute dtype of the loaded slots (default: the input's).
    pub compute: Option<Kind>,
    /// The model's dtype (of embedding rows).
    pub kind: Kind,
    /// The slots loaded so far, by stem and the address of their first stored tensor.
    loaded: Mutex<HashMap<(String, usize), Arc<PluginLinear>>>,
}

impl SchemeLoader {
    /// A loader through `scheme` for a model of dtype `kind`.
    pub fn new(scheme: SchemeHandle, kind: Kind) -> Self {
        Self {
            scheme,
            compute: None,
            kind,
            loaded: Mutex::default(),
        }
    }
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
        let key = (
            stem.to_string(),
            tensors.first().map_or(0, |(_, t)| t.data_ptr() as usize),
        );
        let mut cache = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = cache.get(&key) {
            return Ok(Some(p.clone()));
        }
        let slot = self.scheme.load(stem, shape, &tensors).map_err(bad)?;
        let mut p = match self.compute {
            Some(k) => PluginLinear::new(slot, shape).map_err(bad)?.with_compute(k),
            None => {
                let stored = tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect();
                let output = crate::gguf::is_output_projection(stem);
                PluginLinear::loaded(slot, shape, stored, output, self.kind).map_err(bad)?
            }
        };
        if p.holds_blocks() {
            // The stored tensors are read again only if the folder is saved: their pages of
            // the mapping go back to the file until then.
            for (_, t) in &tensors {
                let bytes = t.numel() * t.kind().elt_size_in_bytes();
                for f in &keep {
                    f.release(t.data_ptr() as usize, bytes);
                }
            }
        }
        p._keep = keep;
        let p = Arc::new(p);
        cache.insert(key, p.clone());
        Ok(Some(p))
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
    // A stored weight that one of its slots holds quantized (a tied output projection quantized
    // with `--quant_lm_head`: the embedding slot reads the same weight) is stored quantized, once.
    let quantized_weights: HashSet<&str> = layout
        .slots
        .iter()
        .filter(|d| model.slot(&d.name).is_some_and(|s| s.quantized.is_some()))
        .map(|d| d.weight.as_str())
        .collect();
    for decl in &layout.slots {
        let Some(s) = model.slot(&decl.name) else {
            continue;
        };
        if s.quantized.is_none() && quantized_weights.contains(decl.weight.as_str()) {
            continue;
        }
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
