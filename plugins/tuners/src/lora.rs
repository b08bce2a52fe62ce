//! LoRA and its variants as an adapter on the tuner contract (swift-plugin-tensors' `tuner`):
//! a targeted slot's output becomes `base + dropout(x) · Aᵀ · Bᵀ · alpha / r`, with `A`
//! (`[r, in]`) drawn Kaiming-uniform as PEFT does (`a = √5`, so the bound is `1/√in`) and `B`
//! (`[out, r]`) zero, so the adapted model starts equal to the base. On the CPU the dropout's
//! mask is drawn by `dropout.rs` and its `1/(1 − p)` folded into the scaling, and the sum with
//! the base output is one `addmm` (no pass over the output for the scaling or the sum).
//!
//! Variants (PEFT's names): rsLoRA scales by `alpha / √r`; DoRA (`use_dora`) re-normalises each
//! output row to a trained magnitude `m`: the slot's output becomes
//! `base + (m / ‖W + s·B·A‖ − 1) ⊙ x·Wᵀ + (m / ‖W + s·B·A‖) ⊙ s·x·Aᵀ·Bᵀ`, the norm per output
//! row and detached from the gradient, as PEFT computes it. PiSSA and OLoRA (`init_weights`)
//! initialise `A` and `B` from the base weight (its top singular vectors, or its QR factors)
//! and give the host `W − s·B·A` as the new base so the model starts unchanged; such an adapter
//! is saved converted to a plain LoRA of rank `2r` (`A' = [A; A₀]`, `B' = [B, −B₀]`, alpha
//! doubled), as PEFT's `path_initial_model_for_weight_conversion` does, so it applies to the
//! original base model. LoRA+ (`lora_lr_ratio`) is `B`'s learning-rate factor.
//!
//! Checkpoints are PEFT's: `adapter_config.json` (`peft_type: LORA`, `r`, `lora_alpha`,
//! `target_modules`, ...) and `base_model.model.<slot>.lora_A.weight` / `lora_B.weight` (and
//! `lora_magnitude_vector`), which Python `peft.PeftModel.from_pretrained` reads.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Kind, Tensor};
use swift_plugin_tensors::tuner::keyed;

/// How the adapter tensors start (PEFT's `init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInit {
    /// `A` Kaiming-uniform, `B` zero (PEFT's `true`).
    Kaiming,
    /// `A` normal with standard deviation `1 / r`, `B` zero (PEFT's `gaussian`).
    Gaussian,
    /// `A`, `B` from the top-`r` singular triplets of `W` (PiSSA).
    Pissa,
    /// `A`, `B` from the QR decomposition of `W` (OLoRA).
    Olora,
}

impl LoraInit {
    /// Parses ms-swift's `--init_weights` (`true`, `gaussian`, `pissa`, `olora`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "true" | "default" | "kaiming" => Ok(Self::Kaiming),
            "gaussian" => Ok(Self::Gaussian),
            "pissa" => Ok(Self::Pissa),
            "olora" => Ok(Self::Olora),
            other => Err(format!(
                "init_weights `{other}` is not one of true, gaussian, pissa, olora"
            )),
        }
    }

    /// Whether the base weight is changed at initialisation (and the adapter saved converted).
    pub fn mutates_base(self) -> bool {
        matches!(self, Self::Pissa | Self::Olora)
    }
}

/// LoRA's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub init: LoraInit,
    pub lr_ratio: Option<f64>,
}

impl LoraConfig {
    /// The factor applied to `x Aᵀ Bᵀ`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Reads the training options (the tuner's record options overridden by the flags).
    fn from_options(o: &Value) -> Result<Self, String> {
        let r = o["lora_rank"].as_i64().unwrap_or(8);
        if r <= 0 {
            return Err(format!("--lora_rank must be positive, got {r}"));
        }
        let boolean = |key: &str| -> Result<bool, String> {
            match &o[key] {
                Value::Null => Ok(false),
                Value::Bool(b) => Ok(*b),
                other => Err(format!("option {key} must be true or false, got {other}")),
            }
        };
        let init = match &o["init_weights"] {
            Value::Null | Value::Bool(true) => LoraInit::Kaiming,
            Value::String(s) => LoraInit::parse(s)?,
            other => {
                return Err(format!(
                    "option init_weights must be true, gaussian, pissa or olora, got {other}"
                ))
            }
        };
        let lr_ratio = match &o["lora_lr_ratio"] {
            Value::Null => None,
            v => {
                let r = v
                    .as_f64()
                    .ok_or_else(|| format!("option lora_lr_ratio must be a number, got {v}"))?;
                if !(r > 0.0 && r.is_finite()) {
                    return Err(format!(
                        "--lora_lr_ratio must be a positive number, got {r}"
                    ));
                }
                Some(r)
            }
        };
        let config = Self {
            r,
            alpha: o["lora_alpha"].as_f64().unwrap_or(32.0),
            dropout: o["lora_dropout"].as_f64().unwrap_or(0.0),
            use_rslora: boolean("use_rslora")?,
            use_dora: boolean("use_dora")?,
            init,
            lr_ratio,
        };
        if config.use_dora && config.init.mutates_base() {
            return Err("DoRA with PiSSA/OLoRA initialisation is not supported; pick one".into());
        }
        Ok(config)
    }

