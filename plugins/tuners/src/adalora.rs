//! AdaLoRA on the tuner contract, as PEFT 0.21 computes it (`peft/tuners/adalora`): each targeted
//! linear slot holds an SVD-shaped update `P·Λ·Q` with `lora_A` (`Q`, `[r, in]`), `lora_E` (the
//! singular values `Λ`, `[r, 1]`) and `lora_B` (`P`, `[out, r]`), and its output becomes
//! `base + (dropout(x)·(A ⊙ E)ᵀ·Bᵀ) · alpha / (ranknum + 1e-5)`, with `ranknum` = `init_r`
//! (PEFT keeps the initial rank as the divisor after pruning, and does not store it). `E`
//! starts at zero (the model starts unchanged), `A` and `B` normal with std 0.02.
//!
//! Training adds two things through the contract's hooks:
//!
//! * **Orthogonal regularisation** (`extra_loss`): `orth_reg_weight` times the mean, over every
//!   `A` and `B`, of `‖A·Aᵀ − I‖_F` / `‖Bᵀ·B − I‖_F` (PEFT's `AdaLoraModel.forward`).
//! * **Rank allocation** (`after_backward`, which the host calls after the optimiser's update
//!   and before the gradients are cleared, where PEFT's `update_and_allocate` runs): the
//!   importance `|p ⊙ ∇p|` of every entry, smoothed (`beta1`) and its uncertainty (`beta2`);
//!   a triplet's score is `E`'s plus the means of its `A` row and `B` column; the budget falls
//!   from `init_r` per slot to `target_r` per slot on a cubic schedule between `tinit` and
//!   `total_step − tfinal`, every `deltaT` steps, by zeroing the `E` entries whose score is at
//!   or below the budget's threshold (`RankAllocator.mask_to_budget`); at `total_step − tfinal`
//!   the final pattern is fixed, and re-applied after every later step. `total_step` is the
//!   run's step count (the hook's `total_steps`).
//!
//! Checkpoints are PEFT's: `base_model.model.<slot>.lora_A` / `lora_B` / `lora_E`, cut to the
//! triplets the `rank_pattern` keeps, and `adapter_config.json` with `peft_type: ADALORA`,
//! `init_r`, `target_r`, `tinit`, `tfinal`, `deltaT`, `beta1`, `beta2`, `orth_reg_weight`,
//! `total_step` and `rank_pattern` (`<slot>.lora_E` → one boolean per initial triplet). A file
//! that stores `ranknum` (PEFT before 0.14) is read with it. Merging adds the update to the
//! weight. The allocator's moving averages are not checkpointed (nor are they in PEFT): a
//! resumed run starts them afresh, and, past `total_step − tfinal`, takes the final pattern
//! from the `E` entries that are zero.

use std::sync::Mutex;

use serde_json::{json, Map, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Kind, Tensor};

use crate::lora::target_modules;

/// The `adalora` tuner.
pub struct AdaloraTuner;

impl Tuner for AdaloraTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

/// AdaLoRA's settings (PEFT's `AdaLoraConfig` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaloraConfig {
    pub init_r: i64,
    pub target_r: i64,
    pub tinit: u64,
    pub tfinal: u64,
    pub delta_t: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub orth_reg_weight: f64,
    pub lora_alpha: f64,
    pub dropout: f64,
}

/// An integer option, `default` when unset; refused (naming `flag`) when not an integer ≥ `min`.
fn int(o: &Value, key: &str, flag: &str, default: i64, min: i64) -> Result<i64, String> {
    match &o[key] {
        Value::Null => Ok(default),
        v => match v.as_i64() {
            Some(n) if n >= min => Ok(n),
            _ => Err(format!("{flag} must be an integer >= {min}, got {v}")),
        },
    }
}

/// A float option, `default` when unset; refused (naming `flag` and `range`) when outside it.
fn float(
    o: &Value,
    key: &str,
    flag: &str,
    default: f64,
    ok: fn(f64) -> bool,
    range: &str,
) -> Result<f64, String> {
    match &o[key] {
        Value::Null => Ok(default),
        v => match v.as_f64() {
            Some(x) if x.is_finite() && ok(x) => Ok(x),
            _ => Err(format!("{flag} must be {range}, got {v}")),
        },
    }
}

