//! Behaviour that crosses the boundary: the plain Rust traits plugin authors implement, the
//! adapters that expose them as `#[sabi_trait]` objects (catching panics), and the handles the
//! host holds to call them (turning FFI results back into Rust results that name the plugin).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RString, RVec},
};

use crate::abi::{
    FfiModelFamilyBox, FfiPreprocessor, FfiPreprocessorBox, FfiPreprocessor_TO, FfiQuantizer,
    FfiQuantizerBox, FfiQuantizer_TO, FfiTuner, FfiTunerBox, FfiTuner_TO,
};

/// Runs `f`, turning a panic into an error message (no panic may unwind across `extern "C"`).
#[doc(hidden)]
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            RResult::RErr(format!("{what} panicked: {}", panic_message(&*payload)).into())
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// An FFI result as a Rust one.
#[doc(hidden)]
pub fn into_result<T>(r: RResult<T, RString>) -> Result<T, String> {
    r.into_result().map_err(RString::into_string)
}

// ---------------------------------------------------------------------------------------------
// Dataset preprocessors

/// What a preprocessor makes of one raw row.
#[derive(Debug, Clone, PartialEq)]
pub enum PreprocessOutcome {
    /// The standard row (`messages`, and optionally `rejected_response`, `label`, `tools`, ...).
    Row(crate::row::StandardRow),
    /// The row carries nothing to train on and is dropped on purpose.
    Skip,
}

/// Turns one raw dataset row into the standard `messages` row.
pub trait DatasetPreprocessor: Send + Sync + 'static {
    /// `row` is the raw row as a JSON object, after column renames.
    fn preprocess(
        &self,
        row: serde_json::Map<String, serde_json::Value>,
    ) -> Result<PreprocessOutcome, String>;
}

struct PreprocessorAdapter<P>(P);

impl<P: DatasetPreprocessor> FfiPreprocessor for PreprocessorAdapter<P> {
    fn preprocess(&self, row: RStr<'_>) -> RResult<ROption<RString>, RString> {
        guard("preprocessor", || {
            let row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(row.as_str())
                    .map_err(|e| format!("row is not a JSON object: {e}"))?;
            Ok(match self.0.preprocess(row)? {
                PreprocessOutcome::Row(v) => ROption::RSome(
                    serde_json::to_string(&v)
                        .map_err(|e| format!("row is not serialisable: {e}"))?
                        .into(),
                ),
                PreprocessOutcome::Skip => ROption::RNone,
            })
        })
    }
}

pub(crate) fn preprocessor_to_ffi<P: DatasetPreprocessor>(p: P) -> FfiPreprocessorBox {
    FfiPreprocessor_TO::from_value(PreprocessorAdapter(p), TD_Opaque)
}

/// The host's handle on a registered preprocessor.
pub struct PreprocessorHandle {
    inner: FfiPreprocessorBox,
    plugin: String,
}

impl PreprocessorHandle {
    pub(crate) fn new(inner: FfiPreprocessorBox, plugin: &str) -> Self {
        Self {
            inner,
            plugin: plugin.to_string(),
        }
    }

