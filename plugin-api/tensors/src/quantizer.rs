//! Quantizers with their own math, tch side (ARCHITECTURE.md §3.10; the declarations are
//! swift-plugin-api's `quantizer` module): the [`QuantMethod`], [`QuantScheme`] and
//! [`PackedSlot`] traits plugin authors implement, their glue across the boundary (catching
//! panics), and the host's calls ([`SchemeHandleExt`], [`PackedSlotHandle`]).
//!
//! A plugin registers `r.quant_method(record, MyQuantizer)` ([`crate::TensorRegistrar`]);
//! `MyQuantizer::scheme` answers the host's [`SchemeRequest`] (quantize at some bits with the
//! user's options, or load a folder's `quantization_config`) with a [`QuantScheme`], whose
//! [`SchemePlan`] says which calibration statistics it wants and what `quantization_config`
//! records. `quantize` turns one float weight into a [`PackedSlot`], `load` turns a slot's
//! stored tensors back into one, and the host calls the slot's `forward` on every pass.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString},
};
use swift_plugin_api::behaviour::{guard, into_result};
use swift_plugin_api::Quantizer;
use tch::Tensor;

pub use swift_plugin_api::quantizer::*;

use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};

/// A quantizer with its own math: the bit-width check ([`Quantizer::check_bits`]) and the
/// schemes it configures.
pub trait QuantMethod: Quantizer {
    /// A scheme for `request` (refusing, by name, an option it cannot honour, and on load a
    /// `quantization_config` it cannot read, naming `request.config_file`).
    fn scheme(&self, request: &SchemeRequest) -> Result<Box<dyn QuantScheme>, String>;
}

/// One slot's weight and statistics, plugin side (see `FfiQuantizeCall`).
pub struct QuantizeCall<'a> {
    pub slot: &'a str,
    /// The float `[out, in]` weight.
    pub weight: &'a Tensor,
    /// GPTQ: `2XᵀX/n` `[in, in]`.
    pub hessian: Option<&'a Tensor>,
    /// AWQ: mean `|x|` per input channel `[in]`.
    pub act_mean: Option<&'a Tensor>,
    /// AWQ: sample input rows `[rows, in]`.
    pub act_rows: Option<&'a Tensor>,
}

/// A configured quantizer.
pub trait QuantScheme: Send + Sync + 'static {
    /// What it needs and records (asked once).
    fn plan(&self) -> SchemePlan;
    /// Quantizes one slot's weight.
    fn quantize(&self, call: QuantizeCall<'_>) -> Result<Box<dyn PackedSlot>, String>;
    /// One slot from its stored tensors (`tensors`: names without the weight's stem) for a slot
    /// of shape `[out, in]`.
    fn load(
        &self,
        slot: &str,
        shape: [i64; 2],
        tensors: &[(String, Tensor)],
    ) -> Result<Box<dyn PackedSlot>, String>;
}

/// A packed weight in the host's affine layout (see `FfiAffineCodes`).
pub struct AffineCodes {
    /// u8 `[out, in]`.
    pub codes: Tensor,
    /// f32 `[out, ceil(in / group)]`.
    pub scales: Tensor,
    /// f32 `[out, ceil(in / group)]`.
    pub mins: Tensor,
    /// f32 `[in]`: the input is divided by it (AWQ).
    pub input_scale: Option<Tensor>,
    pub group: i64,
    pub bits: u8,
}

/// One packed linear weight. Its methods take `&self` and must not change its tensors: the
/// host calls `forward` from several threads at once.
pub trait PackedSlot: Send + 'static {
    /// `x Wᵀ + b` for `x` `[.., in]`, in `x`'s dtype. The default dequantizes and multiplies.
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        let w = self
            .dequantize()?
            .f_to_kind(x.kind())
            .map_err(|e| e.to_string())?;
        let b = match bias {
            Some(b) => Some(b.f_to_kind(x.kind()).map_err(|e| e.to_string())?),
            None => None,
        };
        x.f_linear(&w, b.as_ref()).map_err(|e| e.to_string())
    }
    /// The float32 `[out, in]` weight the slot stands for.
    fn dequantize(&self) -> Result<Tensor, String>;
    /// The tensors stored under the slot's weight stem (`qweight`, `scales`, ...).
    fn tensors(&self) -> Result<Vec<(String, Tensor)>, String>;
    /// The weight in the host's affine layout, when the format is one (the host then decodes
    /// on its integer kernels).
    fn affine_codes(&self) -> Option<AffineCodes> {
        None
    }
}

