//! The built-in preference losses, registered through the plugin contract (the same
//! `Registrar::preference_loss` path a third-party loss uses). Each is written once, here, as a
//! function of per-sequence log-probabilities, following TRL's definitions (the names `swift rlhf`
//! resolves: `--loss_type` for DPO, `--rlhf_type` for the others):
//!
//! * DPO (`reference`): with `z = β·((π_c − ρ_c) − (π_r − ρ_r))` (π policy, ρ reference, summed
//!   log-probabilities of the answer), `sigmoid`: `−(1−ε)·log σ(z) − ε·log σ(−z)`; `robust`:
//!   `(−(1−ε)·log σ(z) + ε·log σ(−z)) / (1 − 2ε)`; `hinge`: `relu(1 − z)`; `ipo`:
//!   `(z/β − 1/(2β))²` on log-probabilities averaged over the answer tokens. Rewards
//!   `β·(π − ρ)`. `rpo_alpha > 0` adds `rpo_alpha · NLL(chosen)`.
//! * `orpo` (reference-free, average log-probabilities `a`): `NLL(chosen) − β·log σ(log-odds)`
//!   with `log-odds = (a_c − a_r) − (log(1 − e^{a_c}) − log(1 − e^{a_r}))`; rewards `β·a`.
//! * `simpo` (average log-probabilities): the sigmoid loss of `β·(a_c − a_r) − γ`
//!   (`simpo_gamma`), plus `cpo_alpha · NLL(chosen)`; rewards `β·a`.
//! * `cpo` (summed log-probabilities): the sigmoid loss of `β·(π_c − π_r)` plus
//!   `cpo_alpha · NLL(chosen)`; rewards `β·π`.
//! * `kto` (`reference`, unpaired): desirable rows `1 − σ(β·((π − ρ) − KL))`, undesirable rows
//!   `1 − σ(β·(KL − (π − ρ)))`, weighted by `desirable_weight` / `undesirable_weight`, averaged
//!   over all rows.
//! * `bradley_terry` (`scores`: reward modelling, `swift rlhf --rlhf_type rm`): the inputs are
//!   the value head's scalar scores `r`, not log-probabilities; `−log σ(r_c − r_r)` averaged over
//!   the pairs, plus `center_rewards_coefficient · mean((r_c + r_r)²)` (TRL's RewardTrainer);
//!   rewards `r`.
//!
//! `NLL(chosen)` is the token-averaged cross-entropy of the chosen answers:
//! `−Σ π_c / Σ tokens_c`. `ε` is `label_smoothing`.
//!
//! The records (names, descriptions, what each loss reads) are plain data in [`records`], which
//! the `swift` binary lists without libtorch; `register` pairs each with its behaviour by name.

pub mod records;

use swift_plugin_tensors::prelude::*;
use tch::{Kind, Tensor};

/// Settings every loss reads from the trainer's JSON parameters (missing: TRL's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub beta: f64,
    pub label_smoothing: f64,
    pub rpo_alpha: f64,
    pub simpo_gamma: f64,
    pub cpo_alpha: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
    /// Reward modelling: weight of the penalty that centres the scores on zero.
    pub center_rewards_coefficient: f64,
}

impl Params {
    /// Reads the parameters, refusing values the losses cannot use.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let get = |k: &str, d: f64| -> Result<f64, String> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x.as_f64().ok_or_else(|| {
                    format!("preference loss parameter `{k}` must be a number, got {x}")
                }),
            }
        };
        let p = Self {
            beta: get("beta", 0.1)?,
            label_smoothing: get("label_smoothing", 0.0)?,
            rpo_alpha: get("rpo_alpha", 0.0)?,
            simpo_gamma: get("simpo_gamma", 0.5)?,
            cpo_alpha: get("cpo_alpha", 1.0)?,
            desirable_weight: get("desirable_weight", 1.0)?,
            undesirable_weight: get("undesirable_weight", 1.0)?,
            center_rewards_coefficient: get("center_rewards_coefficient", 0.0)?,
        };
        if p.beta <= 0.0 {
            return Err(format!("--beta must be positive, got {}", p.beta));
        }
        if !(0.0..0.5).contains(&p.label_smoothing) {
            return Err(format!(
                "--label_smoothing must be in [0, 0.5), got {}",
                p.label_smoothing
            ));
        }
        if !(p.center_rewards_coefficient >= 0.0 && p.center_rewards_coefficient.is_finite()) {
            return Err(format!(
                "--center_rewards_coefficient must be a non-negative number, got {}",
                p.center_rewards_coefficient
            ));
        }
        Ok(p)
    }
}

