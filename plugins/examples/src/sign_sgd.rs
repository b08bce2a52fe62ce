//! `example-sign-sgd`: an optimizer written outside swift-rs on the optimizer contract. Each
//! update moves every element by its learning rate against the sign of its gradient,
//! `p ← p − lr·sign(g)`, with an optional momentum on the gradient (`sign_sgd_momentum`, 0 by
//! default: signSGD; above 0: Signum, whose momentum buffers are its state, saved in
//! checkpoints as `momentum.NAME`).

use serde_json::json;
use swift_plugin_tensors::optimizer::{util, OptimizerRequest};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::Tensor;

/// Its record: one option, which is not a flag of swift (it keeps its default).
pub fn record() -> OptimizerRecord {
    OptimizerRecord::new(
        "example-sign-sgd",
        "signSGD (the example plugin's optimizer): p ← p − lr·sign(g)",
    )
    .with_options(vec![OptionDecl::new(
        "sign_sgd_momentum",
        "float",
        json!(0.0),
        "momentum on the gradient before its sign (Signum); 0: none",
    )
    .range(Some(0.0), Some(1.0))])
}

pub struct SignSgdKind;

struct SignSgd {
    names: Vec<String>,
    momentum: f64,
    buffers: Vec<Option<Tensor>>,
}

impl OptimizerKind for SignSgdKind {
    fn create(&self, request: &OptimizerRequest) -> Result<Box<dyn Optimizer>, String> {
        let momentum = request.options["sign_sgd_momentum"]
            .as_f64()
            .ok_or("option `sign_sgd_momentum` must be a number")?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(format!(
                "option `sign_sgd_momentum` must be in [0, 1), got {momentum}"
            ));
        }
        Ok(Box::new(SignSgd {
            names: request.tensors.iter().map(|t| t.name.clone()).collect(),
            momentum,
            buffers: request.tensors.iter().map(|_| None).collect(),
        }))
    }
}

impl Optimizer for SignSgd {
    fn summary(&self) -> String {
        format!("signSGD over {} tensors", self.names.len())
    }

    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String> {
        let e = |err: swift_plugin_tensors::tch::TchError| err.to_string();
        for ((p, lr), buf) in tensors.iter().zip(lrs).zip(&mut self.buffers) {
            let g = p.grad();
            if !g.defined() || !p.requires_grad() {
                continue;
            }
            let dir = if self.momentum > 0.0 {
                let b = match buf.take() {
                    Some(b) => b.f_mul_scalar(self.momentum).map_err(e)? + &g,
                    None => g.copy(),
                };
                let d = b.f_sign().map_err(e)?;
                *buf = Some(b);
                d
            } else {
                g.f_sign().map_err(e)?
            };
            let _ = p
                .shallow_clone()
                .f_sub_(&dir.f_mul_scalar(*lr).map_err(e)?)
                .map_err(e)?;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), String> {
        self.buffers.iter_mut().for_each(|b| *b = None);
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        Ok(self
            .names
            .iter()
            .zip(&self.buffers)
            .filter_map(|(n, b)| Some((format!("momentum.{n}"), b.as_ref()?.shallow_clone())))
            .collect())
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String> {
        for (n, b) in self.names.iter().zip(&mut self.buffers) {
            let key = format!("momentum.{n}");
            *b = if self.momentum > 0.0 {
                Some(util::find(state, &key)?.copy())
            } else {
                None
            };
        }
        Ok(())
    }
}
