//! LoRA on the model's linear slots, through swift-model's [`LinearHook`]: a targeted slot's
//! output becomes `base + dropout(x) · Aᵀ · Bᵀ · alpha / r`, with `A` (`[r, in]`) drawn
//! Kaiming-uniform as PEFT does (`a = √5`, so the bound is `1/√in`) and `B` (`[out, r]`) zero, so
//! the adapted model starts equal to the base.
//!
//! The adapter saves to and loads from the PEFT layout: `adapter_config.json` (`peft_type: LORA`,
//! `r`, `lora_alpha`, `target_modules`, ...) and `adapter_model.safetensors` with keys
//! `base_model.model.<slot>.lora_A.weight` / `lora_B.weight`, which Python
//! `peft.PeftModel.from_pretrained` reads.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use swift_model::{LinearHook, LoadedModel};
use swift_plugin_api::model::SlotKind;
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

/// A tensor the hook only reads. libtorch tensors may be read from several threads at once;
/// tch marks `Tensor` `Send` but not `Sync`, and [`LinearHook`] must be both.
pub struct ReadOnly(pub Tensor);

// SAFETY: the hook never mutates the tensor through this wrapper (only `matmul` / `tr` reads);
// the optimiser updates the same storage between forward passes, never during one.
unsafe impl Sync for ReadOnly {}

/// The hook one slot carries.
pub struct LoraHook {
    pub a: ReadOnly,
    pub b: ReadOnly,
    pub scale: f64,
    pub dropout: f64,
    training: Arc<AtomicBool>,
}

impl LinearHook for LoraHook {
    fn forward(&self, x: &Tensor, base: Tensor) -> Result<Tensor, String> {
        let train = self.training.load(Ordering::Relaxed);
        let h = if self.dropout > 0.0 && train {
            x.f_dropout(self.dropout, true).map_err(|e| e.to_string())?
        } else {
            x.shallow_clone()
        };
        let delta = h
            .f_matmul(&self.a.0.f_tr().map_err(|e| e.to_string())?)
            .and_then(|t| t.f_matmul(&self.b.0.f_tr()?))
            .and_then(|t| t.f_mul_scalar(self.scale))
            .map_err(|e| format!("lora: {e}"))?;
        base.f_add(&delta).map_err(|e| format!("lora: {e}"))
    }
}

/// The LoRA adapters attached to one model.
pub struct Lora {
    pub config: LoraConfig,
    /// (slot, A, B) in attachment order.
    pub layers: Vec<(String, Tensor, Tensor)>,
    training: Arc<AtomicBool>,
}

impl Lora {
    /// Attaches fresh adapters (A Kaiming-uniform, B zero, both trainable) to `targets`. The
    /// random draws follow libtorch's generator (seed it with `tch::manual_seed`).
    pub fn attach(
        model: &mut LoadedModel,
        targets: &[String],
        config: LoraConfig,
    ) -> Result<Self, TrainError> {
        let (kind, device) = (model.kind(), model.device());
        let training = Arc::new(AtomicBool::new(true));
        let mut layers = Vec::new();
        for name in targets {
            let slot = model
                .slot_mut(name)
                .ok_or_else(|| TrainError::Config(format!("no slot `{name}` to attach LoRA to")))?;
            if slot.kind != SlotKind::Linear {
                return Err(TrainError::Config(format!(
                    "LoRA targets linear slots; `{name}` is not one"
                )));
            }
            let size = slot.weight.size();
            let (out, inp) = (size[0], size[1]);
            let bound = 1.0 / (inp as f64).sqrt();
            let a = Tensor::f_empty([config.r, inp], (Kind::Float, device))?
                .f_uniform_(-bound, bound)?
                .f_to_kind(kind)?
                .set_requires_grad(true);
            let b = Tensor::f_zeros([out, config.r], (kind, device))?.set_requires_grad(true);
            slot.hooks.push(Arc::new(LoraHook {
                a: ReadOnly(a.shallow_clone()),
                b: ReadOnly(b.shallow_clone()),
                scale: config.scale(),
                dropout: config.dropout,
                training: training.clone(),
            }));
            layers.push((name.clone(), a, b));
        }
        Ok(Self {
            config,
            layers,
            training,
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
        let r = cfg["r"].as_i64().unwrap_or(8);
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
        let mut layers = Vec::new();
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
            if a.size() != [b.size()[1], ws[1]] || b.size()[0] != ws[0] {
                return Err(TrainError::Config(format!(
                    "{}: `{name}` has lora_A {:?} and lora_B {:?}, the slot's weight is {ws:?}",
                    file.display(),
                    a.size(),
                    b.size()
                )));
            }
            slot.hooks.push(Arc::new(LoraHook {
                a: ReadOnly(a.shallow_clone()),
                b: ReadOnly(b.shallow_clone()),
                scale: config.scale(),
                dropout: 0.0,
                training: training.clone(),
            }));
            layers.push((name, a, b));
        }
        if layers.is_empty() {
            return Err(TrainError::Config(format!(
                "{} holds no lora_A/lora_B weights",
                file.display()
            )));
        }
        Ok(Self {
            config,
            layers,
            training,
        })
    }

    /// Turns dropout on (training) or off (evaluation).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The trainable tensors under their PEFT names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.layers
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
            .collect()
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
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.config.r,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": self.target_modules(linear_slots),
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_rslora": self.config.use_rslora,
            "use_dora": false,
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
        save_safetensors(
            &dir.join("adapter_model.safetensors"),
            &self.named_tensors(),
        )
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
