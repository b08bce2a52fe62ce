//! Preference losses: the [`PreferenceLoss`] trait plugin authors implement, its adapter across
//! the boundary (catching panics), and [`PreferenceLossHandleExt`], the host's `loss` on
//! swift-plugin-api's `PreferenceLossHandle`.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RString},
};
use swift_plugin_api::behaviour::{guard, into_result};
use swift_plugin_api::PreferenceLossHandle;

/// The host's `loss` on a preference loss (swift-plugin-api's [`PreferenceLossHandle`] holds it
/// without libtorch).
pub trait PreferenceLossHandleExt {
    /// Runs the loss (see [`PreferenceLoss::loss`]).
    fn loss(
        &self,
        inputs: &PreferenceInputs,
        params: &serde_json::Value,
    ) -> Result<PreferenceOutput, String>;
}

/// What a preference loss receives: per-sequence sums of the answer tokens' log-probabilities
/// (`[n]` float tensors), the policy's with their autograd graph, the reference model's detached.
///
/// Paired losses (DPO, ORPO, SimPO, CPO) get row `i` of `chosen_*` and `rejected_*` from the same
/// prompt. An unpaired loss (KTO) gets the desirable rows as `chosen_*` and the undesirable ones
/// as `rejected_*` (either may be empty), and `kl`, the detached reference point (a scalar).
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
pub trait PreferenceLoss: Send + Sync + 'static {
    fn loss(
        &self,
        inputs: &PreferenceInputs,
        params: &serde_json::Value,
    ) -> Result<PreferenceOutput, String>;
}

mod preference_adapters {
    use super::*;
    use crate::abi::{
        FfiPreferenceInputs, FfiPreferenceLoss, FfiPreferenceLossBox, FfiPreferenceLoss_TO,
        FfiPreferenceOutput,
    };
    use crate::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};

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

    impl PreferenceLossHandleExt for PreferenceLossHandle {
        fn loss(
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
            let out = into_result(self.ffi().loss(ffi, json.as_str().into()))?;
            Ok(PreferenceOutput {
                loss: out.loss.into_tensor(),
                chosen_rewards: out.chosen_rewards.into_tensor(),
                rejected_rewards: out.rejected_rewards.into_tensor(),
            })
        }
    }
}

pub(crate) fn preference_loss_to_ffi<P: PreferenceLoss>(p: P) -> crate::abi::FfiPreferenceLossBox {
    preference_adapters::to_ffi(p)
}
