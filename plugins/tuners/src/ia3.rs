//! (IA)³ on the tuner contract, as PEFT computes it: each targeted linear slot learns a vector
//! `l` that rescales its output (`base ⊙ l`, `l` of shape `[out, 1]`), or, for the
//! feed-forward slots (`--feedforward_modules`, default the slots named `down_proj`, PEFT's
//! choice for Llama-style models), its input (`(x ⊙ l)·Wᵀ + b`, `l` of shape `[1, in]`). `l`
//! starts at ones (PEFT's `init_ia3_weights`), so the model starts unchanged.
//!
//! Checkpoints are PEFT's: `base_model.model.<slot>.ia3_l` and `adapter_config.json` with
//! `peft_type: IA3`, `target_modules`, `feedforward_modules`. Merging scales the weight's rows
//! (or, feed-forward, its columns); a non-feed-forward slot with a bias is refused (the bias
//! scales too, which a weight merge cannot express).

use std::collections::BTreeSet;

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Tensor};
use swift_plugin_tensors::tuner::keyed;

use crate::lora::target_modules;

/// The `ia3` tuner.
pub struct Ia3Tuner;

impl Tuner for Ia3Tuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

/// Whether `slot` matches one of PEFT's module names (equal, or ending with `.NAME`).
fn matches(slot: &str, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| slot == n || slot.ends_with(&format!(".{n}")))
}

/// A list option (`["a", "b"]`, or one comma-separated string); `None` when unset or empty.
fn names(v: &Value, what: &str) -> Result<Option<Vec<String>>, String> {
    let list: Vec<String> = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{what} entries are names, got {x}"))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("{what} must be a list of names, got {other}")),
    };
    Ok((!list.is_empty()).then_some(list))
}

impl AdapterTuner for Ia3Tuner {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        // (slot, feed-forward) pairs.
        let mut chosen: Vec<(&SlotInfo, bool)> = Vec::new();
        match req.mode {
            AttachMode::Train => {
                let ff = names(&req.options["feedforward_modules"], "--feedforward_modules")?
                    .unwrap_or_else(|| vec!["down_proj".into()]);
                for s in &req.slots {
                    chosen.push((s, matches(&s.name, &ff)));
                }
                let any_ff = chosen.iter().any(|(_, f)| *f);
                let given = req.options["feedforward_modules"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                if given && !any_ff {
                    return Err(format!(
                        "--feedforward_modules {ff:?} names none of the targeted slots (feed-forward slots must also be targets)"
                    ));
                }
            }
            AttachMode::Load => {
                let (cfg, file) = (&req.config_file, &req.weights_file);
                if req.options["peft_type"].as_str() != Some("IA3") {
                    return Err(format!(
                        "{cfg}: peft_type {} is not IA3",
                        req.options["peft_type"]
                    ));
                }
                let ff = names(&req.options["feedforward_modules"], "feedforward_modules")
                    .map_err(|e| format!("{cfg}: {e}"))?
                    .unwrap_or_default();
                for (key, shape) in &req.stored {
                    let Some(slot) = key
                        .strip_prefix("base_model.model.")
                        .and_then(|k| k.strip_suffix(".ia3_l"))
                    else {
                        continue;
                    };
                    let info = req.slots.iter().find(|s| s.name == slot).ok_or_else(|| {
                        format!("{file}: the adapter has weights for `{slot}`, which this model does not have")
                    })?;
                    let is_ff = matches(slot, &ff);
                    let want = if is_ff {
                        vec![1, info.shape[1]]
                    } else {
                        vec![info.shape[0], 1]
                    };
                    if *shape != want {
                        return Err(format!(
                            "{file}: `{key}` is {shape:?}; `{slot}` ({}x{} in the base, {}) needs {want:?}",
                            info.shape[0],
                            info.shape[1],
                            if is_ff {
                                "feed-forward in adapter_config.json"
                            } else {
                                "not feed-forward in adapter_config.json"
                            }
                        ));
                    }
                    chosen.push((info, is_ff));
                }
            }
        }
        let mut plan = AdapterPlan {
            peft_type: "IA3".into(),
            method: "IA³".into(),
            summary: String::new(),
            slots: Vec::new(),
            shared: Vec::new(),
            train_whole: Vec::new(),
            attention: AttentionMode::Full,
            extra_loss: false,
            after_backward: false,
            merge_refused: None,
            rank: None,
        };
        let mut ff_slots = Vec::new();
        for (s, is_ff) in &chosen {
            if s.kind != SlotKind::Linear || s.shape.len() != 2 {
                return Err(format!("IA³ targets linear slots; `{}` is not one", s.name));
            }
            if *is_ff && s.quantized {
                return Err(format!(
                    "`{}` is quantized: IA³ on a feed-forward slot needs the float base weight",
                    s.name
                ));
            }
            if !is_ff && s.has_bias {
                plan.merge_refused = Some(format!(
                    "`{}` has a bias, which IA³ scales too: serve it unmerged",
                    s.name
                ));
            }
            let shape = if *is_ff {
                ff_slots.push(s.name.clone());
                vec![1, s.shape[1]]
            } else {
                vec![s.shape[0], 1]
            };
            plan.slots.push(SlotPlan {
                slot: s.name.clone(),
                tensors: vec![TensorDecl {
                    name: "ia3_l".into(),
                    key: Some("ia3_l".into()),
                    shape,
                    init: Init::Ones,
                    dtype: DtypeRule::Float32,
                    trainable: req.mode == AttachMode::Train,
                    lr_factor: 1.0,
                }],
                needs_base_weight: *is_ff,
            });
        }
        plan.summary = format!(
            "IA³ on {} slots ({} feed-forward)",
            plan.slots.len(),
            ff_slots.len()
        );
        let feedforward: Vec<bool> = chosen.iter().map(|(_, f)| *f).collect();
        let targeted: Vec<String> = chosen.iter().map(|(s, _)| s.name.clone()).collect();
        let (targets, ff_names) = peft_names(&targeted, &ff_slots, &req.linear_slots);
        Ok(Box::new(Ia3Adapter {
            plan,
            feedforward,
            target_modules: targets,
            feedforward_modules: ff_names,
        }))
    }
}