    /// Reads a checkpoint's `adapter_config.json` (`cfg_file` for messages).
    fn from_checkpoint(cfg: &Value, cfg_file: &str) -> Result<Self, String> {
        if cfg["peft_type"].as_str().unwrap_or("LORA") != "LORA" {
            return Err(format!(
                "{cfg_file}: peft_type {} is not LORA",
                cfg["peft_type"]
            ));
        }
        let r = match cfg.get("r").and_then(Value::as_i64) {
            Some(r) if r >= 1 => r,
            Some(r) => {
                return Err(format!(
                    "{cfg_file}: r is {r}; a LoRA rank must be at least 1"
                ))
            }
            None => {
                return Err(format!(
                    "{cfg_file}: no integer `r` (the LoRA rank); is this a PEFT LoRA checkpoint?"
                ))
            }
        };
        for pattern in ["rank_pattern", "alpha_pattern"] {
            if cfg
                .get(pattern)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(format!(
                    "{cfg_file}: per-module ranks or alphas (`{pattern}`) are not supported; retrain with one rank"
                ));
            }
        }
        let alpha = match cfg.get("lora_alpha") {
            None | Some(Value::Null) => r as f64,
            Some(v) => match v.as_f64() {
                Some(a) if a.is_finite() && a > 0.0 => a,
                _ => {
                    return Err(format!(
                        "{cfg_file}: lora_alpha is {v}; it must be a finite number > 0"
                    ))
                }
            },
        };
        Ok(Self {
            r,
            alpha,
            dropout: 0.0,
            use_rslora: cfg["use_rslora"].as_bool().unwrap_or(false),
            use_dora: cfg["use_dora"].as_bool().unwrap_or(false),
            init: LoraInit::Kaiming,
            lr_ratio: None,
        })
    }
}

/// The `lora` tuner: slot choice from `target_modules`, and the LoRA adapter.
pub struct LoraTuner;

impl Tuner for LoraTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

impl AdapterTuner for LoraTuner {
    fn attach(&self, request: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        Ok(Box::new(match request.mode {
            AttachMode::Train => LoraAdapter::train(request)?,
            AttachMode::Load => LoraAdapter::load(request)?,
        }))
    }
}

/// One attached LoRA: its settings and plan. Per slot, tensors are `lora_A`, `lora_B`, then
/// DoRA's `lora_magnitude_vector`, then (PiSSA/OLoRA while training) the initial `A₀`, `B₀`.
pub struct LoraAdapter {
    config: LoraConfig,
    plan: AdapterPlan,
    target_modules: Vec<String>,
}

fn decl(
    name: &str,
    key: Option<&str>,
    shape: Vec<i64>,
    init: Init,
    dtype: DtypeRule,
    trainable: bool,
) -> TensorDecl {
    TensorDecl {
        name: name.into(),
        key: key.map(String::from),
        shape,
        init,
        dtype,
        trainable,
        lr_factor: 1.0,
    }
}

fn summary(c: &LoraConfig) -> String {
    let mut s = format!("LoRA r={} alpha={}", c.r, c.alpha);
    if c.use_rslora {
        s.push_str(" rsLoRA");
    }
    if c.use_dora {
        s.push_str(" DoRA");
    }
    match c.init {
        LoraInit::Pissa => s.push_str(" PiSSA"),
        LoraInit::Olora => s.push_str(" OLoRA"),
        LoraInit::Gaussian => s.push_str(" gaussian init"),
        LoraInit::Kaiming => {}
    }
    s
}

