//! Behaviour that crosses the boundary: the plain Rust traits plugin authors implement, the
//! adapters that expose them as `#[sabi_trait]` objects (catching panics), and the handles the
//! host holds to call them (turning FFI results back into Rust results that name the plugin).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RString, RVec},
};

use crate::abi::{
    FfiBackend, FfiBackendBox, FfiBackend_TO, FfiModelFamilyBox, FfiPreprocessor,
    FfiPreprocessorBox, FfiPreprocessor_TO, FfiQuantizer, FfiQuantizerBox, FfiQuantizer_TO,
    FfiTuner, FfiTunerBox, FfiTuner_TO,
};

/// Runs `f`, turning a panic into an error message (no panic may unwind across `extern "C"`).
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
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

fn into_result<T>(r: RResult<T, RString>) -> Result<T, String> {
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

/// A model architecture: turns a `config.json` into a [`crate::model::Model`] whose `forward`
/// runs through the host's context (ARCHITECTURE.md §3.4). Needs the `tensors` feature; without
/// it a plugin can still register declarative families (`Registrar::model_family_alias`).
#[cfg(feature = "tensors")]
pub trait ModelFamily: Send + Sync + 'static {
    /// Parses the configuration (refusing what the family cannot run, with the reason).
    fn instantiate(
        &self,
        config: &serde_json::Value,
    ) -> Result<Box<dyn crate::model::Model>, String>;
}

#[cfg(feature = "tensors")]
mod model_adapters {
    use super::*;
    use crate::abi::{
        FfiModel, FfiModelBox, FfiModelContext, FfiModelContextMut, FfiModelFamily, FfiModel_TO,
    };
    use crate::model::{ForwardPart, Model, ModelContext, NormKind};
    use crate::tensor::{OwnedTensor, TensorRef};
    use tch::Tensor;

    pub(crate) struct ModelFamilyAdapter<M>(pub(crate) M);

    impl<M: ModelFamily> FfiModelFamily for ModelFamilyAdapter<M> {
        fn instantiate(&self, config_json: RStr<'_>) -> RResult<FfiModelBox, RString> {
            guard("model family", || {
                let config: serde_json::Value = serde_json::from_str(config_json.as_str())
                    .map_err(|e| format!("config.json is not JSON: {e}"))?;
                let model = self.0.instantiate(&config)?;
                Ok(FfiModel_TO::from_value(ModelAdapter(model), TD_Opaque))
            })
        }
    }

    /// Plugin side: a family's model behind the FFI.
    struct ModelAdapter(Box<dyn Model>);

    impl FfiModel for ModelAdapter {
        fn layout(&self) -> RResult<RString, RString> {
            guard("model layout", || {
                serde_json::to_string(&self.0.layout())
                    .map(RString::from)
                    .map_err(|e| format!("layout is not serialisable: {e}"))
            })
        }

        fn forward(
            &self,
            ctx: FfiModelContextMut<'_>,
            input_ids: TensorRef<'_>,
            positions: TensorRef<'_>,
        ) -> RResult<OwnedTensor, RString> {
            guard("model forward", || {
                let mut ctx = FfiContext(ctx);
                let ids = input_ids.shallow_clone();
                let pos = positions.shallow_clone();
                self.0.forward(&mut ctx, &ids, &pos).map(OwnedTensor::new)
            })
        }

