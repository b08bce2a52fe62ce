//! LoRA on the model's linear slots, through swift-model's [`LinearHook`]: a targeted slot's
//! output becomes `base + dropout(x) · Aᵀ · Bᵀ · alpha / r`, with `A` (`[r, in]`) drawn
//! Kaiming-uniform as PEFT does (`a = √5`, so the bound is `1/√in`) and `B` (`[out, r]`) zero, so
//! the adapted model starts equal to the base.
//!
//! Variants (PEFT's names): rsLoRA scales by `alpha / √r`; DoRA ([`LoraVariant::use_dora`])
//! re-normalises each output row to a trained magnitude `m`: the slot's output becomes
//! `base + (m / ‖W + s·B·A‖ − 1) ⊙ x·Wᵀ + (m / ‖W + s·B·A‖) ⊙ s·x·Aᵀ·Bᵀ`, the norm per output
//! row and detached from the gradient, as PEFT computes it. PiSSA and OLoRA initialise `A` and
//! `B` from the base weight (its top singular vectors, or its QR factors) and subtract `s·B·A`
//! from the base so the model starts unchanged; such an adapter is saved converted to a plain
//! LoRA of rank `2r` (`A' = [A; A₀]`, `B' = [B, −B₀]`, alpha doubled), as PEFT's
//! `path_initial_model_for_weight_conversion` does, so it applies to the original base model.
//!
//! The adapter saves to and loads from the PEFT layout: `adapter_config.json` (`peft_type: LORA`,
//! `r`, `lora_alpha`, `target_modules`, ...) and `adapter_model.safetensors` with keys
//! `base_model.model.<slot>.lora_A.weight` / `lora_B.weight`, which Python
//! `peft.PeftModel.from_pretrained` reads.
//!
//! `modules_to_save` (PEFT's name): whole linear or embedding slots (`lm_head`,
//! `model.embed_tokens`) trained as full copies beside the adapters. The slot computes with the
//! copy; the base tensor is kept, untouched, by a [`SavedModuleHook`] that gives the base
//! output back while the adapters are switched off. A tied slot (SmolLM2's `lm_head` is the
//! embedding table) is untied by its copy, as peft 0.17 does: the other slot keeps the base
//! tensor. They are saved as `base_model.model.<slot>.weight` (and `.bias`), with the slots
//! listed in adapter_config.json's `modules_to_save`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use swift_model::{LinearHook, LoadedModel};
use swift_plugin_tensors::model::SlotKind;
use tch::{Kind, Tensor};

use crate::checkpoint::{save_safetensors, TrainError};

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    /// `alpha / √r` instead of `alpha / r` (rsLoRA; only read from checkpoints for now).
    pub use_rslora: bool,
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
}

/// How the adapter tensors start (PEFT's `init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraInit {
    /// `A` Kaiming-uniform, `B` zero (PEFT's `true`).
    #[default]
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
    pub fn parse(s: &str) -> Result<Self, TrainError> {
        match s.to_ascii_lowercase().as_str() {
            "true" | "default" | "kaiming" => Ok(Self::Kaiming),
            "gaussian" => Ok(Self::Gaussian),
            "pissa" => Ok(Self::Pissa),
            "olora" => Ok(Self::Olora),
            other => Err(TrainError::Config(format!(
                "init_weights `{other}` is not one of true, gaussian, pissa, olora"
            ))),
        }
    }

    /// Whether the base weight is changed at initialisation (and the adapter saved converted).
    pub fn mutates_base(self) -> bool {
        matches!(self, Self::Pissa | Self::Olora)
    }
}

/// The LoRA variant beyond [`LoraConfig`]: DoRA and the initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoraVariant {
    pub use_dora: bool,
    pub init: LoraInit,
}

/// A tensor the hook only reads. libtorch tensors may be read from several threads at once;
/// tch marks `Tensor` `Send` but not `Sync`, and [`LinearHook`] must be both.
pub struct ReadOnly(pub Tensor);

// SAFETY: the hook never mutates the tensor through this wrapper (only `matmul` / `tr` reads);
// the optimiser updates the same storage between forward passes, never during one.
unsafe impl Sync for ReadOnly {}

/// DoRA's extra state on one slot: the trained magnitude (`[out]`) and the slot's frozen base
/// weight (`[out, in]`) and bias.
pub struct DoraParts {
    pub magnitude: ReadOnly,
    pub weight: ReadOnly,
    pub bias: Option<ReadOnly>,
}

/// The hook one slot carries.
pub struct LoraHook {
    pub a: ReadOnly,
    pub b: ReadOnly,
    pub scale: f64,
    pub dropout: f64,
    training: Arc<AtomicBool>,
    /// Off: the slot computes the base projection alone (the reference model of preference
    /// training is the policy with its adapters disabled, so no second copy of the base).
    enabled: Arc<AtomicBool>,
    /// Present for DoRA.
    pub dora: Option<DoraParts>,
}

