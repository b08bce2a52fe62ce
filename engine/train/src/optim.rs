//! AdamW over an explicit list of trainable tensors (frozen base weights never enter it), as
//! `torch.optim.AdamW` computes it: decoupled weight decay `p ← p − lr·wd·p` (only on tensors of
//! two or more dimensions: norms and biases are not decayed, transformers' rule), then the
//! bias-corrected Adam update. Plus global gradient-norm clipping as `clip_grad_norm_` does it.
//!
//! Two additions for tuners: a learning-rate factor per tensor ([`AdamW::scale_lr`], LoRA+'s
//! faster `B`), and tensors switched off by `requires_grad(false)` (LISA's sleeping layers) are
//! skipped entirely; [`AdamW::reset_state`] clears the moments when the active set changes, as
//! LISA's reference implementation re-creates its optimiser.

use tch::{Kind, Tensor};

use crate::checkpoint::TrainError;

/// AdamW's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Param {
    name: String,
    t: Tensor,
    decay: bool,
    /// Multiplies the learning rate for this tensor.
    lr_scale: f64,
    /// Updates this tensor has had since its moments were last cleared (bias correction).
    steps: i32,
    m: Tensor,
    v: Tensor,
}

/// A checkpoint of the optimiser: named tensors, and update counts by tensor name.
pub type OptimizerState = (Vec<(String, Tensor)>, Vec<(String, i32)>);

/// The optimiser and its state.
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Param>,
    /// Optimiser steps taken.
    pub steps: u64,
}

impl AdamW {
    /// An optimiser over `tensors` (each must require gradients).
    pub fn new(tensors: &[(String, Tensor)], config: AdamWConfig) -> Result<Self, TrainError> {
        let mut params = Vec::new();
        for (name, t) in tensors {
            if !t.requires_grad() {
                return Err(TrainError::Config(format!(
                    "`{name}` was given to the optimiser but does not require gradients"
                )));
            }
            params.push(Param {
                name: name.clone(),
                t: t.shallow_clone(),
                decay: t.dim() >= 2,
                lr_scale: 1.0,
                steps: 0,
                m: t.f_zeros_like()?,
                v: t.f_zeros_like()?,
            });
        }
        Ok(Self {
            config,
            params,
            steps: 0,
        })
    }

    /// Number of trainable elements.
    pub fn num_parameters(&self) -> i64 {
        self.params.iter().map(|p| p.t.numel() as i64).sum()
    }

    /// Multiplies the learning rate of every tensor whose name contains `pattern` by `factor`;
    /// returns how many matched.
    pub fn scale_lr(&mut self, pattern: &str, factor: f64) -> usize {
        let mut n = 0;
        for p in self.params.iter_mut().filter(|p| p.name.contains(pattern)) {
            p.lr_scale *= factor;
            n += 1;
        }
        n
    }

