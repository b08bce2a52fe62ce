//! Optimizers, tch side (ARCHITECTURE.md §3.8; the declarations are swift-plugin-api's
//! `optimizer` module): the [`OptimizerKind`] and [`Optimizer`] traits plugin authors implement,
//! their adapters across the boundary (catching panics), and [`OptimizerHandleExt`], the host's
//! tensor calls on swift-plugin-api's `OptimizerHandle`.
//!
//! A plugin registers `r.optimizer(record, MyKind)` ([`crate::TensorRegistrar`]); the host asks
//! `MyKind::create` for one [`Optimizer`] per run, over the trainable tensors' names and shapes,
//! and calls its `step` once per optimiser step with the tensors (carrying `grad()`) and one
//! learning rate per tensor.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use swift_plugin_api::behaviour::{guard, into_result};
use tch::Tensor;

pub use swift_plugin_api::optimizer::*;

use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};

/// A registered optimizer: creates one [`Optimizer`] per run.
pub trait OptimizerKind: Send + Sync + 'static {
    /// An optimizer over `request.tensors` with `request.options` (every option of the record,
    /// by name). Refuse options out of range here, naming them.
    fn create(&self, request: &OptimizerRequest) -> Result<Box<dyn Optimizer>, String>;
}

/// One optimizer over a run's tensors (always passed in the request's order).
pub trait Optimizer: Send + 'static {
    /// One line for logs.
    fn summary(&self) -> String;
    /// One update under `no_grad`: `tensors[i]` in place from its `grad()` at learning rate
    /// `lrs[i]`. Leave a tensor without a gradient, or that does not require one, untouched.
    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String>;
    /// Clears the state.
    fn reset(&mut self) -> Result<(), String>;
    /// The state as named tensors.
    fn state(&self) -> Result<Vec<(String, Tensor)>, String>;
    /// Restores what `state` returned; refuse a missing name or a wrong shape, naming it.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String>;
}

mod glue {
    use super::*;

    struct KindGlue<K>(K);

    impl<K: OptimizerKind> FfiOptimizerKind for KindGlue<K> {
        fn create(&self, request_json: RStr<'_>) -> RResult<FfiOptimizerBox, RString> {
            guard("optimizer create", || {
                let request: OptimizerRequest = serde_json::from_str(request_json.as_str())
                    .map_err(|e| format!("the optimizer request is not valid: {e}"))?;
                let inner = self.0.create(&request)?;
                Ok(FfiOptimizer_TO::from_value(
                    OptimizerGlue {
                        inner,
                        n: request.tensors.len(),
                    },
                    TD_Opaque,
                ))
            })
        }
    }

    struct OptimizerGlue {
        inner: Box<dyn Optimizer>,
        n: usize,
    }

    impl FfiOptimizer for OptimizerGlue {
        fn summary(&self) -> RString {
            self.inner.summary().into()
        }

        fn step(
            &mut self,
            tensors: RSlice<'_, TensorRef<'_>>,
            lrs: RSlice<'_, f64>,
        ) -> RResult<(), RString> {
            let n = self.n;
            let inner = &mut self.inner;
            guard("optimizer step", || {
                if tensors.len() != n || lrs.len() != n {
                    return Err(format!(
                        "the host passed {} tensors and {} learning rates; the optimizer was created over {n}",
                        tensors.len(),
                        lrs.len()
                    ));
                }
                let ts: Vec<Tensor> = tensors.iter().map(|t| t.shallow_clone()).collect();
                let _g = tch::no_grad_guard();
                inner.step(&ts, lrs.as_slice())
            })
        }

        fn reset(&mut self) -> RResult<(), RString> {
            let inner = &mut self.inner;
            guard("optimizer reset", || inner.reset())
        }

        fn state(&self) -> RResult<FfiNamedTensors, RString> {
            guard("optimizer state", || {
                let (names, tensors): (RVec<RString>, RVec<OwnedTensor>) = self
                    .inner
                    .state()?
                    .into_iter()
                    .map(|(n, t)| (RString::from(n), OwnedTensor::new(t)))
                    .unzip();
                Ok(FfiNamedTensors { names, tensors })
            })
        }

