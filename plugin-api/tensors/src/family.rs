//! Model families with their own forward pass: the [`ModelFamily`] trait plugin authors
//! implement, the adapters that expose it (and the host's context) across the boundary, catching
//! panics, and [`ModelHandleExt`], the host's `forward` on swift-plugin-api's `ModelHandle`.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString},
};
use swift_plugin_api::abi::FfiModelFamilyBox;
use swift_plugin_api::behaviour::{guard, into_result};
use swift_plugin_api::ModelHandle;

use crate::model::{ForwardPart, ModelContext};

/// A model architecture: turns a `config.json` into a [`crate::model::Model`] whose `forward`
/// runs through the host's context (DESIGN.md §4). A plugin without tensors can still register
/// declarative families (`Registrar::model_family_alias`).
pub trait ModelFamily: Send + Sync + 'static {
    /// Parses the configuration (refusing what the family cannot run, with the reason).
    fn instantiate(
        &self,
        config: &serde_json::Value,
    ) -> Result<Box<dyn crate::model::Model>, String>;
}

mod model_adapters {
    use super::*;
    use crate::abi::{
        FfiModel, FfiModelBox, FfiModelContext, FfiModelContextMut, FfiModelFamily, FfiModel_TO,
    };
    use crate::model::{ForwardPart, Model, ModelContext, NormKind};
    use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};
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
                    ForwardPart::Images => self.0.encode_images(&mut ctx, &x, &pos),
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
        fn full_attention(
            &mut self,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            runs: &[i64],
            scale: Option<f64>,
        ) -> Result<Tensor, String> {
            let (q, k, v) = (TensorRef::new(q), TensorRef::new(k), TensorRef::new(v));
            back(
                self.0
                    .full_attention(q, k, v, runs.to_vec().into(), scale.unwrap_or(0.0)),
            )
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
        fn full_attention(
            &mut self,
            q: TensorRef<'_>,
            k: TensorRef<'_>,
            v: TensorRef<'_>,
            runs: abi_stable::std_types::RVec<i64>,
            scale: f64,
        ) -> RResult<OwnedTensor, RString> {
            guard("full attention", || {
                let scale = (scale > 0.0).then_some(scale);
                let (q, k, v) = (q.shallow_clone(), k.shallow_clone(), v.shallow_clone());
                self.0
                    .full_attention(&q, &k, &v, runs.as_slice(), scale)
                    .map(OwnedTensor::new)
            })
        }
    }
}

pub(crate) fn model_family_to_ffi<M: ModelFamily>(m: M) -> FfiModelFamilyBox {
    swift_plugin_api::abi::FfiModelFamily_TO::from_value(
        model_adapters::ModelFamilyAdapter(m),
        TD_Opaque,
    )
}

/// The host's `forward` on a model (swift-plugin-api's [`ModelHandle`] holds it without
/// libtorch).
pub trait ModelHandleExt {
    /// Runs the family's forward pass with `ctx` as the host's context.
    fn forward(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String>;

    /// Runs one piece of the forward pass cut at block boundaries: `x` is the token ids for
    /// [`ForwardPart::Embed`], the hidden states otherwise.
    fn forward_part(
        &self,
        ctx: &mut dyn ModelContext,
        part: ForwardPart,
        x: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String>;
}

impl ModelHandleExt for ModelHandle {
    fn forward(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String> {
        use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};
        use swift_plugin_api::abi::FfiModelContext_TO;
        let mut host = model_adapters::HostContext(ctx);
        let ffi = FfiModelContext_TO::from_ptr(&mut host, TD_Opaque);
        let r = self
            .ffi()
            .forward(ffi, TensorRef::new(input_ids), TensorRef::new(positions));
        into_result(r).map(OwnedTensor::into_tensor)
    }

    fn forward_part(
        &self,
        ctx: &mut dyn ModelContext,
        part: ForwardPart,
        x: &tch::Tensor,
        positions: &tch::Tensor,
    ) -> Result<tch::Tensor, String> {
        use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};
        use swift_plugin_api::abi::FfiModelContext_TO;
        let mut host = model_adapters::HostContext(ctx);
        let ffi = FfiModelContext_TO::from_ptr(&mut host, TD_Opaque);
        let (p, i) = part.to_ffi();
        let r = self
            .ffi()
            .forward_part(ffi, p, i, TensorRef::new(x), TensorRef::new(positions));
        into_result(r).map(OwnedTensor::into_tensor)
    }
}
