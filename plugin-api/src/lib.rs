//! # swift-plugin-api: the contract between the `swift` host and its plugins
//!
//! A swift-rs plugin is a shared library (`.so`/`.dylib`) that exports one root module. The host
//! reads the plugin's [`Manifest`] first (name, version, contract version, libtorch and tch
//! versions), refuses a plugin whose contract or libtorch version differs from its own, and then
//! calls the plugin's `register` function with a [`Registrar`]. Built-in plugins are exactly the
//! same code linked statically and collected with `inventory`; only the opening of the library
//! differs.
//!
//! Plugin authors write plain Rust against this crate:
//!
//! ```text
//! use swift_plugin_api::prelude::*;
//!
//! fn register(r: &mut Registrar) -> Result<(), PluginError> {
//!     r.template(TemplateRecord::new("acme", "<|user|>{{QUERY}}<|bot|>"))?;
//!     Ok(())
//! }
//!
//! swift_plugin_api::export_plugin!(register);
//! ```
//!
//! This crate needs no libtorch: records, text behaviour (templates, preprocessors, tuners,
//! quantizers, backends), the ABI and loading. A plugin with tensors (a model family with its own
//! forward pass, a preference loss) is written against **swift-plugin-tensors**
//! (`plugin-api/tensors`), which re-exports all of this and adds the `tch` side; it is a separate
//! crate, not a feature, so that the `swift` binary, which links this crate, never links
//! libtorch, even when cargo builds it together with the tensor engine (a feature would be
//! unified into it).
//!
//! Every use of `abi_stable` stays inside this crate ([`abi`], the export macros, [`loading`]), so
//! that a later change of ABI crate stays local. Nothing panics across the boundary: the export
//! macro and the wrappers around behaviour objects catch unwinding panics and turn them into
//! errors that name the plugin.

pub mod abi;
pub mod backend;
pub mod behaviour;
mod export;
pub mod loading;
pub mod log;
pub mod model;
pub mod optimizer;
pub mod prompt_score;
pub mod quantizer;
pub mod records;
pub mod registrar;
pub mod row;
pub mod tensor;
pub mod tuner;
pub mod vision;

pub use backend::{Backend, BackendHandle, BackendModel, BackendModelHandle};
pub use behaviour::{
    DatasetPreprocessor, ModelFamilyHandle, ModelHandle, PreferenceLossHandle, PreprocessOutcome,
    PreprocessorHandle, Quantizer, QuantizerHandle, Tuner, TunerHandle,
};
pub use loading::{LoadError, PluginFile, PluginLibrary};
pub use optimizer::{OptimizerHandle, OptimizerKindHandle, OptimizerRecord};
pub use records::{
    BackendRecord, BenchmarkRecord, DatasetRecord, ModelFamilyRecord, PreferenceLossRecord,
    PreprocessorRecord, QuantizerRecord, TemplateRecord, TunerRecord,
};
pub use registrar::{HostSink, PluginError, Registrar, SinkError};
pub use row::{FunctionCall, Message, Objects, StandardRow, ToolCall};
pub use tensor::TensorRef;
pub use tuner::{AdapterHandle, AdapterPlan, AttachRequest, OptionDecl};

