//! VeRA on the tuner contract, as PEFT computes it: one pair of frozen random projections shared
//! by every targeted slot (`vera_A` `[r, max in]`, `vera_B` `[max out, r]`, drawn
//! Kaiming-uniform with bound `√(6 / fan_in)` from a generator seeded with
//! `--vera_projection_prng_key`, `vera_A` first), and per slot two trained scaling vectors:
//! the slot's output becomes `base + λ_b ⊙ ((λ_d ⊙ (dropout(x)·A_sᵀ))·B_sᵀ)` with `A_s`, `B_s`
//! the slices `A[:, :in]`, `B[:out, :]`; `λ_b` starts at zero (the model starts unchanged) and
//! `λ_d` at `--vera_d_initial`.
//!
//! Checkpoints are PEFT's: `base_model.model.<slot>.vera_lambda_b` / `vera_lambda_d`, the shared
//! projections as `base_model.vera_A` / `base_model.vera_B` (`save_projection: true`), and
//! `adapter_config.json` with `peft_type: VERA`, `r`, `projection_prng_key`, `d_initial`.
//! Merging adds `diag(λ_b)·B_s·diag(λ_d)·A_s` to the weight.

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Kind, Tensor};
use swift_plugin_tensors::tuner::keyed;

use crate::lora::target_modules;

const A_KEY: &str = "base_model.vera_A";
const B_KEY: &str = "base_model.vera_B";

/// The `vera` tuner.
pub struct VeraTuner;

impl Tuner for VeraTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

/// VeRA's settings.
#[derive(Debug, Clone, PartialEq)]
struct VeraConfig {
    r: i64,
    prng_key: i64,
    dropout: f64,
    d_initial: f64,
}

impl AdapterTuner for VeraTuner {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        let o = &req.options;
        let (config, slots): (VeraConfig, Vec<&SlotInfo>) = match req.mode {
            AttachMode::Train => {
                let r = o["vera_rank"].as_i64().unwrap_or(256);
                if r <= 0 {
                    return Err(format!("--vera_rank must be positive, got {r}"));
                }
                let c = VeraConfig {
                    r,
                    prng_key: o["vera_projection_prng_key"].as_i64().unwrap_or(0),
                    dropout: o["vera_dropout"].as_f64().unwrap_or(0.0),
                    d_initial: o["vera_d_initial"].as_f64().unwrap_or(0.1),
                };
                (c, req.slots.iter().collect())
            }
            AttachMode::Load => {
                let (cfg, file) = (&req.config_file, &req.weights_file);
                if o["peft_type"].as_str() != Some("VERA") {
                    return Err(format!("{cfg}: peft_type {} is not VERA", o["peft_type"]));
                }
                let r = match o["r"].as_i64() {
                    Some(r) if r >= 1 => r,
                    _ => return Err(format!("{cfg}: r is {}; it must be an integer ≥ 1", o["r"])),
                };
                if o["save_projection"].as_bool() == Some(false) {
                    return Err(format!(
                        "{cfg}: save_projection is false (the projections are not in the file); this swift reads VeRA checkpoints that save them"
                    ));
                }
                let c = VeraConfig {
                    r,
                    prng_key: o["projection_prng_key"].as_i64().unwrap_or(0),
                    dropout: 0.0,
                    d_initial: o["d_initial"].as_f64().unwrap_or(0.1),
                };
                let mut slots = Vec::new();
                for key in req.stored.keys() {
                    let Some(slot) = key
                        .strip_prefix("base_model.model.")
                        .and_then(|k| k.strip_suffix(".vera_lambda_b"))
                    else {
                        continue;
                    };
                    let info = req.slots.iter().find(|s| s.name == slot).ok_or_else(|| {
                        format!("{file}: the adapter has weights for `{slot}`, which this model does not have")
                    })?;
                    slots.push(info);
                }
                (c, slots)
            }
        };
        let r = config.r;
        let mut plan = AdapterPlan {
            peft_type: "VERA".into(),
            method: "VeRA".into(),
            summary: format!("VeRA r={r} on {} slots", slots.len()),
            slots: Vec::new(),
            shared: Vec::new(),
            train_whole: Vec::new(),
            attention: AttentionMode::Full,
            extra_loss: false,
            after_backward: false,
            merge_refused: None,
            rank: Some(r),
        };
        let train = req.mode == AttachMode::Train;
        let decl = |name: &str, shape: Vec<i64>, init: Init, trainable: bool| TensorDecl {
            name: name.into(),
            key: Some(name.into()),
            shape,
            init,
            dtype: DtypeRule::Float32,
            trainable,
            lr_factor: 1.0,
        };
        let (mut max_in, mut max_out) = (0, 0);
        for s in &slots {
            if s.kind != SlotKind::Linear || s.shape.len() != 2 {
                return Err(format!(
                    "VeRA targets linear slots; `{}` is not one",
                    s.name
                ));
            }
            let (out, inp) = (s.shape[0], s.shape[1]);
            max_in = max_in.max(inp);
            max_out = max_out.max(out);
            plan.slots.push(SlotPlan {
                slot: s.name.clone(),
                tensors: vec![
                    decl("vera_lambda_b", vec![out], Init::Zeros, train),
                    decl(
                        "vera_lambda_d",
                        vec![r],
                        Init::Constant {
                            value: config.d_initial,
                        },
                        train,
                    ),
                ],
                needs_base_weight: false,
            });
        }
        if req.mode == AttachMode::Load {
            // The stored projections may be larger than this model's slots need (PEFT sizes them
            // by the largest targeted layer), never smaller.
            let (file, cfg) = (&req.weights_file, &req.config_file);
            let shape = |k: &str| {
                req.stored
                    .get(k)
                    .cloned()
                    .ok_or_else(|| format!("{file}: `{k}` is missing (VeRA's shared projection)"))
            };
            let (a, b) = (shape(A_KEY)?, shape(B_KEY)?);
            if a.len() != 2
                || b.len() != 2
                || a[0] != r
                || b[1] != r
                || a[1] < max_in
                || b[0] < max_out
            {
                return Err(format!(
                    "{file}: vera_A {a:?} and vera_B {b:?} do not fit r = {r} ({cfg}) and slots up to {max_out}x{max_in}"
                ));
            }
            (max_in, max_out) = (a[1], b[0]);
        }
        let shared = |key: &str, shape: Vec<i64>| TensorDecl {
            name: key.rsplit('.').next().unwrap_or(key).into(),
            key: Some(key.into()),
            shape,
            init: Init::Plugin,
            dtype: DtypeRule::Float32,
            trainable: false,
            lr_factor: 1.0,
        };
        plan.shared = vec![
            shared(A_KEY, vec![r, max_in]),
            shared(B_KEY, vec![max_out, r]),
        ];
        let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
        let shapes = slots.iter().map(|s| (s.shape[0], s.shape[1])).collect();
        Ok(Box::new(VeraAdapter {
            target_modules: target_modules(&targeted, &req.linear_slots),
            config,
            plan,
            shapes,
        }))
    }
}