type R<T> = Result<T, String>;

fn e(err: tch::TchError) -> String {
    err.to_string()
}

fn need<'a>(t: &'a Option<Tensor>, what: &str) -> R<&'a Tensor> {
    t.as_ref()
        .ok_or_else(|| format!("this loss needs the reference model's {what} log-probabilities"))
}

/// `−Σ chosen_logps / Σ chosen_tokens`: the token-averaged NLL of the chosen answers.
pub fn chosen_nll(inputs: &PreferenceInputs) -> R<Tensor> {
    let tokens = inputs
        .chosen_tokens
        .f_sum(Kind::Float)
        .map_err(e)?
        .f_clamp_min(1.0)
        .map_err(e)?;
    inputs
        .chosen_logps
        .f_sum(Kind::Float)
        .map_err(e)?
        .f_neg()
        .map_err(e)?
        .f_div(&tokens)
        .map_err(e)
}

/// Per-sequence log-probabilities averaged over the answer tokens.
fn average(logps: &Tensor, tokens: &Tensor) -> R<Tensor> {
    logps.f_div(&tokens.f_clamp_min(1.0).map_err(e)?).map_err(e)
}

/// `−(1−ε)·log σ(z) − ε·log σ(−z)` per row.
fn sigmoid_loss(z: &Tensor, ls: f64) -> R<Tensor> {
    let pos = z
        .f_log_sigmoid()
        .map_err(e)?
        .f_mul_scalar(-(1.0 - ls))
        .map_err(e)?;
    let neg = z
        .f_neg()
        .map_err(e)?
        .f_log_sigmoid()
        .map_err(e)?
        .f_mul_scalar(-ls)
        .map_err(e)?;
    pos.f_add(&neg).map_err(e)
}

fn mean(t: &Tensor) -> R<Tensor> {
    t.f_mean(Kind::Float).map_err(e)
}

fn detached(t: Tensor) -> R<Tensor> {
    t.f_detach().map_err(e)
}

/// The DPO family (`sigmoid`, `ipo`, `hinge`, `robust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dpo {
    Sigmoid,
    Ipo,
    Hinge,
    Robust,
}

impl Dpo {
    pub fn compute(self, x: &PreferenceInputs, p: &Params) -> R<PreferenceOutput> {
        let (rc, rr) = (
            need(&x.ref_chosen_logps, "chosen")?,
            need(&x.ref_rejected_logps, "rejected")?,
        );
        let chosen_ratio = x.chosen_logps.f_sub(rc).map_err(e)?;
        let rejected_ratio = x.rejected_logps.f_sub(rr).map_err(e)?;
        let logits = if self == Dpo::Ipo {
            // IPO works on log-ratios averaged over the answer tokens (TRL).
            average(&chosen_ratio, &x.chosen_tokens)?
                .f_sub(&average(&rejected_ratio, &x.rejected_tokens)?)
                .map_err(e)?
        } else {
            chosen_ratio.f_sub(&rejected_ratio).map_err(e)?
        };
        let z = logits.f_mul_scalar(p.beta).map_err(e)?;
        let ls = p.label_smoothing;
        let losses = match self {
            Dpo::Sigmoid => sigmoid_loss(&z, ls)?,
            Dpo::Robust => {
                let pos = z
                    .f_log_sigmoid()
                    .map_err(e)?
                    .f_mul_scalar(-(1.0 - ls))
                    .map_err(e)?;
                let neg = z
                    .f_neg()
                    .map_err(e)?
                    .f_log_sigmoid()
                    .map_err(e)?
                    .f_mul_scalar(ls)
                    .map_err(e)?;
                pos.f_add(&neg)
                    .map_err(e)?
                    .f_div_scalar(1.0 - 2.0 * ls)
                    .map_err(e)?
            }
            Dpo::Hinge => z
                .f_neg()
                .map_err(e)?
                .f_add_scalar(1.0)
                .map_err(e)?
                .f_relu()
                .map_err(e)?,
            Dpo::Ipo => logits
                .f_sub_scalar(1.0 / (2.0 * p.beta))
                .map_err(e)?
                .f_square()
                .map_err(e)?,
        };
        let mut loss = mean(&losses)?;
        if p.rpo_alpha > 0.0 {
            loss = loss
                .f_add(&chosen_nll(x)?.f_mul_scalar(p.rpo_alpha).map_err(e)?)
                .map_err(e)?;
        }
        Ok(PreferenceOutput {
            loss,
            chosen_rewards: detached(chosen_ratio.f_mul_scalar(p.beta).map_err(e)?)?,
            rejected_rewards: detached(rejected_ratio.f_mul_scalar(p.beta).map_err(e)?)?,
        })
    }
}

