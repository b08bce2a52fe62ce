//! The tuner contract's declarations (no libtorch): what a tuner with its own math
//! (an adapter) tells the host as data, and the `#[sabi_trait]` object its math crosses as.
//! ARCHITECTURE.md §3.6 is the design; swift-plugin-tensors' `tuner` module is the tch side
//! (the `AdapterTuner` / `Adapter` traits plugin authors implement, and the host's calls).
//!
//! The division of work:
//!
//! * **The plugin** declares, per targeted slot, the tensors it trains ([`TensorDecl`]: shape,
//!   initialisation, dtype rule, PEFT key) and tensors shared by every slot (VeRA), computes a
//!   slot's adapted output from the slot's input, its base output and its tensors, says how its
//!   tensors are saved (PEFT's key names, `adapter_config.json`'s fields) and read back, and,
//!   where the method allows, how they merge into the base weight. Optionally: an extra loss
//!   term (AdaLoRA's orthogonal regularisation), a hook after the backward pass that sees the
//!   gradients (AdaLoRA's rank allocation), an attention mode declared as data (LongLoRA), and
//!   base parameters trained whole (LongLoRA's embeddings and norms).
//! * **The host** creates and owns every tensor (device, dtype, trainability), runs the
//!   optimiser over them, holds the adapters-off switch (the plugin is not called while it is
//!   off: the slot gives its base output), writes and reads the files, and applies
//!   `modules_to_save` (PEFT's whole-slot copies) for every tuner alike.
//!
//! Everything but the per-call tensors crosses as serde JSON, like the records.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use std::collections::BTreeMap;

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use serde::{Deserialize, Serialize};

use crate::model::SlotKind;
use crate::tensor::{OwnedTensor, TensorRef};

/// Why the host asks for an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Fresh tensors for training, from `options`.
    Train,
    /// Tensors read from a checkpoint, from its `adapter_config.json` and stored tensor names.
    Load,
}

/// One linear slot as the adapter sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub name: String,
    pub kind: SlotKind,
    /// The weight's `[out, in]` (whatever the family stores).
    pub shape: Vec<i64>,
    pub has_bias: bool,
    /// The base weight is quantized (QLoRA): only its output is available, not the weight.
    pub quantized: bool,
    /// The block index of repeated layers.
    pub layer: Option<usize>,
}

/// What the host hands [`crate::abi::FfiTuner::attach`] (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub mode: AttachMode,
    /// Train: the tuner record's options overridden by the user's flags (by option name).
    /// Load: the checkpoint's `adapter_config.json`.
    pub options: serde_json::Value,
    /// Train: the slots `targets` picked. Load: every linear slot of the model (the adapter
    /// picks those its checkpoint has tensors for).
    pub slots: Vec<SlotInfo>,
    /// Every linear slot's name (PEFT's `target_modules` is written against them).
    pub linear_slots: Vec<String>,
    /// The model's dtype (`float32`, `bfloat16`, `float16`).
    pub dtype: String,
    /// Load: the checkpoint's tensor names and shapes.
    #[serde(default)]
    pub stored: BTreeMap<String, Vec<i64>>,
    /// Load: the files, for messages.
    #[serde(default)]
    pub config_file: String,
    #[serde(default)]
    pub weights_file: String,
}

/// How the host fills a tensor when training starts (ignored when loading: tensors with a
/// `key` are read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    Zeros,
    Ones,
    Constant {
        value: f64,
    },
    /// PEFT's `kaiming_uniform_(a=√5)`: uniform in `±1/√fan_in`.
    KaimingUniform {
        fan_in: i64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// Computed by the adapter's `init` (from the base weight: PiSSA, OLoRA, DoRA's magnitude;
    /// or from a seed: VeRA's shared projections).
    Plugin,
}

/// The dtype the host gives a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DtypeRule {
    /// float32 whatever the base (PEFT's `autocast_adapter_dtype`).
    #[default]
    Float32,
    /// The model's dtype.
    Base,
}