    /// Runs the preprocessor on one raw row.
    pub fn preprocess(
        &self,
        row: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<PreprocessOutcome, String> {
        let json = serde_json::Value::Object(row.clone()).to_string();
        match into_result(self.inner.preprocess(json.as_str().into())) {
            Ok(ROption::RSome(s)) => serde_json::from_str(s.as_str())
                .map(PreprocessOutcome::Row)
                .map_err(|e| {
                    format!(
                        "plugin {} returned a malformed standard row: {e}",
                        self.plugin
                    )
                }),
            Ok(ROption::RNone) => Ok(PreprocessOutcome::Skip),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model families

/// The host's handle on a model family's behaviour.
pub struct ModelFamilyHandle {
    inner: FfiModelFamilyBox,
}

impl ModelFamilyHandle {
    pub(crate) fn new(inner: FfiModelFamilyBox) -> Self {
        Self { inner }
    }

    /// Instantiates the family for one `config.json`.
    pub fn instantiate(&self, config: &serde_json::Value) -> Result<ModelHandle, String> {
        let json = config.to_string();
        into_result(self.inner.instantiate(json.as_str().into())).map(|inner| ModelHandle { inner })
    }

    /// Names of the parameters (safetensors keys) the family needs for this configuration.
    pub fn parameter_names(&self, config: &serde_json::Value) -> Result<Vec<String>, String> {
        Ok(self.instantiate(config)?.layout()?.parameter_names())
    }
}

/// The host's handle on one instantiated model.
pub struct ModelHandle {
    inner: crate::abi::FfiModelBox,
}

impl ModelHandle {
    /// The model's declaration (see [`crate::model::ModelLayout`]).
    pub fn layout(&self) -> Result<crate::model::ModelLayout, String> {
        let json = into_result(self.inner.layout())?;
        serde_json::from_str(json.as_str())
            .map_err(|e| format!("the family sent a malformed layout: {e}"))
    }

    /// The model object as it crosses the boundary (for swift-plugin-tensors' `forward`).
    #[doc(hidden)]
    pub fn ffi(&self) -> &crate::abi::FfiModelBox {
        &self.inner
    }

    /// Whether the family offers per-block entry points (see [`crate::model::Model::has_blocks`]).
    pub fn has_blocks(&self) -> bool {
        self.inner.has_blocks()
    }
}

// ---------------------------------------------------------------------------------------------
// Tuners

/// A tuner. The training issue adds the adapter hooks; for now a tuner says which linear slots
/// it attaches to.
pub trait Tuner: Send + Sync + 'static {
    /// Picks the slots (e.g. `model.layers.0.self_attn.q_proj`) to attach to, given the tuner's
    /// arguments (e.g. `{"target_modules": ["all-linear"]}`).
    fn targets(&self, args: &serde_json::Value, slots: &[String]) -> Result<Vec<String>, String>;
}

struct TunerAdapter<T>(T);

impl<T: Tuner> FfiTuner for TunerAdapter<T> {
    fn targets(
        &self,
        args_json: RStr<'_>,
        slots: RVec<RString>,
    ) -> RResult<RVec<RString>, RString> {
        guard("tuner", || {
            let args: serde_json::Value = serde_json::from_str(args_json.as_str())
                .map_err(|e| format!("tuner arguments are not JSON: {e}"))?;
            let slots: Vec<String> = slots.into_iter().map(RString::into_string).collect();
            Ok(self
                .0
                .targets(&args, &slots)?
                .into_iter()
                .map(RString::from)
                .collect())
        })
    }
}

pub(crate) fn tuner_to_ffi<T: Tuner>(t: T) -> FfiTunerBox {
    FfiTuner_TO::from_value(TunerAdapter(t), TD_Opaque)
}

/// The host's handle on a tuner.
pub struct TunerHandle {
    inner: FfiTunerBox,
}

impl std::fmt::Debug for TunerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunerHandle")
            .field("has_adapter", &self.has_adapter())
            .finish()
    }
}

impl TunerHandle {
    pub(crate) fn new(inner: FfiTunerBox) -> Self {
        Self { inner }
    }

    /// See [`Tuner::targets`].
    pub fn targets(
        &self,
        args: &serde_json::Value,
        slots: &[String],
    ) -> Result<Vec<String>, String> {
        let slots: RVec<RString> = slots.iter().map(|s| RString::from(s.as_str())).collect();
        let json = args.to_string();
        into_result(self.inner.targets(json.as_str().into(), slots))
            .map(|v| v.into_iter().map(RString::into_string).collect())
    }

    /// Whether the tuner has adapter math of its own ([`crate::abi::FfiTuner::has_adapter`]).
    pub fn has_adapter(&self) -> bool {
        self.inner.has_adapter()
    }

