//! Tuners with their own math, tch side (ARCHITECTURE.md §3.6; the declarations are
//! swift-plugin-api's `tuner` module): the [`AdapterTuner`] and [`Adapter`] traits plugin authors
//! implement, their adapters across the boundary (catching panics), and [`AdapterHandleExt`],
//! the host's calls on swift-plugin-api's `AdapterHandle`.
//!
//! A plugin registers `r.adapter_tuner(record, MyTuner)` ([`crate::TensorRegistrar`]);
//! `MyTuner::attach` answers the host's [`AttachRequest`] with an [`Adapter`], whose
//! [`Adapter::plan`] declares its tensors. The host creates them, calls `init` for those declared
//! `Init::Plugin`, and then `forward` on every call of a targeted slot while the adapters are on.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use swift_plugin_api::abi::{FfiTuner, FfiTunerBox, FfiTuner_TO};
use swift_plugin_api::behaviour::{guard, into_result};
use swift_plugin_api::Tuner;
use tch::Tensor;

pub use swift_plugin_api::tuner::*;

use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};

/// A tuner with its own math: the slot choice ([`Tuner::targets`]) and the adapter it attaches.
pub trait AdapterTuner: Tuner {
    /// Answers the host's request (train: fresh tensors from `options`; load: a checkpoint's
    /// `adapter_config.json` and stored tensor shapes, which the adapter checks, refusing a
    /// mismatch with a message naming the files).
    fn attach(&self, request: &AttachRequest) -> Result<Box<dyn Adapter>, String>;
}

/// One slot's forward call, plugin side (see `FfiSlotCall`).
pub struct SlotCall<'a> {
    /// The slot's index in the plan.
    pub slot: usize,
    pub x: &'a Tensor,
    /// The base slot's output (with its bias).
    pub base: Tensor,
    /// The slot's tensors, in the plan's order.
    pub tensors: &'a [Tensor],
    pub shared: &'a [Tensor],
    /// The base weight `[out, in]` and bias, when the plan says `needs_base_weight`.
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    /// Training (dropout on) or not.
    pub training: bool,
}

/// What a checkpoint stores: tensors by full name and `adapter_config.json`'s adapter fields
/// (`peft_type`, `r`, `target_modules`, ...; the host adds `base_model_name_or_path`,
/// `task_type`, `modules_to_save` and `inference_mode`).
pub struct Saved {
    pub tensors: Vec<(String, Tensor)>,
    pub config: serde_json::Value,
}

/// One attached adapter. Tensors come in the plan's order (`tensors[i]` are slot `i`'s).
pub trait Adapter: Send + Sync + 'static {
    /// What it holds and needs (asked once, right after `attach`).
    fn plan(&self) -> AdapterPlan;
    /// The tensors declared `Init::Plugin` of slot `slot` from its base weight (and a new base
    /// weight when the method changes it), or of the shared tensors (`slot` None).
    fn init(
        &self,
        _slot: Option<usize>,
        _weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String> {
        Err("this adapter declares no tensors it initialises itself".into())
    }
    /// The slot's adapted output.
    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String>;
    /// The checkpoint's tensors and config ([`keyed`] gives the declared keys).
    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String>;
    /// The base weight `[out, in]` with slot `slot`'s adapter folded in (same dtype).
    fn merge(
        &self,
        _slot: usize,
        _weight: &Tensor,
        _tensors: &[Tensor],
        _shared: &[Tensor],
    ) -> Result<Tensor, String> {
        Err("this adapter cannot be merged into the base weights".into())
    }
    /// A loss term added to the step's loss (the plan says `extra_loss`).
    fn extra_loss(
        &self,
        _tensors: &[Vec<Tensor>],
        _shared: &[Tensor],
        _step: u64,
        _total_steps: u64,
    ) -> Result<Option<Tensor>, String> {
        Ok(None)
    }
    /// Once per optimiser step (the plan says `after_backward`), after the update and before
    /// the gradients are cleared: gradients are the tensors' `grad()` (clipped); tensors may be
    /// changed in place under `no_grad`.
    fn after_backward(
        &self,
        _tensors: &[Vec<Tensor>],
        _shared: &[Tensor],
        _step: u64,
        _total_steps: u64,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// The declared tensors under their checkpoint names: `base_model.model.<slot>.<key>` for slot
/// tensors, `<key>` itself for shared ones; tensors without a key are skipped.
pub fn keyed(
    plan: &AdapterPlan,
    tensors: &[Vec<Tensor>],
    shared: &[Tensor],
) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (sp, ts) in plan.slots.iter().zip(tensors) {
        for (d, t) in sp.tensors.iter().zip(ts) {
            if let Some(k) = &d.key {
                out.push((format!("base_model.model.{}.{k}", sp.slot), t.detach()));
            }
        }
    }
    for (d, t) in plan.shared.iter().zip(shared) {
        if let Some(k) = &d.key {
            out.push((k.clone(), t.detach()));
        }
    }
    out
}

fn refs(ts: &[Tensor]) -> Vec<TensorRef<'_>> {
    ts.iter().map(TensorRef::new).collect()
}