        fn load_state(
            &mut self,
            names: RSlice<'_, RString>,
            tensors: RSlice<'_, TensorRef<'_>>,
        ) -> RResult<(), RString> {
            let inner = &mut self.inner;
            guard("optimizer load_state", || {
                if names.len() != tensors.len() {
                    return Err("names and tensors differ in number".into());
                }
                let state: Vec<(String, Tensor)> = names
                    .iter()
                    .zip(tensors.iter())
                    .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                    .collect();
                let _g = tch::no_grad_guard();
                inner.load_state(&state)
            })
        }
    }

    pub(crate) fn to_ffi<K: OptimizerKind>(k: K) -> FfiOptimizerKindBox {
        FfiOptimizerKind_TO::from_value(KindGlue(k), TD_Opaque)
    }
}

pub(crate) fn optimizer_kind_to_ffi<K: OptimizerKind>(k: K) -> FfiOptimizerKindBox {
    glue::to_ffi(k)
}

/// A handle on an optimizer kind of this process, through the same FFI objects as a registered
/// one (for tests and tools that do not load the registries).
pub fn local_kind<K: OptimizerKind>(k: K) -> OptimizerKindHandle {
    OptimizerKindHandle::new(glue::to_ffi(k))
}

/// The host's tensor calls on a created optimizer.
pub trait OptimizerHandleExt {
    /// See [`Optimizer::step`].
    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String>;
    /// See [`Optimizer::state`].
    fn state(&mut self) -> Result<Vec<(String, Tensor)>, String>;
    /// See [`Optimizer::load_state`].
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String>;
}

impl OptimizerHandleExt for OptimizerHandle {
    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String> {
        let refs: Vec<TensorRef<'_>> = tensors.iter().map(TensorRef::new).collect();
        into_result(
            self.ffi()
                .step(RSlice::from_slice(&refs), RSlice::from_slice(lrs)),
        )
    }

    fn state(&mut self) -> Result<Vec<(String, Tensor)>, String> {
        let s = into_result(self.ffi().state())?;
        Ok(s.names
            .into_iter()
            .map(RString::into_string)
            .zip(s.tensors.into_iter().map(OwnedTensor::into_tensor))
            .collect())
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String> {
        let names: Vec<RString> = state
            .iter()
            .map(|(n, _)| RString::from(n.as_str()))
            .collect();
        let refs: Vec<TensorRef<'_>> = state.iter().map(|(_, t)| TensorRef::new(t)).collect();
        into_result(
            self.ffi()
                .load_state(RSlice::from_slice(&names), RSlice::from_slice(&refs)),
        )
    }
}

/// Helpers shared by optimizer implementations.
pub mod util {
    use tch::Tensor;

    /// Copies `src` into `dst` (same shape, converted to `dst`'s kind and device), or says which
    /// state entry differs.
    pub fn restore_into(dst: &mut Tensor, src: &Tensor, name: &str) -> Result<(), String> {
        if src.size() != dst.size() {
            return Err(format!(
                "the checkpoint's optimizer state `{name}` is {:?}, this run's is {:?} (was it saved by a run with the same model, tuner and optimizer settings?)",
                src.size(),
                dst.size()
            ));
        }
        let src = src
            .f_to_kind(dst.kind())
            .and_then(|s| s.f_to_device(dst.device()))
            .map_err(|e| e.to_string())?;
        dst.f_copy_(&src).map_err(|e| e.to_string())
    }

    /// The entry `name` of a state list, or an error naming it.
    pub fn find<'a>(state: &'a [(String, Tensor)], name: &str) -> Result<&'a Tensor, String> {
        state
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                format!(
                    "the checkpoint's optimizer state has no `{name}` (was it saved by a run with the same model, tuner and optimizer?)"
                )
            })
    }
}
