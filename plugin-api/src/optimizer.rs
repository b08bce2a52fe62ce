//! The optimizer contract's declarations (no libtorch): the record an optimizer registers with,
//! the request it is created from, and the `#[sabi_trait]` objects its math crosses as
//! (ARCHITECTURE.md §3.8, last part). swift-plugin-tensors' `optimizer` module is the tch side
//! (the `OptimizerKind` / `Optimizer` traits plugin authors implement, and the host's calls).
//!
//! The division of work:
//!
//! * **The host** owns the trainable tensors and their gradients, the learning-rate schedule and
//!   the per-tensor learning-rate factors a tuner's plan declares (LoRA+), gradient clipping,
//!   `zero_grad`, which tensors train now (LISA switches `requires_grad`), and the files of a
//!   checkpoint.
//! * **The plugin** is created over the tensors' names and shapes with its options (JSON), and
//!   then, once per optimiser step, updates the tensors in place from their gradients with one
//!   learning rate per tensor (the schedule's times the tensor's factor); it skips a tensor that
//!   has no gradient or does not require one. Its state crosses as named tensors (`state` /
//!   `load_state`: checkpoints and `--resume_from_checkpoint`), and `reset` clears it (LISA's
//!   re-draws).

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use serde::{Deserialize, Serialize};

use crate::records::Record;
use crate::tensor::{OwnedTensor, TensorRef};
use crate::tuner::OptionDecl;

/// A registered optimizer: its name and its options as data (`swift list optimizers --json`).
/// The options are flags of `swift sft`/`pt`/`rlhf` under the same names (`adam_beta1`,
/// `galore_rank`, ...): the host passes each listed option's value (the flag's, else the
/// default given here) and refuses an optimizer flag the chosen optimizer does not list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub options: Vec<OptionDecl>,
}

impl Record for OptimizerRecord {
    const KIND: &'static str = "optimizer";
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn description(&self) -> &str {
        &self.description
    }
}

impl OptimizerRecord {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            description: description.into(),
            options: Vec::new(),
        }
    }

    pub fn with_options(mut self, options: Vec<OptionDecl>) -> Self {
        self.options = options;
        self
    }
}

/// One tensor the optimizer is created over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerTensor {
    /// The trainable tensor's name (`model.layers.0.self_attn.q_proj.weight`,
    /// `base_model.model.….lora_A.weight`).
    pub name: String,
    pub shape: Vec<i64>,
}

/// What the host creates an optimizer from (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerRequest {
    /// The trainable tensors, in the order every `step` passes them.
    pub tensors: Vec<OptimizerTensor>,
    /// Every option of the record, by name: the user's flag or the record's default.
    pub options: serde_json::Value,
}

// ---------------------------------------------------------------------------------------------
// The FFI

/// Named tensors (an optimizer's state).
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiNamedTensors {
    pub names: RVec<RString>,
    pub tensors: RVec<OwnedTensor>,
}

/// A registered optimizer: creates one optimizer over a run's trainable tensors.
#[sabi_trait]
pub trait FfiOptimizerKind: Send + Sync {
    /// `request_json` is an [`OptimizerRequest`].
    #[sabi(last_prefix_field)]
    fn create(&self, request_json: RStr<'_>) -> RResult<FfiOptimizerBox, RString>;
}
pub type FfiOptimizerKindBox = FfiOptimizerKind_TO<'static, RBox<()>>;

/// One optimizer over a run's tensors (the answer to `create`). Tensors always come in the
/// request's order.
#[sabi_trait]
pub trait FfiOptimizer: Send {
    /// One line for logs (`GaLore rank 128 on 84 of 170 tensors`).
    fn summary(&self) -> RString;
    /// One update: `tensors[i]` with its `grad()`, at learning rate `lrs[i]`. Tensors without a
    /// gradient or that do not require one are left as they are, state included.
    fn step(
        &mut self,
        tensors: RSlice<'_, TensorRef<'_>>,
        lrs: RSlice<'_, f64>,
    ) -> RResult<(), RString>;
    /// Clears the state (LISA's newly drawn layers start afresh).
    fn reset(&mut self) -> RResult<(), RString>;
    /// The state to checkpoint, as named tensors.
    fn state(&self) -> RResult<FfiNamedTensors, RString>;
    /// Restores what `state` returned (a checkpoint's tensors, by name; the plugin refuses a
    /// missing name or a wrong shape, naming it).
    #[sabi(last_prefix_field)]
    fn load_state(
        &mut self,
        names: RSlice<'_, RString>,
        tensors: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<(), RString>;
}
pub type FfiOptimizerBox = FfiOptimizer_TO<'static, RBox<()>>;

/// The host's handle on a registered optimizer (cheap to clone; swift-plugin-tensors adds the
/// tensor calls of the optimizers it creates).
#[derive(Clone)]
pub struct OptimizerKindHandle {
    inner: std::sync::Arc<FfiOptimizerKindBox>,
}

impl std::fmt::Debug for OptimizerKindHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OptimizerKindHandle")
    }
}

impl OptimizerKindHandle {
    #[doc(hidden)]
    pub fn new(inner: FfiOptimizerKindBox) -> Self {
        Self {
            inner: std::sync::Arc::new(inner),
        }
    }

    /// Creates an optimizer over the request's tensors.
    pub fn create(&self, request: &OptimizerRequest) -> Result<OptimizerHandle, String> {
        let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        crate::behaviour::into_result(self.inner.create(RStr::from(json.as_str())))
            .map(|inner| OptimizerHandle { inner })
    }
}

/// The host's handle on one created optimizer.
pub struct OptimizerHandle {
    inner: FfiOptimizerBox,
}

impl OptimizerHandle {
    /// The optimizer object as it crosses the boundary (for swift-plugin-tensors).
    #[doc(hidden)]
    pub fn ffi(&mut self) -> &mut FfiOptimizerBox {
        &mut self.inner
    }

    /// Its one-line description.
    pub fn summary(&self) -> String {
        self.inner.summary().into_string()
    }

    /// Clears its state.
    pub fn reset(&mut self) -> Result<(), String> {
        crate::behaviour::into_result(self.inner.reset())
    }
}