fn clones(ts: RSlice<'_, TensorRef<'_>>) -> Vec<Tensor> {
    ts.iter().map(|t| t.shallow_clone()).collect()
}

/// Plugin side: an adapter behind the FFI, with its plan's tensor counts per slot.
struct AdapterGlue {
    inner: Box<dyn Adapter>,
    counts: Vec<usize>,
}

impl AdapterGlue {
    fn grouped(&self, flat: RSlice<'_, TensorRef<'_>>) -> Result<Vec<Vec<Tensor>>, String> {
        let total: usize = self.counts.iter().sum();
        if flat.len() != total {
            return Err(format!(
                "the host passed {} tensors, the plan declares {total}",
                flat.len()
            ));
        }
        let mut out = Vec::with_capacity(self.counts.len());
        let mut at = 0;
        for &n in &self.counts {
            out.push(flat[at..at + n].iter().map(|t| t.shallow_clone()).collect());
            at += n;
        }
        Ok(out)
    }
}

impl FfiAdapter for AdapterGlue {
    fn plan(&self) -> RResult<RString, RString> {
        guard("adapter plan", || {
            serde_json::to_string(&self.inner.plan())
                .map(RString::from)
                .map_err(|e| format!("the plan is not serialisable: {e}"))
        })
    }

    fn init(
        &self,
        slot: ROption<u32>,
        weight: ROption<TensorRef<'_>>,
    ) -> RResult<FfiInit, RString> {
        guard("adapter init", || {
            let w = weight.into_option().map(|w| w.shallow_clone());
            let (ts, nw) = self
                .inner
                .init(slot.into_option().map(|s| s as usize), w.as_ref())?;
            Ok(FfiInit {
                tensors: ts.into_iter().map(OwnedTensor::new).collect(),
                weight: nw.map(OwnedTensor::new).into(),
            })
        })
    }

    fn forward(&self, call: FfiSlotCall<'_>) -> RResult<OwnedTensor, RString> {
        guard("adapter forward", || {
            let x = call.x.shallow_clone();
            let tensors = clones(call.tensors);
            let shared = clones(call.shared);
            let weight = call.weight.into_option().map(|w| w.shallow_clone());
            let bias = call.bias.into_option().map(|b| b.shallow_clone());
            self.inner
                .forward(SlotCall {
                    slot: call.slot as usize,
                    x: &x,
                    base: call.base.shallow_clone(),
                    tensors: &tensors,
                    shared: &shared,
                    weight: weight.as_ref(),
                    bias: bias.as_ref(),
                    training: call.training,
                })
                .map(OwnedTensor::new)
        })
    }

    fn save(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<FfiSaved, RString> {
        guard("adapter save", || {
            let grouped = self.grouped(tensors)?;
            let saved = self.inner.save(&grouped, &clones(shared))?;
            let (names, ts): (Vec<String>, Vec<Tensor>) = saved.tensors.into_iter().unzip();
            Ok(FfiSaved {
                names: names.into_iter().map(RString::from).collect(),
                tensors: ts.into_iter().map(OwnedTensor::new).collect(),
                config_json: saved.config.to_string().into(),
            })
        })
    }

    fn merge(
        &self,
        slot: u32,
        weight: TensorRef<'_>,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<OwnedTensor, RString> {
        guard("adapter merge", || {
            self.inner
                .merge(
                    slot as usize,
                    &weight.shallow_clone(),
                    &clones(tensors),
                    &clones(shared),
                )
                .map(OwnedTensor::new)
        })
    }

    fn extra_loss(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
        step: u64,
        total_steps: u64,
    ) -> RResult<ROption<OwnedTensor>, RString> {
        guard("adapter extra loss", || {
            let grouped = self.grouped(tensors)?;
            let l = self
                .inner
                .extra_loss(&grouped, &clones(shared), step, total_steps)?;
            Ok(l.map(OwnedTensor::new).into())
        })
    }

    fn after_backward(
        &self,
        tensors: RSlice<'_, TensorRef<'_>>,
        shared: RSlice<'_, TensorRef<'_>>,
        step: u64,
        total_steps: u64,
    ) -> RResult<(), RString> {
        guard("adapter after_backward", || {
            let grouped = self.grouped(tensors)?;
            self.inner
                .after_backward(&grouped, &clones(shared), step, total_steps)
        })
    }
}

/// Plugin side: a tuner with math behind the FFI.
struct AdapterTunerGlue<T>(T);

impl<T: AdapterTuner> FfiTuner for AdapterTunerGlue<T> {
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

    fn has_adapter(&self) -> bool {
        true
    }