/// One tensor an adapter holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorDecl {
    /// Its name in the adapter's own calls (`lora_A`).
    pub name: String,
    /// Where a checkpoint stores it: under `base_model.model.<slot>.<key>` for a slot's tensor,
    /// the full name `<key>` for a shared one (PEFT's names: `lora_A.weight`,
    /// `base_model.vera_A`); `None`: never stored (e.g. PiSSA's initial factors, which `save`
    /// folds into the stored ones).
    pub key: Option<String>,
    pub shape: Vec<i64>,
    pub init: Init,
    #[serde(default)]
    pub dtype: DtypeRule,
    /// Trained by the optimiser (else a buffer).
    pub trainable: bool,
    /// The learning-rate factor (LoRA+'s `lora_lr_ratio` on `lora_B`); 1 by default.
    #[serde(default = "one")]
    pub lr_factor: f64,
}

fn one() -> f64 {
    1.0
}

/// The tensors of one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotPlan {
    pub slot: String,
    pub tensors: Vec<TensorDecl>,
    /// `forward` and `merge` need the base weight and bias (DoRA): the slot must not be quantized.
    #[serde(default)]
    pub needs_base_weight: bool,
}

/// An attention mode the host implements for the adapter while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionMode {
    /// Ordinary causal attention.
    #[default]
    Full,
    /// LongLoRA's shifted sparse attention (S²-Attn): the sequence split in groups of
    /// `group_size_ratio · length` tokens, half of the heads shifted by half a group. Training
    /// only; inference uses full attention.
    ShiftedSparse { group_size_ratio: f64 },
}

/// What an attached adapter holds and needs: its answer to [`AttachRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterPlan {
    /// PEFT's `peft_type` (`LORA`, `IA3`, `VERA`, ...).
    pub peft_type: String,
    /// The method's name in messages (`LoRA`, `IA³`).
    pub method: String,
    /// One line for logs (`LoRA r=8 alpha=32`).
    pub summary: String,
    pub slots: Vec<SlotPlan>,
    /// Tensors every slot sees (VeRA's `vera_A`, `vera_B`).
    #[serde(default)]
    pub shared: Vec<TensorDecl>,
    /// Base parameters trained whole beside the adapter (`*` patterns over parameter names;
    /// LongLoRA's `embed_tokens` and norms).
    #[serde(default)]
    pub train_whole: Vec<String>,
    #[serde(default)]
    pub attention: AttentionMode,
    /// The adapter adds a loss term (`extra_loss`).
    #[serde(default)]
    pub extra_loss: bool,
    /// The adapter wants `after_backward` once per optimiser step.
    #[serde(default)]
    pub after_backward: bool,
    /// Why `merge` cannot fold this adapter into the base weights (`None`: it can).
    #[serde(default)]
    pub merge_refused: Option<String>,
    /// One adapter's ranks or sizes (`r` for the LoRA family; what `swift deploy` lists).
    #[serde(default)]
    pub rank: Option<i64>,
}

/// One option of a tuner, described for `swift list tuners --json` and UIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionDecl {
    /// The flag (`lora_rank`, `ia3_feedforward_modules`, ...).
    pub name: String,
    /// `bool`, `int`, `float`, `string`, `list`, or `choice`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub default: serde_json::Value,
    /// Inclusive bounds for numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The accepted values of a `choice`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default)]
    pub help: String,
}

impl OptionDecl {
    pub fn new(name: &str, kind: &str, default: serde_json::Value, help: &str) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            default,
            min: None,
            max: None,
            choices: Vec::new(),
            help: help.into(),
        }
    }

    pub fn range(mut self, min: Option<f64>, max: Option<f64>) -> Self {
        self.min = min;
        self.max = max;
        self
    }

    pub fn choices(mut self, c: &[&str]) -> Self {
        self.choices = c.iter().map(|s| s.to_string()).collect();
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The FFI

/// One slot's forward call (borrowed for the call). `tensors` are the slot's, `shared` the
/// adapter's shared ones, both in the plan's order; `weight` / `bias` are the base slot's when
/// its plan says `needs_base_weight`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiSlotCall<'a> {
    pub slot: u32,
    pub x: TensorRef<'a>,
    pub base: TensorRef<'a>,
    pub tensors: RSlice<'a, TensorRef<'a>>,
    pub shared: RSlice<'a, TensorRef<'a>>,
    pub weight: ROption<TensorRef<'a>>,
    pub bias: ROption<TensorRef<'a>>,
    pub training: bool,
}