struct VeraAdapter {
    config: VeraConfig,
    plan: AdapterPlan,
    target_modules: Vec<String>,
    /// Per slot, its `(out, in)`.
    shapes: Vec<(i64, i64)>,
}

/// PEFT's `_kaiming_init`: uniform in `±√(6 / fan_in)` (fan_in: the second dimension).
fn kaiming(shape: [i64; 2]) -> Result<Tensor, tch::TchError> {
    let bound = (6.0 / shape[1] as f64).sqrt();
    Tensor::f_empty(shape, (Kind::Float, tch::Device::Cpu))?.f_uniform_(-bound, bound)
}

impl VeraAdapter {
    /// `diag(λ_b)·B_s·diag(λ_d)·A_s` for slot `slot` (`[out, in]`, float32).
    fn delta(&self, slot: usize, t: &[Tensor], shared: &[Tensor]) -> Result<Tensor, tch::TchError> {
        let (out, inp) = self.shapes[slot];
        let a = shared[0].f_narrow(1, 0, inp)?;
        let b = shared[1].f_narrow(0, 0, out)?;
        let (lb, ld) = (&t[0], &t[1]);
        b.f_mul(&lb.f_unsqueeze(1)?)?
            .f_matmul(&a.f_mul(&ld.f_unsqueeze(1)?)?)
    }
}

impl Adapter for VeraAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn init(
        &self,
        slot: Option<usize>,
        _weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String> {
        if slot.is_some() {
            return Err("VeRA computes only its shared projections".into());
        }
        let r = self.config.r;
        let (ia, ob) = (self.plan.shared[0].shape[1], self.plan.shared[1].shape[0]);
        // PEFT draws both from one generator seeded with projection_prng_key, vera_A first.
        tch::manual_seed(self.config.prng_key);
        let f = || -> Result<Vec<Tensor>, tch::TchError> {
            Ok(vec![kaiming([r, ia])?, kaiming([ob, r])?])
        };
        Ok((f().map_err(|e| format!("vera init: {e}"))?, None))
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let (out, inp) = self.shapes[call.slot];
        let (lb, ld) = (&call.tensors[0], &call.tensors[1]);
        let f = || -> Result<Tensor, tch::TchError> {
            let a = call.shared[0].f_narrow(1, 0, inp)?;
            let b = call.shared[1].f_narrow(0, 0, out)?;
            let x = call.x.f_to_kind(ld.kind())?;
            let x = if self.config.dropout > 0.0 && call.training {
                x.f_native_dropout(self.config.dropout, true)?.0
            } else {
                x
            };
            let h = x.f_matmul(&a.f_tr()?)?.f_mul(ld)?;
            let y = h.f_matmul(&b.f_tr()?)?.f_mul(lb)?;
            let kind = call.base.kind();
            call.base.f_add(&y)?.f_to_kind(kind)
        };
        f().map_err(|e| format!("vera: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        let c = &self.config;
        Ok(Saved {
            tensors: keyed(&self.plan, tensors, shared),
            config: crate::peft_config(
                "VERA",
                &self.target_modules,
                true,
                json!({
                    "r": c.r,
                    "projection_prng_key": c.prng_key,
                    "save_projection": true,
                    "vera_dropout": c.dropout,
                    "d_initial": c.d_initial,
                    "init_weights": true
                }),
            ),
        })
    }

    fn merge(
        &self,
        slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        shared: &[Tensor],
    ) -> Result<Tensor, String> {
        let _g = tch::no_grad_guard();
        let f = || -> Result<Tensor, tch::TchError> {
            let d = self.delta(slot, tensors, shared)?;
            weight
                .f_to_kind(Kind::Float)?
                .f_add(&d)?
                .f_to_kind(weight.kind())
        };
        f().map_err(|e| format!("vera merge: {e}"))
    }
}
