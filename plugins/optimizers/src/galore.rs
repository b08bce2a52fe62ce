//! `galore` and `q_galore`.
//!
//! **GaLore** as `galore_torch.GaLoreAdamW` (1.0) computes it, projection type `std`: a 2-D
//! tensor whose name contains one of `galore_target_modules` (default `attn`, `mlp`: ms-swift's
//! attention and MLP linears) has its gradient `G [m, n]` projected to rank r: with `m ≥ n`
//! `G·Pᵀ` where `P` is the first r rows of `Vᴴ` of `svd(G)`, else `Pᵀ·G` with `P` the first r
//! columns of `U`, `P` recomputed from the current gradient every `galore_update_proj_gap`
//! updates of that tensor (the moments are kept across a change of `P`, as galore_torch keeps
//! them). Adam runs in the projected space with transformers' old `AdamW` formula (`ε` added to
//! `√v` before the bias correction, which goes into the step size `lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`), the
//! normalised update is projected back and multiplied by `galore_scale`, and weight decay
//! `p ← p − lr·wd·p` comes after the update. Every other tensor gets the same Adam update
//! without projection; weight decay applies to tensors of two or more dimensions (ms-swift's
//! groups: biases and norms are not decayed).
//!
//! **Q-GaLore** (Zhang et al. 2024, `q_galore_torch` 1.0's `QGaLoreAdamW8bit_simulate` with its
//! `GaLoreProjector`): GaLore whose projection is stored quantized to `galore_proj_bits` (4)
//! bits, asymmetric, per group of `galore_proj_group_size` values, and used dequantized; whose
//! gap grows by `galore_gamma_proj` once the mean cosine similarity of the last
//! `galore_queue_size` successive projections' first vectors reaches `galore_cos_threshold`; and
//! whose projected weights live on an int8 grid (8-bit asymmetric per group of
//! `galore_weight_group_size`): after each update the weight is snapped back to it, rounding
//! stochastically (`torch.rand_like` against the fractional part, from libtorch's generator,
//! which the trainer seeds per step) or to nearest. Two differences from the package, which
//! needs CUDA and bitsandbytes: the weights stay float tensors holding int8-grid values (the
//! package's "simulate" mode), and Adam's moments are float32 (the package keeps them in
//! bitsandbytes' 8-bit blocks); `tests/reference/q_galore_reference.py` is the committed Python
//! transcription the tests compare against.

use swift_plugin_tensors::optimizer::{util, Optimizer, OptimizerKind, OptimizerRequest};
use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::options::{bool_of, f64_of, int_of, list_of, Adam};

fn e(err: swift_plugin_tensors::tch::TchError) -> String {
    err.to_string()
}

/// The registered kinds: `galore` (`quantized` false) and `q_galore`.
pub struct GaLoreKind {
    pub quantized: bool,
}

/// Q-GaLore's settings.
#[derive(Debug, Clone, Copy)]
struct Quant {
    proj_bits: i64,
    proj_group: i64,
    cos_threshold: f64,
    gamma: f64,
    queue_size: usize,
    weight_group: i64,
    stochastic: bool,
}

/// A tensor's projection.
struct Projector {
    /// Right (`G·Pᵀ`, m ≥ n) or left (`Pᵀ·G`).
    right: bool,
    /// The projection (dequantized when quantized).
    ortho: Tensor,
    /// Updates between two SVDs (Q-GaLore grows it).
    gap: i64,
    /// Q-GaLore: the last projection's first vector and the recent similarities.
    past: Option<Tensor>,
    queue: Vec<f64>,
}

struct Slot {
    name: String,
    decay: bool,
    /// Projected (a 2-D target).
    galore: bool,
    steps: i64,
    m: Option<Tensor>,
    v: Option<Tensor>,
    proj: Option<Projector>,
}

/// GaLore or Q-GaLore over a run's tensors.
pub struct GaLore {
    adam: Adam,
    rank: i64,
    gap: i64,
    scale: f64,
    quant: Option<Quant>,
    slots: Vec<Slot>,
}

