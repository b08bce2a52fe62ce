//! The host's side of the optimizer contract (ARCHITECTURE.md §3.8): the trainable tensors, a
//! registered optimizer created over them (`--optimizer NAME`, a plugin's math: the built-ins
//! are `plugins/optimizers`), and what the host keeps for every optimizer alike: the
//! learning-rate factor of each tensor (LoRA+'s faster `B`: the optimizer gets one learning rate
//! per tensor, the schedule's times the factor), global gradient-norm clipping as
//! `clip_grad_norm_` does it, `zero_grad`, and the checkpoint's tensors. Tensors switched off by
//! `requires_grad(false)` (LISA's sleeping layers) are skipped by the optimizer;
//! [`Optimizer::reset_state`] clears its state when the active set changes, as LISA's reference
//! implementation re-creates its optimiser.

use swift_plugin_tensors::optimizer::{OptimizerRequest, OptimizerTensor};
use swift_plugin_tensors::{OptimizerHandle, OptimizerHandleExt, OptimizerKindHandle};
use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;

/// Which optimizer a run uses: a registered kind, its name, and every option of its record
/// (the user's flag, else the record's default).
#[derive(Clone)]
pub struct OptimizerSetting {
    pub name: String,
    pub options: serde_json::Value,
    pub kind: OptimizerKindHandle,
}

impl std::fmt::Debug for OptimizerSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerSetting")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

impl PartialEq for OptimizerSetting {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.options == other.options
    }
}

/// A checkpoint of the optimiser: named tensors (`param.NAME`: the trained tensors, then the
/// optimizer's own state under `optim.`).
pub type OptimizerState = Vec<(String, Tensor)>;

/// The trained tensors and the optimizer over them.
pub struct Optimizer {
    name: String,
    params: Vec<(String, Tensor)>,
    /// Multiplies the learning rate, per tensor.
    factors: Vec<f64>,
    /// Which tensors the optimizer updates and keeps state for: all of them, or this rank's
    /// shard under ZeRO (`crate::zero`).
    owned: Vec<bool>,
    inner: OptimizerHandle,
    /// Optimiser steps taken.
    pub steps: u64,
}

fn plugin(name: &str) -> impl Fn(String) -> TrainError + '_ {
    move |e| TrainError::Config(format!("optimizer `{name}`: {e}"))
}

impl Optimizer {
    /// An optimizer over `tensors` (each must require gradients).
    pub fn new(
        tensors: &[(String, Tensor)],
        setting: &OptimizerSetting,
    ) -> Result<Self, TrainError> {
        Self::sharded(tensors, setting, &vec![true; tensors.len()])
    }

    /// An optimizer that updates and keeps state for the tensors `owned` marks only (ZeRO's
    /// shard, `crate::zero`); the others are still clipped, checkpointed and restored.
    pub fn sharded(
        tensors: &[(String, Tensor)],
        setting: &OptimizerSetting,
        owned: &[bool],
    ) -> Result<Self, TrainError> {
        for (name, t) in tensors {
            if !t.requires_grad() {
                return Err(TrainError::Config(format!(
                    "`{name}` was given to the optimiser but does not require gradients"
                )));
            }
        }
        let request = OptimizerRequest {
            tensors: tensors
                .iter()
                .zip(owned)
                .filter(|(_, &own)| own)
                .map(|((name, t), _)| OptimizerTensor {
                    name: name.clone(),
                    shape: t.size(),
                })
                .collect(),
            options: setting.options.clone(),
        };
        let inner = setting
            .kind
            .create(&request)
            .map_err(plugin(&setting.name))?;
        tracing::info!("optimizer `{}`: {}", setting.name, inner.summary());
        Ok(Self {
            name: setting.name.clone(),
            params: tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            factors: vec![1.0; tensors.len()],
            owned: owned.to_vec(),
            inner,
            steps: 0,
        })
    }