impl AdaloraConfig {
    /// From the training options (flags by name, `--adalora_*`; ms-swift's defaults), or from a
    /// checkpoint's `adapter_config.json` (PEFT's names, `what` naming the file).
    fn read(o: &Value, train: bool, what: &str) -> Result<Self, String> {
        let name = |flag: &str, peft: &str| -> (String, String) {
            if train {
                (flag.to_string(), format!("--{flag}"))
            } else {
                (peft.to_string(), format!("{what}: {peft}"))
            }
        };
        let i = |flag: &str, peft: &str, default: i64, min: i64| {
            let (k, n) = name(flag, peft);
            int(o, &k, &n, default, min)
        };
        let f = |flag: &str, peft: &str, default: f64, ok: fn(f64) -> bool, range: &str| {
            let (k, n) = name(flag, peft);
            float(o, &k, &n, default, ok, range)
        };
        let open = |x: f64| x > 0.0 && x < 1.0;
        let c = AdaloraConfig {
            init_r: i("adalora_init_r", "init_r", 12, 1)?,
            target_r: i("adalora_target_r", "target_r", 8, 1)?,
            tinit: i("adalora_tinit", "tinit", 0, 0)? as u64,
            tfinal: i("adalora_tfinal", "tfinal", 0, 0)? as u64,
            delta_t: i("adalora_deltaT", "deltaT", 1, 1)? as u64,
            beta1: f("adalora_beta1", "beta1", 0.85, open, "in (0, 1)")?,
            beta2: f("adalora_beta2", "beta2", 0.85, open, "in (0, 1)")?,
            orth_reg_weight: f(
                "adalora_orth_reg_weight",
                "orth_reg_weight",
                0.5,
                |x| x >= 0.0,
                ">= 0",
            )?,
            lora_alpha: f("lora_alpha", "lora_alpha", 32.0, |x| x > 0.0, "> 0")?,
            dropout: if train {
                f(
                    "lora_dropout",
                    "lora_dropout",
                    0.0,
                    |x| (0.0..1.0).contains(&x),
                    "in [0, 1)",
                )?
            } else {
                0.0
            },
        };
        if train && c.target_r >= c.init_r {
            return Err(format!(
                "--adalora_target_r ({}) must be below --adalora_init_r ({}): AdaLoRA prunes the initial rank down to the target (PEFT fails at the final allocation otherwise)",
                c.target_r, c.init_r
            ));
        }
        Ok(c)
    }

    /// PEFT's scaling: `lora_alpha / (ranknum + 1e-5)` with `ranknum` = `init_r`.
    fn scale(&self) -> f64 {
        self.lora_alpha / (self.init_r as f64 + 1e-5)
    }

    /// Refuses a schedule with no budgeting phase (PEFT's `AdaLoraConfig` check), in words of
    /// the flags.
    fn check_schedule(&self, total_step: u64) -> Result<(), String> {
        if self.tinit + self.tfinal >= total_step {
            return Err(format!(
                "AdaLoRA's schedule leaves no steps to prune the ranks in: --adalora_tinit {} + --adalora_tfinal {} must be below the run's {total_step} steps (lower them, or raise --max_steps / --num_train_epochs)",
                self.tinit, self.tfinal
            ));
        }
        Ok(())
    }

    /// PEFT's `RankAllocator.budget_schedule`: the total rank budget at `step` and whether to
    /// mask there.
    pub fn budget(&self, step: u64, total_step: u64, slots: usize) -> (i64, bool) {
        let init = self.init_r * slots as i64;
        let target = self.target_r * slots as i64;
        if step <= self.tinit {
            (init, false)
        } else if step > total_step - self.tfinal {
            (target, true)
        } else {
            let span = (total_step - self.tfinal - self.tinit) as f64;
            let mul = 1.0 - (step - self.tinit) as f64 / span;
            // Python's `int()` truncates toward zero; the value is positive.
            let b = ((init - target) as f64 * mul.powf(3.0) + target as f64) as i64;
            (b, step.is_multiple_of(self.delta_t))
        }
    }
}