fn empty_plan(c: &LoraConfig) -> AdapterPlan {
    AdapterPlan {
        peft_type: "LORA".into(),
        method: "LoRA".into(),
        summary: summary(c),
        slots: Vec::new(),
        shared: Vec::new(),
        train_whole: Vec::new(),
        attention: AttentionMode::Full,
        extra_loss: false,
        after_backward: false,
        merge_refused: None,
        rank: Some(c.r),
    }
}

/// PEFT's `target_modules` for `targeted` slots: their last name parts when those pick out
/// exactly the targeted slots among `linear_slots`, else the full slot names.
pub fn target_modules(targeted: &[String], linear_slots: &[String]) -> Vec<String> {
    let targeted: BTreeSet<&str> = targeted.iter().map(String::as_str).collect();
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    let suffixes: BTreeSet<String> = targeted.iter().map(|s| last(s)).collect();
    let exact = linear_slots
        .iter()
        .filter(|s| suffixes.contains(&last(s)))
        .all(|s| targeted.contains(s.as_str()));
    if exact {
        suffixes.into_iter().collect()
    } else {
        targeted.into_iter().map(String::from).collect()
    }
}

impl LoraAdapter {
    pub(crate) fn train(req: &AttachRequest) -> Result<Self, String> {
        let c = LoraConfig::from_options(&req.options)?;
        let mut plan = empty_plan(&c);
        // Plain LoRA's tensors stay float32 on a half-precision base, as PEFT keeps them
        // (autocast_adapter_dtype); DoRA's follow the base.
        let dtype = if c.use_dora {
            DtypeRule::Base
        } else {
            DtypeRule::Float32
        };
        for s in &req.slots {
            let name = &s.name;
            if s.kind != SlotKind::Linear || s.shape.len() != 2 {
                return Err(format!("LoRA targets linear slots; `{name}` is not one"));
            }
            if s.quantized && (c.use_dora || c.init.mutates_base()) {
                return Err(format!(
                    "`{name}` is quantized: DoRA, PiSSA and OLoRA need the float base weight (use plain LoRA for QLoRA)"
                ));
            }
            let (out, inp) = (s.shape[0], s.shape[1]);
            if c.init.mutates_base() && c.r > out.min(inp) {
                let m = if c.init == LoraInit::Pissa {
                    "PiSSA"
                } else {
                    "OLoRA"
                };
                return Err(format!(
                    "{m} needs --lora_rank ≤ min(out, in) = {}",
                    out.min(inp)
                ));
            }
            let (a_init, b_init) = match c.init {
                LoraInit::Kaiming => (Init::KaimingUniform { fan_in: inp }, Init::Zeros),
                LoraInit::Gaussian => (
                    Init::Normal {
                        mean: 0.0,
                        std: 1.0 / c.r as f64,
                    },
                    Init::Zeros,
                ),
                LoraInit::Pissa | LoraInit::Olora => (Init::Plugin, Init::Plugin),
            };
            let mut tensors = vec![
                decl(
                    "lora_A",
                    Some("lora_A.weight"),
                    vec![c.r, inp],
                    a_init,
                    dtype,
                    true,
                ),
                decl(
                    "lora_B",
                    Some("lora_B.weight"),
                    vec![out, c.r],
                    b_init,
                    dtype,
                    true,
                ),
            ];
            if let Some(ratio) = c.lr_ratio {
                tensors[1].lr_factor = ratio;
            }
            if c.use_dora {
                tensors.push(decl(
                    "magnitude",
                    Some("lora_magnitude_vector"),
                    vec![out],
                    Init::Plugin,
                    DtypeRule::Base,
                    true,
                ));
            }
            if c.init.mutates_base() {
                let f = DtypeRule::Float32;
                tensors.push(decl(
                    "lora_A0",
                    None,
                    vec![c.r, inp],
                    Init::Plugin,
                    f,
                    false,
                ));
                tensors.push(decl(
                    "lora_B0",
                    None,
                    vec![out, c.r],
                    Init::Plugin,
                    f,
                    false,
                ));
            }
            plan.slots.push(SlotPlan {
                slot: name.clone(),
                tensors,
                needs_base_weight: c.use_dora,
            });
        }
        let targeted: Vec<String> = req.slots.iter().map(|s| s.name.clone()).collect();
        Ok(Self {
            target_modules: target_modules(&targeted, &req.linear_slots),
            config: c,
            plan,
        })
    }

