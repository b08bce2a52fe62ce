//! The host side of the tuner contract (ARCHITECTURE.md §3.6): an adapter a tuner plugin
//! attached ([`AttachedAdapter`]), whose tensors the host creates, owns and trains, whose math
//! runs in the plugin through one [`LinearHook`] per targeted slot, and which the host switches
//! off (the reference model of preference training; per-request adapters in `swift deploy`),
//! saves and loads in PEFT's layout, and merges into the base weights, all through the
//! contract: no concrete adapter type is named here.
//!
//! Also PEFT's `modules_to_save`, for every tuner alike: whole linear, embedding or norm slots
//! (`lm_head`, `model.embed_tokens`, `model.norm`; LongLoRA's `train_whole`) trained as full
//! copies beside the adapter. The slot computes with the copy; the base tensor is kept,
//! untouched, by a [`SavedModuleHook`] that gives the base output back (a norm: the base
//! weights to normalise with) while the adapters are switched off. A tied slot (SmolLM2's
//! `lm_head` is the embedding table) is untied by its copy, as peft does: the other slot keeps
//! the base tensor. They are saved as `base_model.model.<slot>.weight` (and `.bias`), with the
//! slots listed in adapter_config.json's `modules_to_save`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use swift_model::weights::Checkpoint;
use swift_model::{LinearHook, LoadedModel};
use swift_plugin_tensors::model::{ModelLayout, SlotKind};
use swift_plugin_tensors::tuner::{
    AdapterHandle, AdapterHandleExt, AdapterPlan, AttachMode, AttachRequest, DtypeRule,
    HostSlotCall, Init, SlotInfo, TensorDecl,
};
use swift_plugin_tensors::TunerHandle;
use tch::{Kind, Tensor};

use crate::checkpoint::{save_safetensors, TrainError};
use crate::peft_names::{respell_config, respell_key, Spelling};

/// A tensor the hook only reads. libtorch tensors may be read from several threads at once;
/// tch marks `Tensor` `Send` but not `Sync`, and [`LinearHook`] must be both.
pub struct ReadOnly(pub Tensor);

// SAFETY: the hook never mutates the tensor through this wrapper (only `matmul` / `tr` reads);
// the optimiser updates the same storage between forward passes, never during one.
unsafe impl Sync for ReadOnly {}

/// A whole slot trained as a copy (PEFT `modules_to_save`): the slot's weight (and bias) are
/// replaced by trainable copies; this hook keeps the base ones and computes the base output
/// instead while the adapters are switched off (PEFT's `disable_adapter()`).
pub struct SavedModuleHook {
    kind: SlotKind,
    weight: ReadOnly,
    bias: Option<ReadOnly>,
    enabled: Arc<AtomicBool>,
}

impl LinearHook for SavedModuleHook {
    fn norm_weights(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        (self.kind == SlotKind::Norm && !self.enabled.load(Ordering::Relaxed))
            .then(|| (&self.weight.0, self.bias.as_ref().map(|b| &b.0)))
    }

    fn forward(&self, x: &Tensor, out: Tensor) -> Result<Tensor, String> {
        if self.enabled.load(Ordering::Relaxed) {
            return Ok(out);
        }
        let base = match self.kind {
            SlotKind::Embedding => Tensor::f_embedding(&self.weight.0, x, -1, false, false),
            _ => x.f_linear(&self.weight.0, self.bias.as_ref().map(|b| &b.0)),
        };
        base.map_err(|e| format!("modules_to_save: {e}"))
    }
}

/// One slot of `modules_to_save`: its trained copies, as the host holds them (`[out, in]`).
pub struct SavedModule {
    pub slot: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The checkpoint stores the weight transposed (GPT-2's Conv1D).
    transposed: bool,
}

/// The slots of `model` that `names` pick for `modules_to_save`: a slot whose name is the
/// entry or ends with `.entry` (PEFT's matching; `model.embed_tokens.weight` is read as
/// `model.embed_tokens`), or every embedding slot for `all-embedding` (ms-swift's).
pub fn modules_to_save_slots(
    model: &LoadedModel,
    names: &[String],
) -> Result<Vec<String>, TrainError> {
    let layout = model.layout();
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.strip_suffix(".weight").unwrap_or(n);
        let hits: Vec<&str> = layout
            .slots
            .iter()
            .filter(|s| {
                if n == "all-embedding" {
                    s.kind == SlotKind::Embedding
                } else {
                    s.name == n || s.name.ends_with(&format!(".{n}"))
                }
            })
            .map(|s| s.name.as_str())
            .collect();
        if hits.is_empty() {
            let examples: Vec<&str> = layout
                .slots
                .iter()
                .filter(|s| s.kind == SlotKind::Embedding || s.name == layout.output_slot)
                .map(|s| s.name.as_str())
                .collect();
            return Err(TrainError::Config(format!(
                "--modules_to_save `{n}` names no layer of this model (e.g. {})",
                examples.join(", ")
            )));
        }
        for h in hits {
            if !out.iter().any(|o| o == h) {
                out.push(h.to_string());
            }
        }
    }
    Ok(out)
}