/// The allocator's state across steps (PEFT's `RankAllocator` and the config's `rank_pattern`).
#[derive(Default)]
struct Allocator {
    /// Per slot, per tensor (A, B, E): the smoothed importance and its uncertainty.
    ema: Vec<[(Tensor, Tensor); 3]>,
    /// Per slot, which initial triplets are kept (after the first masking).
    rank_pattern: Option<Vec<Vec<bool>>>,
    /// The run's step count, from the hooks.
    total_step: Option<u64>,
}

impl AdapterTuner for AdaloraTuner {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        match req.mode {
            AttachMode::Train => train(req),
            AttachMode::Load => load(req),
        }
    }
}

fn empty_plan(c: &AdaloraConfig, slots: usize, train: bool) -> AdapterPlan {
    AdapterPlan {
        peft_type: "ADALORA".into(),
        method: "AdaLoRA".into(),
        summary: format!(
            "AdaLoRA init_r={} target_r={} alpha={} on {slots} slots",
            c.init_r, c.target_r, c.lora_alpha
        ),
        slots: Vec::new(),
        shared: Vec::new(),
        train_whole: Vec::new(),
        attention: AttentionMode::Full,
        extra_loss: train && c.orth_reg_weight > 0.0,
        after_backward: train,
        merge_refused: None,
        rank: Some(c.init_r),
    }
}

fn decl(name: &str, shape: Vec<i64>, init: Init, trainable: bool) -> TensorDecl {
    TensorDecl {
        name: name.into(),
        key: Some(name.into()),
        shape,
        init,
        dtype: DtypeRule::Float32,
        trainable,
        lr_factor: 1.0,
    }
}

fn linear(s: &SlotInfo) -> Result<(i64, i64), String> {
    if s.kind != SlotKind::Linear || s.shape.len() != 2 {
        return Err(format!(
            "AdaLoRA targets linear slots; `{}` is not one",
            s.name
        ));
    }
    Ok((s.shape[0], s.shape[1]))
}

fn train(req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
    let c = AdaloraConfig::read(&req.options, true, "")?;
    let mut plan = empty_plan(&c, req.slots.len(), true);
    let r = c.init_r;
    let normal = Init::Normal {
        mean: 0.0,
        std: 0.02,
    };
    for s in &req.slots {
        let (out, inp) = linear(s)?;
        plan.slots.push(SlotPlan {
            slot: s.name.clone(),
            tensors: vec![
                decl("lora_A", vec![r, inp], normal.clone(), true),
                decl("lora_B", vec![out, r], normal.clone(), true),
                decl("lora_E", vec![r, 1], Init::Zeros, true),
            ],
            needs_base_weight: false,
        });
    }
    let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
    Ok(Box::new(AdaloraAdapter {
        target_modules: target_modules(&targeted, &req.linear_slots),
        config: c,
        plan,
        state: Mutex::new(Allocator::default()),
    }))
}

/// The kept triplets of each slot in a checkpoint's `rank_pattern` (`<slot>.lora_E` → booleans).
fn stored_pattern(o: &Value, cfg: &str) -> Result<Map<String, Value>, String> {
    match &o["rank_pattern"] {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        other => Err(format!(
            "{cfg}: rank_pattern must be an object of boolean lists, got {other}"
        )),
    }
}