    pub(crate) fn load(req: &AttachRequest) -> Result<Self, String> {
        let (cfg_file, file) = (&req.config_file, &req.weights_file);
        let c = LoraConfig::from_checkpoint(&req.options, cfg_file)?;
        let mut plan = empty_plan(&c);
        let r = c.r;
        let mut slots: Vec<&str> = req
            .stored
            .keys()
            .filter_map(|n| {
                n.strip_prefix("base_model.model.")?
                    .strip_suffix(".lora_A.weight")
            })
            .collect();
        slots.sort();
        for name in slots {
            let info = req.slots.iter().find(|s| s.name == name).ok_or_else(|| {
                format!(
                    "{file}: the adapter has weights for `{name}`, which this model does not have"
                )
            })?;
            let key = |k: &str| format!("base_model.model.{name}.{k}");
            let a = &req.stored[&key("lora_A.weight")];
            let b = req
                .stored
                .get(&key("lora_B.weight"))
                .ok_or_else(|| format!("{file}: `{name}` has lora_A but no lora_B"))?;
            if a.first() != Some(&r) || b.get(1) != Some(&r) {
                return Err(format!(
                    "{file}: `{name}` has lora_A {a:?} and lora_B {b:?}, which are not rank {r} as {cfg_file} says (r): the adapter's files do not match"
                ));
            }
            let (out, inp) = (info.shape[0], info.shape[1]);
            if a.len() != 2 || b.len() != 2 || a[1] != inp || b[0] != out {
                return Err(format!(
                    "{file}: `{name}` is {out}x{inp} in the base, the adapter's lora_B x lora_A is {}x{}",
                    b[0],
                    a.get(1).copied().unwrap_or(0)
                ));
            }
            // Read in the model's dtype, as before the contract.
            let base = DtypeRule::Base;
            let mut tensors = vec![
                decl(
                    "lora_A",
                    Some("lora_A.weight"),
                    vec![r, inp],
                    Init::Zeros,
                    base,
                    false,
                ),
                decl(
                    "lora_B",
                    Some("lora_B.weight"),
                    vec![out, r],
                    Init::Zeros,
                    base,
                    false,
                ),
            ];
            if c.use_dora {
                let km = key("lora_magnitude_vector");
                match req.stored.get(&km) {
                    Some(s) if *s == [out] => {}
                    Some(s) => {
                        return Err(format!(
                            "{file}: `{km}` is {s:?}, the slot has {out} outputs"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "{file}: use_dora is set but `{km}` cannot be read: it is missing"
                        ))
                    }
                }
                tensors.push(decl(
                    "magnitude",
                    Some("lora_magnitude_vector"),
                    vec![out],
                    Init::Zeros,
                    base,
                    false,
                ));
            }
            plan.slots.push(SlotPlan {
                slot: name.to_string(),
                tensors,
                needs_base_weight: c.use_dora,
            });
        }
        let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
        Ok(Self {
            target_modules: target_modules(&targeted, &req.linear_slots),
            config: c,
            plan,
        })
    }
}

/// Starting `A` (`[r, in]`) and `B` (`[out, r]`) for PiSSA / OLoRA, in float32, and the
/// residual base weight `W − s·B·A`.
pub fn init_factors(
    init: LoraInit,
    weight: &Tensor,
    config: &LoraConfig,
) -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
    let _g = tch::no_grad_guard();
    let r = config.r;
    let w = weight.f_to_kind(Kind::Float)?;
    let (a, b) = if init == LoraInit::Pissa {
        // W = U·diag(S)·Vᵀ; A = diag(√(S/s))·Vᵀ_r, B = U_r·diag(√(S/s)).
        let (u, sv, v) = w.f_svd(true, true)?;
        let vh = v.f_tr()?;
        let sr = sv
            .f_narrow(0, 0, r)?
            .f_div_scalar(config.scale())?
            .f_sqrt()?;
        let a = vh.f_narrow(0, 0, r)?.f_mul(&sr.f_unsqueeze(1)?)?;
        let b = u.f_narrow(1, 0, r)?.f_mul(&sr.f_unsqueeze(0)?)?;
        (a, b)
    } else {
        // W = Q·R; A = R[:r], B = Q[:, :r].
        let (q, rr) = Tensor::f_linalg_qr(&w, "reduced")?;
        (rr.f_narrow(0, 0, r)?, q.f_narrow(1, 0, r)?)
    };
    let delta = b.f_matmul(&a)?.f_mul_scalar(config.scale())?;
    let residual = w.f_sub(&delta)?.f_to_kind(weight.kind())?;
    Ok((a.f_contiguous()?, b.f_contiguous()?, residual))
}