impl LinearHook for LoraHook {
    fn forward(&self, x: &Tensor, base: Tensor) -> Result<Tensor, String> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(base);
        }
        let train = self.training.load(Ordering::Relaxed);
        let dropped = self.dropout > 0.0 && train;
        let h = if dropped {
            // native_dropout keeps a boolean mask for the backward pass (plain dropout keeps a
            // float one on CPU): a quarter of the memory for the same result.
            x.f_native_dropout(self.dropout, true)
                .map_err(|e| e.to_string())?
                .0
        } else {
            x.shallow_clone()
        };
        // Float32 adapters on a bfloat16 base (PEFT's autocast_adapter_dtype): the low-rank
        // path runs in the adapters' dtype, and its sum with the base output is cast back.
        let adapter_kind = self.a.0.kind();
        let h = if h.kind() != adapter_kind {
            h.f_to_kind(adapter_kind)
                .map_err(|e| format!("lora: {e}"))?
        } else {
            h
        };
        let low_rank = h
            .f_matmul(&self.a.0.f_tr().map_err(|e| e.to_string())?)
            .and_then(|t| t.f_matmul(&self.b.0.f_tr()?))
            .and_then(|t| t.f_mul_scalar(self.scale))
            .map_err(|e| format!("lora: {e}"))?;
        let Some(d) = &self.dora else {
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
                let w = d.weight.0.f_to_kind(Kind::Float)?;
                let delta = self.b.0.f_matmul(&self.a.0)?.f_to_kind(Kind::Float)?;
                w.f_add(&delta.f_mul_scalar(self.scale)?)?
                    .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), false)?
                    .f_to_kind(base.kind())?
            };
            let ratio = d.magnitude.0.f_div(&norm)?;
            // x·Wᵀ without the bias: from the base output, or anew on the dropped-out input.
            let plain = if dropped {
                h.f_matmul(&d.weight.0.f_tr()?)?
            } else {
                match &d.bias {
                    Some(b) => base.f_sub(&b.0)?,
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
}

/// A whole slot trained as a copy (PEFT `modules_to_save`): the slot's weight (and bias) are
/// replaced by trainable copies; this hook keeps the base ones and computes the base output
/// instead while the adapters are switched off (PEFT's `disable_adapter()`).
pub struct SavedModuleHook {
    kind: SlotKind,
    weight: ReadOnly,
    bias: Option<ReadOnly>,
    enabled: Arc<AtomicBool>,
}

impl LinearHook for SavedModuleHook {
    fn forward(&self, x: &Tensor, out: Tensor) -> Result<Tensor, String> {
        if self.enabled.load(Ordering::Relaxed) {
            return Ok(out);
        }
        let base = match self.kind {
            SlotKind::Embedding => Tensor::f_embedding(&self.weight.0, x, -1, false, false),
            _ => x.f_linear(&self.weight.0, self.bias.as_ref().map(|b| &b.0)),
        };
        base.map_err(|e| format!("modules_to_save: {e}"))
    }
}

/// One slot of `modules_to_save`: its trained copies, as the host holds them (`[out, in]`).
pub struct SavedModule {
    pub slot: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The checkpoint stores the weight transposed (GPT-2's Conv1D).
    transposed: bool,
}

/// The slots of `model` that `names` pick for `modules_to_save`: a slot whose name is the
/// entry or ends with `.entry` (PEFT's matching; `model.embed_tokens.weight` is read as
/// `model.embed_tokens`), or every embedding slot for `all-embedding` (ms-swift's).
pub fn modules_to_save_slots(
    model: &LoadedModel,
    names: &[String],
) -> Result<Vec<String>, TrainError> {
    let layout = model.layout();
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.strip_suffix(".weight").unwrap_or(n);
        let hits: Vec<&str> = layout
            .slots
            .iter()
            .filter(|s| {
                if n == "all-embedding" {
                    s.kind == SlotKind::Embedding
                } else {
                    s.name == n || s.name.ends_with(&format!(".{n}"))
                }
            })
            .map(|s| s.name.as_str())
            .collect();
        if hits.is_empty() {
            let examples: Vec<&str> = layout
                .slots
                .iter()
                .filter(|s| s.kind == SlotKind::Embedding || s.name == layout.output_slot)
                .map(|s| s.name.as_str())
                .collect();
            return Err(TrainError::Config(format!(
                "--modules_to_save `{n}` names no layer of this model (e.g. {})",
                examples.join(", ")
            )));
        }
        for h in hits {
            if !out.iter().any(|o| o == h) {
                out.push(h.to_string());
            }
        }
    }
    Ok(out)
}

/// What a checkpoint stores: named tensors, rank and alpha.
type SavedAdapter = (Vec<(String, Tensor)>, i64, f64);

/// The LoRA adapters attached to one model.
pub struct Lora {
    pub config: LoraConfig,
    pub variant: LoraVariant,
    /// (slot, A, B) in attachment order.
    pub layers: Vec<(String, Tensor, Tensor)>,
    /// DoRA magnitudes (`[out]`), one per layer in the same order; empty without DoRA.
    pub magnitudes: Vec<Tensor>,
    /// PiSSA / OLoRA: the initial (A₀, B₀) per layer, for saving a plain-LoRA conversion.
    initial: Vec<(Tensor, Tensor)>,
    /// Whole slots trained as copies (PEFT `modules_to_save`).
    pub saved_modules: Vec<SavedModule>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
}

/// Starting `A` (`[r, in]`) and `B` (`[out, r]`) for `init`, in float32; for PiSSA and OLoRA
/// also the residual base weight `W − s·B·A`.
fn init_factors(
    init: LoraInit,
    weight: &Tensor,
    config: &LoraConfig,
) -> Result<(Tensor, Tensor, Option<Tensor>), TrainError> {
    let _g = tch::no_grad_guard();
    let (out, inp) = (weight.size()[0], weight.size()[1]);
    let (r, device) = (config.r, weight.device());
    let zeros_b = || Tensor::f_zeros([out, r], (Kind::Float, device));
    let w = weight.f_to_kind(Kind::Float)?;
    let (a, b) = match init {
        LoraInit::Kaiming => {
            let bound = 1.0 / (inp as f64).sqrt();
            let a = Tensor::f_empty([r, inp], (Kind::Float, device))?.f_uniform_(-bound, bound)?;
            (a, zeros_b()?)
        }
        LoraInit::Gaussian => {
            let a =
                Tensor::f_empty([r, inp], (Kind::Float, device))?.f_normal_(0.0, 1.0 / r as f64)?;
            (a, zeros_b()?)
        }
        LoraInit::Pissa => {
            if r > out.min(inp) {
                return Err(TrainError::Config(format!(
                    "PiSSA needs --lora_rank ≤ min(out, in) = {}",
                    out.min(inp)
                )));
            }
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
        }
        LoraInit::Olora => {
            if r > out.min(inp) {
                return Err(TrainError::Config(format!(
                    "OLoRA needs --lora_rank ≤ min(out, in) = {}",
                    out.min(inp)
                )));
            }
            // W = Q·R; A = R[:r], B = Q[:, :r].
            let (q, rr) = Tensor::f_linalg_qr(&w, "reduced")?;
            (rr.f_narrow(0, 0, r)?, q.f_narrow(1, 0, r)?)
        }
    };
    let residual = if init.mutates_base() {
        let delta = b.f_matmul(&a)?.f_mul_scalar(config.scale())?;
        Some(w.f_sub(&delta)?.f_to_kind(weight.kind())?)
    } else {
        None
    };
    Ok((a.f_contiguous()?, b.f_contiguous()?, residual))
}

/// Replaces slot `slot`'s weight (and bias) by `weight` / `bias` (checkpoint layout; `None`:
/// a copy of the slot's own), trainable when `trainable`, and hooks the base tensors on the slot
/// for when `enabled` is off. A tied slot gets its own tensor; the others keep the base one.
fn install_saved_module(
    model: &mut LoadedModel,
    slot: &str,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    enabled: &Arc<AtomicBool>,
    trainable: bool,
) -> Result<SavedModule, TrainError> {
    let (kind, device) = (model.kind(), model.device());
    let transposed = model
        .layout()
        .slot(slot)
        .map(|d| d.transposed)
        .unwrap_or(false);
    let s = model
        .slot_mut(slot)
        .ok_or_else(|| TrainError::Config(format!("no layer `{slot}` for modules_to_save")))?;
    if !matches!(s.kind, SlotKind::Linear | SlotKind::Embedding) {
        return Err(TrainError::Config(format!(
            "modules_to_save: `{slot}` is a norm; only linear and embedding layers can be saved whole"
        )));
    }
    if s.quantized.is_some() {
        return Err(TrainError::Config(format!(
            "modules_to_save: `{slot}` is quantized; it cannot be trained or replaced whole"
        )));
    }
    let _g = tch::no_grad_guard();
    let w = match weight {
        Some(w) => {
            let w = if transposed {
                w.f_transpose(0, 1)?.f_contiguous()?
            } else {
                w
            };
            if w.size() != s.weight.size() {
                return Err(TrainError::Config(format!(
                    "modules_to_save: `{slot}` is {:?} in the adapter, {:?} in the model",
                    w.size(),
                    s.weight.size()
                )));
            }
            w.f_to_kind(kind)?.f_to_device(device)?
        }
        None => s.weight.f_detach()?.copy(),
    };
    let b = match (bias, &s.bias) {
        (Some(b), Some(base)) if b.size() == base.size() => Some(b.f_to_kind(kind)?),
        (Some(b), _) => {
            return Err(TrainError::Config(format!(
                "modules_to_save: the adapter's bias of `{slot}` ({:?}) does not fit the layer",
                b.size()
            )))
        }
        (None, Some(base)) => Some(base.f_detach()?.copy()),
        (None, None) => None,
    };
    let w = w.set_requires_grad(trainable);
    let b = b.map(|b| b.set_requires_grad(trainable));
    let base_weight = std::mem::replace(&mut s.weight, w.shallow_clone());
    let base_bias = match &b {
        Some(nb) => s.bias.replace(nb.shallow_clone()),
        None => None,
    };
    s.hooks.push(Arc::new(SavedModuleHook {
        kind: s.kind,
        weight: ReadOnly(base_weight),
        bias: base_bias.map(ReadOnly),
        enabled: enabled.clone(),
    }));
    Ok(SavedModule {
        slot: slot.to_string(),
        weight: w,
        bias: b,
        transposed,
    })
}

impl Lora {
    /// Attaches fresh plain-LoRA adapters (A Kaiming-uniform, B zero, both trainable) to
    /// `targets`. The random draws follow libtorch's generator (seed it with `tch::manual_seed`).
    pub fn attach(
        model: &mut LoadedModel,
        targets: &[String],
        config: LoraConfig,
    ) -> Result<Self, TrainError> {
        Self::attach_variant(model, targets, config, LoraVariant::default())
    }

    /// Attaches fresh adapters of `variant` (DoRA, PiSSA / OLoRA / Gaussian initialisation).
    pub fn attach_variant(
        model: &mut LoadedModel,
        targets: &[String],
        config: LoraConfig,
        variant: LoraVariant,
    ) -> Result<Self, TrainError> {
        if variant.use_dora && variant.init.mutates_base() {
            return Err(TrainError::Config(
                "DoRA with PiSSA/OLoRA initialisation is not supported; pick one".into(),
            ));
        }
        let kind = model.kind();
        let training = Arc::new(AtomicBool::new(true));
        let enabled = Arc::new(AtomicBool::new(true));
        let (mut layers, mut magnitudes, mut initial) = (Vec::new(), Vec::new(), Vec::new());
        for name in targets {
            let slot = model
                .slot_mut(name)
                .ok_or_else(|| TrainError::Config(format!("no slot `{name}` to attach LoRA to")))?;
            if slot.kind != SlotKind::Linear {
                return Err(TrainError::Config(format!(
                    "LoRA targets linear slots; `{name}` is not one"
                )));
            }
            if slot.quantized.is_some() && (variant.use_dora || variant.init.mutates_base()) {
                return Err(TrainError::Config(format!(
                    "`{name}` is quantized: DoRA, PiSSA and OLoRA need the float base weight (use plain LoRA for QLoRA)"
                )));
            }
            let (a, b, residual) = init_factors(variant.init, &slot.weight, &config)?;
            // Plain LoRA's tensors stay float32 on a half-precision base, as PEFT keeps them
            // (autocast_adapter_dtype); DoRA's follow the base.
            let adapter_kind = if variant.use_dora { kind } else { Kind::Float };
            let a = a.f_to_kind(adapter_kind)?.set_requires_grad(true);
            let b = b.f_to_kind(adapter_kind)?.set_requires_grad(true);
            if let Some(w) = residual {
                // A new owned tensor: the base may be a read-only mapping of the checkpoint.
                slot.weight = w;
                initial.push((a.f_detach()?.copy(), b.f_detach()?.copy()));
            }
            let dora = if variant.use_dora {
                let m = {
                    let _g = tch::no_grad_guard();
                    slot.weight
                        .f_to_kind(Kind::Float)?
                        .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), false)?
                        .f_to_kind(kind)?
                }
                .set_requires_grad(true);
                magnitudes.push(m.shallow_clone());
                Some(DoraParts {
                    magnitude: ReadOnly(m),
                    weight: ReadOnly(slot.weight.shallow_clone()),
                    bias: slot.bias.as_ref().map(|b| ReadOnly(b.shallow_clone())),
                })
            } else {
                None
            };
            slot.hooks.push(Arc::new(LoraHook {
                a: ReadOnly(a.shallow_clone()),
                b: ReadOnly(b.shallow_clone()),
                scale: config.scale(),
                dropout: config.dropout,
                training: training.clone(),
                enabled: enabled.clone(),
                dora,
            }));
            layers.push((name.clone(), a, b));
        }
        Ok(Self {
            config,
            variant,
            layers,
            magnitudes,
            initial,
            saved_modules: Vec::new(),
            training,
            enabled,
        })
    }

    /// Loads a PEFT-layout adapter folder onto `model` (frozen, no dropout).
    pub fn load(model: &mut LoadedModel, dir: &Path) -> Result<Self, TrainError> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", cfg_path.display())))?;
        if cfg["peft_type"].as_str().unwrap_or("LORA") != "LORA" {
            return Err(TrainError::Config(format!(
                "{}: peft_type {} is not LORA",
                cfg_path.display(),
                cfg["peft_type"]
            )));
        }
        let r = match cfg.get("r").and_then(Value::as_i64) {
            Some(r) if r >= 1 => r,
            Some(r) => {
                return Err(TrainError::Config(format!(
                    "{}: r is {r}; a LoRA rank must be at least 1",
                    cfg_path.display()
                )))
            }
            None => {
                return Err(TrainError::Config(format!(
                    "{}: no integer `r` (the LoRA rank); is this a PEFT LoRA checkpoint?",
                    cfg_path.display()
                )))
            }
        };
        for pattern in ["rank_pattern", "alpha_pattern"] {
            if cfg
                .get(pattern)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(TrainError::Config(format!(
                    "{}: per-module ranks or alphas (`{pattern}`) are not supported; retrain with one rank",
                    cfg_path.display()
                )));
            }
        }
        let alpha = match cfg.get("lora_alpha") {
            None | Some(Value::Null) => r as f64,
            Some(v) => match v.as_f64() {
                Some(a) if a.is_finite() && a > 0.0 => a,
                _ => {
                    return Err(TrainError::Config(format!(
                        "{}: lora_alpha is {v}; it must be a finite number > 0",
                        cfg_path.display()
                    )))
                }
            },
        };
        let config = LoraConfig {
            r,
            alpha,
            dropout: 0.0,
            use_rslora: cfg["use_rslora"].as_bool().unwrap_or(false),
        };
        let use_dora = cfg["use_dora"].as_bool().unwrap_or(false);
        let file = dir.join("adapter_model.safetensors");
        if !file.is_file() {
            return Err(TrainError::Config(format!(
                "{} is missing (a PEFT LoRA checkpoint holds adapter_model.safetensors)",
                file.display()
            )));
        }
        let ckpt = swift_model::weights::Checkpoint::open(std::slice::from_ref(&file))?;
        let mut slots: Vec<String> = ckpt
            .names()
            .filter_map(|n| {
                n.strip_prefix("base_model.model.")?
                    .strip_suffix(".lora_A.weight")
                    .map(String::from)
            })
            .collect();
        slots.sort();
        let (kind, device) = (model.kind(), model.device());
        let training = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(true));
        let (mut layers, mut magnitudes) = (Vec::new(), Vec::new());
        for name in slots {
            let ka = format!("base_model.model.{name}.lora_A.weight");
            let kb = format!("base_model.model.{name}.lora_B.weight");
            let a = ckpt.load(&ka, kind, device)?.tensor.copy();
            let b = ckpt.load(&kb, kind, device)?.tensor.copy();
            let slot = model.slot_mut(&name).ok_or_else(|| {
                TrainError::Config(format!(
                    "{}: the adapter has weights for `{name}`, which this model does not have",
                    file.display()
                ))
            })?;
            let ws = slot.weight.size();
            if a.size().first() != Some(&r) || b.size().get(1) != Some(&r) {
                return Err(TrainError::Config(format!(
                    "{}: `{name}` has lora_A {:?} and lora_B {:?}, which are not rank {r} as {} says (r): the adapter's files do not match",
                    file.display(),
                    a.size(),
                    b.size(),
                    cfg_path.display()
                )));
            }
            if ws.len() != 2 || b.dim() != 2 || a.size() != [r, ws[1]] || b.size()[0] != ws[0] {
                return Err(TrainError::Config(format!(
                    "{}: `{name}` has lora_A {:?} and lora_B {:?}, the slot's weight is {ws:?}",
                    file.display(),
                    a.size(),
                    b.size()
                )));
            }
            let dora = if use_dora {
                let km = format!("base_model.model.{name}.lora_magnitude_vector");
                let m = ckpt
                    .load(&km, kind, device)
                    .map_err(|e| {
                        TrainError::Config(format!(
                            "{}: use_dora is set but `{km}` cannot be read: {e}",
                            file.display()
                        ))
                    })?
                    .tensor
                    .copy();
                if m.size() != [ws[0]] {
                    return Err(TrainError::Config(format!(
                        "{}: `{km}` is {:?}, the slot has {} outputs",
                        file.display(),
                        m.size(),
                        ws[0]
                    )));
                }
                magnitudes.push(m.shallow_clone());
                Some(DoraParts {
                    magnitude: ReadOnly(m),
                    weight: ReadOnly(slot.weight.shallow_clone()),
                    bias: slot.bias.as_ref().map(|b| ReadOnly(b.shallow_clone())),
                })
            } else {
                None
            };
            slot.hooks.push(Arc::new(LoraHook {
                a: ReadOnly(a.shallow_clone()),
                b: ReadOnly(b.shallow_clone()),
                scale: config.scale(),
                dropout: 0.0,
                training: training.clone(),
                enabled: enabled.clone(),
                dora,
            }));
            layers.push((name, a, b));
        }
        // modules_to_save: every other tensor is a whole slot's weight or bias, except a reward
        // model's value head (`score`, PEFT's SEQ_CLS task), which the reward module reads.
        let seq_cls = cfg["task_type"].as_str() == Some("SEQ_CLS");
        let mut modules: Vec<String> = Vec::new();
        for n in ckpt.names() {
            if seq_cls
                && matches!(
                    n,
                    "base_model.model.score.weight" | "base_model.model.score.bias"
                )
                && model.slot("score").is_none()
            {
                continue;
            }
            let Some(rest) = n.strip_prefix("base_model.model.") else {
                return Err(TrainError::Config(format!(
                    "{}: tensor `{n}` is not under base_model.model. (not a PEFT LoRA file)",
                    file.display()
                )));
            };
            if rest.ends_with(".lora_A.weight")
                || rest.ends_with(".lora_B.weight")
                || (use_dora && rest.ends_with(".lora_magnitude_vector"))
            {
                continue;
            }
            let slot = rest
                .strip_suffix(".weight")
                .or_else(|| rest.strip_suffix(".bias"))
                .filter(|s| !s.contains(".lora_") && model.slot(s).is_some())
                .ok_or_else(|| {
                    TrainError::Config(format!(
                        "{}: tensor `{n}` is neither a LoRA weight nor a layer of this model (modules_to_save)",
                        file.display()
                    ))
                })?;
            if !modules.iter().any(|m| m == slot) {
                modules.push(slot.to_string());
            }
        }
        modules.sort();
        let mut saved_modules = Vec::new();
        for slot in modules {
            let get = |suffix: &str| -> Result<Option<Tensor>, TrainError> {
                let key = format!("base_model.model.{slot}.{suffix}");
                if !ckpt.contains(&key) {
                    return Ok(None);
                }
                Ok(Some(ckpt.load(&key, kind, device)?.tensor.copy()))
            };
            let (w, b) = (get("weight")?, get("bias")?);
            if w.is_none() {
                return Err(TrainError::Config(format!(
                    "{}: `{slot}` has a bias but no weight (modules_to_save)",
                    file.display()
                )));
            }
            saved_modules.push(install_saved_module(model, &slot, w, b, &enabled, false)?);
        }
        if layers.is_empty() && saved_modules.is_empty() {
            return Err(TrainError::Config(format!(
                "{} holds no lora_A/lora_B weights",
                file.display()
            )));
        }
        Ok(Self {
            config,
            variant: LoraVariant {
                use_dora,
                init: LoraInit::Kaiming,
            },
            layers,
            magnitudes,
            initial: Vec::new(),
            saved_modules,
            training,
            enabled,
        })
    }

    /// Trains the slots `slots` (from [`modules_to_save_slots`]) as whole copies beside the
    /// adapters (PEFT `modules_to_save`); the base tensors stay as they are.
    pub fn add_modules_to_save(
        &mut self,
        model: &mut LoadedModel,
        slots: &[String],
    ) -> Result<(), TrainError> {
        for slot in slots {
            if self.layers.iter().any(|(n, _, _)| n == slot) {
                return Err(TrainError::Config(format!(
                    "`{slot}` is both a LoRA target and in --modules_to_save; leave it out of one (--target_modules NAMES)"
                )));
            }
            if self.saved_modules.iter().any(|m| &m.slot == slot) {
                continue;
            }
            let m = install_saved_module(model, slot, None, None, &self.enabled, true)?;
            self.saved_modules.push(m);
        }
        Ok(())
    }

    /// Folds these adapters into the slots' base weights (`W + s·B·A`; DoRA: that times
    /// `m / ‖W + s·B·A‖` per output row) and removes their hooks, so the model runs with no
    /// adapter overhead. Call it right after [`Lora::load`] (its hooks are the last on each slot).
    pub fn merge_into(&self, model: &mut LoadedModel) -> Result<(), TrainError> {
        let _g = tch::no_grad_guard();
        let scale = self.config.scale();
        for (i, (name, a, b)) in self.layers.iter().enumerate() {
            let slot = model
                .slot_mut(name)
                .ok_or_else(|| TrainError::Config(format!("no slot `{name}` to merge into")))?;
            if slot.quantized.is_some() {
                return Err(TrainError::Config(format!(
                    "`{name}` is quantized: merging LoRA into a quantized base is not supported (run without --merge_lora)"
                )));
            }
            let mut w = merge_weight(&slot.weight, a, b, scale)?;
            if let Some(m) = self.magnitudes.get(i) {
                let wf = w.f_to_kind(Kind::Float)?;
                let norm = wf.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?;
                let ratio = m.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_div(&norm)?;
                w = wf.f_mul(&ratio)?.f_to_kind(slot.weight.kind())?;
            }
            slot.weight = w;
            slot.hooks.pop();
        }
        // Saved modules already compute with their copies: only the switch-off hook goes.
        for m in &self.saved_modules {
            if let Some(slot) = model.slot_mut(&m.slot) {
                slot.hooks.pop();
            }
        }
        Ok(())
    }

    /// Turns every adapter of this set on or off (off: the model computes the base weights'
    /// output, as PEFT's `disable_adapter()` does).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether the adapters are on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns dropout on (training) or off (evaluation).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The trainable tensors under their PEFT names (A, B, DoRA's magnitudes, and the copies of
    /// `modules_to_save`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.lora_tensors();
        for m in &self.saved_modules {
            out.push((
                format!("base_model.model.{}.weight", m.slot),
                m.weight.shallow_clone(),
            ));
            if let Some(b) = &m.bias {
                out.push((
                    format!("base_model.model.{}.bias", m.slot),
                    b.shallow_clone(),
                ));
            }
        }
        out
    }

    /// The saved modules' tensors as a checkpoint stores them (transposed slots transposed back).
    fn saved_module_tensors(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let mut out = Vec::new();
        for m in &self.saved_modules {
            let w = m.weight.f_detach()?;
            let w = if m.transposed {
                w.f_transpose(0, 1)?.f_contiguous()?
            } else {
                w
            };
            out.push((format!("base_model.model.{}.weight", m.slot), w));
            if let Some(b) = &m.bias {
                out.push((format!("base_model.model.{}.bias", m.slot), b.f_detach()?));
            }
        }
        Ok(out)
    }

    /// A, B and DoRA's magnitudes under their PEFT names.
    fn lora_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .layers
            .iter()
            .flat_map(|(slot, a, b)| {
                [
                    (
                        format!("base_model.model.{slot}.lora_A.weight"),
                        a.shallow_clone(),
                    ),
                    (
                        format!("base_model.model.{slot}.lora_B.weight"),
                        b.shallow_clone(),
                    ),
                ]
            })
            .collect();
        for ((slot, _, _), m) in self.layers.iter().zip(&self.magnitudes) {
            out.push((
                format!("base_model.model.{slot}.lora_magnitude_vector"),
                m.shallow_clone(),
            ));
        }
        out
    }

    /// What a checkpoint stores, with (rank, alpha): the trained tensors, or for PiSSA / OLoRA
    /// their conversion to a plain LoRA of rank `2r` against the original base weight.
    fn saved_tensors(&self) -> Result<SavedAdapter, TrainError> {
        if self.initial.is_empty() {
            let mut out = self.lora_tensors();
            out.extend(self.saved_module_tensors()?);
            return Ok((out, self.config.r, self.config.alpha));
        }
        let _g = tch::no_grad_guard();
        let mut out = Vec::new();
        for ((slot, a, b), (a0, b0)) in self.layers.iter().zip(&self.initial) {
            let a2 = Tensor::f_cat(&[a.f_detach()?, a0.shallow_clone()], 0)?;
            let b2 = Tensor::f_cat(&[b.f_detach()?, b0.f_neg()?], 1)?;
            out.push((format!("base_model.model.{slot}.lora_A.weight"), a2));
            out.push((format!("base_model.model.{slot}.lora_B.weight"), b2));
        }
        out.extend(self.saved_module_tensors()?);
        // Same scale at rank 2r: alpha/r → 2·alpha/2r; alpha/√r → √2·alpha/√(2r).
        let alpha = if self.config.use_rslora {
            self.config.alpha * 2f64.sqrt()
        } else {
            self.config.alpha * 2.0
        };
        Ok((out, self.config.r * 2, alpha))
    }

    /// PEFT's `target_modules` for these slots: the slots' last name parts when those pick out
    /// exactly the targeted slots among `linear_slots`, else the full slot names.
    pub fn target_modules(&self, linear_slots: &[String]) -> Vec<String> {
        let targeted: BTreeSet<&str> = self.layers.iter().map(|(s, _, _)| s.as_str()).collect();
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

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
    pub fn save(
        &self,
        dir: &Path,
        base_model: &str,
        linear_slots: &[String],
    ) -> Result<(), TrainError> {
        let (tensors, r, alpha) = self.saved_tensors()?;
        let modules_to_save: Option<Vec<&str>> = (!self.saved_modules.is_empty())
            .then(|| self.saved_modules.iter().map(|m| m.slot.as_str()).collect());
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": r,
            "lora_alpha": alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": self.target_modules(linear_slots),
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": modules_to_save,
            "use_rslora": self.config.use_rslora,
            "use_dora": self.variant.use_dora,
            "rank_pattern": {},
            "alpha_pattern": {},
            "layers_to_transform": null,
            "layers_pattern": null,
            "revision": null
        });
        let path = dir.join("adapter_config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
        save_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
    }
}

