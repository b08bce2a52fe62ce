//! The FFI-safe types that cross the host/plugin boundary: the root module, the manifest, the
//! host's services, the registrar and the behaviour objects, all `abi_stable` types.
//!
//! Plugin authors never touch these: they use [`crate::Registrar`] and the plain Rust traits of
//! [`crate::behaviour`], and the export macro wraps them. Two kinds of extensibility are built in:
//!
//! * [`PluginModule`] and [`HostServices`] are *prefix types*: fields can be appended after the
//!   `last_prefix_field` without breaking plugins built earlier.
//! * The registrar and behaviour traits are `#[sabi_trait]`s, whose vtables are prefix types too:
//!   later kinds (preference loss, loss scale, metric) and later methods are appended at the end.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::tensor::{OwnedTensor, TensorRef};

/// The manifest as it crosses the boundary (see [`crate::Manifest`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiManifest {
    pub name: RString,
    pub version: RString,
    pub contract_version: u32,
    pub libtorch_version: RString,
    pub tch_version: RString,
}

/// Converts the Rust-side manifest into its FFI form (empty strings stand for "none").
pub fn manifest_to_ffi(m: &crate::Manifest) -> FfiManifest {
    FfiManifest {
        name: m.name.as_str().into(),
        version: m.version.as_str().into(),
        contract_version: m.contract_version,
        libtorch_version: m.libtorch_version.clone().unwrap_or_default().into(),
        tch_version: m.tch_version.clone().unwrap_or_default().into(),
    }
}

/// Converts the FFI manifest back into the Rust-side one.
pub fn manifest_from_ffi(m: FfiManifest) -> crate::Manifest {
    let opt = |s: RString| {
        let s = s.into_string();
        (!s.is_empty()).then_some(s)
    };
    crate::Manifest {
        name: m.name.into_string(),
        version: m.version.into_string(),
        contract_version: m.contract_version,
        libtorch_version: opt(m.libtorch_version),
        tch_version: opt(m.tch_version),
    }
}

/// Signature of the host's log sink: level (see [`crate::log::Level`]), target, message.
pub type LogFn = extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>);