/// `W + scale · B · A` for a linear weight `w` (`[out, in]`), computed in float32 and returned
/// in `w`'s dtype: the weight a LoRA-adapted linear layer behaves as.
pub fn merge_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor, String> {
    let _guard = tch::no_grad_guard();
    let ws = w.size();
    if ws.len() != 2 || a.size() != [b.size()[1], ws[1]] || b.size()[0] != ws[0] {
        return Err(format!(
            "lora_A {:?} and lora_B {:?} do not fit a weight of shape {ws:?}",
            a.size(),
            b.size()
        ));
    }
    let f = || -> Result<Tensor, tch::TchError> {
        let delta = b
            .f_to_kind(Kind::Float)?
            .f_matmul(&a.f_to_kind(Kind::Float)?)?
            .f_mul_scalar(scale)?;
        w.f_to_kind(Kind::Float)?.f_add(&delta)?.f_to_kind(w.kind())
    };
    f().map_err(|e| format!("lora merge: {e}"))
}

/// The LoRA slot's output (see the module documentation); `m`, `weight` and `bias` for DoRA.
#[allow(clippy::too_many_arguments)]
pub fn lora_forward(
    x: &Tensor,
    base: Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dropout: f64,
    training: bool,
    dora: Option<(&Tensor, &Tensor, Option<&Tensor>)>,
) -> Result<Tensor, String> {
    let dropped = dropout > 0.0 && training;
    // `factor`: dropout's 1 / (1 − p), folded into the scaling of the rank-wide product.
    let (h, factor) = if !dropped {
        (x.shallow_clone(), 1.0)
    } else if dora.is_some() {
        // native_dropout keeps a boolean mask for the backward pass (plain dropout keeps a
        // float one on CPU): a quarter of the memory for the same result.
        let h = x
            .f_native_dropout(dropout, true)
            .map_err(|e| e.to_string())?
            .0;
        (h, 1.0)
    } else {
        crate::dropout::dropped(x, dropout).map_err(|e| format!("lora dropout: {e}"))?
    };
    let scale = scale * factor;
    // Float32 adapters on a bfloat16 base (PEFT's autocast_adapter_dtype): the low-rank
    // path runs in the adapters' dtype, and its sum with the base output is cast back.
    let adapter_kind = a.kind();
    let h = if h.kind() != adapter_kind {
        h.f_to_kind(adapter_kind)
            .map_err(|e| format!("lora: {e}"))?
    } else {
        h
    };
    if dora.is_none() && base.kind() == adapter_kind {
        // base + (scale·h·Aᵀ)·Bᵀ as one addmm over the rows: the scaling on the rank-wide
        // product, and no separate pass over the output for the scaling or the sum. `Bᵀ` is
        // copied contiguous (`[r, out]`, a few KiB): the backward's products then read it and
        // the rank-wide product in the layouts MKL is fast at (`grad · (Bᵀ)ᵀ` with `Bᵀ`
        // row-major, and `lowᵀ · grad` for B's gradient, where the transposed view `Bᵀ` made
        // autograd compute `(gradᵀ · low)ᵀ` and `grad · B` with B row-major: 2-3x slower on
        // these 8-wide shapes; BENCHMARKS.md, "Issue 23: the LoRA B product's layout").
        let f = || -> Result<Tensor, tch::TchError> {
            let shape = base.size();
            let out = *shape.last().unwrap_or(&0);
            let low = h.f_matmul(&a.f_tr()?)?.f_mul_scalar(scale)?;
            let rank = *low.size().last().unwrap_or(&0);
            base.f_reshape([-1, out])?
                .f_addmm(&low.f_reshape([-1, rank])?, &b.f_tr()?.f_contiguous()?)?
                .f_view(shape.as_slice())
        };
        return f().map_err(|e| format!("lora: {e}"));
    }
    let low_rank = h
        .f_matmul(&a.f_tr().map_err(|e| e.to_string())?)
        .and_then(|t| t.f_matmul(&b.f_tr()?))
        .and_then(|t| t.f_mul_scalar(scale))
        .map_err(|e| format!("lora: {e}"))?;
    let Some((m, weight, bias)) = dora else {
        let out_kind = base.kind();
        return base
            .f_add(&low_rank)
            .and_then(|y| y.f_to_kind(out_kind))
            .map_err(|e| format!("lora: {e}"));
    };
    let dora = || -> Result<Tensor, tch::TchError> {
        // ‖W + s·B·A‖ per output row, outside the gradient (DoRA §4.3).
        let norm = {
            let _g = tch::no_grad_guard();
            let w = weight.f_to_kind(Kind::Float)?;
            let delta = b.f_matmul(a)?.f_to_kind(Kind::Float)?;
            w.f_add(&delta.f_mul_scalar(scale)?)?
                .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), false)?
                .f_to_kind(base.kind())?
        };
        let ratio = m.f_div(&norm)?;
        // x·Wᵀ without the bias: from the base output, or anew on the dropped-out input.
        let plain = if dropped {
            h.f_matmul(&weight.f_tr()?)?
        } else {
            match bias {
                Some(b) => base.f_sub(b)?,
                None => base.shallow_clone(),
            }
        };
        let extra = plain
            .f_mul(&ratio.f_sub_scalar(1.0)?)?
            .f_add(&low_rank.f_mul(&ratio)?)?;
        base.f_add(&extra)
    };
    dora().map_err(|e| format!("dora: {e}"))
}