/// A PEFT LoRA checkpoint read on its own, with no model (for merging into base weights).
pub struct LoraCheckpoint {
    pub config: LoraConfig,
    /// `base_model_name_or_path` of adapter_config.json, when recorded.
    pub base_model: Option<String>,
    /// (slot, A `[r, in]`, B `[out, r]`) in float32, sorted by slot.
    pub layers: Vec<(String, Tensor, Tensor)>,
    /// Whole tensors that replace the base's (PEFT `modules_to_save`), by checkpoint name.
    pub replaced: Vec<(String, Tensor)>,
}

impl LoraCheckpoint {
    /// Reads `adapter_config.json` and `adapter_model.safetensors` from `dir`. Refuses what a
    /// plain `W + scale·B·A` merge cannot express (DoRA, per-module rank or alpha patterns).
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        let cfg_path = dir.join("adapter_config.json");
        if !cfg_path.is_file() {
            return Err(TrainError::Config(format!(
                "{} is missing: {} is not a LoRA checkpoint (PEFT layout)",
                cfg_path.display(),
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", cfg_path.display())))?;
        let bad = |what: String| TrainError::Config(format!("{}: {what}", cfg_path.display()));
        if cfg["peft_type"].as_str().unwrap_or("LORA") != "LORA" {
            return Err(bad(format!("peft_type {} is not LORA", cfg["peft_type"])));
        }
        if cfg["use_dora"].as_bool().unwrap_or(false) {
            return Err(bad(
                "DoRA adapters (use_dora) cannot be merged by this swift".into(),
            ));
        }
        for k in ["rank_pattern", "alpha_pattern"] {
            if cfg[k].as_object().is_some_and(|m| !m.is_empty()) {
                return Err(bad(format!("{k} is not supported for merging")));
            }
        }
        let r = cfg["r"].as_i64().unwrap_or(8);
        if r <= 0 {
            return Err(bad(format!("r = {r} must be positive")));
        }
        let config = LoraConfig {
            r,
            alpha: cfg["lora_alpha"].as_f64().unwrap_or(r as f64),
            dropout: 0.0,
            use_rslora: cfg["use_rslora"].as_bool().unwrap_or(false),
        };
        let file = dir.join("adapter_model.safetensors");
        if !file.is_file() {
            return Err(TrainError::Config(format!(
                "{} is missing (a PEFT LoRA checkpoint holds adapter_model.safetensors)",
                file.display()
            )));
        }
        let ckpt = swift_model::weights::Checkpoint::open(std::slice::from_ref(&file))?;
        let mut names: Vec<&str> = ckpt.names().collect();
        names.sort();
        let cpu = tch::Device::Cpu;
        let mut layers = Vec::new();
        let mut replaced = Vec::new();
        for n in names {
            let Some(rest) = n.strip_prefix("base_model.model.") else {
                return Err(TrainError::Config(format!(
                    "{}: tensor `{n}` is not under base_model.model. (not a PEFT LoRA file)",
                    file.display()
                )));
            };
            if let Some(slot) = rest.strip_suffix(".lora_A.weight") {
                let kb = format!("base_model.model.{slot}.lora_B.weight");
                if !ckpt.contains(&kb) {
                    return Err(TrainError::Config(format!(
                        "{}: `{slot}` has lora_A but no lora_B",
                        file.display()
                    )));
                }
                let a = ckpt.load(n, Kind::Float, cpu)?.tensor.copy();
                let b = ckpt.load(&kb, Kind::Float, cpu)?.tensor.copy();
                if a.dim() != 2 || b.dim() != 2 || a.size()[0] != b.size()[1] {
                    return Err(TrainError::Config(format!(
                        "{}: `{slot}` has lora_A {:?} and lora_B {:?}, which do not multiply",
                        file.display(),
                        a.size(),
                        b.size()
                    )));
                }
                layers.push((slot.to_string(), a, b));
            } else if rest.ends_with(".lora_B.weight") {
                continue;
            } else if rest.contains(".lora_") {
                return Err(TrainError::Config(format!(
                    "{}: tensor `{n}` is not supported for merging (only lora_A/lora_B weights and modules_to_save)",
                    file.display()
                )));
            } else {
                // modules_to_save: PEFT stores the whole module's tensors under their own names.
                let t = ckpt.load(n, Kind::Float, cpu)?.tensor.copy();
                replaced.push((rest.to_string(), t));
            }
        }
        if layers.is_empty() && replaced.is_empty() {
            return Err(TrainError::Config(format!(
                "{} holds no lora_A/lora_B weights",
                file.display()
            )));
        }
        Ok(Self {
            config,
            base_model: cfg["base_model_name_or_path"].as_str().map(String::from),
            layers,
            replaced,
        })
    }
}

/// `W + scale · B · A` for a linear weight `w` (`[out, in]`), computed in float32 and returned
/// in `w`'s dtype: the weight a LoRA-adapted linear layer behaves as.
pub fn merge_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor, TrainError> {
    let _guard = tch::no_grad_guard();
    let ws = w.size();
    if ws.len() != 2 || a.size() != [b.size()[1], ws[1]] || b.size()[0] != ws[0] {
        return Err(TrainError::Config(format!(
            "lora_A {:?} and lora_B {:?} do not fit a weight of shape {ws:?}",
            a.size(),
            b.size()
        )));
    }
    let delta = b
        .f_to_kind(Kind::Float)?
        .f_matmul(&a.f_to_kind(Kind::Float)?)?
        .f_mul_scalar(scale)?;
    Ok(w.f_to_kind(Kind::Float)?
        .f_add(&delta)?
        .f_to_kind(w.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_adds_the_scaled_low_rank_product() {
        // x [1, 3], A [2, 3], B [2, 2]: hand-computed.
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
        let a = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, -1.0]).view([2, 3]);
        let b = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        // x Aᵀ = [4, -1]; (x Aᵀ) Bᵀ = [4 - 2, 12 - 4] = [2, 8]; alpha/r = 16/2 = 8.
        let hook = LoraHook {
            a: ReadOnly(a),
            b: ReadOnly(b),
            scale: LoraConfig {
                r: 2,
                alpha: 16.0,
                dropout: 0.0,
                use_rslora: false,
            }
            .scale(),
            dropout: 0.0,
            training: Arc::new(AtomicBool::new(true)),
            enabled: Arc::new(AtomicBool::new(true)),
            dora: None,
        };
        let base = Tensor::from_slice(&[0.5f32, -0.5]).view([1, 2]);
        let y = hook.forward(&x, base).unwrap();
        let got: Vec<f32> = y.view([-1]).try_into().unwrap();
        assert_eq!(got, [16.5, 63.5]);
    }

    #[test]
    fn dropout_only_while_training() {
        // A and B are identities, so the adapter's output is dropout(x) element by element:
        // each of the 64 inputs is either dropped (0) or kept and rescaled (1 / (1 - p) = 2).
        // Asserting on individual elements (not a sum, which can land back on its mean) makes the
        // check independent of the random draw: all 64 agreeing has probability 2^-63.
        tch::manual_seed(7);
        let training = Arc::new(AtomicBool::new(false));
        let eye = || Tensor::eye(64, (Kind::Float, tch::Device::Cpu));
        let hook = LoraHook {
            a: ReadOnly(eye()),
            b: ReadOnly(eye()),
            scale: 1.0,
            dropout: 0.5,
            training: training.clone(),
            enabled: Arc::new(AtomicBool::new(true)),
            dora: None,
        };
        let x = Tensor::ones([1, 64], (Kind::Float, tch::Device::Cpu));
        let zero = || Tensor::zeros([1, 64], (Kind::Float, tch::Device::Cpu));
        let eval: Vec<f32> = hook
            .forward(&x, zero())
            .unwrap()
            .view([-1])
            .try_into()
            .unwrap();
        assert!(eval.iter().all(|&v| v == 1.0), "no dropout in evaluation");
        training.store(true, Ordering::Relaxed);
        let train: Vec<f32> = hook
            .forward(&x, zero())
            .unwrap()
            .view([-1])
            .try_into()
            .unwrap();
        assert!(train.iter().all(|&v| v == 0.0 || v == 2.0), "{train:?}");
        assert!(
            train.contains(&0.0),
            "dropout drops some inputs while training"
        );
        assert!(
            train.contains(&2.0),
            "dropout keeps and rescales the others"
        );
    }

    fn floats(t: &Tensor) -> Vec<f64> {
        t.to_kind(Kind::Double).view([-1]).try_into().unwrap()
    }

    #[test]
    fn dora_rescales_each_output_row_to_its_magnitude() {
        // W = [[3, 4], [0, 1]], bias [1, 1], A = [[1, 0]], B = [[1], [0]], s = 1, m = [10, 2],
        // x = [1, 1]. W + s·B·A = [[4, 4], [0, 1]], row norms [√32, 1], so m/‖·‖ = [10/√32, 2].
        // x·(W + s·B·A)ᵀ = [8, 1]; DoRA gives (m/‖·‖) ⊙ [8, 1] + bias = [10√2 + 1, 3].
        let w = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
        let bias = Tensor::from_slice(&[1.0f32, 1.0]);
        let hook = LoraHook {
            a: ReadOnly(Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2])),
            b: ReadOnly(Tensor::from_slice(&[1.0f32, 0.0]).view([2, 1])),
            scale: 1.0,
            dropout: 0.0,
            training: Arc::new(AtomicBool::new(false)),
            enabled: Arc::new(AtomicBool::new(true)),
            dora: Some(DoraParts {
                magnitude: ReadOnly(Tensor::from_slice(&[10.0f32, 2.0])),
                weight: ReadOnly(w.shallow_clone()),
                bias: Some(ReadOnly(bias.shallow_clone())),
            }),
        };
        let x = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
        let base = x.matmul(&w.tr()) + &bias;
        let got = floats(&hook.forward(&x, base).unwrap());
        let want = [10.0 * 2f64.sqrt() + 1.0, 3.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn dora_at_its_initial_magnitude_leaves_the_output_unchanged() {
        // m = ‖W‖ per row and B = 0: the slot computes exactly x·Wᵀ + b.
        tch::manual_seed(3);
        let w = Tensor::randn([5, 4], (Kind::Float, tch::Device::Cpu));
        let bias = Tensor::randn([5], (Kind::Float, tch::Device::Cpu));
        let hook = LoraHook {
            a: ReadOnly(Tensor::randn([2, 4], (Kind::Float, tch::Device::Cpu))),
            b: ReadOnly(Tensor::zeros([5, 2], (Kind::Float, tch::Device::Cpu))),
            scale: 4.0,
            dropout: 0.0,
            training: Arc::new(AtomicBool::new(false)),
            enabled: Arc::new(AtomicBool::new(true)),
            dora: Some(DoraParts {
                magnitude: ReadOnly(w.norm_scalaropt_dim(2.0, [1i64].as_slice(), false)),
                weight: ReadOnly(w.shallow_clone()),
                bias: Some(ReadOnly(bias.shallow_clone())),
            }),
        };
        let x = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu));
        let base = x.matmul(&w.tr()) + &bias;
        let got = hook.forward(&x, base.shallow_clone()).unwrap();
        let d = (got - base).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn pissa_and_olora_start_from_the_weight_and_leave_the_model_unchanged() {
        tch::manual_seed(5);
        let w = Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu));
        let cfg = LoraConfig {
            r: 2,
            alpha: 8.0,
            dropout: 0.0,
            use_rslora: false,
        };
        let s = cfg.scale();
        for init in [LoraInit::Pissa, LoraInit::Olora] {
            let (a, b, residual) = init_factors(init, &w, &cfg).unwrap();
            assert_eq!((a.size(), b.size()), (vec![2, 4], vec![6, 2]));
            let residual = residual.expect("the base is changed");
            // W_res + s·B·A = W: the model starts where it was.
            let back = &residual + b.matmul(&a) * s;
            let d = (back - &w).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{init:?}: {d}");
        }
        // PiSSA's s·B·A is the best rank-2 approximation: its singular values are W's top two.
        let (a, b, _) = init_factors(LoraInit::Pissa, &w, &cfg).unwrap();
        let (_, sv, _) = w.svd(true, true);
        let (_, sv_ba, _) = (b.matmul(&a) * s).svd(true, true);
        let (top, got) = (floats(&sv.narrow(0, 0, 2)), floats(&sv_ba.narrow(0, 0, 2)));
        for (t, g) in top.iter().zip(&got) {
            assert!((t - g).abs() < 1e-4, "{top:?} vs {got:?}");
        }
        // OLoRA: B has orthonormal columns (Q of W's QR).
        let (_, b, _) = init_factors(LoraInit::Olora, &w, &cfg).unwrap();
        let eye = b.tr().matmul(&b) - Tensor::eye(2, (Kind::Float, tch::Device::Cpu));
        assert!(eye.abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn a_mutated_start_is_saved_as_a_plain_lora_of_twice_the_rank() {
        // After training moved A, B away from A₀, B₀, the saved rank-2r adapter applied to the
        // original W gives W_res + s·B·A, the trained slot's weight.
        tch::manual_seed(9);
        let w = Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu));
        let cfg = LoraConfig {
            r: 2,
            alpha: 8.0,
            dropout: 0.0,
            use_rslora: false,
        };
        let (a0, b0, residual) = init_factors(LoraInit::Pissa, &w, &cfg).unwrap();
        let residual = residual.unwrap();
        let a = &a0 + Tensor::randn([2, 4], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let b = &b0 + Tensor::randn([6, 2], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let lora = Lora {
            config: cfg.clone(),
            variant: LoraVariant {
                use_dora: false,
                init: LoraInit::Pissa,
            },
            layers: vec![("q".into(), a.shallow_clone(), b.shallow_clone())],
            magnitudes: Vec::new(),
            initial: vec![(a0, b0)],
            saved_modules: Vec::new(),
            training: Arc::new(AtomicBool::new(false)),
            enabled: Arc::new(AtomicBool::new(true)),
        };
        let (saved, r, alpha) = lora.saved_tensors().unwrap();
        assert_eq!((r, alpha), (4, 16.0));
        let (a2, b2) = (&saved[0].1, &saved[1].1);
        assert_eq!((a2.size(), b2.size()), (vec![4, 4], vec![6, 4]));
        let trained = &residual + b.matmul(&a) * cfg.scale();
        let applied = &w + b2.matmul(a2) * (alpha / r as f64);
        let d = (trained - applied).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn merge_weight_adds_scaled_b_times_a() {
        // W = 0 [2, 3], A [1, 3] = [1, 2, 3], B [2, 1] = [1, -1], scale 2:
        // W' = 2 * [[1, 2, 3], [-1, -2, -3]].
        let w = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
        let b = Tensor::from_slice(&[1.0f32, -1.0]).view([2, 1]);
        let m: Vec<f32> = merge_weight(&w, &a, &b, 2.0)
            .unwrap()
            .view([-1])
            .try_into()
            .unwrap();
        assert_eq!(m, [2.0, 4.0, 6.0, -2.0, -4.0, -6.0]);
        assert!(merge_weight(&w, &b, &a, 2.0).is_err(), "shapes are checked");
    }

    #[test]
    fn a_saved_module_gives_the_base_output_back_while_switched_off() {
        // The slot computed `out` with its trained copy; switched off, the hook recomputes the
        // base: x·Wᵀ + b = [1, 2]·I + [1, 1] = [2, 3]; an embedding looks the ids up in the
        // base table.
        let enabled = Arc::new(AtomicBool::new(true));
        let linear = SavedModuleHook {
            kind: SlotKind::Linear,
            weight: ReadOnly(Tensor::eye(2, (Kind::Float, tch::Device::Cpu))),
            bias: Some(ReadOnly(Tensor::from_slice(&[1.0f32, 1.0]))),
            enabled: enabled.clone(),
        };
        let x = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let out = || Tensor::from_slice(&[5.0f32, 5.0]).view([1, 2]);
        assert_eq!(floats(&linear.forward(&x, out()).unwrap()), [5.0, 5.0]);
        let table = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([3, 2]);
        let embedding = SavedModuleHook {
            kind: SlotKind::Embedding,
            weight: ReadOnly(table),
            bias: None,
            enabled: enabled.clone(),
        };
        let ids = Tensor::from_slice(&[2i64, 0]).view([1, 2]);
        let rows = Tensor::zeros([1, 2, 2], (Kind::Float, tch::Device::Cpu));
        enabled.store(false, Ordering::Relaxed);
        assert_eq!(floats(&linear.forward(&x, out()).unwrap()), [2.0, 3.0]);
        assert_eq!(
            floats(&embedding.forward(&ids, rows).unwrap()),
            [5.0, 6.0, 1.0, 2.0]
        );
    }

    #[test]
    fn rslora_scale() {
        let c = LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            use_rslora: true,
        };
        assert_eq!(c.scale(), 8.0);
    }
}