/// Replaces slot `slot`'s weight (and bias) by `weight` / `bias` (checkpoint layout; `None`:
/// a copy of the slot's own), trainable when `trainable`, and hooks the base tensors on the slot
/// for when `enabled` is off. A tied slot gets its own tensor; the others keep the base one.
fn install_saved_module(
    model: &mut LoadedModel,
    slot: &str,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    enabled: &Arc<AtomicBool>,
    trainable: bool,
) -> Result<SavedModule, TrainError> {
    let (kind, device) = (model.kind(), model.device());
    let transposed = model
        .layout()
        .slot(slot)
        .map(|d| d.transposed)
        .unwrap_or(false);
    let s = model
        .slot_mut(slot)
        .ok_or_else(|| TrainError::Config(format!("no layer `{slot}` for modules_to_save")))?;
    if s.quantized.is_some() {
        return Err(TrainError::Config(format!(
            "modules_to_save: `{slot}` is quantized; it cannot be trained or replaced whole"
        )));
    }
    let _g = tch::no_grad_guard();
    let w = match weight {
        Some(w) => {
            let w = if transposed {
                w.f_transpose(0, 1)?.f_contiguous()?
            } else {
                w
            };
            if w.size() != s.weight.size() {
                return Err(TrainError::Config(format!(
                    "modules_to_save: `{slot}` is {:?} in the adapter, {:?} in the model",
                    w.size(),
                    s.weight.size()
                )));
            }
            w.f_to_kind(kind)?.f_to_device(device)?
        }
        None => s.weight.f_detach()?.copy(),
    };
    let b = match (bias, &s.bias) {
        (Some(b), Some(base)) if b.size() == base.size() => Some(b.f_to_kind(kind)?),
        (Some(b), _) => {
            return Err(TrainError::Config(format!(
                "modules_to_save: the adapter's bias of `{slot}` ({:?}) does not fit the layer",
                b.size()
            )))
        }
        (None, Some(base)) => Some(base.f_detach()?.copy()),
        (None, None) => None,
    };
    let w = w.set_requires_grad(trainable);
    let b = b.map(|b| b.set_requires_grad(trainable));
    let base_weight = std::mem::replace(&mut s.weight, w.shallow_clone());
    let base_bias = match &b {
        Some(nb) => s.bias.replace(nb.shallow_clone()),
        None => None,
    };
    s.hooks.push(Arc::new(SavedModuleHook {
        kind: s.kind,
        weight: ReadOnly(base_weight),
        bias: base_bias.map(ReadOnly),
        enabled: enabled.clone(),
    }));
    Ok(SavedModule {
        slot: slot.to_string(),
        weight: w,
        bias: b,
        transposed,
    })
}

/// Several tensors a hook only reads (see [`ReadOnly`]).
struct ReadOnlyVec(Vec<Tensor>);

// SAFETY: as for `ReadOnly`: the hook only reads them, the optimiser writes between passes.
unsafe impl Sync for ReadOnlyVec {}

/// The hook on one targeted slot: the adapter's `forward` with the slot's tensors, skipped (the
/// base output passes) while the adapters are switched off.
struct SlotHook {
    handle: Arc<AdapterHandle>,
    index: usize,
    tensors: ReadOnlyVec,
    shared: Arc<ReadOnlyVec>,
    weight: Option<ReadOnly>,
    bias: Option<ReadOnly>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
}

impl LinearHook for SlotHook {
    fn forward(&self, x: &Tensor, base: Tensor) -> Result<Tensor, String> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(base);
        }
        self.handle.forward(&HostSlotCall {
            slot: self.index,
            x,
            base: &base,
            tensors: &self.tensors.0,
            shared: &self.shared.0,
            weight: self.weight.as_ref().map(|w| &w.0),
            bias: self.bias.as_ref().map(|b| &b.0),
            training: self.training.load(Ordering::Relaxed),
        })
    }
}

/// An adapter checkpoint's files (PEFT layout): `adapter_config.json` and
/// `adapter_model.safetensors`, opened against a model's layout but without its weights
/// (merging reads them this way too). Names are the slots' (stored) names: a file that
/// spells them as transformers' modules (`ModelLayout::module_names`, as PEFT and swift-rs
/// write them for LLaVA and Qwen2-VL) reads the same as one spelling the stored names
/// (`crate::peft_names`).
pub struct AdapterFiles {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// adapter_config.json, its module names respelled as slot names.
    pub config: Value,
    pub weights_path: PathBuf,
    weights: Checkpoint,
    /// Each stored tensor: its name with slot names → its name in the file.
    names: BTreeMap<String, String>,
}

