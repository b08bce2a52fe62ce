//! # swift-model: the host side of the model interface
//!
//! ARCHITECTURE.md §3.4: the host owns the parameters, KV cache and attention kernel; a model
//! family (a plugin) declares a [`ModelLayout`] and writes `forward` against the context this
//! crate provides.
//!
//! * [`weights`]: safetensors checkpoints (single file or sharded), memory-mapped.
//! * [`LoadedModel`]: one family instantiated on one checkpoint, with its parameters in the
//!   requested dtype on the requested device, and its slots (where tuners and quantizers hook in:
//!   [`LinearHook`]).
//! * [`KvCache`] and [`LoadedModel::forward`]: batched forward passes with left padding, the
//!   causal and padding masks, and grouped-query attention through `scaled_dot_product_attention`;
//!   [`LoadedModel::forward_train_packed`]: training passes over packed rows (block-diagonal
//!   causal attention, positions restarting per row).
//! * [`generate`]: greedy and sampled decoding, stop words and EOS, streaming.
//! * [`LoadedModel::backward_checkpointed`]: gradient checkpointing through the families'
//!   per-block entry points (recompute one block at a time in the backward pass).

mod context;
pub mod cuda;
mod fused;
pub mod generate;
mod mixed;
mod packed;
mod plain;
mod share;
mod skinny;
pub mod sparse;
mod vision;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use swift_plugin_tensors::model::{ForwardPart, ModelLayout, SlotKind};
use swift_plugin_tensors::{ModelHandle, ModelHandleExt};
use tch::{Device, Kind, Tensor};

pub use context::KvCache;
pub use mixed::left_padded;
pub use mixed::set_mixed_on_kernels;
pub use skinny::TorchThreads;
pub use vision::{mrope_index, ImageBatch};
/// Most rows a decoding step runs on the CPU kernels.
pub const KERNEL_ROWS: usize = swift_kernels::WIDE_ROWS;
/// The most packed rows of a mixed pass that runs on the decoding kernels
/// ([`LoadedModel::mixes_on_kernels`]).
pub const MIXED_KERNEL_ROWS: usize = swift_kernels::MANY_ROWS;
pub use generate::{generate, FinishReason, Generated, Sampler, SamplingParams, StopCriteria};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not exist (expected {what})")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("reading weights from {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("the checkpoint has no parameter `{name}`{}", hint(available))]
    MissingParameter {
        name: String,
        available: Vec<String>,
    },
    #[error("parameter `{name}` has shape {got:?}, but config.json implies {want:?}")]
    Shape {
        name: String,
        got: Vec<i64>,
        want: Vec<i64>,
    },
    #[error("{dir}: {} stored weights are not used by the model its config.json describes: {}{}; config.json may not match the weights (num_hidden_layers? another model?). Pass --allow_unused_weights true to load it anyway", names.len(), names.iter().take(5).cloned().collect::<Vec<_>>().join(", "), if names.len() > 5 { ", ..." } else { "" })]
    UnusedWeights { dir: PathBuf, names: Vec<String> },
    #[error("{0}")]
    Config(String),
    #[error("model family: {0}")]
    Family(String),
    #[error("{0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(String),
}

fn hint(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (similar names in the checkpoint: {})", names.join(", "))
    }
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e.to_string())
    }
}

/// Parses `--torch_dtype` (`float32`/`fp32`, `bfloat16`/`bf16`, `float16`/`fp16`/`half`).
pub fn parse_dtype(s: &str) -> Result<Kind, ModelError> {
    match s.to_ascii_lowercase().trim_start_matches("torch.") {
        "float32" | "fp32" | "float" => Ok(Kind::Float),
        "bfloat16" | "bf16" => Ok(Kind::BFloat16),
        "float16" | "fp16" | "half" => Ok(Kind::Half),
        other => Err(ModelError::Config(format!(
            "unknown --torch_dtype `{other}`: use float32, bfloat16 or float16"
        ))),
    }
}