/// What `init` computes: the slot's (or the shared) tensors declared [`Init::Plugin`], in
/// order, and a replacement base weight (PiSSA's and OLoRA's residual) when it changes it.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiInit {
    pub tensors: RVec<OwnedTensor>,
    pub weight: ROption<OwnedTensor>,
}

/// What `save` writes: tensors under their full names, and `adapter_config.json`'s fields.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiSaved {
    pub names: RVec<RString>,
    pub tensors: RVec<OwnedTensor>,
    pub config_json: RString,
}

/// One attached adapter (the answer to `FfiTuner::attach`). Tensor lists are flattened in the
/// plan's order: slot 0's tensors, slot 1's, ...; `shared` apart.
#[sabi_trait]
pub trait FfiAdapter: Send + Sync {
    /// The [`AdapterPlan`] as JSON.
    fn plan(&self) -> RResult<RString, RString>;
    /// Computes the tensors declared [`Init::Plugin`] of slot `slot` (from its base weight) or,
    /// with `slot` absent, of the shared tensors.
    fn init(&self, slot: ROption<u32>, weight: ROption<TensorRef<'_>>)
        -> RResult<FfiInit, RString>;
    /// The slot's adapted output.
    fn forward(&self, call: FfiSlotCall<'_>) -> RResult<OwnedTensor, RString>;
    /// The checkpoint: tensors under their names and `adapter_config.json`'s adapter fields.
    fn save(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<FfiSaved, RString>;
    /// The base weight (`[out, in]`) with slot `slot`'s adapter folded in.
    fn merge(
        &self,
        slot: u32,
        weight: TensorRef<'_>,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<OwnedTensor, RString>;
    /// The extra loss term of this optimiser step (with its graph), if any.
    fn extra_loss(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
        step: u64,
        total_steps: u64,
    ) -> RResult<ROption<OwnedTensor>, RString>;
    /// Called once per optimiser step, after the update and before the gradients are cleared
    /// (PEFT's `optimizer.step(); update_and_allocate(step); zero_grad()`): the tensors carry
    /// the step's (clipped) gradients (`grad()`), and may be changed in place (no_grad).
    #[sabi(last_prefix_field)]
    fn after_backward(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
        step: u64,
        total_steps: u64,
    ) -> RResult<(), RString>;
}
pub type FfiAdapterBox = FfiAdapter_TO<'static, RBox<()>>;

/// The host's handle on one attached adapter (swift-plugin-tensors adds the calls).
pub struct AdapterHandle {
    inner: FfiAdapterBox,
}

impl AdapterHandle {
    #[doc(hidden)]
    pub fn new(inner: FfiAdapterBox) -> Self {
        Self { inner }
    }

    /// The adapter object as it crosses the boundary (for swift-plugin-tensors).
    #[doc(hidden)]
    pub fn ffi(&self) -> &FfiAdapterBox {
        &self.inner
    }

    /// Its plan.
    pub fn plan(&self) -> Result<AdapterPlan, String> {
        let json = crate::behaviour::into_result(self.inner.plan())?;
        serde_json::from_str(json.as_str()).map_err(|e| format!("the adapter's plan: {e}"))
    }
}

/// Attaching through a tuner's FFI object (for [`crate::TunerHandle::attach`]).
pub(crate) fn attach_json(
    tuner: &crate::abi::FfiTunerBox,
    request: &AttachRequest,
) -> Result<AdapterHandle, String> {
    let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
    crate::behaviour::into_result(tuner.attach(RStr::from(json.as_str()))).map(AdapterHandle::new)
}