impl AdapterFiles {
    /// Opens `dir`'s two files for a model of `layout`, refusing a folder without them.
    pub fn open(dir: &Path, layout: &ModelLayout) -> Result<Self, TrainError> {
        let config_path = dir.join("adapter_config.json");
        if !config_path.is_file() {
            return Err(TrainError::Config(format!(
                "{} is missing: {} is not an adapter checkpoint (PEFT layout)",
                config_path.display(),
                dir.display()
            )));
        }
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
        let mut config: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
        respell_config(layout, Spelling::Slot, &mut config);
        let weights_path = dir.join("adapter_model.safetensors");
        if !weights_path.is_file() {
            return Err(TrainError::Config(format!(
                "{} is missing (a PEFT checkpoint holds adapter_model.safetensors)",
                weights_path.display()
            )));
        }
        let weights = Checkpoint::open(std::slice::from_ref(&weights_path))?;
        let mut names = BTreeMap::new();
        for n in weights.names() {
            let slot = respell_key(layout, Spelling::Slot, n);
            if let Some(other) = names.insert(slot.clone(), n.to_string()) {
                return Err(TrainError::Config(format!(
                    "{}: `{other}` and `{n}` are the same tensor `{slot}` spelled two ways; keep one",
                    weights_path.display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config_path,
            config,
            weights_path,
            weights,
            names,
        })
    }

    /// The stored tensors' names (slot spelling), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Whether the file holds `name` (slot spelling).
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The shape of the stored tensor `name` (slot spelling).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.weights.shape(self.names.get(name)?)
    }

    /// The stored tensor `name` (slot spelling) as an owned `kind` tensor on `device`.
    pub fn tensor(
        &self,
        name: &str,
        kind: Kind,
        device: tch::Device,
    ) -> Result<Tensor, TrainError> {
        let stored = self.names.get(name).map(String::as_str).unwrap_or(name);
        Ok(self.weights.load(stored, kind, device)?.tensor.copy())
    }

    /// adapter_config.json's `peft_type` (`LORA` when absent, as PEFT's oldest files are).
    pub fn peft_type(&self) -> String {
        self.config["peft_type"]
            .as_str()
            .unwrap_or("LORA")
            .to_string()
    }

    /// The request that asks a tuner to read these files for the linear slots `slots`.
    pub fn request(
        &self,
        slots: Vec<SlotInfo>,
        linear_slots: Vec<String>,
        dtype: Kind,
    ) -> AttachRequest {
        AttachRequest {
            mode: AttachMode::Load,
            options: self.config.clone(),
            slots,
            linear_slots,
            dtype: dtype_name(dtype).to_string(),
            stored: self
                .names()
                .filter_map(|n| Some((n.to_string(), self.shape(n)?)))
                .collect(),
            config_file: self.config_path.display().to_string(),
            weights_file: self.weights_path.display().to_string(),
        }
    }

    /// The plan's tensors read from the file (per slot, and shared), each checked against its
    /// declared shape.
    pub fn load(
        &self,
        plan: &AdapterPlan,
        kind: Kind,
        device: tch::Device,
    ) -> Result<(Vec<Vec<Tensor>>, Vec<Tensor>), TrainError> {
        let read = |slot: Option<&str>, d: &TensorDecl| -> Result<Tensor, TrainError> {
            let Some(key) = &d.key else {
                return Err(TrainError::Config(format!(
                    "the adapter declares `{}`{} without a checkpoint key: it cannot be loaded",
                    d.name,
                    slot.map(|s| format!(" of `{s}`")).unwrap_or_default()
                )));
            };
            let name = match slot {
                Some(s) => format!("base_model.model.{s}.{key}"),
                None => key.clone(),
            };
            let shape = self.shape(&name).ok_or_else(|| {
                TrainError::Config(format!(
                    "{}: `{name}` is missing ({} declares it)",
                    self.weights_path.display(),
                    self.config_path.display()
                ))
            })?;
            if shape != d.shape {
                return Err(TrainError::Config(format!(
                    "{}: `{name}` is {shape:?}, the adapter ({}) on this model needs {:?}",
                    self.weights_path.display(),
                    self.config_path.display(),
                    d.shape
                )));
            }
            let kind = match d.dtype {
                DtypeRule::Float32 => Kind::Float,
                DtypeRule::Base => kind,
            };
            Ok(self.tensor(&name, kind, device)?.set_requires_grad(false))
        };
        let mut tensors = Vec::new();
        for sp in &plan.slots {
            let ts = sp
                .tensors
                .iter()
                .map(|d| read(Some(&sp.slot), d))
                .collect::<Result<Vec<_>, _>>()?;
            tensors.push(ts);
        }
        let shared = plan
            .shared
            .iter()
            .map(|d| read(None, d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tensors, shared))
    }

    /// The stored names the plan does not account for (PEFT's `modules_to_save`), sorted.
    pub fn unclaimed(&self, plan: &AdapterPlan) -> Vec<String> {
        let mut claimed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for sp in &plan.slots {
            for d in &sp.tensors {
                if let Some(k) = &d.key {
                    claimed.insert(format!("base_model.model.{}.{k}", sp.slot));
                }
            }
        }
        for d in &plan.shared {
            if let Some(k) = &d.key {
                claimed.insert(k.clone());
            }
        }
        let mut out: Vec<String> = self
            .names()
            .filter(|n| !claimed.contains(*n))
            .map(String::from)
            .collect();
        out.sort();
        out
    }
}

/// The dtype's name in an [`AttachRequest`].
fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Every linear slot of `model`, in layout order.
pub fn linear_slots(model: &LoadedModel) -> Vec<String> {
    model
        .layout()
        .slots
        .iter()
        .filter(|s| s.kind == SlotKind::Linear)
        .map(|s| s.name.clone())
        .collect()
}

/// The slots `names` as an adapter sees them.
pub fn slot_infos(model: &LoadedModel, names: &[String]) -> Result<Vec<SlotInfo>, TrainError> {
    names
        .iter()
        .map(|name| {
            let decl = model.layout().slot(name).ok_or_else(|| {
                TrainError::Config(format!("no slot `{name}` to attach an adapter to"))
            })?;
            Ok(SlotInfo {
                name: name.clone(),
                kind: decl.kind,
                shape: decl.shape.clone(),
                has_bias: decl.bias.is_some(),
                quantized: model.slot(name).is_some_and(|s| s.quantized.is_some()),
                layer: decl.block,
            })
        })
        .collect()
}

/// A fresh tensor for `d` (float32 on `device`), or `None` for the adapter's own `init`.
fn fresh(d: &TensorDecl, device: tch::Device) -> Result<Option<Tensor>, TrainError> {
    let opts = (Kind::Float, device);
    let shape = d.shape.as_slice();
    Ok(Some(match d.init {
        Init::Zeros => Tensor::f_zeros(shape, opts)?,
        Init::Ones => Tensor::f_ones(shape, opts)?,
        Init::Constant { value } => Tensor::f_full(shape, value, opts)?,
        Init::KaimingUniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            Tensor::f_empty(shape, opts)?.f_uniform_(-bound, bound)?
        }
        Init::Normal { mean, std } => Tensor::f_empty(shape, opts)?.f_normal_(mean, std)?,
        Init::Uniform { low, high } => Tensor::f_empty(shape, opts)?.f_uniform_(low, high)?,
        Init::Plugin => return Ok(None),
    }))
}

/// The adapters a tuner plugin attached to one model.
pub struct AttachedAdapter {
    handle: Arc<AdapterHandle>,
    plan: AdapterPlan,
    /// Per plan slot, its tensors in the plan's order.
    tensors: Vec<Vec<Tensor>>,
    shared: Vec<Tensor>,
    /// Whole slots trained as copies (PEFT `modules_to_save`).
    pub saved_modules: Vec<SavedModule>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    /// The model's layout, for the module names its checkpoints use (`crate::peft_names`).
    layout: ModelLayout,
}

impl AttachedAdapter {
    /// Attaches fresh adapters of `tuner` (with `options`: its record's overridden by the
    /// user's flags) on `targets`. Random draws follow libtorch's generator (seed it first).
    pub fn attach(
        model: &mut LoadedModel,
        tuner: &TunerHandle,
        options: Value,
        targets: &[String],
    ) -> Result<Self, TrainError> {
        let request = AttachRequest {
            mode: AttachMode::Train,
            options,
            slots: slot_infos(model, targets)?,
            linear_slots: linear_slots(model),
            dtype: dtype_name(model.kind()).to_string(),
            stored: BTreeMap::new(),
            config_file: String::new(),
            weights_file: String::new(),
        };
        let handle = tuner.attach(&request).map_err(TrainError::Config)?;
        let plan = handle.plan().map_err(TrainError::Config)?;
        check_plan(&plan, &request)?;
        let (kind, device) = (model.kind(), model.device());
        let cast = |t: Tensor, d: &TensorDecl| -> Result<Tensor, TrainError> {
            let k = match d.dtype {
                DtypeRule::Float32 => Kind::Float,
                DtypeRule::Base => kind,
            };
            Ok(t.f_to_kind(k)?
                .f_to_device(device)?
                .f_contiguous()?
                .set_requires_grad(d.trainable))
        };
        let fill = |decls: &[TensorDecl],
                    made: Vec<Option<Tensor>>,
                    computed: Vec<Tensor>,
                    what: &str|
         -> Result<Vec<Tensor>, TrainError> {
            let wanted = made.iter().filter(|t| t.is_none()).count();
            if computed.len() != wanted {
                return Err(TrainError::Config(format!(
                    "the adapter's init gave {} tensors for {what}, it declares {wanted} of its own",
                    computed.len()
                )));
            }
            let mut computed = computed.into_iter();
            decls
                .iter()
                .zip(made)
                .map(|(d, t)| {
                    let t = match t {
                        Some(t) => t,
                        None => computed
                            .next()
                            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, device))),
                    };
                    if t.size() != d.shape {
                        return Err(TrainError::Config(format!(
                            "the adapter's `{}` of {what} is {:?}, it declares {:?}",
                            d.name,
                            t.size(),
                            d.shape
                        )));
                    }
                    cast(t, d)
                })
                .collect()
        };
        let mut tensors = Vec::new();
        {
            let _g = tch::no_grad_guard();
            for (i, sp) in plan.slots.iter().enumerate() {
                let made = sp
                    .tensors
                    .iter()
                    .map(|d| fresh(d, device))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut computed = Vec::new();
                if made.iter().any(Option::is_none) {
                    let slot = model.slot_mut(&sp.slot).ok_or_else(|| {
                        TrainError::Config(format!("no slot `{}` to attach to", sp.slot))
                    })?;
                    let (ts, new_weight) = handle
                        .init(Some(i), Some(&slot.weight))
                        .map_err(TrainError::Config)?;
                    if let Some(w) = new_weight {
                        if w.size() != slot.weight.size() {
                            return Err(TrainError::Config(format!(
                                "the adapter's new base weight of `{}` is {:?}, the slot's {:?}",
                                sp.slot,
                                w.size(),
                                slot.weight.size()
                            )));
                        }
                        // A new owned tensor: the base may be a read-only mapping of the file.
                        slot.weight = w.f_to_kind(slot.weight.kind())?.f_to_device(device)?;
                    }
                    computed = ts;
                }
                tensors.push(fill(
                    &sp.tensors,
                    made,
                    computed,
                    &format!("`{}`", sp.slot),
                )?);
            }
        }
        let shared = {
            let _g = tch::no_grad_guard();
            let made = plan
                .shared
                .iter()
                .map(|d| fresh(d, device))
                .collect::<Result<Vec<_>, _>>()?;
            let computed = if made.iter().any(Option::is_none) {
                handle.init(None, None).map_err(TrainError::Config)?.0
            } else {
                Vec::new()
            };
            fill(&plan.shared, made, computed, "the shared tensors")?
        };
        let this = Self {
            handle: Arc::new(handle),
            plan,
            tensors,
            shared,
            saved_modules: Vec::new(),
            training: Arc::new(AtomicBool::new(true)),
            enabled: Arc::new(AtomicBool::new(true)),
            layout: model.layout().clone(),
        };
        this.install(model)?;
        Ok(this)
    }

    /// Loads a PEFT-layout checkpoint read by `tuner` (frozen, no dropout) onto `model`; every
    /// stored tensor the adapter does not claim must be a whole slot (`modules_to_save`).
    pub fn load(
        model: &mut LoadedModel,
        tuner: &TunerHandle,
        files: &AdapterFiles,
    ) -> Result<Self, TrainError> {
        let linear = linear_slots(model);
        let request = files.request(slot_infos(model, &linear)?, linear, model.kind());
        let handle = tuner.attach(&request).map_err(TrainError::Config)?;
        let plan = handle.plan().map_err(TrainError::Config)?;
        check_plan(&plan, &request)?;
        let (kind, device) = (model.kind(), model.device());
        let (tensors, shared) = files.load(&plan, kind, device)?;
        let this = Self {
            handle: Arc::new(handle),
            plan,
            tensors,
            shared,
            saved_modules: Vec::new(),
            training: Arc::new(AtomicBool::new(false)),
            enabled: Arc::new(AtomicBool::new(true)),
            layout: model.layout().clone(),
        };
        this.install(model)?;
        let mut this = this;
        // modules_to_save: every other tensor is a whole slot's weight or bias, except a reward
        // model's value head (`score`, PEFT's SEQ_CLS task), which the reward module reads.
        let seq_cls = files.config["task_type"].as_str() == Some("SEQ_CLS");
        let file = files.weights_path.display();
        let mut modules: Vec<String> = Vec::new();
        for n in files.unclaimed(&this.plan) {
            if seq_cls
                && matches!(
                    n.as_str(),
                    "base_model.model.score.weight" | "base_model.model.score.bias"
                )
                && model.slot("score").is_none()
            {
                continue;
            }
            let Some(rest) = n.strip_prefix("base_model.model.") else {
                return Err(TrainError::Config(format!(
                    "{file}: tensor `{n}` is not under base_model.model. (not a PEFT file)"
                )));
            };
            let slot = rest
                .strip_suffix(".weight")
                .or_else(|| rest.strip_suffix(".bias"))
                .filter(|s| model.slot(s).is_some())
                .ok_or_else(|| {
                    TrainError::Config(format!(
                        "{file}: tensor `{n}` is neither a tensor of the {} adapter nor a layer of this model (modules_to_save)",
                        this.plan.peft_type
                    ))
                })?;
            if !modules.iter().any(|m| m == slot) {
                modules.push(slot.to_string());
            }
        }
        for slot in modules {
            let get = |suffix: &str| -> Result<Option<Tensor>, TrainError> {
                let key = format!("base_model.model.{slot}.{suffix}");
                if !files.contains(&key) {
                    return Ok(None);
                }
                Ok(Some(files.tensor(&key, kind, device)?))
            };
            let (w, b) = (get("weight")?, get("bias")?);
            if w.is_none() {
                return Err(TrainError::Config(format!(
                    "{file}: `{slot}` has a bias but no weight (modules_to_save)"
                )));
            }
            let m = install_saved_module(model, &slot, w, b, &this.enabled, false)?;
            this.saved_modules.push(m);
        }
        if this.plan.slots.is_empty()
            && this.plan.shared.is_empty()
            && this.saved_modules.is_empty()
        {
            return Err(TrainError::Config(format!(
                "{file} holds no tensors of a {} adapter",
                this.plan.peft_type
            )));
        }
        Ok(this)
    }

    /// Pushes one [`SlotHook`] on every planned slot.
    fn install(&self, model: &mut LoadedModel) -> Result<(), TrainError> {
        let shared = Arc::new(ReadOnlyVec(
            self.shared.iter().map(Tensor::shallow_clone).collect(),
        ));
        for (i, (sp, ts)) in self.plan.slots.iter().zip(&self.tensors).enumerate() {
            let slot = model
                .slot_mut(&sp.slot)
                .ok_or_else(|| TrainError::Config(format!("no slot `{}` to attach to", sp.slot)))?;
            let (weight, bias) = if sp.needs_base_weight {
                (
                    Some(ReadOnly(slot.weight.shallow_clone())),
                    slot.bias.as_ref().map(|b| ReadOnly(b.shallow_clone())),
                )
            } else {
                (None, None)
            };
            slot.hooks.push(Arc::new(SlotHook {
                handle: self.handle.clone(),
                index: i,
                tensors: ReadOnlyVec(ts.iter().map(Tensor::shallow_clone).collect()),
                shared: shared.clone(),
                weight,
                bias,
                training: self.training.clone(),
                enabled: self.enabled.clone(),
            }));
        }
        Ok(())
    }

    /// The adapter's plan (its tensors, PEFT type, rank, merge ability).
    pub fn plan(&self) -> &AdapterPlan {
        &self.plan
    }

    /// The targeted slots, in the plan's order.
    pub fn slots(&self) -> Vec<String> {
        self.plan.slots.iter().map(|s| s.slot.clone()).collect()
    }

    /// Trains the slots `slots` (from [`modules_to_save_slots`]) as whole copies beside the
    /// adapters (PEFT `modules_to_save`); the base tensors stay as they are.
    pub fn add_modules_to_save(
        &mut self,
        model: &mut LoadedModel,
        slots: &[String],
    ) -> Result<(), TrainError> {
        for slot in slots {
            if self.plan.slots.iter().any(|s| &s.slot == slot) {
                return Err(TrainError::Config(format!(
                    "`{slot}` is both a {} target and in --modules_to_save; leave it out of one (--target_modules NAMES)",
                    self.plan.method
                )));
            }
            if self.saved_modules.iter().any(|m| &m.slot == slot) {
                continue;
            }
            let m = install_saved_module(model, slot, None, None, &self.enabled, true)?;
            self.saved_modules.push(m);
        }
        Ok(())
    }

    /// Folds the adapter into the slots' base weights (the adapter's `merge`) and removes its
    /// hooks, so the model runs with no adapter overhead. Call it right after
    /// [`AttachedAdapter::load`] (its hooks are the last on each slot).
    pub fn merge_into(&self, model: &mut LoadedModel) -> Result<(), TrainError> {
        if let Some(why) = &self.plan.merge_refused {
            return Err(TrainError::Config(format!(
                "this {} adapter cannot be merged: {why}",
                self.plan.peft_type
            )));
        }
        let _g = tch::no_grad_guard();
        for (i, (sp, ts)) in self.plan.slots.iter().zip(&self.tensors).enumerate() {
            let name = &sp.slot;
            let slot = model
                .slot_mut(name)
                .ok_or_else(|| TrainError::Config(format!("no slot `{name}` to merge into")))?;
            if slot.quantized.is_some() {
                return Err(TrainError::Config(format!(
                    "`{name}` is quantized: merging an adapter into a quantized base is not supported (run without --merge_lora)"
                )));
            }
            let w = self
                .handle
                .merge(i, &slot.weight, ts, &self.shared)
                .map_err(|e| TrainError::Config(format!("merging into `{name}`: {e}")))?;
            slot.weight = w;
            slot.hooks.pop();
        }
        // Saved modules already compute with their copies: only the switch-off hook goes.
        for m in &self.saved_modules {
            if let Some(slot) = model.slot_mut(&m.slot) {
                slot.hooks.pop();
            }
        }
        Ok(())
    }

    /// Turns every adapter of this set on or off (off: the model computes the base weights'
    /// output, as PEFT's `disable_adapter()` does; the plugin is not called).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The switches a training-only behaviour of this adapter follows (its shifted sparse
    /// attention): training, and on.
    pub fn training_switches(&self) -> Vec<Arc<AtomicBool>> {
        vec![self.training.clone(), self.enabled.clone()]
    }

    /// Whether the adapters are on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns training-only behaviour (dropout) on or off.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The trainable tensors under their checkpoint names (the adapter's, shared ones, and the
    /// copies of `modules_to_save`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (sp, ts) in self.plan.slots.iter().zip(&self.tensors) {
            for (d, t) in sp.tensors.iter().zip(ts) {
                if d.trainable {
                    let k = d.key.as_deref().unwrap_or(&d.name);
                    out.push((
                        format!("base_model.model.{}.{k}", sp.slot),
                        t.shallow_clone(),
                    ));
                }
            }
        }
        for (d, t) in self.plan.shared.iter().zip(&self.shared) {
            if d.trainable {
                out.push((
                    d.key.clone().unwrap_or_else(|| d.name.clone()),
                    t.shallow_clone(),
                ));
            }
        }
        for m in &self.saved_modules {
            out.push((
                format!("base_model.model.{}.weight", m.slot),
                m.weight.shallow_clone(),
            ));
            if let Some(b) = &m.bias {
                out.push((
                    format!("base_model.model.{}.bias", m.slot),
                    b.shallow_clone(),
                ));
            }
        }
        out
    }

    /// Every tensor the adapter holds (trainable or not) under its checkpoint name (its own name
    /// when it has no key), in the plan's order, shared ones last.
    pub fn all_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (sp, ts) in self.plan.slots.iter().zip(&self.tensors) {
            for (d, t) in sp.tensors.iter().zip(ts) {
                let k = d.key.as_deref().unwrap_or(&d.name);
                out.push((
                    format!("base_model.model.{}.{k}", sp.slot),
                    t.shallow_clone(),
                ));
            }
        }
        for (d, t) in self.plan.shared.iter().zip(&self.shared) {
            out.push((
                d.key.clone().unwrap_or_else(|| d.name.clone()),
                t.shallow_clone(),
            ));
        }
        out
    }

    /// Learning-rate factors the plan declares (LoRA+), as name patterns (`.lora_B.`).
    pub fn lr_factors(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        let decls = self
            .plan
            .slots
            .iter()
            .flat_map(|s| s.tensors.iter())
            .chain(&self.plan.shared);
        for d in decls.filter(|d| d.trainable && d.lr_factor != 1.0) {
            let k = d.key.as_deref().unwrap_or(&d.name);
            let pattern = format!(".{}.", k.split('.').next().unwrap_or(k));
            if !out.iter().any(|(p, _)| *p == pattern) {
                out.push((pattern, d.lr_factor));
            }
        }
        out
    }

    fn flat(&self) -> Vec<Tensor> {
        self.tensors
            .iter()
            .flatten()
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// The adapter's extra loss term for this step (the plan says `extra_loss`), with its graph.
    pub fn extra_loss(&self, step: u64, total_steps: u64) -> Result<Option<Tensor>, TrainError> {
        if !self.plan.extra_loss {
            return Ok(None);
        }
        self.handle
            .extra_loss(&self.flat(), &self.shared, step, total_steps)
            .map_err(TrainError::Step)
    }

    /// Whether the plan has an after-backward hook, which reads every tensor's gradient
    /// (ZeRO-2, which keeps a rank's shard of them only, refuses it).
    pub fn has_after_backward(&self) -> bool {
        self.plan.after_backward
    }

    /// The adapter's after-backward hook (the plan says `after_backward`): the trainer calls it
    /// once per step after the optimiser's update and before the gradients are cleared, so the
    /// tensors carry the step's (clipped) gradients and their updated values (PEFT's loop:
    /// `optimizer.step()`, `update_and_allocate(step)`, `zero_grad()`).
    pub fn after_backward(&self, step: u64, total_steps: u64) -> Result<(), TrainError> {
        if !self.plan.after_backward {
            return Ok(());
        }
        self.handle
            .after_backward(&self.flat(), &self.shared, step, total_steps)
            .map_err(TrainError::Step)
    }

    /// The saved modules' tensors as a checkpoint stores them (transposed slots transposed back).
    fn saved_module_tensors(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let mut out = Vec::new();
        for m in &self.saved_modules {
            let w = m.weight.f_detach()?;
            let w = if m.transposed {
                w.f_transpose(0, 1)?.f_contiguous()?
            } else {
                w
            };
            out.push((format!("base_model.model.{}.weight", m.slot), w));
            if let Some(b) = &m.bias {
                out.push((format!("base_model.model.{}.bias", m.slot), b.f_detach()?));
            }
        }
        Ok(out)
    }

    /// Writes `adapter_config.json` (the adapter's fields, plus `base_model_name_or_path`,
    /// `task_type`, `modules_to_save`, `inference_mode`) and `adapter_model.safetensors`.
    pub fn save(&self, dir: &Path, base_model: &str) -> Result<(), TrainError> {
        let saved = self
            .handle
            .save(&self.flat(), &self.shared)
            .map_err(TrainError::Config)?;
        let mut config = match saved.config {
            Value::Object(m) => m,
            other => {
                return Err(TrainError::Config(format!(
                    "the adapter's adapter_config.json fields are not an object: {other}"
                )))
            }
        };
        let modules_to_save: Option<Vec<&str>> = (!self.saved_modules.is_empty())
            .then(|| self.saved_modules.iter().map(|m| m.slot.as_str()).collect());
        config.insert("base_model_name_or_path".into(), base_model.into());
        config
            .entry("task_type")
            .or_insert_with(|| "CAUSAL_LM".into());
        config.insert("inference_mode".into(), true.into());
        config.insert("modules_to_save".into(), serde_json::json!(modules_to_save));
        let mut config = Value::Object(config);
        respell_config(&self.layout, Spelling::Module, &mut config);
        let path = dir.join("adapter_config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
        let mut tensors = saved.tensors;
        tensors.extend(self.saved_module_tensors()?);
        let tensors: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(n, t)| (respell_key(&self.layout, Spelling::Module, &n), t))
            .collect();
        save_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
    }
}

