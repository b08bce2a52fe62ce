//! The quantizer contract's declarations (no libtorch; issue 18): what a quantizer with its own
//! math tells the host as data, and the `#[sabi_trait]` objects its math crosses as.
//! swift-plugin-tensors' `quantizer` module is the tch side (the `QuantMethod` / `QuantScheme` /
//! `PackedSlot` traits plugin authors implement, and the host's calls).
//!
//! The division of work:
//!
//! * **The host** resolves `--quant_method` (or a folder's `quantization_config.quant_method`)
//!   in the quantizer registry, asks the quantizer for a **scheme** (a [`SchemeRequest`]:
//!   quantize at `bits` with the user's options, or load a folder's `quantization_config`),
//!   collects the calibration statistics the scheme's [`SchemePlan`] asks for (the Hessian
//!   `2XᵀX/n` of each slot's inputs for GPTQ, the mean `|x|` per input channel and sample rows
//!   for AWQ), owns the model, writes and reads the files (each packed slot's tensors under its
//!   weight's stem, `STEM.qweight`, ..., and `config.json`'s `quantization_config`, which is the
//!   plan's `config` plus `modules_not_converted`), and runs the integer decoding kernels on a
//!   slot whose packed weight offers the host's own affine layout ([`FfiAffineCodes`]).
//! * **The plugin** turns a float `[out, in]` weight (and its statistics) into a packed slot,
//!   turns a slot's stored tensors back into one, and computes a packed slot's forward
//!   `x Wᵀ + b` and its dequantized weight.
//!
//! A quantizer registered before this contract (with `Registrar::quantizer`) only checks bit
//! widths; the host refuses to use it for math, naming it.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use serde::{Deserialize, Serialize};

use crate::tensor::{OwnedTensor, TensorRef};

/// Why the host asks for a scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemeMode {
    /// `swift export --quant_method`: quantize float weights at `bits` for a folder.
    Export,
    /// QLoRA (`swift sft --quant_method`): quantize the frozen base on the fly (no calibration
    /// data; nothing is written).
    Train,
    /// Read a quantized folder back: `options` is its `quantization_config`.
    Load,
}

/// What the host hands [`FfiQuantMethod::scheme`] (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemeRequest {
    pub mode: SchemeMode,
    /// Export / train: `--quant_bits`. Load: the config's `bits` when it has one.
    #[serde(default)]
    pub bits: Option<u8>,
    /// Export / train: the quantization flags the user gave, by name (`group_size`,
    /// `act_order`, `quant_lm_head`, `bnb_4bit_quant_type`, `bnb_4bit_use_double_quant`); a scheme refuses, by
    /// name, one that it cannot honour. Load: config.json's `quantization_config`.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Load: the folder's config.json, for messages.
    #[serde(default)]
    pub config_file: String,
}

/// The statistics a scheme quantizes from, which the host gathers on the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// None: the weight alone.
    #[default]
    None,
    /// The Hessian `H = 2 XᵀX / n` of the slot's inputs `X` (GPTQ).
    Hessian,
    /// The mean `|x|` per input channel and up to 512 input rows taken at a fixed stride (AWQ).
    Activations,
}

/// A scheme's answer to [`SchemeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemePlan {
    /// The bit width.
    pub bits: u8,
    /// What the host gathers before `quantize`.
    #[serde(default)]
    pub calibration: Calibration,
    /// config.json's `quantization_config` (export writes it, adding `modules_not_converted`).
    pub config: serde_json::Value,
    /// One line for logs (`GPTQ 4-bit, groups of 128, act-order`).
    pub summary: String,
}

// ---------------------------------------------------------------------------------------------
// The FFI

/// One slot's weight to quantize (borrowed for the call), with the statistics its plan asked
/// for: `hessian` `[in, in]`; `act_mean` `[in]` and `act_rows` `[rows, in]`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiQuantizeCall<'a> {
    pub slot: RStr<'a>,
    /// The float `[out, in]` weight.
    pub weight: TensorRef<'a>,
    pub hessian: ROption<TensorRef<'a>>,
    pub act_mean: ROption<TensorRef<'a>>,
    pub act_rows: ROption<TensorRef<'a>>,
}

/// Named tensors (a packed slot's, under its weight's stem: `qweight`, `scales`, ...).
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiNamedTensors {
    pub names: RVec<RString>,
    pub tensors: RVec<OwnedTensor>,
}

