//! AdamW over an explicit list of trainable tensors (frozen base weights never enter it), as
//! `torch.optim.AdamW` computes it: decoupled weight decay `p ← p − lr·wd·p` (only on tensors of
//! two or more dimensions: norms and biases are not decayed, transformers' rule), then the
//! bias-corrected Adam update. Plus global gradient-norm clipping as `clip_grad_norm_` does it.

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
    t: Tensor,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

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
                t: t.shallow_clone(),
                decay: t.dim() >= 2,
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
        for p in &self.params {
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

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for p in &mut self.params {
            let g = p.t.grad();
            if !g.defined() {
                continue;
            }
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