/// PEFT's `target_modules` and `feedforward_modules` for these slots: last name parts when they
/// pick out exactly these slots, else full names (PEFT requires the second a subset of the first).
fn peft_names(targeted: &[String], ff: &[String], linear: &[String]) -> (Vec<String>, Vec<String>) {
    let t = target_modules(targeted, linear);
    let f = target_modules(ff, linear);
    let short = |v: &[String]| v.iter().all(|n| !n.contains('.'));
    if ff.is_empty() && short(&t) {
        return (t, Vec::new());
    }
    let tset: BTreeSet<&String> = t.iter().collect();
    if short(&t) && short(&f) && f.iter().all(|n| tset.contains(n)) {
        return (t, f);
    }
    (targeted.to_vec(), ff.to_vec())
}

struct Ia3Adapter {
    plan: AdapterPlan,
    feedforward: Vec<bool>,
    target_modules: Vec<String>,
    feedforward_modules: Vec<String>,
}

impl Adapter for Ia3Adapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let l = &call.tensors[0];
        let f = || -> Result<Tensor, tch::TchError> {
            let scale = l.f_flatten(0, -1)?;
            if self.feedforward[call.slot] {
                let Some(w) = call.weight else {
                    return Ok(call.base.shallow_clone());
                };
                let kind = call.x.kind();
                let x = call.x.f_to_kind(l.kind())?.f_mul(&scale)?.f_to_kind(kind)?;
                x.f_linear(w, call.bias)
            } else {
                let kind = call.base.kind();
                call.base.f_mul(&scale)?.f_to_kind(kind)
            }
        };
        if self.feedforward[call.slot] && call.weight.is_none() {
            return Err("IA³ on a feed-forward slot needs its base weight".into());
        }
        f().map_err(|e| format!("ia3: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        Ok(Saved {
            tensors: keyed(&self.plan, tensors, shared),
            config: crate::peft_config(
                "IA3",
                &self.target_modules,
                false,
                json!({
                    "feedforward_modules": self.feedforward_modules,
                    "init_ia3_weights": true,
                    "exclude_modules": null
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
        // `l` is [out, 1] (rows) or [1, in] (columns): it broadcasts over W [out, in] either way.
        let _g = tch::no_grad_guard();
        weight
            .f_to_kind(tensors[0].kind())
            .and_then(|w| w.f_mul(&tensors[0]))
            .and_then(|w| w.f_to_kind(weight.kind()))
            .map_err(|e| format!("ia3 merge: {e}"))
    }
}