    /// Attaches an adapter (see `crate::tuner`).
    pub fn attach(
        &self,
        request: &crate::tuner::AttachRequest,
    ) -> Result<crate::tuner::AdapterHandle, String> {
        crate::tuner::attach_json(&self.inner, request)
    }

    /// The tuner object as it crosses the boundary.
    #[doc(hidden)]
    pub fn ffi(&self) -> &FfiTunerBox {
        &self.inner
    }
}

// ---------------------------------------------------------------------------------------------
// Quantizers

/// A quantizer's bit-width check (a quantizer with math implements swift-plugin-tensors'
/// `QuantMethod` too).
pub trait Quantizer: Send + Sync + 'static {
    /// Accepts a bit width or says which ones are supported.
    fn check_bits(&self, bits: u8) -> Result<(), String>;
}

struct QuantizerAdapter<Q>(Q);

impl<Q: Quantizer> FfiQuantizer for QuantizerAdapter<Q> {
    fn check_bits(&self, bits: u8) -> RResult<(), RString> {
        guard("quantizer", || self.0.check_bits(bits))
    }
}

pub(crate) fn quantizer_to_ffi<Q: Quantizer>(q: Q) -> FfiQuantizerBox {
    FfiQuantizer_TO::from_value(QuantizerAdapter(q), TD_Opaque)
}

/// The host's handle on a quantizer: one that only checks bit widths (`Registrar::quantizer`),
/// or one with its own math (swift-plugin-tensors' `TensorRegistrar::quant_method`, the
/// quantizer contract in [`crate::quantizer`]).
pub struct QuantizerHandle {
    inner: QuantizerInner,
}

enum QuantizerInner {
    Checks(FfiQuantizerBox),
    Math(crate::quantizer::FfiQuantMethodBox),
}

impl QuantizerHandle {
    pub(crate) fn new(inner: FfiQuantizerBox) -> Self {
        Self {
            inner: QuantizerInner::Checks(inner),
        }
    }

    pub(crate) fn with_math(inner: crate::quantizer::FfiQuantMethodBox) -> Self {
        Self {
            inner: QuantizerInner::Math(inner),
        }
    }

    /// See [`Quantizer::check_bits`].
    pub fn check_bits(&self, bits: u8) -> Result<(), String> {
        match &self.inner {
            QuantizerInner::Checks(q) => into_result(q.check_bits(bits)),
            QuantizerInner::Math(q) => into_result(q.check_bits(bits)),
        }
    }

    /// Whether the quantizer carries its math (else it only checks bit widths).
    pub fn has_math(&self) -> bool {
        matches!(self.inner, QuantizerInner::Math(_))
    }

    /// A scheme for `request` (see [`crate::quantizer`]); an error for a quantizer that only
    /// checks bit widths.
    pub fn scheme(
        &self,
        request: &crate::quantizer::SchemeRequest,
    ) -> Result<crate::quantizer::SchemeHandle, String> {
        match &self.inner {
            QuantizerInner::Math(q) => crate::quantizer::scheme_json(q, request),
            QuantizerInner::Checks(_) => Err(
                "it only checks bit widths: it was registered with `Registrar::quantizer`, not with its math (`TensorRegistrar::quant_method`, the quantizer contract)".into(),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Preference losses

/// The host's handle on a preference loss (swift-plugin-tensors adds its `loss` method).
pub struct PreferenceLossHandle {
    inner: crate::abi::FfiPreferenceLossBox,
}

impl PreferenceLossHandle {
    pub(crate) fn new(inner: crate::abi::FfiPreferenceLossBox) -> Self {
        Self { inner }
    }

    /// The loss object as it crosses the boundary (for swift-plugin-tensors' `loss`).
    #[doc(hidden)]
    pub fn ffi(&self) -> &crate::abi::FfiPreferenceLossBox {
        &self.inner
    }
}