        fn has_blocks(&self) -> bool {
            // A panic here must not cross the boundary either: it reads as "no blocks".
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.has_blocks()))
                .unwrap_or(false)
        }

        fn forward_part(
            &self,
            ctx: FfiModelContextMut<'_>,
            part: u8,
            index: u32,
            x: TensorRef<'_>,
            positions: TensorRef<'_>,
        ) -> RResult<OwnedTensor, RString> {
            guard("model forward part", || {
                let part = ForwardPart::from_ffi(part, index)
                    .ok_or_else(|| format!("unknown forward part {part}"))?;
                let mut ctx = FfiContext(ctx);
                let x = x.shallow_clone();
                let pos = positions.shallow_clone();
                let out = match part {
                    ForwardPart::Embed => self.0.embed(&mut ctx, &x, &pos),
                    ForwardPart::Block(i) => self.0.block(&mut ctx, i, &x, &pos),
                    ForwardPart::Final => self.0.final_norm(&mut ctx, &x),
                };
                out.map(OwnedTensor::new)
            })
        }
    }

    /// Plugin side: the host's context seen as a plain [`ModelContext`].
    struct FfiContext<'a>(FfiModelContextMut<'a>);

    fn back(r: RResult<OwnedTensor, RString>) -> Result<Tensor, String> {
        into_result(r).map(OwnedTensor::into_tensor)
    }

    impl ModelContext for FfiContext<'_> {
        fn linear(&mut self, slot: &str, x: &Tensor) -> Result<Tensor, String> {
            back(self.0.linear(slot.into(), TensorRef::new(x)))
        }
        fn embedding(&mut self, slot: &str, ids: &Tensor) -> Result<Tensor, String> {
            back(self.0.embedding(slot.into(), TensorRef::new(ids)))
        }
        fn norm(
            &mut self,
            slot: &str,
            x: &Tensor,
            kind: NormKind,
            eps: f64,
        ) -> Result<Tensor, String> {
            back(
                self.0
                    .norm(slot.into(), TensorRef::new(x), kind.to_u8(), eps),
            )
        }
        fn param(&mut self, name: &str) -> Result<Tensor, String> {
            back(self.0.param(name.into()))
        }
        fn attention(
            &mut self,
            layer: usize,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            scale: Option<f64>,
        ) -> Result<Tensor, String> {
            let layer = u32::try_from(layer).map_err(|_| format!("layer {layer} out of range"))?;
            let (q, k, v) = (TensorRef::new(q), TensorRef::new(k), TensorRef::new(v));
            back(self.0.attention(layer, q, k, v, scale.unwrap_or(0.0)))
        }
    }

    /// Host side: a plain [`ModelContext`] exposed to the plugin (panics caught here too, since
    /// the plugin calls these through `extern "C"`).
    pub(crate) struct HostContext<'a>(pub(crate) &'a mut dyn ModelContext);

    impl FfiModelContext for HostContext<'_> {
        fn linear(&mut self, slot: RStr<'_>, x: TensorRef<'_>) -> RResult<OwnedTensor, RString> {
            guard("linear", || {
                self.0
                    .linear(slot.as_str(), &x.shallow_clone())
                    .map(OwnedTensor::new)
            })
        }
        fn embedding(
            &mut self,
            slot: RStr<'_>,
            ids: TensorRef<'_>,
        ) -> RResult<OwnedTensor, RString> {
            guard("embedding", || {
                self.0
                    .embedding(slot.as_str(), &ids.shallow_clone())
                    .map(OwnedTensor::new)
            })
        }
        fn norm(
            &mut self,
            slot: RStr<'_>,
            x: TensorRef<'_>,
            kind: u8,
            eps: f64,
        ) -> RResult<OwnedTensor, RString> {
            guard("norm", || {
                let kind =
                    NormKind::from_u8(kind).ok_or_else(|| format!("unknown norm kind {kind}"))?;
                self.0
                    .norm(slot.as_str(), &x.shallow_clone(), kind, eps)
                    .map(OwnedTensor::new)
            })
        }
        fn param(&mut self, name: RStr<'_>) -> RResult<OwnedTensor, RString> {
            guard("param", || {
                self.0.param(name.as_str()).map(OwnedTensor::new)
            })
        }
        fn attention(
            &mut self,
            layer: u32,
            q: TensorRef<'_>,
            k: TensorRef<'_>,
            v: TensorRef<'_>,
            scale: f64,
        ) -> RResult<OwnedTensor, RString> {
            guard("attention", || {
                let scale = (scale > 0.0).then_some(scale);
                let (q, k, v) = (q.shallow_clone(), k.shallow_clone(), v.shallow_clone());
                self.0
                    .attention(layer as usize, &q, &k, &v, scale)
                    .map(OwnedTensor::new)
            })
        }
    }
}