impl OptimizerKind for GaLoreKind {
    fn create(&self, request: &OptimizerRequest) -> Result<Box<dyn Optimizer>, String> {
        let o = &request.options;
        let adam = Adam::from_options(o)?;
        let rank = int_of(o, "galore_rank", 1)?;
        let gap = int_of(o, "galore_update_proj_gap", 1)?;
        let scale = f64_of(o, "galore_scale")?;
        let targets = list_of(o, "galore_target_modules", &["attn", "mlp"])?;
        let quant = if self.quantized {
            let bits = int_of(o, "galore_proj_bits", 2)?;
            if bits > 8 {
                return Err(format!(
                    "option `galore_proj_bits` must be at most 8, got {bits}"
                ));
            }
            Some(Quant {
                proj_bits: bits,
                proj_group: int_of(o, "galore_proj_group_size", 1)?,
                cos_threshold: f64_of(o, "galore_cos_threshold")?,
                gamma: f64_of(o, "galore_gamma_proj")?,
                queue_size: int_of(o, "galore_queue_size", 1)? as usize,
                weight_group: int_of(o, "galore_weight_group_size", 1)?,
                stochastic: bool_of(o, "galore_stochastic_round")?,
            })
        } else {
            None
        };
        let slots: Vec<Slot> = request
            .tensors
            .iter()
            .map(|t| Slot {
                name: t.name.clone(),
                decay: t.shape.len() >= 2,
                galore: t.shape.len() == 2 && targets.iter().any(|k| t.name.contains(k.as_str())),
                steps: 0,
                m: None,
                v: None,
                proj: None,
            })
            .collect();
        if !slots.iter().any(|s| s.galore) {
            return Err(format!(
                "no trainable 2-D tensor's name contains one of galore_target_modules {targets:?}: nothing to project (the trainable tensors are named like `{}`)",
                request.tensors.first().map(|t| t.name.as_str()).unwrap_or("")
            ));
        }
        Ok(Box::new(GaLore {
            adam,
            rank,
            gap,
            scale,
            quant,
            slots,
        }))
    }
}

/// Asymmetric `n_bit` quantization per group of `group` values (one group per row when it does
/// not divide the count), as Q-GaLore's `_quantize`: returns the dequantized values. `rand`:
/// stochastic rounding against `torch.rand_like`.
fn fake_quantize(w: &Tensor, group: i64, n_bit: i64, stochastic: bool) -> Result<Tensor, String> {
    let shape = w.size();
    let numel = w.numel() as i64;
    let rows = if group > 0 && numel % group == 0 {
        w.f_reshape([-1, group]).map_err(e)?
    } else {
        w.f_reshape([-1, *shape.last().unwrap_or(&1)]).map_err(e)?
    };
    let max_int = ((1i64 << n_bit) - 1) as f64;
    let max_val = rows.f_amax([1], true).map_err(e)?;
    let min_val = rows.f_amin([1], true).map_err(e)?;
    let scales = (&max_val - &min_val)
        .f_clamp_min(1e-5)
        .and_then(|s| s.f_div_scalar(max_int))
        .map_err(e)?;
    let zeros = min_val
        .f_div(&scales)
        .and_then(|z| z.f_round())
        .and_then(|z| z.f_neg())
        .and_then(|z| z.f_clamp(0.0, max_int))
        .map_err(e)?;
    let codes = if stochastic {
        let r = rows.f_div(&scales).map_err(e)?;
        let up = r.f_ceil().map_err(e)?;
        let down = r.f_floor().map_err(e)?;
        let prob = &r - &down;
        let draw = prob.f_rand_like().map_err(e)?;
        let picked = up
            .f_where_self(&draw.f_lt_tensor(&prob).map_err(e)?, &down)
            .map_err(e)?;
        (picked + &zeros).f_clamp(0.0, max_int).map_err(e)?
    } else {
        rows.f_div(&scales)
            .and_then(|r| r.f_round())
            .map(|r| r + &zeros)
            .and_then(|r| r.f_clamp(0.0, max_int))
            .map_err(e)?
    };
    (codes - &zeros)
        .f_mul(&scales)
        .and_then(|w| w.f_reshape(shape.as_slice()))
        .map_err(e)
}