fn named(ts: Vec<(String, Tensor)>) -> FfiNamedTensors {
    let (names, tensors): (Vec<String>, Vec<Tensor>) = ts.into_iter().unzip();
    FfiNamedTensors {
        names: names.into_iter().map(RString::from).collect(),
        tensors: tensors.into_iter().map(OwnedTensor::new).collect(),
    }
}

/// Plugin side: a packed slot behind the FFI.
struct PackedGlue(Box<dyn PackedSlot>);

// SAFETY: `PackedSlot`'s contract: its methods only read its tensors, and libtorch tensors may be
// read from several threads at once (tch marks `Tensor` `Send` but not `Sync`).
unsafe impl Sync for PackedGlue {}

impl FfiPackedSlot for PackedGlue {
    fn forward(
        &self,
        x: TensorRef<'_>,
        bias: ROption<TensorRef<'_>>,
    ) -> RResult<OwnedTensor, RString> {
        guard("packed slot forward", || {
            let x = x.shallow_clone();
            let b = bias.into_option().map(|b| b.shallow_clone());
            self.0.forward(&x, b.as_ref()).map(OwnedTensor::new)
        })
    }

    fn dequantize(&self) -> RResult<OwnedTensor, RString> {
        guard("packed slot dequantize", || {
            self.0.dequantize().map(OwnedTensor::new)
        })
    }

    fn tensors(&self) -> RResult<FfiNamedTensors, RString> {
        guard("packed slot tensors", || self.0.tensors().map(named))
    }

    fn affine_codes(&self) -> RResult<ROption<FfiAffineCodes>, RString> {
        guard("packed slot affine codes", || {
            Ok(self
                .0
                .affine_codes()
                .map(|a| FfiAffineCodes {
                    codes: OwnedTensor::new(a.codes),
                    scales: OwnedTensor::new(a.scales),
                    mins: OwnedTensor::new(a.mins),
                    input_scale: a.input_scale.map(OwnedTensor::new).into(),
                    group: a.group,
                    bits: a.bits,
                })
                .into())
        })
    }
}

fn packed_to_ffi(p: Box<dyn PackedSlot>) -> FfiPackedSlotBox {
    FfiPackedSlot_TO::from_value(PackedGlue(p), TD_Opaque)
}

/// Plugin side: a scheme behind the FFI.
struct SchemeGlue(Box<dyn QuantScheme>);

impl FfiQuantScheme for SchemeGlue {
    fn plan(&self) -> RResult<RString, RString> {
        guard("quantizer plan", || {
            serde_json::to_string(&self.0.plan())
                .map(RString::from)
                .map_err(|e| format!("the plan is not serialisable: {e}"))
        })
    }

    fn quantize(&self, call: FfiQuantizeCall<'_>) -> RResult<FfiPackedSlotBox, RString> {
        guard("quantizer quantize", || {
            let w = call.weight.shallow_clone();
            let opt = |t: ROption<TensorRef<'_>>| t.into_option().map(|t| t.shallow_clone());
            let (h, m, r) = (opt(call.hessian), opt(call.act_mean), opt(call.act_rows));
            self.0
                .quantize(QuantizeCall {
                    slot: call.slot.as_str(),
                    weight: &w,
                    hessian: h.as_ref(),
                    act_mean: m.as_ref(),
                    act_rows: r.as_ref(),
                })
                .map(packed_to_ffi)
        })
    }

    fn load(
        &self,
        slot: RStr<'_>,
        shape: RSlice<'_, i64>,
        names: RSlice<'_, RString>,
        tensors: RSlice<'_, TensorRef<'_>>,
    ) -> RResult<FfiPackedSlotBox, RString> {
        guard("quantizer load", || {
            let shape = match shape.as_slice() {
                [o, i] => [*o, *i],
                other => return Err(format!("slot shape {other:?} is not [out, in]")),
            };
            if names.len() != tensors.len() {
                return Err("the host passed names and tensors of different lengths".into());
            }
            let ts: Vec<(String, Tensor)> = names
                .iter()
                .zip(tensors.iter())
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect();
            self.0.load(slot.as_str(), shape, &ts).map(packed_to_ffi)
        })
    }
}