/// The version of the contract that this crate defines. The host refuses plugins whose manifest
/// declares another one. It changes whenever the root module, the registrar, a behaviour trait or
/// a record's meaning changes incompatibly; appending optional record fields does not change it.
///
/// 3: the model object gained the per-block entry points of gradient checkpointing
/// (`FfiModel::has_blocks` / `forward_part`). They are appended with defaults, but the model
/// object travels from plugin to host, and abi_stable refuses a plugin whose vtable has fewer
/// methods than the host's, so plugins built for contract 2 must be rebuilt.
///
/// 4: tuners carry their math (issue 16: `FfiTuner::has_adapter`/`attach`, the `FfiAdapter`
/// object, `TunerRecord::peft_type`/`schema`) and backends carry generation (issue 17:
/// `FfiBackend::load`, the `FfiBackendModel` object, `BackendRecord::capabilities`). Bumped once
/// for both, when they were merged together. Optimizers (`FfiRegistrar::add_optimizer`, the
/// `FfiOptimizerKind`/`FfiOptimizer` objects) came later within 4 without a bump: the registrar
/// method is appended after its prefix (plugins built before it never call it, and the
/// registrar's vtable travels from host to plugin), and the two objects are new types that no
/// earlier plugin names. Quantizers with their math (issue 18: `FfiRegistrar::add_quant_method`,
/// the `FfiQuantMethod`/`FfiQuantScheme`/`FfiPackedSlot` objects of [`quantizer`]) came the same
/// way; `FfiQuantizer`, the bit-width check, is unchanged.
///
/// 5: everything appended within 4 since its bump, made one version: the quantizer contract
/// (issue 18), optimizers and benchmarks as registry kinds (`add_optimizer`, `add_benchmark`),
/// prompt log-probabilities of the backend contract (issue 19), and vision in the model contract
/// (issue 21: part tags of slots and parameters, a family's `VisionDecl`,
/// `ModelContext::full_attention`, `Join::images`, `Capabilities::images`). Each was appended
/// compatibly, but together they change what a plugin of 4 can mean, so the version is bumped
/// once, at the multimodal issue's merge: plugins built for 4 must be rebuilt.
pub const CONTRACT_VERSION: u32 = 5;

/// The `tch` version plugins built against this crate link: none (this crate has no tensors;
/// swift-plugin-tensors declares its own).
pub const TCH_VERSION: Option<&str> = None;

/// The libtorch version plugins built against this crate link: none (see [`TCH_VERSION`]).
pub const LIBTORCH_VERSION: Option<&str> = None;

/// The plain C symbol under which a plugin file exports its [`Manifest`] as NUL-terminated JSON
/// (`extern "C" fn() -> *const c_char`), so the host reads it before abi_stable checks the root
/// module's layout. Its JSON is the `Manifest`'s serde form; fields may be added, never removed,
/// so that a host of any later contract can read it. Plugins built before it existed lack it.
pub const MANIFEST_SYMBOL: &str = "swift_plugin_manifest_json";

/// What a plugin says about itself before it registers anything.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The plugin's name (usually its crate name).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// [`CONTRACT_VERSION`] of the plugin-api the plugin was built against.
    pub contract_version: u32,
    /// libtorch version the plugin links (None: the plugin uses no tensors).
    pub libtorch_version: Option<String>,
    /// tch version the plugin links (None: the plugin uses no tensors).
    pub tch_version: Option<String>,
}

/// Everything a plugin author needs in one import.
pub mod prelude {
    pub use crate::backend::{
        AdapterSupport, Backend, BackendModel, Capabilities, Chosen, Join, LoadRequest,
        ModelFormat, ModelInfo, Sampling, SamplingBy, Step, StepOutput,
    };
    pub use crate::behaviour::{DatasetPreprocessor, PreprocessOutcome, Quantizer, Tuner};
    pub use crate::model::{ModelLayout, ModuleName, NormKind, ParamDecl, Slot, SlotKind};
    pub use crate::optimizer::{OptimizerRecord, OptimizerRequest, OptimizerTensor};
    pub use crate::records::*;
    pub use crate::registrar::{PluginError, Registrar};
    pub use crate::row::{FunctionCall, Message, Objects, StandardRow, ToolCall};
    pub use crate::vision::{ImageTokens, Part, Positions, VisionDecl};
    pub use crate::{export_plugin, plugin_debug, plugin_error, plugin_info, plugin_warn};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{
        builtin_module, manifest_to_ffi, BuiltinPlugin, FfiManifest, HostServicesRef, PluginModule,
        PluginModuleRef, RegistrarFfi,
    };
    pub use crate::export::{manifest_json, run_manifest, run_register};
    pub use abi_stable;
    pub use inventory;
}
