//! Registration, from both sides of the boundary.
//!
//! * Plugin side: [`Registrar`], the object a plugin's `register` function receives. It turns
//!   records into JSON and behaviour into FFI objects.
//! * Host side: [`HostSink`], the trait the host's registries implement. [`SinkAdapter`] turns
//!   the FFI calls back into typed records and handles, so the host never sees `abi_stable`.

use abi_stable::std_types::{ROption, RResult, RStr, RString};
use serde::{de::DeserializeOwned, Serialize};

use crate::abi::{
    FfiBackendBox, FfiModelFamilyBox, FfiPreferenceLossBox, FfiPreprocessorBox, FfiQuantizerBox,
    FfiRegistrar, FfiTunerBox, RegistrarFfi,
};
use crate::backend::{backend_to_ffi, Backend, BackendHandle};
use crate::behaviour::PreferenceLossHandle;
use crate::behaviour::{
    preprocessor_to_ffi, quantizer_to_ffi, tuner_to_ffi, DatasetPreprocessor, ModelFamilyHandle,
    PreprocessorHandle, Quantizer, QuantizerHandle, Tuner, TunerHandle,
};
use crate::records::{
    BackendRecord, BenchmarkRecord, DatasetRecord, ModelFamilyRecord, PreferenceLossRecord,
    PreprocessorRecord, QuantizerRecord, TemplateRecord, TunerRecord,
};

/// An error a plugin's `register` function returns (the host prints it with the plugin's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(s: String) -> Self {
        PluginError(s)
    }
}

impl From<&str> for PluginError {
    fn from(s: &str) -> Self {
        PluginError(s.to_string())
    }
}

/// What a plugin's `register` function receives.
pub struct Registrar<'a> {
    ffi: RegistrarFfi<'a>,
}

fn to_json<R: Serialize>(record: &R) -> Result<String, PluginError> {
    serde_json::to_string(record)
        .map_err(|e| PluginError(format!("record is not serialisable: {e}")))
}

fn ffi_result(r: RResult<(), RString>) -> Result<(), PluginError> {
    r.into_result().map_err(|e| PluginError(e.into_string()))
}

impl<'a> Registrar<'a> {
    pub(crate) fn new(ffi: RegistrarFfi<'a>) -> Self {
        Self { ffi }
    }

    /// The registrar as it crosses the boundary (for swift-plugin-tensors' registrations).
    #[doc(hidden)]
    pub fn ffi(&mut self) -> &mut RegistrarFfi<'a> {
        &mut self.ffi
    }

    /// Registers a chat template.
    pub fn template(&mut self, record: TemplateRecord) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(self.ffi.add_template(json.as_str().into()))
    }

    /// Registers a benchmark (`swift eval --eval_dataset NAME`).
    pub fn benchmark(&mut self, record: BenchmarkRecord) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(self.ffi.add_benchmark(json.as_str().into()))
    }

    /// Registers a named dataset.
    pub fn dataset(&mut self, record: DatasetRecord) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(self.ffi.add_dataset(json.as_str().into()))
    }

    /// Registers a dataset preprocessor.
    pub fn preprocessor(
        &mut self,
        record: PreprocessorRecord,
        imp: impl DatasetPreprocessor,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi
                .add_preprocessor(json.as_str().into(), preprocessor_to_ffi(imp)),
        )
    }

    /// Registers a declarative model family (one with `alias_of` set, reusing another family's
    /// behaviour under new names, architectures or a different default template).
    pub fn model_family_alias(&mut self, record: ModelFamilyRecord) -> Result<(), PluginError> {
        if record.alias_of.is_none() {
            return Err(PluginError(format!(
                "model family `{}` has no behaviour and no `alias_of`: name the family it reuses",
                record.name
            )));
        }
        let json = to_json(&record)?;
        ffi_result(
            self.ffi
                .add_model_family(json.as_str().into(), ROption::RNone),
        )
    }

    /// Registers a tuner.
    pub fn tuner(&mut self, record: TunerRecord, imp: impl Tuner) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(self.ffi.add_tuner(json.as_str().into(), tuner_to_ffi(imp)))
    }

    /// Registers a quantizer.
    pub fn quantizer(
        &mut self,
        record: QuantizerRecord,
        imp: impl Quantizer,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi
                .add_quantizer(json.as_str().into(), quantizer_to_ffi(imp)),
        )
    }

    /// Registers an inference backend.
    pub fn backend(&mut self, record: BackendRecord, imp: impl Backend) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi
                .add_backend(json.as_str().into(), backend_to_ffi(imp)),
        )
    }
}

/// A registration the host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}