fn load(req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
    let (cfg, file) = (&req.config_file, &req.weights_file);
    let o = &req.options;
    if o["peft_type"].as_str() != Some("ADALORA") {
        return Err(format!(
            "{cfg}: peft_type {} is not ADALORA",
            o["peft_type"]
        ));
    }
    if o["init_r"].is_null() {
        return Err(format!("{cfg}: init_r is missing (AdaLoRA's initial rank)"));
    }
    let c = AdaloraConfig::read(o, false, cfg)?;
    let pattern = stored_pattern(o, cfg)?;
    let mut slots: Vec<&SlotInfo> = Vec::new();
    for key in req.stored.keys() {
        let Some(slot) = key
            .strip_prefix("base_model.model.")
            .and_then(|k| k.strip_suffix(".lora_A"))
        else {
            continue;
        };
        let info = req.slots.iter().find(|s| s.name == slot).ok_or_else(|| {
            format!("{file}: the adapter has weights for `{slot}`, which this model does not have")
        })?;
        slots.push(info);
    }
    slots.sort_by_key(|s| req.slots.iter().position(|x| x.name == s.name));
    let mut plan = empty_plan(&c, slots.len(), false);
    for s in &slots {
        let (out, inp) = linear(s)?;
        let r = match pattern.get(&format!("{}.lora_E", s.name)) {
            None => c.init_r,
            Some(Value::Array(a)) => {
                if a.len() as i64 != c.init_r || a.iter().any(|v| !v.is_boolean()) {
                    return Err(format!(
                        "{cfg}: rank_pattern of `{}` must be {} booleans (init_r)",
                        s.name, c.init_r
                    ));
                }
                a.iter().filter(|v| v.as_bool() == Some(true)).count() as i64
            }
            Some(other) => {
                return Err(format!(
                    "{cfg}: rank_pattern of `{}` must be a list of booleans, got {other}",
                    s.name
                ))
            }
        };
        let mut tensors = vec![
            decl("lora_A", vec![r, inp], Init::Zeros, false),
            decl("lora_B", vec![out, r], Init::Zeros, false),
            decl("lora_E", vec![r, 1], Init::Zeros, false),
        ];
        for (k, want) in tensors.iter().map(|d| (d.name.clone(), d.shape.clone())) {
            let key = format!("base_model.model.{}.{k}", s.name);
            match req.stored.get(&key) {
                Some(shape) if *shape == want => {}
                Some(shape) => {
                    return Err(format!(
                        "{file}: `{key}` is {shape:?}; `{}` ({out}x{inp} in the base, rank {r} from {cfg}'s init_r and rank_pattern) needs {want:?}",
                        s.name
                    ))
                }
                None => return Err(format!("{file}: `{key}` is missing")),
            }
        }
        if req
            .stored
            .contains_key(&format!("base_model.model.{}.ranknum", s.name))
        {
            tensors.push(decl("ranknum", vec![1], Init::Zeros, false));
        }
        plan.slots.push(SlotPlan {
            slot: s.name.clone(),
            tensors,
            needs_base_weight: false,
        });
    }
    let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
    Ok(Box::new(AdaloraAdapter {
        target_modules: target_modules(&targeted, &req.linear_slots),
        config: c,
        plan,
        state: Mutex::new(Allocator {
            total_step: o["total_step"].as_u64(),
            ..Allocator::default()
        }),
    }))
}

struct AdaloraAdapter {
    config: AdaloraConfig,
    plan: AdapterPlan,
    target_modules: Vec<String>,
    state: Mutex<Allocator>,
}

/// `B·(A ⊙ E)` scaled (`[out, in]`, float32): the slot's update.
fn delta(c: &AdaloraConfig, t: &[Tensor]) -> Result<Tensor, tch::TchError> {
    let d = t[1].f_matmul(&t[0].f_mul(&t[2])?)?;
    match t.get(3) {
        Some(ranknum) => d
            .f_mul_scalar(c.lora_alpha)?
            .f_div(&ranknum.f_add_scalar(1e-5)?),
        None => d.f_mul_scalar(c.scale()),
    }
}

/// `score = ema ⊙ uncertainty` of one tensor (PEFT's `_element_score`).
fn score(e: &(Tensor, Tensor)) -> Result<Tensor, tch::TchError> {
    e.0.f_mul(&e.1)
}

impl AdaloraAdapter {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Allocator>, String> {
        self.state
            .lock()
            .map_err(|_| "the AdaLoRA allocator's state was poisoned by an earlier panic".into())
    }

    /// PEFT's `update_ipt`: the importance of every entry from its gradient, smoothed.
    fn update_ipt(&self, st: &mut Allocator, tensors: &[Vec<Tensor>]) -> Result<(), String> {
        let (b1, b2) = (self.config.beta1, self.config.beta2);
        let f = |st: &mut Allocator| -> Result<(), tch::TchError> {
            if st.ema.is_empty() {
                for ts in tensors {
                    let z = |t: &Tensor| -> Result<(Tensor, Tensor), tch::TchError> {
                        Ok((t.f_zeros_like()?, t.f_zeros_like()?))
                    };
                    st.ema.push([z(&ts[0])?, z(&ts[1])?, z(&ts[2])?]);
                }
            }
            for (ts, emas) in tensors.iter().zip(st.ema.iter_mut()) {
                for (p, (avg, unc)) in ts.iter().zip(emas.iter_mut()) {
                    let g = p.grad();
                    if !g.defined() {
                        continue;
                    }
                    let ipt = p.f_detach()?.f_mul(&g)?.f_abs()?;
                    let new_avg = avg.f_mul_scalar(b1)?.f_add(&ipt.f_mul_scalar(1.0 - b1)?)?;
                    let new_unc = unc
                        .f_mul_scalar(b2)?
                        .f_add(&ipt.f_sub(&new_avg)?.f_abs()?.f_mul_scalar(1.0 - b2)?)?;
                    *avg = new_avg;
                    *unc = new_unc;
                }
            }
            Ok(())
        };
        f(st).map_err(|e| format!("adalora importance: {e}"))
    }

