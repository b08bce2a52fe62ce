//! `adamw`: AdamW as `torch.optim.AdamW` computes it: decoupled weight decay
//! `p ← p − lr·wd·p` (only on tensors of two or more dimensions: norms and biases are not
//! decayed, transformers' rule), then the bias-corrected Adam update, each tensor at its own
//! learning rate (the host's schedule times the tensor's factor). State per tensor:
//! `exp_avg.NAME`, `exp_avg_sq.NAME` and `step.NAME` (its update count, for bias correction).

use swift_plugin_tensors::optimizer::{util, Optimizer, OptimizerKind, OptimizerRequest};
use swift_plugin_tensors::tch::Tensor;

use crate::options::Adam;

/// The registered kind.
pub struct AdamWKind;

struct Slot {
    name: String,
    decay: bool,
    steps: i64,
    m: Tensor,
    v: Tensor,
}

/// AdamW over a run's tensors.
pub struct AdamW {
    adam: Adam,
    slots: Vec<Slot>,
}

fn e(err: swift_plugin_tensors::tch::TchError) -> String {
    err.to_string()
}

impl OptimizerKind for AdamWKind {
    fn create(&self, request: &OptimizerRequest) -> Result<Box<dyn Optimizer>, String> {
        let adam = Adam::from_options(&request.options)?;
        let slots = request
            .tensors
            .iter()
            .map(|t| Slot {
                name: t.name.clone(),
                decay: t.shape.len() >= 2,
                steps: 0,
                m: Tensor::zeros(t.shape.as_slice(), crate::F32),
                v: Tensor::zeros(t.shape.as_slice(), crate::F32),
            })
            .collect();
        Ok(Box::new(AdamW { adam, slots }))
    }
}

impl Optimizer for AdamW {
    fn summary(&self) -> String {
        format!("AdamW over {} tensors", self.slots.len())
    }

    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String> {
        let c = self.adam;
        for ((s, p), &lr) in self.slots.iter_mut().zip(tensors).zip(lrs) {
            let g = p.grad();
            if !g.defined() || !p.requires_grad() {
                continue;
            }
            let mut p = p.shallow_clone();
            if s.m.device() != p.device() || s.m.kind() != p.kind() {
                s.m =
                    s.m.f_to_device(p.device())
                        .map_err(e)?
                        .f_to_kind(p.kind())
                        .map_err(e)?;
                s.v =
                    s.v.f_to_device(p.device())
                        .map_err(e)?
                        .f_to_kind(p.kind())
                        .map_err(e)?;
            }
            s.steps += 1;
            let bc1 = 1.0 - c.beta1.powi(s.steps as i32);
            let bc2 = 1.0 - c.beta2.powi(s.steps as i32);
            if s.decay && c.weight_decay != 0.0 {
                let _ = p.f_mul_scalar_(1.0 - lr * c.weight_decay).map_err(e)?;
            }
            let _ = s.m.f_mul_scalar_(c.beta1).map_err(e)?;
            let _ =
                s.m.f_add_(&g.f_mul_scalar(1.0 - c.beta1).map_err(e)?)
                    .map_err(e)?;
            let _ = s.v.f_mul_scalar_(c.beta2).map_err(e)?;
            let _ =
                s.v.f_add_(
                    &g.f_square()
                        .map_err(e)?
                        .f_mul_scalar(1.0 - c.beta2)
                        .map_err(e)?,
                )
                .map_err(e)?;
            let denom =
                s.v.f_div_scalar(bc2)
                    .and_then(|d| d.f_sqrt())
                    .and_then(|d| d.f_add_scalar(c.eps))
                    .map_err(e)?;
            let update =
                s.m.f_div(&denom)
                    .and_then(|u| u.f_mul_scalar(lr / bc1))
                    .map_err(e)?;
            let _ = p.f_sub_(&update).map_err(e)?;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), String> {
        for s in &mut self.slots {
            let _ = s.m.f_zero_().map_err(e)?;
            let _ = s.v.f_zero_().map_err(e)?;
            s.steps = 0;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), s.m.shallow_clone()));
            out.push((format!("exp_avg_sq.{}", s.name), s.v.shallow_clone()));
            out.push((format!("step.{}", s.name), crate::count_tensor(s.steps)));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String> {
        for s in &mut self.slots {
            let k = format!("exp_avg.{}", s.name);
            util::restore_into(&mut s.m, util::find(state, &k)?, &k)?;
            let k = format!("exp_avg_sq.{}", s.name);
            util::restore_into(&mut s.v, util::find(state, &k)?, &k)?;
            s.steps = crate::count_of(util::find(state, &format!("step.{}", s.name))?)?;
        }
        Ok(())
    }
}