    /// Clears the moments and bias-correction counts of every tensor.
    pub fn reset_state(&mut self) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        for p in &mut self.params {
            let _ = p.m.f_zero_()?;
            let _ = p.v.f_zero_()?;
            p.steps = 0;
        }
        Ok(())
    }

    /// The state to checkpoint: for every tensor `param.NAME`, `exp_avg.NAME`, `exp_avg_sq.NAME`,
    /// and the per-tensor update counts.
    pub fn state(&self) -> OptimizerState {
        let mut tensors = Vec::new();
        let mut steps = Vec::new();
        for p in &self.params {
            tensors.push((format!("param.{}", p.name), p.t.shallow_clone()));
            tensors.push((format!("exp_avg.{}", p.name), p.m.shallow_clone()));
            tensors.push((format!("exp_avg_sq.{}", p.name), p.v.shallow_clone()));
            steps.push((p.name.clone(), p.steps));
        }
        (tensors, steps)
    }

    /// Restores what [`AdamW::state`] saved: the tensors' values, moments and counts. Every
    /// tensor must be present with the same shape.
    pub fn restore(
        &mut self,
        get: &dyn Fn(&str) -> Option<Tensor>,
        steps: &dyn Fn(&str) -> Option<i32>,
        global_steps: u64,
    ) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        for p in &mut self.params {
            for (prefix, dst) in [
                ("param", &mut p.t),
                ("exp_avg", &mut p.m),
                ("exp_avg_sq", &mut p.v),
            ] {
                let key = format!("{prefix}.{}", p.name);
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
            p.steps = steps(&p.name).unwrap_or(0);
        }
        self.steps = global_steps;
        Ok(())
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.t.zero_grad();
        }
    }

    /// The global L2 norm of the gradients; when `max_norm > 0` and the norm exceeds it, scales
    /// every gradient by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64, TrainError> {
        let _g = tch::no_grad_guard();
        let mut sq = 0.0f64;
        for p in self.params.iter().filter(|p| p.t.requires_grad()) {
            let g = p.t.grad();
            if g.defined() {
                let n = f64::try_from(g.f_norm()?.f_to_kind(Kind::Double)?)?;
                sq += n * n;
            }
        }
        let norm = sq.sqrt();
        if max_norm > 0.0 {
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                for p in &self.params {
                    let mut g = p.t.grad();
                    if g.defined() {
                        let _ = g.f_mul_scalar_(coef)?;
                    }
                }
            }
        }
        Ok(norm)
    }

    /// One update with learning rate `lr` (times each tensor's factor). Tensors that do not
    /// require gradients now, or have none, are left as they are.
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let c = self.config;
        for p in &mut self.params {
            let g = p.t.grad();
            if !g.defined() || !p.t.requires_grad() {
                continue;
            }
            p.steps += 1;
            let lr = lr * p.lr_scale;
            let bc1 = 1.0 - c.beta1.powi(p.steps);
            let bc2 = 1.0 - c.beta2.powi(p.steps);
            if p.decay && c.weight_decay != 0.0 {
                let _ = p.t.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
            }
            let _ = p.m.f_mul_scalar_(c.beta1)?;
            let _ = p.m.f_add_(&g.f_mul_scalar(1.0 - c.beta1)?)?;
            let _ = p.v.f_mul_scalar_(c.beta2)?;
            let _ = p.v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - c.beta2)?)?;
            let denom = p.v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(c.eps)?;
            let update = p.m.f_div(&denom)?.f_mul_scalar(lr / bc1)?;
            let _ = p.t.f_sub_(&update)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_torch_adamw_by_hand() {
        // One parameter w = [1, -2] (decayed: make it 2-D), grad = 2w (loss = sum w²).
        let w = Tensor::from_slice(&[1.0f64, -2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(&[("w".into(), w.shallow_clone())], cfg).unwrap();
        let lr = 0.1;
        (&w * &w).sum(Kind::Double).backward();
        opt.step(lr).unwrap();
        // Step 1: p ← p(1 − lr·wd); m̂ = g, v̂ = g², so the update is lr · g/(|g| + eps) ≈ lr·sign(g).
        let got: Vec<f64> = w.view([-1]).try_into().unwrap();
        let want = [1.0 * (1.0 - 0.01) - 0.1, -2.0 * (1.0 - 0.01) + 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn lr_factor_and_sleeping_tensors() {
        // Two tensors with the same gradient: `fast` has 4× the learning rate; `asleep` stops
        // requiring gradients after the first step and must not move again (no momentum drift).
        let fast = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let slow = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let asleep = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = AdamW::new(
            &[
                ("x.lora_B.weight".into(), fast.shallow_clone()),
                ("x.lora_A.weight".into(), slow.shallow_clone()),
                ("layer".into(), asleep.shallow_clone()),
            ],
            AdamWConfig::default(),
        )
        .unwrap();
        assert_eq!(opt.scale_lr(".lora_B.", 4.0), 1);
        let loss = || (&fast + &slow + &asleep).sum(Kind::Double);
        loss().backward();
        opt.step(0.01).unwrap();
        opt.zero_grad();
        // First Adam step moves each by lr·sign(g): 0.04 and 0.01.
        let v = |t: &Tensor| f64::try_from(t).unwrap();
        assert!((v(&fast) - 0.96).abs() < 1e-9 && (v(&slow) - 0.99).abs() < 1e-9);
        assert!((v(&asleep) - 0.99).abs() < 1e-9);
        let _ = asleep.set_requires_grad(false);
        let before = v(&asleep);
        loss().backward();
        opt.step(0.01).unwrap();
        assert_eq!(v(&asleep), before, "a sleeping tensor moved");
        assert!(v(&slow) < 0.99 - 1e-3);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut opt =
            AdamW::new(&[("w".into(), w.shallow_clone())], AdamWConfig::default()).unwrap();
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
}