impl Adapter for LoraAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn init(
        &self,
        slot: Option<usize>,
        weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String> {
        let (Some(_), Some(w)) = (slot, weight) else {
            return Err("LoRA has no shared tensors".into());
        };
        let c = &self.config;
        let te = |e: tch::TchError| format!("lora init: {e}");
        if c.init.mutates_base() {
            let (a, b, residual) = init_factors(c.init, w, c).map_err(te)?;
            let (a0, b0) = (a.copy(), b.copy());
            return Ok((vec![a, b, a0, b0], Some(residual)));
        }
        // DoRA: the magnitude starts at the base weight's row norms.
        let _g = tch::no_grad_guard();
        let m = w
            .f_to_kind(Kind::Float)
            .and_then(|w| w.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), false))
            .map_err(te)?;
        Ok((vec![m], None))
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let t = call.tensors;
        let dora = if self.config.use_dora {
            let weight = call
                .weight
                .ok_or("DoRA needs the slot's base weight, which the host did not pass")?;
            Some((&t[2], weight, call.bias))
        } else {
            None
        };
        lora_forward(
            call.x,
            call.base,
            &t[0],
            &t[1],
            self.config.scale(),
            self.config.dropout,
            call.training,
            dora,
        )
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        let c = &self.config;
        let (saved, r, alpha) = if c.init.mutates_base() {
            let _g = tch::no_grad_guard();
            let mut out = Vec::new();
            for (sp, t) in self.plan.slots.iter().zip(tensors) {
                let f = || -> Result<(Tensor, Tensor), tch::TchError> {
                    let a2 = Tensor::f_cat(&[t[0].f_detach()?, t[2].shallow_clone()], 0)?;
                    let b2 = Tensor::f_cat(&[t[1].f_detach()?, t[3].f_neg()?], 1)?;
                    Ok((a2, b2))
                };
                let (a2, b2) = f().map_err(|e| format!("lora save: {e}"))?;
                out.push((format!("base_model.model.{}.lora_A.weight", sp.slot), a2));
                out.push((format!("base_model.model.{}.lora_B.weight", sp.slot), b2));
            }
            // Same scale at rank 2r: alpha/r → 2·alpha/2r; alpha/√r → √2·alpha/√(2r).
            let alpha = if c.use_rslora {
                c.alpha * 2f64.sqrt()
            } else {
                c.alpha * 2.0
            };
            (out, c.r * 2, alpha)
        } else {
            (keyed(&self.plan, tensors, shared), c.r, c.alpha)
        };
        Ok(Saved {
            tensors: saved,
            config: crate::peft_config(
                "LORA",
                &self.target_modules,
                true,
                json!({
                    "r": r,
                    "lora_alpha": alpha,
                    "lora_dropout": c.dropout,
                    "init_lora_weights": true,
                    "use_rslora": c.use_rslora,
                    "use_dora": c.use_dora,
                    "rank_pattern": {},
                    "alpha_pattern": {}
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
        let scale = self.config.scale();
        let w = merge_weight(weight, &tensors[0], &tensors[1], scale)?;
        if !self.config.use_dora {
            return Ok(w);
        }
        // DoRA: W' · m / ‖W'‖ per output row.
        let _g = tch::no_grad_guard();
        let f = || -> Result<Tensor, tch::TchError> {
            let wf = w.f_to_kind(Kind::Float)?;
            let norm = wf.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?;
            let ratio = tensors[2]
                .f_to_kind(Kind::Float)?
                .f_unsqueeze(1)?
                .f_div(&norm)?;
            wf.f_mul(&ratio)?.f_to_kind(weight.kind())
        };
        f().map_err(|e| format!("dora merge: {e}"))
    }
}
