//! Registering behaviour that handles tensors: [`TensorRegistrar`] adds `model_family`,
//! `preference_loss`, `adapter_tuner`, `optimizer` and `quant_method` to swift-plugin-api's [`Registrar`] (in the prelude).

use abi_stable::std_types::{ROption, RResult, RString};
use swift_plugin_api::{
    ModelFamilyRecord, OptimizerRecord, PluginError, PreferenceLossRecord, QuantizerRecord,
    Registrar, TunerRecord,
};

use crate::family::{model_family_to_ffi, ModelFamily};
use crate::optimizer::{optimizer_kind_to_ffi, OptimizerKind};
use crate::preference::{preference_loss_to_ffi, PreferenceLoss};
use crate::quantizer::{quant_method_to_ffi, QuantMethod};
use crate::tuner::{adapter_tuner_to_ffi, AdapterTuner};

fn to_json<R: serde::Serialize>(record: &R) -> Result<String, PluginError> {
    serde_json::to_string(record)
        .map_err(|e| PluginError(format!("record is not serialisable: {e}")))
}

fn ffi_result(r: RResult<(), RString>) -> Result<(), PluginError> {
    r.into_result().map_err(|e| PluginError(e.into_string()))
}

/// The registrations of behaviour that handles tensors.
pub trait TensorRegistrar {
    /// Registers a model family with its own behaviour.
    fn model_family(
        &mut self,
        record: ModelFamilyRecord,
        imp: impl ModelFamily,
    ) -> Result<(), PluginError>;

    /// Registers a preference loss.
    fn preference_loss(
        &mut self,
        record: PreferenceLossRecord,
        imp: impl PreferenceLoss,
    ) -> Result<(), PluginError>;

    /// Registers a tuner with its own math (its record's `peft_type` says which checkpoints
    /// it reads).
    fn adapter_tuner(
        &mut self,
        record: TunerRecord,
        imp: impl AdapterTuner,
    ) -> Result<(), PluginError>;

    /// Registers an optimizer (`--optimizer NAME`).
    fn optimizer(
        &mut self,
        record: OptimizerRecord,
        imp: impl OptimizerKind,
    ) -> Result<(), PluginError>;

    /// Registers a quantizer with its math (`--quant_method NAME`, and folders whose
    /// `quantization_config.quant_method` is NAME).
    fn quant_method(
        &mut self,
        record: QuantizerRecord,
        imp: impl QuantMethod,
    ) -> Result<(), PluginError>;
}

impl TensorRegistrar for Registrar<'_> {
    fn model_family(
        &mut self,
        record: ModelFamilyRecord,
        imp: impl ModelFamily,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        let imp = ROption::RSome(model_family_to_ffi(imp));
        ffi_result(self.ffi().add_model_family(json.as_str().into(), imp))
    }

    fn preference_loss(
        &mut self,
        record: PreferenceLossRecord,
        imp: impl PreferenceLoss,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi()
                .add_preference_loss(json.as_str().into(), preference_loss_to_ffi(imp)),
        )
    }

    fn adapter_tuner(
        &mut self,
        record: TunerRecord,
        imp: impl AdapterTuner,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi()
                .add_tuner(json.as_str().into(), adapter_tuner_to_ffi(imp)),
        )
    }

    fn optimizer(
        &mut self,
        record: OptimizerRecord,
        imp: impl OptimizerKind,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi()
                .add_optimizer(json.as_str().into(), optimizer_kind_to_ffi(imp)),
        )
    }

    fn quant_method(
        &mut self,
        record: QuantizerRecord,
        imp: impl QuantMethod,
    ) -> Result<(), PluginError> {
        let json = to_json(&record)?;
        ffi_result(
            self.ffi()
                .add_quant_method(json.as_str().into(), quant_method_to_ffi(imp)),
        )
    }
}