/// A packed weight in the host's own affine layout, which swift-kernels' integer kernels read
/// in decoding steps: `w[o, i] ≈ codes[o, i] · scales[o, i / group] + mins[o, i / group]`, then
/// divided by `input_scale[i]` when present (AWQ). `codes` u8 `[out, in]` (unpacked), `scales`
/// and `mins` f32 `[out, ceil(in / group)]`, all contiguous on the CPU; the tensors may share
/// storage with the slot's own.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiAffineCodes {
    pub codes: OwnedTensor,
    pub scales: OwnedTensor,
    pub mins: OwnedTensor,
    pub input_scale: ROption<OwnedTensor>,
    pub group: i64,
    pub bits: u8,
}

/// One packed linear slot.
#[sabi_trait]
pub trait FfiPackedSlot: Send + Sync {
    /// `x Wᵀ + b` for `x` `[.., in]`, computed in `x`'s dtype.
    fn forward(
        &self,
        x: TensorRef<'_>,
        bias: ROption<TensorRef<'_>>,
    ) -> RResult<OwnedTensor, RString>;
    /// The float32 `[out, in]` weight the slot stands for.
    fn dequantize(&self) -> RResult<OwnedTensor, RString>;
    /// The tensors to store under the slot's weight stem.
    fn tensors(&self) -> RResult<FfiNamedTensors, RString>;
    /// The weight in the host's affine layout, when the format is one (the host then decodes
    /// on its integer kernels); `None` otherwise.
    #[sabi(last_prefix_field)]
    fn affine_codes(&self) -> RResult<ROption<FfiAffineCodes>, RString>;
}
pub type FfiPackedSlotBox = FfiPackedSlot_TO<'static, RBox<()>>;

/// A configured quantizer (the answer to [`FfiQuantMethod::scheme`]).
#[sabi_trait]
pub trait FfiQuantScheme: Send + Sync {
    /// The [`SchemePlan`] as JSON.
    fn plan(&self) -> RResult<RString, RString>;
    /// Quantizes one slot's weight.
    fn quantize(&self, call: FfiQuantizeCall<'_>) -> RResult<FfiPackedSlotBox, RString>;
    /// Reads one slot back from its stored tensors (names without the stem) for a slot of
    /// shape `[out, in]`; refuses tensors that do not match, naming them.
    #[sabi(last_prefix_field)]
    fn load(
        &self,
        slot: RStr<'_>,
        shape: RSlice<'_, i64>,
        names: RSlice<'_, RString>,
        tensors: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<FfiPackedSlotBox, RString>;
}
pub type FfiQuantSchemeBox = FfiQuantScheme_TO<'static, RBox<()>>;

/// A quantizer with its own math (registered with `FfiRegistrar::add_quant_method`).
#[sabi_trait]
pub trait FfiQuantMethod: Send + Sync {
    /// Accepts or refuses a bit width with a message saying which ones are supported.
    fn check_bits(&self, bits: u8) -> RResult<(), RString>;
    /// A scheme for `request_json` (a [`SchemeRequest`]).
    #[sabi(last_prefix_field)]
    fn scheme(&self, request_json: RStr<'_>) -> RResult<FfiQuantSchemeBox, RString>;
}
pub type FfiQuantMethodBox = FfiQuantMethod_TO<'static, RBox<()>>;

/// The host's handle on a configured scheme (swift-plugin-tensors adds the calls).
pub struct SchemeHandle {
    inner: FfiQuantSchemeBox,
    plan: SchemePlan,
}

impl SchemeHandle {
    /// Wraps a scheme, asking its plan once.
    pub fn new(inner: FfiQuantSchemeBox) -> Result<Self, String> {
        let json = crate::behaviour::into_result(inner.plan())?;
        let plan = serde_json::from_str(json.as_str())
            .map_err(|e| format!("the quantizer's plan is not valid: {e}"))?;
        Ok(Self { inner, plan })
    }

    /// Its plan.
    pub fn plan(&self) -> &SchemePlan {
        &self.plan
    }

    /// The scheme object as it crosses the boundary (for swift-plugin-tensors).
    #[doc(hidden)]
    pub fn ffi(&self) -> &FfiQuantSchemeBox {
        &self.inner
    }
}

/// Asks a quantizer's FFI object for a scheme (for [`crate::QuantizerHandle::scheme`]).
pub(crate) fn scheme_json(
    method: &FfiQuantMethodBox,
    request: &SchemeRequest,
) -> Result<SchemeHandle, String> {
    let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
    let inner = crate::behaviour::into_result(method.scheme(RStr::from(json.as_str())))?;
    SchemeHandle::new(inner)
}