    /// PEFT's `mask_to_budget`: zeroes the `E` entries of the triplets whose score is at or
    /// below the `init − budget`-th smallest, and returns which triplets are kept.
    fn mask_to_budget(
        &self,
        st: &Allocator,
        tensors: &[Vec<Tensor>],
        budget: i64,
    ) -> Result<Vec<Vec<bool>>, String> {
        let f = || -> Result<Vec<Vec<bool>>, tch::TchError> {
            let mut scores = Vec::with_capacity(tensors.len());
            for emas in &st.ema {
                let a = score(&emas[0])?.f_mean_dim([1i64].as_slice(), true, None::<Kind>)?;
                let b = score(&emas[1])?
                    .f_mean_dim([0i64].as_slice(), false, None::<Kind>)?
                    .f_view([-1, 1])?;
                let ab = Tensor::f_cat(&[a, b], 1)?.f_sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    None::<Kind>,
                )?;
                scores.push(score(&emas[2])?.f_view([-1])?.f_add(&ab.f_view([-1])?)?);
            }
            let init: i64 = tensors.iter().map(|t| t[0].size()[0]).sum();
            let k = init - budget;
            let all = Tensor::f_cat(&scores, 0)?;
            let threshold = if k >= 1 {
                all.f_kthvalue(k, 0, false)?.0.f_double_value(&[])?
            } else {
                // Nothing to prune: no triplet is at or below the threshold.
                f64::NEG_INFINITY
            };
            let _g = tch::no_grad_guard();
            let mut pattern = Vec::with_capacity(tensors.len());
            for (ts, s) in tensors.iter().zip(&scores) {
                let drop = s.f_le(threshold)?;
                let mut e = ts[2].shallow_clone();
                let _ = e.f_masked_fill_(&drop.f_view([-1, 1])?, 0.0)?;
                let keep: Vec<bool> = Vec::<bool>::try_from(drop.f_logical_not()?)?;
                pattern.push(keep);
            }
            Ok(pattern)
        };
        f().map_err(|e| format!("adalora allocation: {e}"))
    }

    /// PEFT's `mask_using_rank_pattern`: zeroes the `E` entries the pattern drops.
    fn mask_with(&self, tensors: &[Vec<Tensor>], pattern: &[Vec<bool>]) -> Result<(), String> {
        let _g = tch::no_grad_guard();
        let f = || -> Result<(), tch::TchError> {
            for (ts, keep) in tensors.iter().zip(pattern) {
                let mut e = ts[2].shallow_clone();
                let keep = Tensor::from_slice(keep).f_to_device(e.device())?;
                let drop = keep.f_logical_not()?.f_view([-1, 1])?;
                let _ = e.f_masked_fill_(&drop, 0.0)?;
            }
            Ok(())
        };
        f().map_err(|e| format!("adalora masking: {e}"))
    }

    fn set_total(&self, st: &mut Allocator, total_step: u64) -> Result<(), String> {
        if st.total_step != Some(total_step) {
            self.config.check_schedule(total_step)?;
            st.total_step = Some(total_step);
        }
        Ok(())
    }
}