impl PreferenceLoss for Dpo {
    fn loss(&self, x: &PreferenceInputs, params: &serde_json::Value) -> R<PreferenceOutput> {
        self.compute(x, &Params::from_json(params)?)
    }
}

/// ORPO: the chosen NLL minus β · log σ(log odds ratio), on averaged log-probabilities.
pub struct Orpo;

impl Orpo {
    pub fn compute(x: &PreferenceInputs, p: &Params) -> R<PreferenceOutput> {
        let ac = average(&x.chosen_logps, &x.chosen_tokens)?;
        let ar = average(&x.rejected_logps, &x.rejected_tokens)?;
        // log(1 − e^a) for a < 0, as TRL writes it: log1p(−exp(a)).
        let log1m = |a: &Tensor| -> R<Tensor> {
            a.f_exp()
                .map_err(e)?
                .f_neg()
                .map_err(e)?
                .f_log1p()
                .map_err(e)
        };
        let log_odds = ac
            .f_sub(&ar)
            .map_err(e)?
            .f_sub(&log1m(&ac)?.f_sub(&log1m(&ar)?).map_err(e)?)
            .map_err(e)?;
        let ratio = log_odds.f_log_sigmoid().map_err(e)?;
        let loss = chosen_nll(x)?
            .f_sub(&mean(&ratio.f_mul_scalar(p.beta).map_err(e)?)?)
            .map_err(e)?;
        Ok(PreferenceOutput {
            loss,
            chosen_rewards: detached(ac.f_mul_scalar(p.beta).map_err(e)?)?,
            rejected_rewards: detached(ar.f_mul_scalar(p.beta).map_err(e)?)?,
        })
    }
}

impl PreferenceLoss for Orpo {
    fn loss(&self, x: &PreferenceInputs, params: &serde_json::Value) -> R<PreferenceOutput> {
        Self::compute(x, &Params::from_json(params)?)
    }
}

/// CPO (summed log-probabilities) and SimPO (averaged, with the margin γ): a reference-free
/// sigmoid loss plus `cpo_alpha` times the chosen NLL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpo {
    Cpo,
    Simpo,
}

impl Cpo {
    pub fn compute(self, x: &PreferenceInputs, p: &Params) -> R<PreferenceOutput> {
        let (pc, pr) = match self {
            Cpo::Cpo => (
                x.chosen_logps.shallow_clone(),
                x.rejected_logps.shallow_clone(),
            ),
            Cpo::Simpo => (
                average(&x.chosen_logps, &x.chosen_tokens)?,
                average(&x.rejected_logps, &x.rejected_tokens)?,
            ),
        };
        let mut logits = pc.f_sub(&pr).map_err(e)?;
        if self == Cpo::Simpo {
            logits = logits.f_sub_scalar(p.simpo_gamma / p.beta).map_err(e)?;
        }
        let losses = sigmoid_loss(&logits.f_mul_scalar(p.beta).map_err(e)?, p.label_smoothing)?;
        let mut loss = mean(&losses)?;
        if p.cpo_alpha > 0.0 {
            loss = loss
                .f_add(&chosen_nll(x)?.f_mul_scalar(p.cpo_alpha).map_err(e)?)
                .map_err(e)?;
        }
        Ok(PreferenceOutput {
            loss,
            chosen_rewards: detached(pc.f_mul_scalar(p.beta).map_err(e)?)?,
            rejected_rewards: detached(pr.f_mul_scalar(p.beta).map_err(e)?)?,
        })
    }
}

impl PreferenceLoss for Cpo {
    fn loss(&self, x: &PreferenceInputs, params: &serde_json::Value) -> R<PreferenceOutput> {
        self.compute(x, &Params::from_json(params)?)
    }
}

/// KTO on unpaired rows (desirable as `chosen`, undesirable as `rejected`).
pub struct Kto;

