//! A second [`LoadedModel`] over the same parameters ([`LoadedModel::share`]): what benchmarks
//! during training generate with. Its tensors are shallow copies (the same storage, so the
//! trained values as they are when it is made), its slots carry the same hooks (a tuner's
//! adapters, on or off as the original's switches say) and quantized weights; the family
//! instance is a new one of the same family. It holds no training-pass attention.

use std::collections::HashMap;

use swift_plugin_tensors::ModelHandle;

use crate::{LoadedModel, ModelError, SlotState};

impl LoadedModel {
    /// This model's parameters and slots under `model`, a fresh instance of its family made
    /// from the same config (its layout must be this model's).
    pub fn share(&self, model: ModelHandle) -> Result<LoadedModel, ModelError> {
        let layout = model.layout().map_err(ModelError::Family)?;
        if layout != self.layout {
            return Err(ModelError::Family(
                "the instance given to share the parameters declares another layout than the model's"
                    .into(),
            ));
        }
        let slots: HashMap<String, SlotState> = self
            .slots
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    SlotState {
                        kind: s.kind,
                        weight: s.weight.shallow_clone(),
                        bias: s.bias.as_ref().map(|b| b.shallow_clone()),
                        hooks: s.hooks.clone(),
                        quantized: s.quantized.clone(),
                    },
                )
            })
            .collect();
        let params = self
            .params
            .iter()
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        Ok(LoadedModel {
            model,
            layout,
            slots,
            params,
            _keep: self._keep.clone(),
            device: self.device,
            kind: self.kind,
            training_attention: None,
            fused: Default::default(),
        })
    }
}