impl Adapter for AdaloraAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let t = call.tensors;
        let c = &self.config;
        let f = || -> Result<Tensor, tch::TchError> {
            let x = call.x.f_to_kind(t[0].kind())?;
            let x = if c.dropout > 0.0 && call.training {
                x.f_native_dropout(c.dropout, true)?.0
            } else {
                x
            };
            let h = x
                .f_matmul(&t[0].f_mul(&t[2])?.f_tr()?)?
                .f_matmul(&t[1].f_tr()?)?;
            let y = match t.get(3) {
                Some(ranknum) => h
                    .f_mul_scalar(c.lora_alpha)?
                    .f_div(&ranknum.f_add_scalar(1e-5)?)?,
                None => h.f_mul_scalar(c.scale())?,
            };
            let kind = call.base.kind();
            call.base.f_add(&y)?.f_to_kind(kind)
        };
        f().map_err(|e| format!("adalora: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], _shared: &[Tensor]) -> Result<Saved, String> {
        let st = self.lock()?;
        let c = &self.config;
        let mut out = Vec::new();
        let mut pattern = Map::new();
        for (i, (sp, ts)) in self.plan.slots.iter().zip(tensors).enumerate() {
            let keep = st.rank_pattern.as_ref().map(|p| &p[i]);
            let f = || -> Result<Vec<(String, Tensor)>, tch::TchError> {
                let mut v = Vec::new();
                let idx = keep.map(|k| {
                    let kept: Vec<i64> = k
                        .iter()
                        .enumerate()
                        .filter(|(_, on)| **on)
                        .map(|(j, _)| j as i64)
                        .collect();
                    Tensor::from_slice(&kept)
                });
                for (d, t) in sp.tensors.iter().zip(ts) {
                    let t = t.f_detach()?;
                    let t = match (&idx, d.name.as_str()) {
                        (Some(idx), "lora_A" | "lora_E") => t.f_index_select(0, idx)?,
                        (Some(idx), "lora_B") => t.f_index_select(1, idx)?,
                        _ => t,
                    };
                    v.push((format!("base_model.model.{}.{}", sp.slot, d.name), t));
                }
                Ok(v)
            };
            out.extend(f().map_err(|e| format!("adalora save: {e}"))?);
            if let Some(k) = keep {
                pattern.insert(format!("{}.lora_E", sp.slot), json!(k));
            }
        }
        let total_step = st.total_step.ok_or(
            "AdaLoRA is saved before its first step: the run's step count (total_step) is not known yet",
        )?;
        Ok(Saved {
            tensors: out,
            config: crate::peft_config(
                "ADALORA",
                &self.target_modules,
                true,
                json!({
                    // PEFT ignores `r` for AdaLoRA (init_r is the rank) and warns unless it is 8.
                    "r": 8,
                    "lora_alpha": c.lora_alpha,
                    "lora_dropout": c.dropout,
                    "init_r": c.init_r,
                    "target_r": c.target_r,
                    "tinit": c.tinit,
                    "tfinal": c.tfinal,
                    "deltaT": c.delta_t,
                    "beta1": c.beta1,
                    "beta2": c.beta2,
                    "orth_reg_weight": c.orth_reg_weight,
                    "total_step": total_step,
                    "rank_pattern": if st.rank_pattern.is_some() { Value::Object(pattern) } else { Value::Null },
                    "init_lora_weights": true,
                    "use_rslora": false,
                    "use_dora": false
                }),
            ),
        })
    }

    fn merge(
        &self,
        _slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        _shared: &[Tensor],
    ) -> Result<Tensor, String> {
        let _g = tch::no_grad_guard();
        let f = || -> Result<Tensor, tch::TchError> {
            let d = delta(&self.config, tensors)?;
            weight
                .f_to_kind(Kind::Float)?
                .f_add(&d)?
                .f_to_kind(weight.kind())
        };
        f().map_err(|e| format!("adalora merge: {e}"))
    }

    fn extra_loss(
        &self,
        tensors: &[Vec<Tensor>],
        _shared: &[Tensor],
        _step: u64,
        total_steps: u64,
    ) -> Result<Option<Tensor>, String> {
        {
            let mut st = self.lock()?;
            self.set_total(&mut st, total_steps)?;
        }
        if self.config.orth_reg_weight <= 0.0 || tensors.is_empty() {
            return Ok(None);
        }
        let f = || -> Result<Tensor, tch::TchError> {
            let mut sum: Option<Tensor> = None;
            let mut n = 0i64;
            for ts in tensors {
                for (p, is_a) in [(&ts[0], true), (&ts[1], false)] {
                    let cov = if is_a {
                        p.f_matmul(&p.f_tr()?)?
                    } else {
                        p.f_tr()?.f_matmul(p)?
                    };
                    let r = cov.size()[0];
                    let eye = Tensor::f_eye(r, (cov.kind(), cov.device()))?;
                    let norm = cov.f_sub(&eye)?.f_norm()?;
                    sum = Some(match sum {
                        Some(s) => s.f_add(&norm)?,
                        None => norm,
                    });
                    n += 1;
                }
            }
            let sum = sum.unwrap_or_else(|| Tensor::from(0.0f32));
            sum.f_div_scalar(n.max(1))?
                .f_mul_scalar(self.config.orth_reg_weight)
        };
        f().map(Some)
            .map_err(|e| format!("adalora orthogonal regularisation: {e}"))
    }

    fn after_backward(
        &self,
        tensors: &[Vec<Tensor>],
        _shared: &[Tensor],
        step: u64,
        total_steps: u64,
    ) -> Result<(), String> {
        let mut st = self.lock()?;
        self.set_total(&mut st, total_steps)?;
        let c = &self.config;
        let end = total_steps - c.tfinal;
        if step < end {
            self.update_ipt(&mut st, tensors)?;
            let (budget, mask) = c.budget(step, total_steps, tensors.len());
            if mask {
                let p = self.mask_to_budget(&st, tensors, budget)?;
                st.rank_pattern = Some(p);
            }
        } else if step == end {
            if st.ema.is_empty() {
                // A run resumed right here: no importance yet, the current gradients give it.
                self.update_ipt(&mut st, tensors)?;
            }
            let (budget, _) = c.budget(step, total_steps, tensors.len());
            let p = self.mask_to_budget(&st, tensors, budget)?;
            st.rank_pattern = Some(p);
            st.ema.clear();
        } else {
            if st.rank_pattern.is_none() {
                // A run resumed after the final allocation: its pattern is the E entries that
                // the masking left at zero.
                let f = || -> Result<Vec<Vec<bool>>, tch::TchError> {
                    tensors
                        .iter()
                        .map(|ts| Vec::<bool>::try_from(ts[2].f_ne(0.0)?.f_view([-1])?))
                        .collect()
                };
                st.rank_pattern = Some(f().map_err(|e| format!("adalora: {e}"))?);
            }
            if let Some(p) = &st.rank_pattern {
                self.mask_with(tensors, p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_falls_on_peft_s_cubic_schedule() {
        let _rng = crate::tests::global_rng();
        // 3 slots: 36 triplets at init_r 12, 24 at target_r 8; tinit 10, tfinal 20, total 100.
        let c = AdaloraConfig::read(
            &json!({"adalora_init_r": 12, "adalora_target_r": 8, "adalora_tinit": 10,
                    "adalora_tfinal": 20, "adalora_deltaT": 10}),
            true,
            "",
        )
        .unwrap();
        assert_eq!(c.budget(10, 100, 3), (36, false), "warm-up");
        // 12 · (1 − 1/70)³ + 24 = 12 · 328509/343000 + 24 = 35.49…
        assert_eq!(c.budget(11, 100, 3), (35, false));
        // 12 · (3/7)³ + 24 = 12 · 27/343 + 24 = 24.94…, and 50 is a multiple of deltaT.
        assert_eq!(c.budget(50, 100, 3), (24, true));
        assert_eq!(c.budget(81, 100, 3), (24, true), "final phase");
        assert!(
            c.check_schedule(30).is_err(),
            "tinit + tfinal = 30 leaves no step"
        );
        assert!(c.check_schedule(31).is_ok());
    }

    #[test]
    fn a_target_rank_not_below_the_initial_one_is_refused() {
        let _rng = crate::tests::global_rng();
        let e = AdaloraConfig::read(
            &json!({"adalora_init_r": 4, "adalora_target_r": 4}),
            true,
            "",
        )
        .unwrap_err();
        assert!(
            e.contains("--adalora_target_r (4) must be below --adalora_init_r (4)"),
            "{e}"
        );
        let e = AdaloraConfig::read(&json!({"adalora_beta2": 1.0}), true, "").unwrap_err();
        assert!(
            e.contains("--adalora_beta2 must be in (0, 1), got 1.0"),
            "{e}"
        );
    }
}