/// Implemented by the host: receives typed records and behaviour handles from one plugin.
///
/// Returning `Err` aborts that plugin's registration (the plugin's `?` propagates it); a sink
/// that only wants to warn about a refused entry logs and returns `Ok`.
pub trait HostSink {
    fn add_template(&mut self, record: TemplateRecord) -> Result<(), SinkError>;
    fn add_dataset(&mut self, record: DatasetRecord) -> Result<(), SinkError>;
    fn add_preprocessor(
        &mut self,
        record: PreprocessorRecord,
        imp: PreprocessorHandle,
    ) -> Result<(), SinkError>;
    fn add_model_family(
        &mut self,
        record: ModelFamilyRecord,
        imp: Option<ModelFamilyHandle>,
    ) -> Result<(), SinkError>;
    fn add_tuner(&mut self, record: TunerRecord, imp: TunerHandle) -> Result<(), SinkError>;
    fn add_quantizer(
        &mut self,
        record: QuantizerRecord,
        imp: QuantizerHandle,
    ) -> Result<(), SinkError>;
    fn add_backend(&mut self, record: BackendRecord, imp: BackendHandle) -> Result<(), SinkError>;
    /// A preference loss (a kind added later: hosts that predate it refuse it).
    fn add_preference_loss(
        &mut self,
        record: PreferenceLossRecord,
        imp: PreferenceLossHandle,
    ) -> Result<(), SinkError> {
        let _ = imp;
        Err(SinkError(format!(
            "this host does not take preference losses (`{}`)",
            record.name
        )))
    }
    /// An optimizer (a kind added later: hosts that predate it refuse it).
    fn add_optimizer(
        &mut self,
        record: crate::optimizer::OptimizerRecord,
        imp: crate::optimizer::OptimizerKindHandle,
    ) -> Result<(), SinkError> {
        let _ = imp;
        Err(SinkError(format!(
            "this host does not take optimizers (`{}`)",
            record.name
        )))
    }
    /// A benchmark (a kind added later: hosts that predate it refuse it).
    fn add_benchmark(&mut self, record: BenchmarkRecord) -> Result<(), SinkError> {
        Err(SinkError(format!(
            "this host does not take benchmarks (`{}`)",
            record.name
        )))
    }
}

/// Exposes a [`HostSink`] as the FFI registrar of one plugin.
pub(crate) struct SinkAdapter<'s> {
    pub(crate) sink: &'s mut dyn HostSink,
    pub(crate) plugin: String,
}

impl SinkAdapter<'_> {
    fn parse<R: DeserializeOwned>(&self, kind: &str, json: RStr<'_>) -> Result<R, SinkError> {
        serde_json::from_str(json.as_str()).map_err(|e| {
            SinkError(format!(
                "plugin `{}` sent an invalid {kind} record: {e}",
                self.plugin
            ))
        })
    }

    fn finish(r: Result<(), SinkError>) -> RResult<(), RString> {
        r.map_err(|e| RString::from(e.0)).into()
    }
}

impl FfiRegistrar for SinkAdapter<'_> {
    fn add_template(&mut self, json: RStr<'_>) -> RResult<(), RString> {
        let r = self
            .parse("template", json)
            .and_then(|rec| self.sink.add_template(rec));
        Self::finish(r)
    }

    fn add_dataset(&mut self, json: RStr<'_>) -> RResult<(), RString> {
        let r = self
            .parse("dataset", json)
            .and_then(|rec| self.sink.add_dataset(rec));
        Self::finish(r)
    }

    fn add_preprocessor(
        &mut self,
        json: RStr<'_>,
        imp: FfiPreprocessorBox,
    ) -> RResult<(), RString> {
        let handle = PreprocessorHandle::new(imp, &self.plugin);
        let r = self
            .parse("preprocessor", json)
            .and_then(|rec| self.sink.add_preprocessor(rec, handle));
        Self::finish(r)
    }

    fn add_model_family(
        &mut self,
        json: RStr<'_>,
        imp: ROption<FfiModelFamilyBox>,
    ) -> RResult<(), RString> {
        let handle = imp.into_option().map(ModelFamilyHandle::new);
        let r = self
            .parse("model family", json)
            .and_then(|rec| self.sink.add_model_family(rec, handle));
        Self::finish(r)
    }

    fn add_tuner(&mut self, json: RStr<'_>, imp: FfiTunerBox) -> RResult<(), RString> {
        let handle = TunerHandle::new(imp);
        let r = self
            .parse("tuner", json)
            .and_then(|rec| self.sink.add_tuner(rec, handle));
        Self::finish(r)
    }

    fn add_quantizer(&mut self, json: RStr<'_>, imp: FfiQuantizerBox) -> RResult<(), RString> {
        let handle = QuantizerHandle::new(imp);
        let r = self
            .parse("quantizer", json)
            .and_then(|rec| self.sink.add_quantizer(rec, handle));
        Self::finish(r)
    }

    fn add_backend(&mut self, json: RStr<'_>, imp: FfiBackendBox) -> RResult<(), RString> {
        let handle = BackendHandle::new(imp);
        let r = self
            .parse("backend", json)
            .and_then(|rec| self.sink.add_backend(rec, handle));
        Self::finish(r)
    }

    fn add_preference_loss(
        &mut self,
        json: RStr<'_>,
        imp: FfiPreferenceLossBox,
    ) -> RResult<(), RString> {
        let handle = PreferenceLossHandle::new(imp);
        let r = self
            .parse("preference loss", json)
            .and_then(|rec| self.sink.add_preference_loss(rec, handle));
        Self::finish(r)
    }

    fn add_optimizer(
        &mut self,
        json: RStr<'_>,
        imp: crate::optimizer::FfiOptimizerKindBox,
    ) -> RResult<(), RString> {
        let handle = crate::optimizer::OptimizerKindHandle::new(imp);
        let r = self
            .parse("optimizer", json)
            .and_then(|rec| self.sink.add_optimizer(rec, handle));
        Self::finish(r)
    }
    fn add_benchmark(&mut self, json: RStr<'_>) -> RResult<(), RString> {
        let r = self
            .parse("benchmark", json)
            .and_then(|rec| self.sink.add_benchmark(rec));
        Self::finish(r)
    }

    fn add_quant_method(
        &mut self,
        json: RStr<'_>,
        imp: crate::quantizer::FfiQuantMethodBox,
    ) -> RResult<(), RString> {
        let handle = QuantizerHandle::with_math(imp);
        let r = self
            .parse("quantizer", json)
            .and_then(|rec| self.sink.add_quantizer(rec, handle));
        Self::finish(r)
    }
}