impl Kto {
    pub fn compute(x: &PreferenceInputs, p: &Params) -> R<PreferenceOutput> {
        let (rc, rr) = (
            need(&x.ref_chosen_logps, "chosen")?,
            need(&x.ref_rejected_logps, "rejected")?,
        );
        let kl = match &x.kl {
            Some(k) => k
                .f_detach()
                .map_err(e)?
                .f_to_kind(Kind::Float)
                .map_err(e)?
                .f_clamp_min(0.0)
                .map_err(e)?,
            None => Tensor::from(0.0f32)
                .f_to_device(x.chosen_logps.device())
                .map_err(e)?,
        };
        let chosen_ratio = x.chosen_logps.f_sub(rc).map_err(e)?;
        let rejected_ratio = x.rejected_logps.f_sub(rr).map_err(e)?;
        let one_minus_sigmoid = |t: Tensor| -> R<Tensor> {
            t.f_mul_scalar(p.beta)
                .map_err(e)?
                .f_sigmoid()
                .map_err(e)?
                .f_neg()
                .map_err(e)?
                .f_add_scalar(1.0)
                .map_err(e)
        };
        let chosen_losses = one_minus_sigmoid(chosen_ratio.f_sub(&kl).map_err(e)?)?
            .f_mul_scalar(p.desirable_weight)
            .map_err(e)?;
        let rejected_losses = one_minus_sigmoid(kl.f_sub(&rejected_ratio).map_err(e)?)?
            .f_mul_scalar(p.undesirable_weight)
            .map_err(e)?;
        let all = Tensor::f_cat(&[chosen_losses, rejected_losses], 0).map_err(e)?;
        if all.numel() == 0 {
            return Err("KTO got no rows".into());
        }
        Ok(PreferenceOutput {
            loss: mean(&all)?,
            chosen_rewards: detached(chosen_ratio.f_mul_scalar(p.beta).map_err(e)?)?,
            rejected_rewards: detached(rejected_ratio.f_mul_scalar(p.beta).map_err(e)?)?,
        })
    }
}

impl PreferenceLoss for Kto {
    fn loss(&self, x: &PreferenceInputs, params: &serde_json::Value) -> R<PreferenceOutput> {
        Self::compute(x, &Params::from_json(params)?)
    }
}

/// Reward modelling (Bradley-Terry): `chosen_logps` / `rejected_logps` hold the value head's
/// scores.
pub struct BradleyTerry;

impl BradleyTerry {
    pub fn compute(x: &PreferenceInputs, p: &Params) -> R<PreferenceOutput> {
        let (rc, rr) = (
            x.chosen_logps.f_to_kind(Kind::Float).map_err(e)?,
            x.rejected_logps.f_to_kind(Kind::Float).map_err(e)?,
        );
        let margin = rc.f_sub(&rr).map_err(e)?;
        let mut loss = mean(&margin.f_log_sigmoid().map_err(e)?.f_neg().map_err(e)?)?;
        if p.center_rewards_coefficient > 0.0 {
            let centre = mean(&rc.f_add(&rr).map_err(e)?.f_square().map_err(e)?)?;
            loss = loss
                .f_add(
                    &centre
                        .f_mul_scalar(p.center_rewards_coefficient)
                        .map_err(e)?,
                )
                .map_err(e)?;
        }
        Ok(PreferenceOutput {
            loss,
            chosen_rewards: detached(rc)?,
            rejected_rewards: detached(rr)?,
        })
    }
}

impl PreferenceLoss for BradleyTerry {
    fn loss(&self, x: &PreferenceInputs, params: &serde_json::Value) -> R<PreferenceOutput> {
        Self::compute(x, &Params::from_json(params)?)
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for record in records::all() {
        match record.name.as_str() {
            "sigmoid" => r.preference_loss(record, Dpo::Sigmoid)?,
            "ipo" => r.preference_loss(record, Dpo::Ipo)?,
            "hinge" => r.preference_loss(record, Dpo::Hinge)?,
            "robust" => r.preference_loss(record, Dpo::Robust)?,
            "orpo" => r.preference_loss(record, Orpo)?,
            "simpo" => r.preference_loss(record, Cpo::Simpo)?,
            "cpo" => r.preference_loss(record, Cpo::Cpo)?,
            "kto" => r.preference_loss(record, Kto)?,
            "bradley_terry" => r.preference_loss(record, BradleyTerry)?,
            other => {
                return Err(
                    format!("preference loss `{other}` has a record but no behaviour").into(),
                )
            }
        }
    }
    Ok(())
}

swift_plugin_tensors::builtin_plugin!(register);

#[cfg(test)]
mod tests;