#[cfg(feature = "tensors")]
pub(crate) fn model_family_to_ffi<M: ModelFamily>(m: M) -> FfiModelFamilyBox {
    crate::abi::FfiModelFamily_TO::from_value(model_adapters::ModelFamilyAdapter(m), TD_Opaque)
}

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

    /// Runs the family's forward pass with `ctx` as the host's context.
    #[cfg(feature = "tensors")]
    pub fn forward(
        &self,
        ctx: &mut dyn crate::model::ModelContext,
        input_ids: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String> {
        use crate::abi::FfiModelContext_TO;
        use crate::tensor::{OwnedTensor, TensorRef};
        let mut host = model_adapters::HostContext(ctx);
        let ffi = FfiModelContext_TO::from_ptr(&mut host, TD_Opaque);
        let r = self
            .inner
            .forward(ffi, TensorRef::new(input_ids), TensorRef::new(positions));
        into_result(r).map(OwnedTensor::into_tensor)
    }

    /// Whether the family offers per-block entry points (see [`crate::model::Model::has_blocks`]).
    pub fn has_blocks(&self) -> bool {
        self.inner.has_blocks()
    }

    /// Runs one piece of the forward pass cut at block boundaries: `x` is the token ids for
    /// [`crate::model::ForwardPart::Embed`], the hidden states otherwise.
    #[cfg(feature = "tensors")]
    pub fn forward_part(
        &self,
        ctx: &mut dyn crate::model::ModelContext,
        part: crate::model::ForwardPart,
        x: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String> {
        use crate::abi::FfiModelContext_TO;
        use crate::tensor::{OwnedTensor, TensorRef};
        let mut host = model_adapters::HostContext(ctx);
        let ffi = FfiModelContext_TO::from_ptr(&mut host, TD_Opaque);
        let (p, i) = part.to_ffi();
        let r = self
            .inner
            .forward_part(ffi, p, i, TensorRef::new(x), TensorRef::new(positions));
        into_result(r).map(OwnedTensor::into_tensor)
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
}

// ---------------------------------------------------------------------------------------------
// Quantizers

/// A quantizer. The export issue adds quantize / forward / save / load.
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

/// The host's handle on a quantizer.
pub struct QuantizerHandle {
    inner: FfiQuantizerBox,
}

impl QuantizerHandle {
    pub(crate) fn new(inner: FfiQuantizerBox) -> Self {
        Self { inner }
    }

    /// See [`Quantizer::check_bits`].
    pub fn check_bits(&self, bits: u8) -> Result<(), String> {
        into_result(self.inner.check_bits(bits))
    }
}

// ---------------------------------------------------------------------------------------------
// Inference backends

/// An inference backend. The models issue adds generation.
pub trait Backend: Send + Sync + 'static {
    /// Accepts a model (its `config.json`) or says why it cannot serve it.
    fn check_model(&self, config: &serde_json::Value) -> Result<(), String>;
}

struct BackendAdapter<B>(B);

impl<B: Backend> FfiBackend for BackendAdapter<B> {
    fn check_model(&self, config_json: RStr<'_>) -> RResult<(), RString> {
        guard("backend", || {
            let config: serde_json::Value = serde_json::from_str(config_json.as_str())
                .map_err(|e| format!("config.json is not JSON: {e}"))?;
            self.0.check_model(&config)
        })
    }
}

pub(crate) fn backend_to_ffi<B: Backend>(b: B) -> FfiBackendBox {
    FfiBackend_TO::from_value(BackendAdapter(b), TD_Opaque)
}

/// The host's handle on an inference backend.
pub struct BackendHandle {
    inner: FfiBackendBox,
}

impl BackendHandle {
    pub(crate) fn new(inner: FfiBackendBox) -> Self {
        Self { inner }
    }

    /// See [`Backend::check_model`].
    pub fn check_model(&self, config: &serde_json::Value) -> Result<(), String> {
        let json = config.to_string();
        into_result(self.inner.check_model(json.as_str().into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Preference losses

/// What a preference loss receives: per-sequence sums of the answer tokens' log-probabilities
/// (`[n]` float tensors), the policy's with their autograd graph, the reference model's detached.
///
/// Paired losses (DPO, ORPO, SimPO, CPO) get row `i` of `chosen_*` and `rejected_*` from the same
/// prompt. An unpaired loss (KTO) gets the desirable rows as `chosen_*` and the undesirable ones
/// as `rejected_*` (either may be empty), and `kl`, the detached reference point (a scalar).
#[cfg(feature = "tensors")]
pub struct PreferenceInputs {
    pub chosen_logps: tch::Tensor,
    pub rejected_logps: tch::Tensor,
    /// Answer tokens per sequence (float), for length-normalised losses and the NLL term.
    pub chosen_tokens: tch::Tensor,
    pub rejected_tokens: tch::Tensor,
    /// Present when the loss's record says `reference = true`.
    pub ref_chosen_logps: Option<tch::Tensor>,
    pub ref_rejected_logps: Option<tch::Tensor>,
    /// KTO's reference point `max(0, mean(policy − reference) KL log-ratio)`; unpaired only.
    pub kl: Option<tch::Tensor>,
}

/// What a preference loss returns.
#[cfg(feature = "tensors")]
pub struct PreferenceOutput {
    /// The scalar loss of the batch (with its graph).
    pub loss: tch::Tensor,
    /// Implicit rewards per chosen / rejected sequence (`[n]`, detached), logged as TRL names
    /// them (`rewards/chosen`, `rewards/rejected`, accuracies, margins).
    pub chosen_rewards: tch::Tensor,
    pub rejected_rewards: tch::Tensor,
}

/// A preference loss: a function of per-sequence log-probabilities. `params` holds the trainer's
/// settings as a JSON object (`beta`, `label_smoothing`, `simpo_gamma`, `cpo_alpha`,
/// `desirable_weight`, `undesirable_weight`, ...).
#[cfg(feature = "tensors")]
pub trait PreferenceLoss: Send + Sync + 'static {
    fn loss(
        &self,
        inputs: &PreferenceInputs,
        params: &serde_json::Value,
    ) -> Result<PreferenceOutput, String>;
}

#[cfg(feature = "tensors")]
mod preference_adapters {
    use super::*;
    use crate::abi::{
        FfiPreferenceInputs, FfiPreferenceLoss, FfiPreferenceLossBox, FfiPreferenceLoss_TO,
        FfiPreferenceOutput,
    };
    use crate::tensor::{OwnedTensor, TensorRef};

    struct PreferenceLossAdapter<P>(P);

    impl<P: PreferenceLoss> FfiPreferenceLoss for PreferenceLossAdapter<P> {
        fn loss(
            &self,
            inputs: FfiPreferenceInputs<'_>,
            params_json: RStr<'_>,
        ) -> RResult<FfiPreferenceOutput, RString> {
            guard("preference loss", || {
                let params: serde_json::Value = serde_json::from_str(params_json.as_str())
                    .map_err(|e| format!("loss parameters are not JSON: {e}"))?;
                let opt = |t: ROption<TensorRef<'_>>| t.into_option().map(|r| r.shallow_clone());
                let inputs = PreferenceInputs {
                    chosen_logps: inputs.chosen_logps.shallow_clone(),
                    rejected_logps: inputs.rejected_logps.shallow_clone(),
                    chosen_tokens: inputs.chosen_tokens.shallow_clone(),
                    rejected_tokens: inputs.rejected_tokens.shallow_clone(),
                    ref_chosen_logps: opt(inputs.ref_chosen_logps),
                    ref_rejected_logps: opt(inputs.ref_rejected_logps),
                    kl: opt(inputs.kl),
                };
                let out = self.0.loss(&inputs, &params)?;
                Ok(FfiPreferenceOutput {
                    loss: OwnedTensor::new(out.loss),
                    chosen_rewards: OwnedTensor::new(out.chosen_rewards),
                    rejected_rewards: OwnedTensor::new(out.rejected_rewards),
                })
            })
        }
    }

    pub(crate) fn to_ffi<P: PreferenceLoss>(p: P) -> FfiPreferenceLossBox {
        FfiPreferenceLoss_TO::from_value(PreferenceLossAdapter(p), TD_Opaque)
    }

    impl PreferenceLossHandle {
        /// Runs the loss (see [`PreferenceLoss::loss`]).
        pub fn loss(
            &self,
            inputs: &PreferenceInputs,
            params: &serde_json::Value,
        ) -> Result<PreferenceOutput, String> {
            fn opt(t: &Option<tch::Tensor>) -> ROption<TensorRef<'_>> {
                match t {
                    Some(t) => ROption::RSome(TensorRef::new(t)),
                    None => ROption::RNone,
                }
            }
            let ffi = FfiPreferenceInputs {
                chosen_logps: TensorRef::new(&inputs.chosen_logps),
                rejected_logps: TensorRef::new(&inputs.rejected_logps),
                chosen_tokens: TensorRef::new(&inputs.chosen_tokens),
                rejected_tokens: TensorRef::new(&inputs.rejected_tokens),
                ref_chosen_logps: opt(&inputs.ref_chosen_logps),
                ref_rejected_logps: opt(&inputs.ref_rejected_logps),
                kl: opt(&inputs.kl),
            };
            let json = params.to_string();
            let out = into_result(self.inner.loss(ffi, json.as_str().into()))?;
            Ok(PreferenceOutput {
                loss: out.loss.into_tensor(),
                chosen_rewards: out.chosen_rewards.into_tensor(),
                rejected_rewards: out.rejected_rewards.into_tensor(),
            })
        }
    }
}

#[cfg(feature = "tensors")]
pub(crate) fn preference_loss_to_ffi<P: PreferenceLoss>(p: P) -> crate::abi::FfiPreferenceLossBox {
    preference_adapters::to_ffi(p)
}

/// The host's handle on a preference loss (its `loss` method needs the `tensors` feature).
pub struct PreferenceLossHandle {
    #[cfg_attr(not(feature = "tensors"), allow(dead_code))]
    inner: crate::abi::FfiPreferenceLossBox,
}

impl PreferenceLossHandle {
    pub(crate) fn new(inner: crate::abi::FfiPreferenceLossBox) -> Self {
        Self { inner }
    }
}