impl GaLore {
    /// A new projection from gradient `g` (and Q-GaLore's gap adaptation and quantization).
    fn refresh(&self, proj: Option<Projector>, g: &Tensor) -> Result<Projector, String> {
        let (m, n) = (g.size()[0], g.size()[1]);
        let right = m >= n;
        let gf = g.f_to_kind(Kind::Float).map_err(e)?;
        // torch.svd(some=True) is torch.linalg.svd(full_matrices=False) with V = Vᴴᴴ (tch's
        // linalg_svd always passes a driver, which CPU inputs refuse).
        let (u, _s, v) = gf.f_svd(true, true).map_err(e)?;
        let vh = v.f_tr().map_err(e)?;
        let r = self.rank;
        let float = if right {
            vh.f_narrow(0, 0, r.min(vh.size()[0])).map_err(e)?
        } else {
            u.f_narrow(1, 0, r.min(u.size()[1])).map_err(e)?
        };
        // Contiguous: a matrix product's last bits depend on its operands' layout, and a
        // projection read back from a checkpoint is contiguous, so a resumed run computes
        // exactly what the uninterrupted one did.
        let float = float
            .f_to_kind(g.kind())
            .and_then(|f| f.f_contiguous())
            .map_err(e)?;
        let mut p = proj.unwrap_or(Projector {
            right,
            ortho: Tensor::new(),
            gap: self.gap,
            past: None,
            queue: Vec::new(),
        });
        p.right = right;
        if let Some(q) = self.quant {
            let first = if right {
                float
                    .f_narrow(0, 0, 1)
                    .map_err(e)?
                    .f_flatten(0, -1)
                    .map_err(e)?
            } else {
                float
                    .f_narrow(1, 0, 1)
                    .map_err(e)?
                    .f_flatten(0, -1)
                    .map_err(e)?
            };
            if let Some(past) = &p.past {
                if p.queue.len() == q.queue_size {
                    p.queue.remove(0);
                }
                let cos = Tensor::f_cosine_similarity(past, &first, 0, 1e-8)
                    .and_then(|c| c.f_double_value(&[]))
                    .map_err(e)?;
                p.queue.push(cos);
                if p.queue.len() == q.queue_size
                    && p.queue.iter().sum::<f64>() / q.queue_size as f64 >= q.cos_threshold
                {
                    p.gap = (p.gap as f64 * q.gamma) as i64;
                }
            }
            p.past = Some(first.copy());
            p.ortho = fake_quantize(&float, q.proj_group, q.proj_bits, false)?;
        } else {
            p.ortho = float;
        }
        Ok(p)
    }
}

impl Optimizer for GaLore {
    fn summary(&self) -> String {
        let n = self.slots.iter().filter(|s| s.galore).count();
        format!(
            "{} rank {} gap {} scale {} on {n} of {} tensors",
            if self.quant.is_some() {
                "Q-GaLore"
            } else {
                "GaLore"
            },
            self.rank,
            self.gap,
            self.scale,
            self.slots.len()
        )
    }