/// Refuses a plan the host cannot carry out.
fn check_plan(plan: &AdapterPlan, request: &AttachRequest) -> Result<(), TrainError> {
    for sp in &plan.slots {
        let Some(info) = request.slots.iter().find(|s| s.name == sp.slot) else {
            return Err(TrainError::Config(format!(
                "the adapter plans tensors for `{}`, which is not among the slots it was offered",
                sp.slot
            )));
        };
        if sp.needs_base_weight && info.quantized {
            return Err(TrainError::Config(format!(
                "`{}` is quantized: this {} adapter needs the float base weight",
                sp.slot, plan.peft_type
            )));
        }
    }
    // The attention mode and `train_whole` are carried out by the caller that trains
    // (swift-pipeline's `training_modes`: they need the model's layout and --max_length).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(t: &Tensor) -> Vec<f64> {
        t.to_kind(Kind::Double).view([-1]).try_into().unwrap()
    }

    #[test]
    fn a_saved_module_gives_the_base_output_back_while_switched_off() {
        // The slot computed `out` with its trained copy; switched off, the hook recomputes the
        // base: x·Wᵀ + b = [1, 2]·I + [1, 1] = [2, 3]; an embedding looks the ids up in the
        // base table.
        let enabled = Arc::new(AtomicBool::new(true));
        let linear = SavedModuleHook {
            kind: SlotKind::Linear,
            weight: ReadOnly(Tensor::eye(2, (Kind::Float, tch::Device::Cpu))),
            bias: Some(ReadOnly(Tensor::from_slice(&[1.0f32, 1.0]))),
            enabled: enabled.clone(),
        };
        let x = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let out = || Tensor::from_slice(&[5.0f32, 5.0]).view([1, 2]);
        assert_eq!(floats(&linear.forward(&x, out()).unwrap()), [5.0, 5.0]);
        let table = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([3, 2]);
        let embedding = SavedModuleHook {
            kind: SlotKind::Embedding,
            weight: ReadOnly(table),
            bias: None,
            enabled: enabled.clone(),
        };
        let ids = Tensor::from_slice(&[2i64, 0]).view([1, 2]);
        let rows = Tensor::zeros([1, 2, 2], (Kind::Float, tch::Device::Cpu));
        enabled.store(false, Ordering::Relaxed);
        assert_eq!(floats(&linear.forward(&x, out()).unwrap()), [2.0, 3.0]);
        assert_eq!(
            floats(&embedding.forward(&ids, rows).unwrap()),
            [5.0, 6.0, 1.0, 2.0]
        );
    }
}