/// What the host lends a plugin while it registers (and keeps lending afterwards).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostServicesRef)))]
#[sabi(missing_field(panic))]
pub struct HostServices {
    /// Forwards one log line into the host's `tracing` subscriber.
    #[sabi(last_prefix_field)]
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
}

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// First call: who the plugin is and what it was built against.
    pub manifest: extern "C" fn() -> RResult<FfiManifest, RString>,
    /// Second call: register every record and behaviour object.
    #[sabi(last_prefix_field)]
    pub register: extern "C" fn(HostServicesRef, RegistrarFfi<'_>) -> RResult<(), RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "swift_plugin";
    const NAME: &'static str = "swift_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Builds a root module from its two entry points (used by the export macros).
pub fn builtin_module(
    manifest: extern "C" fn() -> RResult<FfiManifest, RString>,
    register: extern "C" fn(HostServicesRef, RegistrarFfi<'_>) -> RResult<(), RString>,
) -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule { manifest, register }.leak_into_prefix()
}

/// A statically linked (built-in) plugin, collected by `inventory`.
pub struct BuiltinPlugin {
    /// Returns the plugin's root module.
    pub module: fn() -> PluginModuleRef,
}

inventory::collect!(BuiltinPlugin);

/// The registrar as it crosses the boundary. One method per kind; later kinds are appended.
#[sabi_trait]
pub trait FfiRegistrar {
    fn add_template(&mut self, json: RStr<'_>) -> RResult<(), RString>;
    fn add_dataset(&mut self, json: RStr<'_>) -> RResult<(), RString>;
    fn add_preprocessor(&mut self, json: RStr<'_>, imp: FfiPreprocessorBox)
        -> RResult<(), RString>;
    /// `imp` is absent for declarative families (an alias of another family's behaviour).
    fn add_model_family(
        &mut self,
        json: RStr<'_>,
        imp: abi_stable::std_types::ROption<FfiModelFamilyBox>,
    ) -> RResult<(), RString>;
    fn add_tuner(&mut self, json: RStr<'_>, imp: FfiTunerBox) -> RResult<(), RString>;
    fn add_quantizer(&mut self, json: RStr<'_>, imp: FfiQuantizerBox) -> RResult<(), RString>;
    #[sabi(last_prefix_field)]
    fn add_backend(&mut self, json: RStr<'_>, imp: FfiBackendBox) -> RResult<(), RString>;
    /// Appended after the prefix: plugins built before it never call it.
    fn add_preference_loss(
        &mut self,
        json: RStr<'_>,
        imp: FfiPreferenceLossBox,
    ) -> RResult<(), RString>;
    /// Appended after the prefix like `add_preference_loss` (issue 16's optimizers, within
    /// contract 4): plugins built before it never call it, and the registrar's vtable travels
    /// from host to plugin, so a longer one is compatible.
    fn add_optimizer(
        &mut self,
        json: RStr<'_>,
        imp: crate::optimizer::FfiOptimizerKindBox,
    ) -> RResult<(), RString>;
    /// Appended after `add_preference_loss`, like it: a benchmark (data only). Plugins built
    /// before it never call it, so appending it keeps the contract version.
    fn add_benchmark(&mut self, json: RStr<'_>) -> RResult<(), RString>;
    /// Appended after `add_benchmark`, like it (issue 18, within contract 4): a quantizer with
    /// its own math (`crate::quantizer`). Plugins built before it never call it.
    fn add_quant_method(
        &mut self,
        json: RStr<'_>,
        imp: crate::quantizer::FfiQuantMethodBox,
    ) -> RResult<(), RString>;
}

/// The registrar object handed to `register`.
pub type RegistrarFfi<'a> = FfiRegistrar_TO<'a, abi_stable::sabi_types::RMut<'a, ()>>;

/// Dataset preprocessor: one raw row (JSON object) in, one standard row out (or none: skip).
#[sabi_trait]
pub trait FfiPreprocessor: Send + Sync {
    #[sabi(last_prefix_field)]
    fn preprocess(
        &self,
        row: RStr<'_>,
    ) -> RResult<abi_stable::std_types::ROption<RString>, RString>;
}
pub type FfiPreprocessorBox = FfiPreprocessor_TO<'static, RBox<()>>;

/// What the host lends a model's `forward` (see [`crate::model::ModelContext`]). Norm kinds
/// cross as [`crate::model::NormKind::to_u8`]; a `scale` of zero or less means `1/sqrt(head_dim)`.
#[sabi_trait]
pub trait FfiModelContext {
    fn linear(&mut self, slot: RStr<'_>, x: TensorRef<'_>) -> RResult<OwnedTensor, RString>;
    fn embedding(&mut self, slot: RStr<'_>, ids: TensorRef<'_>) -> RResult<OwnedTensor, RString>;
    fn norm(
        &mut self,
        slot: RStr<'_>,
        x: TensorRef<'_>,
        kind: u8,
        eps: f64,
    ) -> RResult<OwnedTensor, RString>;
    fn param(&mut self, name: RStr<'_>) -> RResult<OwnedTensor, RString>;
    #[sabi(last_prefix_field)]
    fn attention(
        &mut self,
        layer: u32,
        q: TensorRef<'_>,
        k: TensorRef<'_>,
        v: TensorRef<'_>,
        scale: f64,
    ) -> RResult<OwnedTensor, RString>;
    /// Appended after the prefix with a default (issue 21, within contract 4): a vision
    /// tower's non-causal attention, no cache; `runs` cuts the sequence into independent runs
    /// (one per image; empty: one run). The context's vtable travels from host to plugin, so
    /// plugins built before it never call it.
    fn full_attention(
        &mut self,
        _q: TensorRef<'_>,
        _k: TensorRef<'_>,
        _v: TensorRef<'_>,
        _runs: RVec<i64>,
        _scale: f64,
    ) -> RResult<OwnedTensor, RString> {
        RResult::RErr("this host has no full attention for vision towers".into())
    }
}
/// The context object as `forward` receives it (borrowed for the call).
pub type FfiModelContextMut<'a> = FfiModelContext_TO<'a, abi_stable::sabi_types::RMut<'a, ()>>;

/// One instantiated model (see [`crate::model::Model`]); the layout crosses as JSON.
#[sabi_trait]
pub trait FfiModel: Send + Sync {
    fn layout(&self) -> RResult<RString, RString>;
    #[sabi(last_prefix_field)]
    fn forward(
        &self,
        ctx: FfiModelContextMut<'_>,
        input_ids: TensorRef<'_>,
        positions: TensorRef<'_>,
    ) -> RResult<OwnedTensor, RString>;
    /// Appended after the prefix (gradient checkpointing, contract 3), with defaults: a family
    /// that does not override them has no per-block entry points. (The host still refuses a
    /// plugin built before them: this object's vtable travels from plugin to host.)
    fn has_blocks(&self) -> bool {
        false
    }
    /// One piece of the forward pass (`crate::model::ForwardPart::to_ffi`): `x` is the token
    /// ids for the embedding, the hidden states otherwise.
    fn forward_part(
        &self,
        _ctx: FfiModelContextMut<'_>,
        _part: u8,
        _index: u32,
        _x: TensorRef<'_>,
        _positions: TensorRef<'_>,
    ) -> RResult<OwnedTensor, RString> {
        RResult::RErr("this plugin was built without per-block entry points".into())
    }
}
pub type FfiModelBox = FfiModel_TO<'static, RBox<()>>;

/// Model family behaviour: instantiates a model from its `config.json`.
#[sabi_trait]
pub trait FfiModelFamily: Send + Sync {
    #[sabi(last_prefix_field)]
    fn instantiate(&self, config_json: RStr<'_>) -> RResult<FfiModelBox, RString>;
}
pub type FfiModelFamilyBox = FfiModelFamily_TO<'static, RBox<()>>;

/// Tuner behaviour: the slot choice, and for a tuner with its own math (issue 16, contract
/// in `crate::tuner`) the adapter it attaches.
#[sabi_trait]
pub trait FfiTuner: Send + Sync {
    /// Which of the model's linear slots this tuner attaches to, given its arguments (JSON).
    #[sabi(last_prefix_field)]
    fn targets(&self, args_json: RStr<'_>, slots: RVec<RString>)
        -> RResult<RVec<RString>, RString>;
    /// Whether `attach` is implemented (a tuner without it names another tuner's math in its
    /// record's `adapter`, or one of the host's whole-parameter modes).
    fn has_adapter(&self) -> bool {
        false
    }
    /// Attaches an adapter: `request_json` is a [`crate::tuner::AttachRequest`].
    fn attach(&self, _request_json: RStr<'_>) -> RResult<crate::tuner::FfiAdapterBox, RString> {
        RResult::RErr("this tuner has no adapter math of its own".into())
    }
}
pub type FfiTunerBox = FfiTuner_TO<'static, RBox<()>>;

/// Quantizer behaviour registered with `add_quantizer`: a bit-width check only. A quantizer
/// with its math is an `FfiQuantMethod` (`crate::quantizer`), registered with
/// `add_quant_method`.
#[sabi_trait]
pub trait FfiQuantizer: Send + Sync {
    /// Accepts or refuses a bit width with a message saying which ones are supported.
    #[sabi(last_prefix_field)]
    fn check_bits(&self, bits: u8) -> RResult<(), RString>;
}
pub type FfiQuantizerBox = FfiQuantizer_TO<'static, RBox<()>>;

/// Inference backend behaviour (the contract is `crate::backend`).
#[sabi_trait]
pub trait FfiBackend: Send + Sync {
    /// Accepts or refuses a model (its `config.json`) with a reason.
    fn check_model(&self, config_json: RStr<'_>) -> RResult<(), RString>;
    /// Loads a model (`crate::backend::LoadRequest` as JSON).
    #[sabi(last_prefix_field)]
    fn load(&self, request_json: RStr<'_>) -> RResult<crate::backend::FfiBackendModelBox, RString>;
}
pub type FfiBackendBox = FfiBackend_TO<'static, RBox<()>>;

/// A preference loss's inputs as they cross the boundary (borrowed for the call; see
/// [`crate::behaviour::PreferenceInputs`] for their meaning).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct FfiPreferenceInputs<'a> {
    pub chosen_logps: TensorRef<'a>,
    pub rejected_logps: TensorRef<'a>,
    pub chosen_tokens: TensorRef<'a>,
    pub rejected_tokens: TensorRef<'a>,
    pub ref_chosen_logps: abi_stable::std_types::ROption<TensorRef<'a>>,
    pub ref_rejected_logps: abi_stable::std_types::ROption<TensorRef<'a>>,
    pub kl: abi_stable::std_types::ROption<TensorRef<'a>>,
}

/// A preference loss's result as it crosses the boundary (owned by the receiver).
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiPreferenceOutput {
    pub loss: OwnedTensor,
    pub chosen_rewards: OwnedTensor,
    pub rejected_rewards: OwnedTensor,
}

/// Preference-loss behaviour: per-sequence log-probabilities in, the loss and rewards out.
#[sabi_trait]
pub trait FfiPreferenceLoss: Send + Sync {
    /// `params_json`: the trainer's settings (`beta`, `label_smoothing`, `simpo_gamma`, ...).
    #[sabi(last_prefix_field)]
    fn loss(
        &self,
        inputs: FfiPreferenceInputs<'_>,
        params_json: RStr<'_>,
    ) -> RResult<FfiPreferenceOutput, RString>;
}
pub type FfiPreferenceLossBox = FfiPreferenceLoss_TO<'static, RBox<()>>;