    fn step(&mut self, tensors: &[Tensor], lrs: &[f64]) -> Result<(), String> {
        let c = self.adam;
        for i in 0..self.slots.len() {
            let (p, lr) = (&tensors[i], lrs[i]);
            let g = p.grad();
            if !g.defined() || !p.requires_grad() {
                continue;
            }
            let mut p = p.shallow_clone();
            let galore = self.slots[i].galore;
            let low = if galore {
                let s = &mut self.slots[i];
                let due = match &s.proj {
                    None => true,
                    Some(pr) => s.steps % pr.gap == 0,
                };
                if due {
                    let old = self.slots[i].proj.take();
                    let fresh = self.refresh(old, &g)?;
                    self.slots[i].proj = Some(fresh);
                }
                let pr = self.slots[i].proj.as_ref().ok_or("no projection")?;
                if pr.right {
                    g.f_matmul(&pr.ortho.f_tr().map_err(e)?).map_err(e)?
                } else {
                    pr.ortho.f_tr().map_err(e)?.f_matmul(&g).map_err(e)?
                }
            } else {
                g.shallow_clone()
            };
            let s = &mut self.slots[i];
            if s.m.is_none() {
                s.m = Some(low.f_zeros_like().map_err(e)?);
                s.v = Some(low.f_zeros_like().map_err(e)?);
            }
            let (m, v) = (s.m.as_mut().ok_or("m")?, s.v.as_mut().ok_or("v")?);
            s.steps += 1;
            let _ = m.f_mul_scalar_(c.beta1).map_err(e)?;
            let _ = m
                .f_add_(&low.f_mul_scalar(1.0 - c.beta1).map_err(e)?)
                .map_err(e)?;
            let _ = v.f_mul_scalar_(c.beta2).map_err(e)?;
            let sq = low.f_mul(&low).and_then(|x| x.f_mul_scalar(1.0 - c.beta2));
            let _ = v.f_add_(&sq.map_err(e)?).map_err(e)?;
            let denom = v.f_sqrt().and_then(|d| d.f_add_scalar(c.eps)).map_err(e)?;
            let bc1 = 1.0 - c.beta1.powi(s.steps as i32);
            let bc2 = 1.0 - c.beta2.powi(s.steps as i32);
            let step_size = lr * bc2.sqrt() / bc1;
            let mut norm = m.f_div(&denom).map_err(e)?;
            if let Some(pr) = &s.proj {
                let (a, b) = (norm.size()[0], norm.size()[1]);
                norm = if a >= b {
                    norm.f_matmul(&pr.ortho).map_err(e)?
                } else {
                    pr.ortho.f_matmul(&norm).map_err(e)?
                };
                norm = norm.f_mul_scalar(self.scale).map_err(e)?;
            }
            let _ = p
                .f_add_(&norm.f_mul_scalar(-step_size).map_err(e)?)
                .map_err(e)?;
            if s.decay && c.weight_decay > 0.0 {
                let d = p.f_mul_scalar(-lr * c.weight_decay).map_err(e)?;
                let _ = p.f_add_(&d).map_err(e)?;
            }
            if let (Some(q), true) = (self.quant, galore) {
                let snapped = fake_quantize(&p, q.weight_group, 8, q.stochastic)?;
                p.f_copy_(&snapped).map_err(e)?;
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), String> {
        for s in &mut self.slots {
            s.steps = 0;
            s.m = None;
            s.v = None;
            s.proj = None;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((format!("step.{}", s.name), crate::count_tensor(s.steps)));
            if let (Some(m), Some(v)) = (&s.m, &s.v) {
                out.push((format!("exp_avg.{}", s.name), m.shallow_clone()));
                out.push((format!("exp_avg_sq.{}", s.name), v.shallow_clone()));
            }
            if let Some(p) = &s.proj {
                out.push((format!("ortho.{}", s.name), p.ortho.shallow_clone()));
                out.push((
                    format!("proj.{}", s.name),
                    Tensor::from_slice(&[p.right as i64 as f32, p.gap as f32]),
                ));
                if let Some(past) = &p.past {
                    out.push((format!("past.{}", s.name), past.shallow_clone()));
                    let q: Vec<f32> = p.queue.iter().map(|&x| x as f32).collect();
                    out.push((format!("queue.{}", s.name), Tensor::from_slice(&q)));
                }
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String> {
        let get = |k: String| state.iter().find(|(n, _)| *n == k).map(|(_, t)| t.copy());
        for s in &mut self.slots {
            s.steps = crate::count_of(util::find(state, &format!("step.{}", s.name))?)?;
            s.m = get(format!("exp_avg.{}", s.name));
            s.v = get(format!("exp_avg_sq.{}", s.name));
            s.proj = match get(format!("ortho.{}", s.name)) {
                None => None,
                Some(ortho) => {
                    let meta: Vec<f32> = Vec::<f32>::try_from(
                        get(format!("proj.{}", s.name))
                            .ok_or_else(|| {
                                format!("the checkpoint's optimizer state has no `proj.{}`", s.name)
                            })?
                            .f_to_kind(Kind::Float)
                            .map_err(e)?,
                    )
                    .map_err(e)?;
                    let queue: Vec<f64> = match get(format!("queue.{}", s.name)) {
                        Some(q) => Vec::<f32>::try_from(q.f_to_kind(Kind::Float).map_err(e)?)
                            .map_err(e)?
                            .into_iter()
                            .map(f64::from)
                            .collect(),
                        None => Vec::new(),
                    };
                    Some(Projector {
                        right: meta.first().copied().unwrap_or(1.0) != 0.0,
                        gap: meta.get(1).copied().unwrap_or(self.gap as f32) as i64,
                        ortho,
                        past: get(format!("past.{}", s.name)),
                        queue,
                    })
                }
            };
            if s.m.is_some() != s.v.is_some() {
                return Err(format!(
                    "the checkpoint's optimizer state has only one of exp_avg / exp_avg_sq for `{}`",
                    s.name
                ));
            }
        }
        Ok(())
    }
}