    fn attach(&self, request_json: RStr<'_>) -> RResult<FfiAdapterBox, RString> {
        guard("tuner attach", || {
            let request: AttachRequest = serde_json::from_str(request_json.as_str())
                .map_err(|e| format!("the attach request is not valid: {e}"))?;
            let inner = self.0.attach(&request)?;
            let counts = inner.plan().slots.iter().map(|s| s.tensors.len()).collect();
            Ok(FfiAdapter_TO::from_value(
                AdapterGlue { inner, counts },
                TD_Opaque,
            ))
        })
    }
}

pub(crate) fn adapter_tuner_to_ffi<T: AdapterTuner>(t: T) -> FfiTunerBox {
    FfiTuner_TO::from_value(AdapterTunerGlue(t), TD_Opaque)
}

/// One slot's forward call, host side: tensors as the host holds them.
pub struct HostSlotCall<'a> {
    pub slot: usize,
    pub x: &'a Tensor,
    pub base: &'a Tensor,
    pub tensors: &'a [Tensor],
    pub shared: &'a [Tensor],
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub training: bool,
}

/// The host's calls on an attached adapter (swift-plugin-api's [`AdapterHandle`]).
pub trait AdapterHandleExt {
    fn init(
        &self,
        slot: Option<usize>,
        weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String>;
    fn forward(&self, call: &HostSlotCall<'_>) -> Result<Tensor, String>;
    /// `tensors` flattened in the plan's order.
    fn save(&self, tensors: &[Tensor], shared: &[Tensor]) -> Result<Saved, String>;
    fn merge(
        &self,
        slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        shared: &[Tensor],
    ) -> Result<Tensor, String>;
    fn extra_loss(
        &self,
        tensors: &[Tensor],
        shared: &[Tensor],
        step: u64,
        total_steps: u64,
    ) -> Result<Option<Tensor>, String>;
    fn after_backward(
        &self,
        tensors: &[Tensor],
        shared: &[Tensor],
        step: u64,
        total_steps: u64,
    ) -> Result<(), String>;
}

fn slot_u32(slot: usize) -> Result<u32, String> {
    u32::try_from(slot).map_err(|_| format!("slot index {slot} out of range"))
}

impl AdapterHandleExt for AdapterHandle {
    fn init(
        &self,
        slot: Option<usize>,
        weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String> {
        let slot = slot.map(slot_u32).transpose()?;
        let out = into_result(
            self.ffi()
                .init(slot.into(), weight.map(TensorRef::new).into()),
        )?;
        Ok((
            out.tensors
                .into_iter()
                .map(OwnedTensor::into_tensor)
                .collect(),
            out.weight.into_option().map(OwnedTensor::into_tensor),
        ))
    }

    fn forward(&self, call: &HostSlotCall<'_>) -> Result<Tensor, String> {
        let (tensors, shared) = (refs(call.tensors), refs(call.shared));
        let ffi = FfiSlotCall {
            slot: slot_u32(call.slot)?,
            x: TensorRef::new(call.x),
            base: TensorRef::new(call.base),
            tensors: RSlice::from_slice(&tensors),
            shared: RSlice::from_slice(&shared),
            weight: call.weight.map(TensorRef::new).into(),
            bias: call.bias.map(TensorRef::new).into(),
            training: call.training,
        };
        into_result(self.ffi().forward(ffi)).map(OwnedTensor::into_tensor)
    }

    fn save(&self, tensors: &[Tensor], shared: &[Tensor]) -> Result<Saved, String> {
        let (t, s) = (refs(tensors), refs(shared));
        let out = into_result(
            self.ffi()
                .save(RSlice::from_slice(&t), RSlice::from_slice(&s)),
        )?;
        let config = serde_json::from_str(out.config_json.as_str())
            .map_err(|e| format!("the adapter's config is not JSON: {e}"))?;
        Ok(Saved {
            tensors: out
                .names
                .into_iter()
                .map(RString::into_string)
                .zip(out.tensors.into_iter().map(OwnedTensor::into_tensor))
                .collect(),
            config,
        })
    }

    fn merge(
        &self,
        slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        shared: &[Tensor],
    ) -> Result<Tensor, String> {
        let (t, s) = (refs(tensors), refs(shared));
        into_result(self.ffi().merge(
            slot_u32(slot)?,
            TensorRef::new(weight),
            RSlice::from_slice(&t),
            RSlice::from_slice(&s),
        ))
        .map(OwnedTensor::into_tensor)
    }

    fn extra_loss(
        &self,
        tensors: &[Tensor],
        shared: &[Tensor],
        step: u64,
        total_steps: u64,
    ) -> Result<Option<Tensor>, String> {
        let (t, s) = (refs(tensors), refs(shared));
        into_result(self.ffi().extra_loss(
            RSlice::from_slice(&t),
            RSlice::from_slice(&s),
            step,
            total_steps,
        ))
        .map(|o| o.into_option().map(OwnedTensor::into_tensor))
    }

    fn after_backward(
        &self,
        tensors: &[Tensor],
        shared: &[Tensor],
        step: u64,
        total_steps: u64,
    ) -> Result<(), String> {
        let (t, s) = (refs(tensors), refs(shared));
        into_result(self.ffi().after_backward(
            RSlice::from_slice(&t),
            RSlice::from_slice(&s),
            step,
            total_steps,
        ))
    }
}