/// The name `--torch_dtype` uses for a kind.
pub fn dtype_name(k: Kind) -> &'static str {
    match k {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// Parses `--device` (`auto`, `cpu`, `cuda`, `cuda:N`); `auto` picks CUDA when present.
pub fn parse_device(s: &str) -> Result<Device, ModelError> {
    let s = s.trim().to_ascii_lowercase();
    let cuda = |n: usize| {
        if let Err(e) = cuda::load() {
            return Err(ModelError::Device(format!(
                "--device {s}: {e}; use --device cpu"
            )));
        }
        let count = tch::Cuda::device_count() as usize;
        if n < count {
            Ok(Device::Cuda(n))
        } else if count == 0 {
            Err(ModelError::Device(format!(
                "--device {s}: no CUDA device is available here; use --device cpu"
            )))
        } else {
            Err(ModelError::Device(format!(
                "--device {s}: this machine has {count} CUDA device(s) (cuda:0..cuda:{})",
                count - 1
            )))
        }
    };
    match s.as_str() {
        "" | "auto" => Ok(
            if cuda::driver_present() && cuda::load().is_ok() && tch::Cuda::is_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            },
        ),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => cuda(n),
            None => Err(ModelError::Device(format!(
                "unknown --device `{s}`: use auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// Refuses dtypes the device cannot run at a useful speed or at all.
pub fn check_dtype_for_device(kind: Kind, device: Device) -> Result<(), ModelError> {
    if device == Device::Cpu && kind == Kind::Half {
        return Err(ModelError::Device(
            "--torch_dtype float16 is not supported on the CPU (libtorch lacks fast float16 CPU kernels); \
             use float32 or bfloat16, or --device cuda"
                .into(),
        ));
    }
    Ok(())
}

/// A tuner's or quantizer's contribution to a linear slot: receives the slot's input and the
/// base output (`x Wᵀ + b`) and returns the slot's output. Hooks run in registration order.
/// Hooks on an embedding slot receive the ids and the looked-up rows.
pub trait LinearHook: Send + Sync {
    fn forward(&self, x: &Tensor, base: Tensor) -> Result<Tensor, String>;
    /// On a norm slot (whose hooks are not called with outputs): the weight and bias to
    /// normalise with instead of the slot's own (a norm trained whole gives the base ones back
    /// while the adapters are off); `None`: the slot's own.
    fn norm_weights(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        None
    }
}

/// LongLoRA's shifted sparse attention for training passes ([`sparse`]): groups of
/// `group` tokens over sequences padded to `length`, on only while every switch is on (the
/// adapter's training and enabled switches).
pub struct TrainingAttention {
    pub group: i64,
    pub length: i64,
    pub switches: Vec<Arc<std::sync::atomic::AtomicBool>>,
}

/// A linear slot's base weight held in a compressed form (a quantizer's packed weight): it
/// computes `x Wᵀ + b` itself, typically by dequantizing on the fly. When a slot has one, its
/// `weight` is a zero-stride placeholder of the right shape (so tuners can read the shape) that
/// holds no data.
pub trait QuantizedLinear: Send + Sync {
    /// `x Wᵀ + b` for `x` of shape `[.., in]`.
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String>;
    /// The weight as a dense `[out, in]` float tensor.
    fn dequantize(&self) -> Result<Tensor, String>;
    /// The tensors to save under the slot's weight stem (`STEM.qweight`, ...), as a quantizer
    /// lays them out.
    fn tensors(&self) -> Vec<(String, Tensor)>;
    /// The rows `ids` of the weight (an embedding slot stored quantized), shape
    /// `[..ids, in]`. Formats that cannot serve an embedding slot refuse.
    fn embedding(&self, _ids: &Tensor) -> Result<Tensor, String> {
        Err("this quantized format does not serve embedding slots".into())
    }
    /// Whether a decoding step's product runs on swift-kernels' threads (then libtorch is kept
    /// to one thread during decoding steps, as for float32 weights).
    fn decodes_on_kernels(&self) -> bool {
        false
    }
    /// The packed blocks a decoding step's product reads, where that product is exactly
    /// `swift_kernels::quant_matmul` over them (8-bit activations, then the bias): the host then
    /// may compute it together with sibling slots that read the same input (`fused`). `None`
    /// (the default) where the slot's product is another.
    fn decoding_blocks(&self) -> Option<swift_kernels::Blocks<'_>> {
        None
    }
}

/// What [`LoadedModel::quantize_slots`] calls per linear slot: `(slot name, float weight)` to a
/// quantized weight, or `None` to keep the slot in float.
pub type SlotQuantizeFn<'a> =
    dyn FnMut(&str, &Tensor) -> Result<Option<Arc<dyn QuantizedLinear>>, String> + 'a;

/// Loads quantized base weights for linear slots (see [`LoadedModel::load_with`]).
pub trait QuantizedLoader {
    /// The quantized weight stored under `stem` (a weight name without `.weight`, as the
    /// checkpoint spells it) for a slot of shape `[out, in]`; `Ok(None)` when the checkpoint
    /// holds no quantized tensors for it.
    fn load(
        &self,
        ckpt: &weights::Checkpoint,
        stem: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Arc<dyn QuantizedLinear>>, ModelError>;
}

thread_local! {
    static DECODING_STEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the pass running on this thread is a decoding step of [`LoadedModel::forward`] (one
/// new token per row, at most `swift_kernels::WIDE_ROWS` rows): quantized slots whose integer
/// kernels quantize activations use them only then, so prefill, NLL and logits keep the float
/// path's values.
pub fn in_decoding_step() -> bool {
    DECODING_STEP.get()
}

/// Marks this thread's pass as a decoding step (or not) until dropped.
struct DecodingStep(bool);

impl DecodingStep {
    fn enter(ids: &Tensor) -> Self {
        let step =
            matches!(ids.size().as_slice(), &[b, 1] if b as usize <= swift_kernels::WIDE_ROWS);
        Self(DECODING_STEP.replace(step))
    }
}

impl Drop for DecodingStep {
    fn drop(&mut self) {
        DECODING_STEP.set(self.0);
    }
}

/// One declared slot as the host holds it.
pub struct SlotState {
    pub kind: SlotKind,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub hooks: Vec<Arc<dyn LinearHook>>,
    /// The slot's quantized base weight, when a quantizer replaced `weight`.
    pub quantized: Option<Arc<dyn QuantizedLinear>>,
}

/// A zero-stride tensor of `shape` that holds one element (the placeholder weight of a
/// quantized slot).
pub fn placeholder(shape: &[i64], kind: Kind, device: Device) -> Result<Tensor, ModelError> {
    Ok(Tensor::f_zeros([1], (kind, device))?.f_expand(shape, false)?)
}

/// A model family instantiated on a checkpoint: the family's forward plus the host's parameters.
pub struct LoadedModel {
    model: ModelHandle,
    layout: ModelLayout,
    slots: HashMap<String, SlotState>,
    params: HashMap<String, Tensor>,
    /// The mapped files that in-place parameters borrow (dropped after them).
    _keep: Vec<Arc<weights::MappedFile>>,
    device: Device,
    kind: Kind,
    /// The attention of training passes, when a tuner asked for another than full.
    training_attention: Option<TrainingAttention>,
    /// Slots that read one input, computed together in decoding steps.
    fused: fused::Fused,
}

impl LoadedModel {
    /// Loads the parameters `model`'s layout declares from the safetensors files in `dir`.
    pub fn load(
        dir: &Path,
        model: ModelHandle,
        kind: Kind,
        device: Device,
    ) -> Result<Self, ModelError> {
        Self::load_with(dir, model, kind, device, None)
    }

    /// [`LoadedModel::load`], where a linear slot whose float weight the checkpoint lacks may
    /// be stored quantized (`STEM.qweight`, ...): `quant` loads those.
    pub fn load_with(
        dir: &Path,
        model: ModelHandle,
        kind: Kind,
        device: Device,
        quant: Option<&dyn QuantizedLoader>,
    ) -> Result<Self, ModelError> {
        Self::load_checked(dir, model, kind, device, quant, false)
    }

    /// [`LoadedModel::load_with`]; a stored weight the layout does not use (and the family
    /// does not declare ignorable, [`ModelLayout::ignorable`]) is an error unless
    /// `allow_unused` (`--allow_unused_weights`), then a warning.
    pub fn load_checked(
        dir: &Path,
        model: ModelHandle,
        kind: Kind,
        device: Device,
        quant: Option<&dyn QuantizedLoader>,
        allow_unused: bool,
    ) -> Result<Self, ModelError> {
        check_dtype_for_device(kind, device)?;
        let layout = model.layout().map_err(ModelError::Family)?;
        let files = weights::checkpoint_files(dir)?;
        let ckpt = weights::Checkpoint::open(&files)?;
        let mut keep: Vec<Arc<weights::MappedFile>> = Vec::new();
        // Stored names the layout reads (quantized slots: every name under their stem).
        let used = std::cell::RefCell::new(std::collections::HashSet::<String>::new());
        let mut quantized_stems: Vec<String> = Vec::new();
        let mut load = |name: &str, want: &[i64]| -> Result<Tensor, ModelError> {
            let stored = resolve_name(&ckpt, name);
            used.borrow_mut().insert(stored.clone());
            let loaded = ckpt.load(&stored, kind, device)?;
            if let Some(k) = loaded.keep {
                if !keep.iter().any(|f| Arc::ptr_eq(f, &k)) {
                    keep.push(k);
                }
            }
            let t = loaded.tensor;
            let got = t.size();
            if got != want {
                return Err(ModelError::Shape {
                    name: stored,
                    got,
                    want: want.to_vec(),
                });
            }
            Ok(t)
        };
        let mut slots = HashMap::new();
        for s in &layout.slots {
            let mut quantized = None;
            // Embedding slots too: a GGUF stores its token embedding packed (a format that
            // cannot serve them refuses in `QuantizedLinear::embedding`).
            if let (Some(q), SlotKind::Linear | SlotKind::Embedding) = (quant, s.kind) {
                let stem = s.weight.strip_suffix(".weight").unwrap_or(&s.weight);
                let qname = resolve_name(&ckpt, &format!("{stem}.qweight"));
                if !ckpt.contains(&resolve_name(&ckpt, &s.weight)) && ckpt.contains(&qname) {
                    let stored = qname.strip_suffix(".qweight").unwrap_or(&qname);
                    quantized = q.load(&ckpt, stored, &s.shape, device)?;
                    quantized_stems.push(format!("{stored}."));
                }
            }
            let weight = if quantized.is_some() {
                placeholder(&s.shape, kind, device)?
            } else if s.transposed {
                let want_file: Vec<i64> = s.shape.iter().rev().copied().collect();
                let t = load(&s.weight, &want_file)?;
                t.f_transpose(0, 1)?.f_contiguous()?
            } else if let Some(stored) = &s.stored_shape {
                if stored.iter().product::<i64>() != s.shape.iter().product::<i64>() {
                    return Err(ModelError::Family(format!(
                        "slot `{}` declares a stored shape {stored:?} with other elements than its shape {:?}",
                        s.name, s.shape
                    )));
                }
                load(&s.weight, stored)?.f_reshape(s.shape.as_slice())?
            } else {
                load(&s.weight, &s.shape)?
            };
            let bias = match &s.bias {
                Some(b) => {
                    let n = match s.kind {
                        SlotKind::Linear => s.shape[0],
                        _ => *s.shape.last().unwrap_or(&0),
                    };
                    Some(load(b, &[n])?)
                }
                None => None,
            };
            slots.insert(
                s.name.clone(),
                SlotState {
                    kind: s.kind,
                    weight,
                    bias,
                    hooks: Vec::new(),
                    quantized,
                },
            );
        }
        let mut params = HashMap::new();
        for p in &layout.params {
            params.insert(p.name.clone(), load(&p.name, &p.shape)?);
        }
        let used = used.into_inner();
        let mut unused: Vec<String> = ckpt
            .names()
            .filter(|n| {
                !used.contains(*n)
                    && !quantized_stems.iter().any(|st| n.starts_with(st.as_str()))
                    && !layout.is_ignorable(n)
            })
            .map(String::from)
            .collect();
        if !unused.is_empty() {
            unused.sort();
            let err = ModelError::UnusedWeights {
                dir: dir.to_path_buf(),
                names: unused,
            };
            if !allow_unused {
                return Err(err);
            }
            tracing::warn!("{err} (allowed)");
        }
        if layout.slot(&layout.output_slot).map(|s| s.kind) != Some(SlotKind::Linear) {
            return Err(ModelError::Family(format!(
                "the layout's output slot `{}` is not a declared linear slot",
                layout.output_slot
            )));
        }
        Ok(Self {
            model,
            layout,
            slots,
            params,
            _keep: keep,
            device,
            kind,
            training_attention: None,
            fused: Default::default(),
        })
    }

    /// Sets the attention of training passes (`None`: full, as every inference pass).
    pub fn set_training_attention(&mut self, attention: Option<TrainingAttention>) {
        self.training_attention = attention;
    }

    /// Whether training passes have an attention of their own (LongLoRA's shifted sparse
    /// groups, over rows padded to `--max_length`).
    pub fn has_training_attention(&self) -> bool {
        self.training_attention.is_some()
    }

    /// The shifted sparse groups a training pass uses now (`(group, length)`), if any.
    fn sparse_now(&self) -> Option<(i64, i64)> {
        use std::sync::atomic::Ordering;
        let a = self.training_attention.as_ref()?;
        a.switches
            .iter()
            .all(|s| s.load(Ordering::Relaxed))
            .then_some((a.group, a.length))
    }

    /// The family's declaration.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// For a loop of decoding steps over `rows` rows (a caller driving steps itself, like the
    /// `pt` backend): libtorch kept on one thread while the guard lives, as [`generate`] holds it
    /// over its loop, when such steps run on the kernels; None otherwise.
    pub fn decoding_threads(&self, rows: usize) -> Option<TorchThreads> {
        (self.decodes_on_kernels() && rows <= swift_kernels::WIDE_ROWS).then(TorchThreads::one)
    }

    /// Whether decoding steps run their products on the CPU kernels (then libtorch is kept to
    /// one thread for them): a float32 or bfloat16 CPU model whose quantized slots (if any) run
    /// on the integer kernels (float16 and other quantized slots multiply in libtorch, which
    /// wants its threads).
    pub(crate) fn decodes_on_kernels(&self) -> bool {
        self.device == Device::Cpu
            && self.slots.values().all(|s| match &s.quantized {
                Some(q) => q.decodes_on_kernels(),
                None => matches!(s.weight.kind(), Kind::Float | Kind::BFloat16),
            })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether a no-grad pass ([`LoadedModel::forward`]) runs its activations in float32 over
    /// bfloat16 weights: a bfloat16 model on the CPU with plain weights and no hooks (adapters
    /// and quantized slots keep the model's dtype). The weights are still read as bfloat16 (half
    /// the memory traffic of float32, which is what bounds a decoding step), while the
    /// operations between the products (norms, rotary embeddings, attention over the cache) run
    /// on float32 kernels: libtorch's bfloat16 ones convert to float32 and back at every
    /// operation, and bfloat16 attention misses the decoding kernel. As llama.cpp does with
    /// BF16 weights; the results differ from all-bfloat16 ones by bfloat16 rounding only.
    pub fn float_activations(&self) -> bool {
        let on = self.device == Device::Cpu
            && self.kind == Kind::BFloat16
            && self.slots.values().all(|s| {
                s.quantized.is_none()
                    && s.hooks.is_empty()
                    && matches!(s.weight.kind(), Kind::BFloat16 | Kind::Float)
            });
        static SAID: std::sync::Once = std::sync::Once::new();
        if on {
            SAID.call_once(|| {
                tracing::info!(
                    "bfloat16 weights, float32 activations: decoding reads the weights as \
                     bfloat16 and runs norms, rotary embeddings and attention in float32"
                )
            });
        }
        on
    }

    /// The slot called `name` (for tuners and quantizers).
    pub fn slot_mut(&mut self, name: &str) -> Option<&mut SlotState> {
        self.slots.get_mut(name)
    }

    /// Replaces the base weight of every linear slot for which `quantize(name, weight)` returns
    /// a quantized weight (QLoRA, post-training quantization), leaving a placeholder of the same
    /// shape; the float weight's memory-mapped pages are handed back to the kernel. Returns the
    /// names of the slots replaced, in layout order.
    pub fn quantize_slots(
        &mut self,
        quantize: &mut SlotQuantizeFn<'_>,
    ) -> Result<Vec<String>, ModelError> {
        let mut done = Vec::new();
        for decl in &self.layout.slots {
            let Some(s) = self.slots.get_mut(&decl.name) else {
                continue;
            };
            if s.kind != SlotKind::Linear || s.quantized.is_some() {
                continue;
            }
            let Some(q) = quantize(&decl.name, &s.weight).map_err(ModelError::Config)? else {
                continue;
            };
            let old = std::mem::replace(
                &mut s.weight,
                placeholder(&decl.shape, self.kind, self.device)?,
            );
            s.quantized = Some(q);
            let (ptr, bytes) = (
                old.data_ptr() as usize,
                old.numel() * old.kind().elt_size_in_bytes(),
            );
            drop(old);
            // Tied parameters may still use the bytes: dropping pages of a private, unmodified
            // mapping only makes the next read fetch them from the file again.
            if !self.tied_to_other(&decl.name, ptr) {
                for f in &self._keep {
                    f.release(ptr, bytes);
                }
            }
            done.push(decl.name.clone());
        }
        Ok(done)
    }

    fn tied_to_other(&self, slot: &str, ptr: usize) -> bool {
        self.slots
            .iter()
            .filter(|(n, _)| n.as_str() != slot)
            .any(|(_, s)| s.weight.data_ptr() as usize == ptr)
            || self.params.values().any(|t| t.data_ptr() as usize == ptr)
    }

    /// The declared parameter `name` (outside slots).
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name)
    }

    /// The slot called `name`.
    pub fn slot(&self, name: &str) -> Option<&SlotState> {
        self.slots.get(name)
    }

    /// Number of parameters the model holds (tied tensors counted once).
    pub fn num_parameters(&self) -> i64 {
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for t in self
            .slots
            .values()
            .flat_map(|s| std::iter::once(&s.weight).chain(s.bias.iter()))
            .chain(self.params.values())
        {
            if seen.insert(t.data_ptr() as usize) {
                n += t.numel() as i64;
            }
        }
        n
    }

    /// A fresh cache for `batch` rows.
    pub fn new_cache(&self, batch: i64) -> KvCache {
        KvCache::new(self.layout.num_blocks, batch, self.device)
    }

    /// Runs the family's forward over `ids` (`[batch, seq]`) after what `cache` holds; `mask`
    /// (`[batch, seq]`, 1 = token, 0 = padding) marks left padding. Returns the final hidden
    /// states `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let _guard = tch::no_grad_guard();
        let _threads = self
            .decodes_on_kernels()
            .then(|| skinny::TorchThreads::for_step(ids));
        let _step = DecodingStep::enter(ids);
        self.forward_inner(ids, mask, cache)
    }

    /// [`LoadedModel::forward`] with autograd on, for training: one pass over whole rows (no
    /// cache carried over). `mask` marks padding (left or right: positions count real tokens).
    pub fn forward_train(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let batch = ids.size().first().copied().unwrap_or(1);
        let mut cache = self.new_cache(batch);
        let (ids, mask) = self.on_device(ids, mask)?;
        let mut step = cache.begin(&ids, mask.as_ref())?;
        step.sparse = self.sparse_now();
        self.run_family(&ids, &mut cache, &step)
    }

    /// [`LoadedModel::forward_train`] over packed rows: each sequence of `ids` (`[batch, seq]`)
    /// holds several rows laid end to end; `positions` restart at 0 for every row and
    /// `seq_ids` name the row of each token (padding shares an id of its own). Attention is
    /// block-diagonal causal, so every row computes exactly what it computes alone.
    pub fn forward_train_packed(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        seq_ids: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let batch = ids.size().first().copied().unwrap_or(1);
        let mut cache = self.new_cache(batch);
        let ids = ids.f_to_device(self.device)?;
        let mut step = cache.begin_packed(
            &ids,
            &positions.f_to_device(self.device)?,
            &seq_ids.f_to_device(self.device)?,
        )?;
        step.sparse = self.sparse_now();
        self.run_family(&ids, &mut cache, &step)
    }

    /// [`LoadedModel::logits`] with autograd on (training), in the model's dtype.
    pub fn logits_train(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        self.apply_linear(&self.layout.output_slot, hidden)
            .map_err(ModelError::Family)
    }

    /// Replaces every parameter whose checkpoint name `select` accepts by an owned copy that
    /// requires gradients (full fine-tuning), keeping tied parameters tied, and returns them as
    /// (checkpoint name, tensor). Everything else stays frozen.
    pub fn make_trainable(
        &mut self,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, Tensor)>, ModelError> {
        let mut fresh: HashMap<usize, Tensor> = HashMap::new();
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut convert = |name: &str, t: &mut Tensor| -> Result<(), ModelError> {
            if !select(name) {
                return Ok(());
            }
            let key = t.data_ptr() as usize;
            if let Some(shared) = fresh.get(&key) {
                *t = shared.shallow_clone();
                return Ok(());
            }
            let owned = t.f_detach()?.copy().set_requires_grad(true);
            fresh.insert(key, owned.shallow_clone());
            out.push((name.to_string(), owned.shallow_clone()));
            *t = owned;
            Ok(())
        };
        for decl in &self.layout.slots {
            if let Some(s) = self.slots.get_mut(&decl.name) {
                if s.quantized.is_some() && select(&decl.weight) {
                    return Err(ModelError::Config(format!(
                        "slot `{}` holds a quantized weight, which cannot be trained: fine-tune the float model, or train an adapter (--tuner_type lora) over the quantized one",
                        decl.name
                    )));
                }
                convert(&decl.weight, &mut s.weight)?;
                if let (Some(b), Some(bias)) = (&decl.bias, s.bias.as_mut()) {
                    convert(b, bias)?;
                }
            }
        }
        for decl in &self.layout.params {
            if let Some(t) = self.params.get_mut(&decl.name) {
                convert(&decl.name, t)?;
            }
        }
        Ok(out)
    }

    /// Every parameter under its checkpoint name, as the checkpoint stores it (transposed
    /// slots transposed back; tied parameters once; quantized slots dequantized), for saving a
    /// fully fine-tuned or merged model.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for decl in &self.layout.slots {
            let Some(s) = self.slots.get(&decl.name) else {
                continue;
            };
            if seen.insert(decl.weight.clone()) {
                // A quantized slot contributes its dequantized weight.
                let weight = match &s.quantized {
                    Some(q) => q
                        .dequantize()
                        .and_then(|w| w.f_to_kind(self.kind).map_err(|e| e.to_string()))
                        .map_err(ModelError::Config)?,
                    None => s.weight.shallow_clone(),
                };
                let w = if decl.transposed {
                    weight.f_transpose(0, 1)?.f_contiguous()?
                } else if let Some(stored) = &decl.stored_shape {
                    weight.f_reshape(stored.as_slice())?
                } else {
                    weight
                };
                out.push((decl.weight.clone(), w));
            }
            if let (Some(b), Some(bias)) = (&decl.bias, &s.bias) {
                if seen.insert(b.clone()) {
                    out.push((b.clone(), bias.shallow_clone()));
                }
            }
        }
        for decl in &self.layout.params {
            if let Some(t) = self.params.get(&decl.name) {
                if seen.insert(decl.name.clone()) {
                    out.push((decl.name.clone(), t.shallow_clone()));
                }
            }
        }
        Ok(out)
    }

    /// A pass's token ids and padding mask on the model's device.
    fn on_device(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>), ModelError> {
        let mask = match mask {
            Some(m) => Some(m.f_to_device(self.device)?),
            None => None,
        };
        Ok((ids.f_to_device(self.device)?, mask))
    }

    fn forward_inner(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let (ids, mask) = self.on_device(ids, mask)?;
        let mut step = cache.begin(&ids, mask.as_ref())?;
        step.float_activations = self.float_activations();
        self.shift_positions(cache, &mut step)?;
        let hidden = self.run_family(&ids, cache, &step)?;
        cache.finish(&step);
        Ok(hidden)
    }

    /// The family's forward over `ids` for one prepared `step`, checking that it attended in
    /// every declared block.
    fn run_family(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        step: &context::Step,
    ) -> Result<Tensor, ModelError> {
        let mut ctx = context::HostContext {
            model: self,
            cache,
            step,
            attended: 0,
        };
        let hidden = self
            .model
            .forward(&mut ctx, ids, &step.positions)
            .map_err(ModelError::Family)?;
        if ctx.attended != self.layout.num_blocks {
            return Err(ModelError::Family(format!(
                "forward called attention for {} layers, the layout declares {}",
                ctx.attended, self.layout.num_blocks
            )));
        }
        Ok(hidden)
    }

    /// Whether the family offers per-block entry points, so [`LoadedModel::backward_checkpointed`]
    /// can recompute blocks instead of keeping their activations.
    pub fn supports_checkpointing(&self) -> bool {
        self.model.has_blocks()
    }

    /// One training pass with gradient checkpointing: runs `ids` (`[batch, seq]`, `mask` as in
    /// [`LoadedModel::forward_train`]) through the blocks without a graph, keeping only each
    /// block's input; computes `loss_fn(final hidden states)` with its graph and
    /// back-propagates it; then walks the blocks in reverse, recomputing block `i` from its
    /// saved input with a graph and back-propagating the gradient that reached its output, down
    /// to the embedding. The gradients accumulated in the parameters equal those of
    /// `loss_fn(forward_train(ids))` back-propagated at once; the activations held at a time are
    /// one block's (plus one `[batch, seq, hidden]` input per block). Returns the loss
    /// (detached).
    ///
    /// Dropout: before each block the generator is seeded from one number drawn from it at the
    /// start, and again with the same seed before the block's recomputation, so both draw the
    /// same masks. (The masks therefore differ from those of a plain forward pass with the same
    /// generator state; [`LoadedModel::backward_by_blocks`] without recomputation draws the same
    /// ones as this.)
    ///
    /// Families without per-block entry points ([`LoadedModel::supports_checkpointing`] false)
    /// get a plain forward and backward pass.
    pub fn backward_checkpointed<E: From<ModelError>>(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        loss_fn: impl FnOnce(&Tensor) -> Result<Tensor, E>,
    ) -> Result<Tensor, E> {
        self.backward_by_blocks(ids, mask, true, loss_fn)
    }

    /// The forward pass of [`LoadedModel::backward_checkpointed`] without gradients: block by
    /// block with the same per-block seeds, so dropout draws the same masks as a checkpointed
    /// backward pass started from the same generator state (a first scoring pass whose results
    /// a later checkpointed pass must reproduce). Families without per-block entry points get
    /// a plain forward pass.
    pub fn forward_by_blocks(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let _g = tch::no_grad_guard();
        if !self.model.has_blocks() {
            return self.forward_train(ids, mask);
        }
        let (ids, mask) = self.on_device(ids, mask)?;
        let blocks = BlockPass::new(self, &ids, mask.as_ref())?;
        let n = self.layout.num_blocks;
        let mut h = blocks.run(ForwardPart::Embed, &ids)?;
        for i in 0..n {
            blocks.seed(i);
            h = blocks.run(ForwardPart::Block(i), &h)?;
        }
        let out = blocks.run(ForwardPart::Final, &h)?;
        blocks.seed(n);
        Ok(out)
    }

    /// [`LoadedModel::backward_checkpointed`] with `recompute` chosen: `false` runs the same
    /// per-block pass (same seeds, so the same dropout masks) keeping every block's graph, the
    /// reference the checkpointed gradients are tested against.
    pub fn backward_by_blocks<E: From<ModelError>>(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        recompute: bool,
        loss_fn: impl FnOnce(&Tensor) -> Result<Tensor, E>,
    ) -> Result<Tensor, E> {
        if !self.model.has_blocks() {
            let hidden = self.forward_train(ids, mask)?;
            let loss = loss_fn(&hidden)?;
            loss.f_backward().map_err(ModelError::from)?;
            return Ok(loss.f_detach().map_err(ModelError::from)?);
        }
        let ids = ids.f_to_device(self.device).map_err(ModelError::from)?;
        let mask = match mask {
            Some(m) => Some(m.f_to_device(self.device).map_err(ModelError::from)?),
            None => None,
        };
        let blocks = BlockPass::new(self, &ids, mask.as_ref())?;
        let n = self.layout.num_blocks;
        if !recompute {
            let mut h = blocks.run(ForwardPart::Embed, &ids)?;
            for i in 0..n {
                blocks.seed(i);
                h = blocks.run(ForwardPart::Block(i), &h)?;
            }
            let loss = loss_fn(&blocks.run(ForwardPart::Final, &h)?)?;
            drop(h);
            loss.f_backward().map_err(ModelError::from)?;
            blocks.seed(n);
            return Ok(loss.f_detach().map_err(ModelError::from)?);
        }
        // Forward without a graph, keeping each block's input.
        let mut inputs: Vec<Tensor> = Vec::with_capacity(n);
        let last = {
            let _g = tch::no_grad_guard();
            let mut h = blocks.run(ForwardPart::Embed, &ids)?;
            for i in 0..n {
                blocks.seed(i);
                let out = blocks.run(ForwardPart::Block(i), &h)?;
                inputs.push(h);
                h = out;
            }
            h
        };
        // The loss with a graph from the last block's output on.
        let leaf = last
            .f_detach()
            .map_err(ModelError::from)?
            .set_requires_grad(true);
        drop(last);
        let loss = loss_fn(&blocks.run(ForwardPart::Final, &leaf)?)?;
        loss.f_backward().map_err(ModelError::from)?;
        let mut grad = leaf.grad();
        drop(leaf);
        // Each block again, with its graph, from its saved input.
        while let Some(input) = inputs.pop() {
            let i = inputs.len();
            if !grad.defined() {
                break;
            }
            let x = input
                .f_detach()
                .map_err(ModelError::from)?
                .set_requires_grad(true);
            drop(input);
            blocks.seed(i);
            let y = blocks.run(ForwardPart::Block(i), &x)?;
            backward_with(&y, &grad)?;
            drop(y);
            grad = x.grad();
        }
        // And the embedding (it trains in full fine-tuning).
        if grad.defined() {
            let e = blocks.run(ForwardPart::Embed, &ids)?;
            if e.requires_grad() {
                backward_with(&e, &grad)?;
            }
        }
        blocks.seed(n);
        Ok(loss.f_detach().map_err(ModelError::from)?)
    }

    /// Applies the output projection to hidden states, returning float32 logits.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let _guard = tch::no_grad_guard();
        let out = self
            .apply_linear(&self.layout.output_slot, hidden)
            .map_err(ModelError::Family)?;
        Ok(out.f_to_kind(Kind::Float)?)
    }

    /// Mean negative log-likelihood of `ids[1..]` given the tokens before each (one sequence).
    pub fn nll(&self, ids: &[i64]) -> Result<f64, ModelError> {
        if ids.len() < 2 {
            return Err(ModelError::Config(
                "the NLL needs at least two tokens".into(),
            ));
        }
        let _guard = tch::no_grad_guard();
        let t = Tensor::from_slice(ids).view([1, -1]);
        let mut cache = self.new_cache(1);
        let hidden = self.forward(&t, None, &mut cache)?;
        let n = ids.len() as i64;
        let logits = self.logits(&hidden.f_narrow(1, 0, n - 1)?)?;
        let logp = logits.f_log_softmax(-1, Kind::Float)?;
        let target = Tensor::from_slice(&ids[1..])
            .view([1, -1, 1])
            .f_to_device(self.device)?;
        let picked = logp.f_gather(-1, &target, false)?;
        Ok(-f64::try_from(picked.f_mean(Kind::Float)?)?)
    }

    pub(crate) fn apply_linear(&self, slot: &str, x: &Tensor) -> Result<Tensor, String> {
        let s = self
            .slots
            .get(slot)
            .ok_or_else(|| format!("no slot `{slot}` is declared"))?;
        if s.kind != SlotKind::Linear {
            return Err(format!("slot `{slot}` is not a linear slot"));
        }
        if s.hooks.is_empty() {
            if let Some(y) = self.fused.take(slot, x) {
                return Ok(y);
            }
            if let Some(y) = self.fused.compute(&self.slots, slot, x) {
                return Ok(y);
            }
        }
        let mut y = match &s.quantized {
            Some(q) => q.forward(x, s.bias.as_ref())?,
            None => match skinny::linear(x, &s.weight, s.bias.as_ref()) {
                Some(y) => y,
                None if x.kind() == Kind::Float && s.weight.kind() == Kind::BFloat16 => {
                    // float32 activations over bfloat16 weights beyond the kernel's rows (a
                    // prompt): libtorch's bfloat16 product, its result widened.
                    x.f_to_kind(Kind::BFloat16)
                        .and_then(|x| x.f_linear(&s.weight, s.bias.as_ref()))
                        .and_then(|y| y.f_to_kind(Kind::Float))
                        .map_err(|e| format!("{slot}: {e}"))?
                }
                None => x
                    .f_linear(&s.weight, s.bias.as_ref())
                    .map_err(|e| format!("{slot}: {e}"))?,
            },
        };
        for h in &s.hooks {
            y = h.forward(x, y)?;
        }
        Ok(y)
    }
}

/// Back-propagates `grad` (the gradient of the loss with respect to `y`) into `y`'s graph.
fn backward_with(y: &Tensor, grad: &Tensor) -> Result<(), ModelError> {
    Ok(y.f_mul(grad)?.f_sum(Kind::Float)?.f_backward()?)
}

/// SplitMix64's finaliser, for the per-block seeds.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A forward pass cut at block boundaries: the positions and attention masks of one batch,
/// and the seed the generator gets before each block.
struct BlockPass<'a> {
    model: &'a LoadedModel,
    step: context::Step,
    batch: i64,
    base: u64,
}

impl<'a> BlockPass<'a> {
    fn new(
        model: &'a LoadedModel,
        ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Self, ModelError> {
        let batch = ids.size().first().copied().unwrap_or(1);
        let mut step = model.new_cache(batch).begin(ids, mask)?;
        step.sparse = model.sparse_now();
        let base = i64::try_from(Tensor::f_randint(1 << 62, [1], (Kind::Int64, Device::Cpu))?)?;
        Ok(Self {
            model,
            step,
            batch,
            base: base as u64,
        })
    }

    /// Seeds the generator for block `i` (`num_blocks`: after the pass).
    fn seed(&self, i: usize) {
        let z = mix(self.base ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tch::manual_seed((z >> 1) as i64);
    }

    /// Runs one piece through the family. Each call gets a fresh cache, so nothing of a block's
    /// keys and values outlives it.
    fn run(&self, part: ForwardPart, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut cache = self.model.new_cache(self.batch);
        let mut ctx = context::HostContext {
            model: self.model,
            cache: &mut cache,
            step: &self.step,
            attended: 0,
        };
        let out = self
            .model
            .model
            .forward_part(&mut ctx, part, x, &self.step.positions)
            .map_err(ModelError::Family)?;
        let want = usize::from(matches!(part, ForwardPart::Block(_)));
        if ctx.attended != want {
            return Err(ModelError::Family(format!(
                "{part:?} called attention {} times, expected {want}",
                ctx.attended
            )));
        }
        Ok(out)
    }
}

/// The checkpoint's name for a declared parameter: the name itself, or the same name with or
/// without a leading `model.` / `transformer.` (checkpoints saved from a bare base model).
fn resolve_name(ckpt: &weights::Checkpoint, name: &str) -> String {
    if ckpt.contains(name) {
        return name.to_string();
    }
    for prefix in ["model.", "transformer."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if ckpt.contains(rest) {
                return rest.to_string();
            }
        }
        let with = format!("{prefix}{name}");
        if ckpt.contains(&with) {
            return with;
        }
    }
    name.to_string()
}