    /// Number of trainable elements.
    pub fn num_parameters(&self) -> i64 {
        self.params.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// Multiplies the learning rate of every tensor whose name contains `pattern` by `factor`;
    /// returns how many matched.
    pub fn scale_lr(&mut self, pattern: &str, factor: f64) -> usize {
        let mut n = 0;
        for ((name, _), f) in self.params.iter().zip(&mut self.factors) {
            if name.contains(pattern) {
                *f *= factor;
                n += 1;
            }
        }
        n
    }

    /// Clears the optimizer's state.
    pub fn reset_state(&mut self) -> Result<(), TrainError> {
        self.inner.reset().map_err(plugin(&self.name))
    }

    /// The state to checkpoint: every tensor as `param.NAME`, and the optimizer's own state
    /// under `optim.` (under ZeRO, this rank's shard of it: `crate::zero` gathers the rest).
    pub fn state(&mut self) -> Result<OptimizerState, TrainError> {
        let mut out: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, t)| (format!("param.{n}"), t.shallow_clone()))
            .collect();
        out.extend(self.own_state()?);
        Ok(out)
    }

    /// The optimizer's own state (of the owned tensors), under `optim.`.
    pub fn own_state(&mut self) -> Result<OptimizerState, TrainError> {
        Ok(self
            .inner
            .state()
            .map_err(plugin(&self.name))?
            .into_iter()
            .map(|(n, t)| (format!("optim.{n}"), t))
            .collect())
    }

    /// Restores what [`Optimizer::state`] saved: the tensors' values and the optimizer's state.
    /// Every tensor must be present with the same shape; `names` lists the checkpoint's entries.
    pub fn restore(
        &mut self,
        names: &[String],
        get: &dyn Fn(&str) -> Option<Tensor>,
        global_steps: u64,
    ) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        for (name, dst) in &mut self.params {
            let key = format!("param.{name}");
            let src = get(&key).ok_or_else(|| {
                TrainError::Config(format!(
                    "the checkpoint's optimizer state has no `{key}` (was it saved by a run with the same model and tuner?)"
                ))
            })?;
            if src.size() != dst.size() {
                return Err(TrainError::Config(format!(
                    "the checkpoint's `{key}` is {:?}, this run's is {:?}",
                    src.size(),
                    dst.size()
                )));
            }
            dst.f_copy_(&src.f_to_kind(dst.kind())?.f_to_device(dst.device())?)?;
        }
        let mut state = Vec::new();
        for n in names {
            if let Some(rest) = n.strip_prefix("optim.") {
                if let Some(t) = get(n) {
                    state.push((rest.to_string(), t));
                }
            }
        }
        self.inner.load_state(&state).map_err(plugin(&self.name))?;
        self.steps = global_steps;
        Ok(())
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.params {
            t.zero_grad();
        }
    }

    /// The global L2 norm of the gradients; when `max_norm > 0` and the norm exceeds it, scales
    /// every gradient by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64, TrainError> {
        self.clip_grad_norm_with(max_norm, &|sq| Ok(sq))
    }

    /// [`Optimizer::clip_grad_norm`] where the squared norm of the gradients present is turned
    /// into the global one by `total` (ZeRO-2: a sum over the ranks, each holding its shard's).
    pub fn clip_grad_norm_with(
        &mut self,
        max_norm: f64,
        total: &dyn Fn(f64) -> Result<f64, TrainError>,
    ) -> Result<f64, TrainError> {
        let _g = tch::no_grad_guard();
        let mut sq = 0.0f64;
        for (_, t) in self.params.iter().filter(|(_, t)| t.requires_grad()) {
            let g = t.grad();
            if g.defined() {
                let n = f64::try_from(g.f_norm()?.f_to_kind(Kind::Double)?)?;
                sq += n * n;
            }
        }
        let norm = total(sq)?.sqrt();
        if max_norm > 0.0 {
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                for (_, t) in &self.params {
                    let mut g = t.grad();
                    if g.defined() {
                        let _ = g.f_mul_scalar_(coef)?;
                    }
                }
            }
        }
        Ok(norm)
    }

    /// One update with learning rate `lr` (times each tensor's factor), by the optimizer.
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let mut lrs = Vec::new();
        let mut tensors = Vec::new();
        for (((_, t), f), &own) in self.params.iter().zip(&self.factors).zip(&self.owned) {
            if own {
                lrs.push(lr * f);
                tensors.push(t.shallow_clone());
            }
        }
        self.inner.step(&tensors, &lrs).map_err(plugin(&self.name))
    }
}

/// The built-in `adamw` with its record's defaults, for tests (swift-plugin-optimizers is a
/// dev-dependency: the trainer itself names no optimizer).
#[cfg(test)]
pub(crate) mod tests_support {
    pub fn adamw() -> super::OptimizerSetting {
        let record = swift_plugin_optimizers::records::all()
            .into_iter()
            .find(|r| r.name == "adamw")
            .expect("adamw");
        super::OptimizerSetting {
            name: "adamw".into(),
            options: serde_json::Value::Object(
                record
                    .options
                    .into_iter()
                    .map(|o| (o.name, o.default))
                    .collect(),
            ),
            kind: swift_plugin_optimizers::kind("adamw").expect("adamw"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in optimizer (plain SGD) through the contract's FFI objects.
    struct Sgd;
    struct SgdRun;
    impl swift_plugin_tensors::OptimizerKind for Sgd {
        fn create(
            &self,
            _r: &OptimizerRequest,
        ) -> Result<Box<dyn swift_plugin_tensors::Optimizer>, String> {
            Ok(Box::new(SgdRun))
        }
    }
    impl swift_plugin_tensors::Optimizer for SgdRun {
        fn summary(&self) -> String {
            "SGD".into()
        }
        fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String> {
            for (t, lr) in tensors.iter().zip(lrs) {
                let g = t.grad();
                if g.defined() && t.requires_grad() {
                    let _ = t
                        .shallow_clone()
                        .f_sub_(&(g * *lr))
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        fn reset(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
            Ok(Vec::new())
        }
        fn load_state(&mut self, _s: &[(String, Tensor)]) -> Result<(), String> {
            Ok(())
        }
    }

    fn sgd() -> OptimizerSetting {
        OptimizerSetting {
            name: "sgd".into(),
            options: serde_json::json!({}),
            kind: swift_plugin_tensors::optimizer::local_kind(Sgd),
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(&[("w".into(), w.shallow_clone())], &sgd()).unwrap();
        // grad = w → norm 5.
        (&w * &w)
            .sum(Kind::Float)
            .f_mul_scalar(0.5)
            .unwrap()
            .backward();
        let n = opt.clip_grad_norm(1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let g: Vec<f32> = w.grad().try_into().unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }

    #[test]
    fn learning_rate_factors_reach_the_optimizer_per_tensor() {
        let fast = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let slow = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            &[
                ("x.lora_B.weight".into(), fast.shallow_clone()),
                ("x.lora_A.weight".into(), slow.shallow_clone()),
            ],
            &sgd(),
        )
        .unwrap();
        assert_eq!(opt.scale_lr(".lora_B.", 4.0), 1);
        (&fast + &slow).sum(Kind::Double).backward();
        opt.step(0.01).unwrap();
        let v = |t: &Tensor| t.double_value(&[]);
        assert!((v(&fast) - 0.96).abs() < 1e-12 && (v(&slow) - 0.99).abs() < 1e-12);
    }
}