/// Plugin side: a quantizer with math behind the FFI.
struct MethodGlue<Q>(Q);

impl<Q: QuantMethod> FfiQuantMethod for MethodGlue<Q> {
    fn check_bits(&self, bits: u8) -> RResult<(), RString> {
        guard("quantizer", || self.0.check_bits(bits))
    }

    fn scheme(&self, request_json: RStr<'_>) -> RResult<FfiQuantSchemeBox, RString> {
        guard("quantizer scheme", || {
            let request: SchemeRequest = serde_json::from_str(request_json.as_str())
                .map_err(|e| format!("the scheme request is not valid: {e}"))?;
            let inner = self.0.scheme(&request)?;
            Ok(FfiQuantScheme_TO::from_value(SchemeGlue(inner), TD_Opaque))
        })
    }
}

pub(crate) fn quant_method_to_ffi<Q: QuantMethod>(q: Q) -> FfiQuantMethodBox {
    FfiQuantMethod_TO::from_value(MethodGlue(q), TD_Opaque)
}

/// The host's handle on one packed slot.
pub struct PackedSlotHandle {
    inner: FfiPackedSlotBox,
}

impl PackedSlotHandle {
    /// `x Wᵀ + b`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        into_result(
            self.inner
                .forward(TensorRef::new(x), bias.map(TensorRef::new).into()),
        )
        .map(OwnedTensor::into_tensor)
    }

    /// The float32 `[out, in]` weight.
    pub fn dequantize(&self) -> Result<Tensor, String> {
        into_result(self.inner.dequantize()).map(OwnedTensor::into_tensor)
    }

    /// The stored tensors, by name under the weight's stem.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>, String> {
        let n = into_result(self.inner.tensors())?;
        Ok(n.names
            .into_iter()
            .map(RString::into_string)
            .zip(n.tensors.into_iter().map(OwnedTensor::into_tensor))
            .collect())
    }

    /// The weight in the host's affine layout, when the format is one.
    pub fn affine_codes(&self) -> Result<Option<AffineCodes>, String> {
        Ok(into_result(self.inner.affine_codes())?
            .into_option()
            .map(|a| AffineCodes {
                codes: a.codes.into_tensor(),
                scales: a.scales.into_tensor(),
                mins: a.mins.into_tensor(),
                input_scale: a.input_scale.into_option().map(OwnedTensor::into_tensor),
                group: a.group,
                bits: a.bits,
            }))
    }
}

/// The host's calls on a configured scheme (swift-plugin-api's [`SchemeHandle`]).
pub trait SchemeHandleExt {
    /// Quantizes one slot's weight (with the statistics its plan asked for).
    fn quantize(&self, call: &QuantizeCall<'_>) -> Result<PackedSlotHandle, String>;
    /// One slot from its stored tensors (names without the stem).
    fn load(
        &self,
        slot: &str,
        shape: [i64; 2],
        tensors: &[(String, Tensor)],
    ) -> Result<PackedSlotHandle, String>;
}

impl SchemeHandleExt for SchemeHandle {
    fn quantize(&self, call: &QuantizeCall<'_>) -> Result<PackedSlotHandle, String> {
        fn opt(t: Option<&Tensor>) -> ROption<TensorRef<'_>> {
            t.map(TensorRef::new).into()
        }
        let ffi = FfiQuantizeCall {
            slot: RStr::from(call.slot),
            weight: TensorRef::new(call.weight),
            hessian: opt(call.hessian),
            act_mean: opt(call.act_mean),
            act_rows: opt(call.act_rows),
        };
        into_result(self.ffi().quantize(ffi)).map(|inner| PackedSlotHandle { inner })
    }

    fn load(
        &self,
        slot: &str,
        shape: [i64; 2],
        tensors: &[(String, Tensor)],
    ) -> Result<PackedSlotHandle, String> {
        let names: Vec<RString> = tensors
            .iter()
            .map(|(n, _)| RString::from(n.as_str()))
            .collect();
        let refs: Vec<TensorRef<'_>> = tensors.iter().map(|(_, t)| TensorRef::new(t)).collect();
        into_result(self.ffi().load(
            RStr::from(slot),
            RSlice::from_slice(&shape),
            RSlice::from_slice(&names),
            RSlice::from_slice(&refs),
        ))
        .map(|inner| PackedSlotHandle { inner })
    }
}
