//! LongLoRA (Chen et al. 2023, "LongLoRA: Efficient Fine-tuning of Long-Context Large Language
//! Models"), as ms-swift has it (`--tuner_type longlora`; its `LongLoRAConfig`): the LoRA
//! adapter of `lora.rs` (its math, options and PEFT layout, called, not copied), plus
//!
//! * the embeddings and norms trained whole (`embedder_and_normalizer`, default `embed norm`:
//!   every layer whose weight's name contains one of them, as ms-swift matches), declared as the
//!   plan's `train_whole` (`*embed*`, `*norm*`): the host trains them as PEFT
//!   `modules_to_save` copies, so the checkpoint is a PEFT LoRA checkpoint (`peft_type: LORA`)
//!   listing them in `modules_to_save`, which Python peft loads as it is;
//! * shifted sparse attention while training (`group_size_ratio`, default 0.25, ms-swift's
//!   fixed value), declared as the plan's attention mode: the host implements it
//!   (`swift_model::sparse`) with groups of `int(--max_length × ratio)` tokens; inference
//!   attends fully, so a loaded checkpoint computes exactly what a plain LoRA with the same
//!   tensors does.
//!
//! The slot choice is LoRA's (`--target_modules`, default all-linear as in ms-swift; the paper
//! adapts the attention projections: `--target_modules q_proj k_proj v_proj o_proj`).

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::Tensor;

use crate::lora::LoraAdapter;

/// The `longlora` tuner.
pub struct LongLoraTuner;

impl Tuner for LongLoraTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

/// LongLoRA's own settings (read from the options; LoRA reads the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct LongLoraConfig {
    pub group_size_ratio: f64,
    pub embedder_and_normalizer: Vec<String>,
}

impl LongLoraConfig {
    pub fn from_options(o: &Value) -> Result<Self, String> {
        let group_size_ratio = match &o["group_size_ratio"] {
            Value::Null => 0.25,
            v => v
                .as_f64()
                .ok_or_else(|| format!("option group_size_ratio must be a number, got {v}"))?,
        };
        if !(group_size_ratio > 0.0 && group_size_ratio <= 1.0) {
            return Err(format!(
                "--group_size_ratio must be in (0, 1], got {group_size_ratio}"
            ));
        }
        let embedder_and_normalizer = match &o["embedder_and_normalizer"] {
            Value::Null => vec!["embed".into(), "norm".into()],
            Value::String(s) => vec![s.clone()],
            Value::Array(a) if a.is_empty() => vec!["embed".into(), "norm".into()],
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        format!("embedder_and_normalizer entries are names, got {v}")
                    })
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "option embedder_and_normalizer must be a list of names, got {other}"
                ))
            }
        };
        if let Some(bad) = embedder_and_normalizer
            .iter()
            .find(|n| n.is_empty() || n.contains('*'))
        {
            return Err(format!(
                "--embedder_and_normalizer `{bad}`: give parts of layer names (embed, norm), not patterns"
            ));
        }
        Ok(Self {
            group_size_ratio,
            embedder_and_normalizer,
        })
    }
}

impl AdapterTuner for LongLoraTuner {
    fn attach(&self, request: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        Ok(Box::new(match request.mode {
            AttachMode::Train => {
                let c = LongLoraConfig::from_options(&request.options)?;
                let lora = LoraAdapter::train(request)?;
                let mut plan = lora.plan();
                plan.method = "LongLoRA".into();
                plan.summary = format!(
                    "LongLoRA ({}; shifted sparse attention, group {} of --max_length; trained whole: {})",
                    plan.summary,
                    c.group_size_ratio,
                    c.embedder_and_normalizer.join(", ")
                );
                plan.train_whole = c
                    .embedder_and_normalizer
                    .iter()
                    .map(|n| format!("*{n}*"))
                    .collect();
                plan.attention = AttentionMode::ShiftedSparse {
                    group_size_ratio: c.group_size_ratio,
                };
                LongLoraAdapter { lora, plan }
            }
            // A checkpoint is a PEFT LoRA one (its embeddings and norms are `modules_to_save`,
            // which the host reads); inference attends fully.
            AttachMode::Load => {
                let lora = LoraAdapter::load(request)?;
                let mut plan = lora.plan();
                plan.method = "LongLoRA".into();
                plan.summary = format!("LongLoRA ({})", plan.summary);
                LongLoraAdapter { lora, plan }
            }
        }))
    }
}

/// LoRA's adapter under LongLoRA's plan.
pub struct LongLoraAdapter {
    lora: LoraAdapter,
    plan: AdapterPlan,
}

impl Adapter for LongLoraAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn init(
        &self,
        slot: Option<usize>,
        weight: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>), String> {
        self.lora.init(slot, weight)
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        self.lora.forward(call)
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        self.lora.save(tensors, shared)
    }

    fn merge(
        &self,
        slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        shared: &[Tensor],
    ) -> Result<Tensor, String> {
        self.lora.merge(slot, weight, tensors, shared)
    }
}
