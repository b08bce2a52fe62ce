//! `example-gain`: a tuner with its own math on the tuner contract, not a configuration of a
//! built-in adapter. Each targeted linear slot gets a trained gain per output channel, `g`
//! (`[out]`, starting at zero), and computes `base ⊙ (1 + g)`; merged, the weight's rows are
//! scaled by `1 + g` (refused for slots with a bias, which the gain scales too). Saved as
//! `base_model.model.<slot>.example_gain` with `peft_type: EXAMPLE_GAIN`.

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Tensor};
use swift_plugin_tensors::tuner::keyed;

/// The tuner: every linear slot but the output projection, or those `target_modules` names.
pub struct Gain;

impl Tuner for Gain {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        let output = args["output_slot"].as_str();
        let wanted: Vec<&str> = match &args["target_modules"] {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec!["all-linear"],
        };
        let picked: Vec<String> = slots
            .iter()
            .filter(|s| {
                wanted.iter().any(|w| {
                    (*w == "all-linear" && Some(s.as_str()) != output)
                        || s.as_str() == *w
                        || s.ends_with(&format!(".{w}"))
                })
            })
            .cloned()
            .collect();
        if picked.is_empty() {
            return Err(format!(
                "example-gain: target_modules {wanted:?} match no linear slot"
            ));
        }
        Ok(picked)
    }
}

const KEY: &str = "example_gain";

impl AdapterTuner for Gain {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        let slots: Vec<&SlotInfo> = match req.mode {
            AttachMode::Train => req.slots.iter().collect(),
            AttachMode::Load => {
                if req.options["peft_type"].as_str() != Some("EXAMPLE_GAIN") {
                    return Err(format!(
                        "{}: peft_type {} is not EXAMPLE_GAIN",
                        req.config_file, req.options["peft_type"]
                    ));
                }
                let stored: Vec<&str> = req
                    .stored
                    .keys()
                    .filter_map(|k| {
                        k.strip_prefix("base_model.model.")?
                            .strip_suffix(&format!(".{KEY}"))
                    })
                    .collect();
                stored
                    .iter()
                    .map(|name| {
                        req.slots.iter().find(|s| s.name == *name).ok_or_else(|| {
                            format!(
                                "{}: the gain of `{name}` has no linear slot in this model",
                                req.weights_file
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let mut plan = AdapterPlan {
            peft_type: "EXAMPLE_GAIN".into(),
            method: "example gain".into(),
            summary: format!("example gain on {} slots", slots.len()),
            slots: Vec::new(),
            shared: Vec::new(),
            train_whole: Vec::new(),
            attention: AttentionMode::Full,
            extra_loss: false,
            after_backward: false,
            merge_refused: None,
            rank: None,
        };
        for s in &slots {
            if s.kind != SlotKind::Linear {
                return Err(format!(
                    "example-gain targets linear slots; `{}` is not one",
                    s.name
                ));
            }
            if s.has_bias {
                plan.merge_refused = Some(format!(
                    "`{}` has a bias, which the gain scales too: serve it unmerged",
                    s.name
                ));
            }
            plan.slots.push(SlotPlan {
                slot: s.name.clone(),
                tensors: vec![TensorDecl {
                    name: "gain".into(),
                    key: Some(KEY.into()),
                    shape: vec![s.shape[0]],
                    init: Init::Zeros,
                    dtype: DtypeRule::Float32,
                    trainable: req.mode == AttachMode::Train,
                    lr_factor: 1.0,
                }],
                needs_base_weight: false,
            });
        }
        Ok(Box::new(GainAdapter { plan }))
    }
}

struct GainAdapter {
    plan: AdapterPlan,
}

impl Adapter for GainAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let g = &call.tensors[0];
        let kind = call.base.kind();
        let f = || -> Result<Tensor, tch::TchError> {
            let factor = g.f_add_scalar(1.0)?;
            call.base
                .f_to_kind(g.kind())?
                .f_mul(&factor)?
                .f_to_kind(kind)
        };
        f().map_err(|e| format!("example-gain: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        let targets: Vec<&str> = self.plan.slots.iter().map(|s| s.slot.as_str()).collect();
        Ok(Saved {
            tensors: keyed(&self.plan, tensors, shared),
            config: json!({"peft_type": "EXAMPLE_GAIN", "target_modules": targets}),
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
            let factor = tensors[0].f_add_scalar(1.0)?.f_unsqueeze(1)?;
            weight
                .f_to_kind(factor.kind())?
                .f_mul(&factor)?
                .f_to_kind(weight.kind())
        };
        f().map_err(|e| format!("example-gain merge: {e}"))
    }
}

/// The tuner's record.
pub fn record() -> TunerRecord {
    let mut r = TunerRecord::new(
        "example-gain",
        "a trained gain per output channel of every linear slot (the example plugin's own math)",
    );
    r.peft_type = Some("EXAMPLE_GAIN".into());
    r.schema = vec![OptionDecl::new(
        "target_modules",
        "list",
        json!(["all-linear"]),
        "all-linear, or slot names / their last parts",
    )];
    r
}
