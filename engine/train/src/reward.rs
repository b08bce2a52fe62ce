//! Reward modelling (`swift rlhf --rlhf_type rm`): the scalar value head and its checkpoints.
//!
//! * [`ValueHead`]: transformers' `*ForSequenceClassification` head with one label: a linear
//!   `score` (hidden → 1, no bias) applied to the final hidden state of each sequence's last
//!   non-padding token. Initialised from `--seed` as transformers does (normal(0,
//!   `initializer_range`)), or read from a reward model's `score.weight`.
//! * The trainer feeds its scores to a preference loss whose record says `scores` (the built-in
//!   `bradley_terry`) in place of log-probabilities (see [`crate::rlhf`]).
//! * Checkpoints: with LoRA, the head is saved as PEFT saves `modules_to_save` (the key
//!   `base_model.model.score.weight` in `adapter_model.safetensors`, `"modules_to_save":
//!   ["score"]` and `task_type: SEQ_CLS` in `adapter_config.json`), so peft loads it into
//!   `AutoModelForSequenceClassification`; full training writes a `*ForSequenceClassification`
//!   folder (`score.weight`, no LM head, `num_labels` 1).

use std::path::Path;

use serde_json::{json, Value};
use swift_model::weights::Checkpoint;
use swift_model::LoadedModel;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{save_safetensors, TrainError};
use crate::collate::{tensors, Batch, Collator, EncodedRow};

/// The head's name in a full reward model.
pub const SCORE_WEIGHT: &str = "score.weight";
/// The head's name in a PEFT adapter (`modules_to_save`).
pub const PEFT_SCORE_WEIGHT: &str = "base_model.model.score.weight";

/// The scalar value head: `score` of shape `[1, hidden]`.
pub struct ValueHead {
    pub weight: Tensor,
}

impl ValueHead {
    /// A fresh head drawn from normal(0, `std`) with its own generator state seeded by `seed`
    /// (transformers' `_init_weights` for a linear layer), trainable.
    pub fn init(
        hidden: i64,
        std: f64,
        seed: u64,
        kind: Kind,
        device: Device,
    ) -> Result<Self, TrainError> {
        let _g = tch::no_grad_guard();
        // Its own stream: the tuner's initialisation is seeded with `seed` itself.
        tch::manual_seed((seed ^ 0x5C0E_4EAD) as i64);
        let w = Tensor::f_randn([1, hidden], (Kind::Float, Device::Cpu))?
            .f_mul_scalar(std)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        Ok(Self {
            weight: w.set_requires_grad(true),
        })
    }

    /// The head stored under `name` in `ckpt`, checked against the model's hidden size.
    pub fn read(
        ckpt: &Checkpoint,
        name: &str,
        hidden: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self, TrainError> {
        let w = ckpt.load(name, kind, device)?.tensor.f_detach()?.copy();
        if w.size() != [1, hidden] {
            return Err(TrainError::Config(format!(
                "`{name}` has shape {:?}; a reward model's value head is [1, {hidden}] (one label)",
                w.size()
            )));
        }
        Ok(Self { weight: w })
    }

    /// The model's hidden size: the input width of its output projection.
    pub fn hidden_size(model: &LoadedModel) -> Result<i64, TrainError> {
        let layout = model.layout();
        layout
            .slot(&layout.output_slot)
            .and_then(|s| s.shape.get(1).copied())
            .ok_or_else(|| TrainError::Config("the model declares no output projection".into()))
    }

    /// Scores of a padded batch (`[b]` float, with the graph when gradients are on) and the
    /// tokens per sequence (`[b]`, float): the head on the final hidden state of each row's last
    /// non-padding token (padding on either side).
    pub fn scores(
        &self,
        model: &LoadedModel,
        batch: &Batch,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let (ids, _labels, _scale, mask) = tensors(batch, model.device())?;
        let padded = batch.attention_mask.contains(&0);
        let hidden = model.forward_train(&ids, padded.then_some(&mask))?;
        let s = hidden.size();
        let (b, t, h) = (s[0], s[1], s[2]);
        // The last position whose mask is 1: argmax of position × mask.
        let positions = Tensor::f_arange(t, (Kind::Int64, model.device()))?.f_unsqueeze(0)?;
        let last = positions.f_mul(&mask)?.f_argmax(1, false)?;
        let pooled = hidden
            .f_gather(
                1,
                &last.f_view([b, 1, 1])?.f_expand([b, 1, h], false)?,
                false,
            )?
            .f_squeeze_dim(1)?;
        let scores = pooled
            .f_linear::<Tensor>(&self.weight, None)?
            .f_view([b])?
            .f_to_kind(Kind::Float)?;
        let counts = mask.f_sum_dim_intlist(1, false, Kind::Float)?;
        Ok((scores, counts))
    }

    /// Scores of token sequences (no gradients), `batch_size` sequences per forward pass.
    pub fn score_ids(
        &self,
        model: &LoadedModel,
        seqs: &[Vec<i64>],
        batch_size: usize,
    ) -> Result<Vec<f64>, TrainError> {
        let _g = tch::no_grad_guard();
        let collator = Collator {
            pad_id: 0,
            packing: false,
            max_length: usize::MAX,
        };
        let mut out = Vec::with_capacity(seqs.len());
        for part in seqs.chunks(batch_size.max(1)) {
            let rows: Vec<EncodedRow> = part
                .iter()
                .map(|ids| EncodedRow {
                    input_ids: ids.iter().map(|&i| i as u32).collect(),
                    labels: vec![-100; ids.len()],
                    loss_scale: vec![0.0; ids.len()],
                    images: Vec::new(),
                })
                .collect();
            if rows.iter().any(|r| r.input_ids.is_empty()) {
                return Err(TrainError::Config("cannot score an empty sequence".into()));
            }
            let (scores, _) = self.scores(model, &collator.pad(&rows))?;
            out.extend(Vec::<f64>::try_from(scores.f_to_kind(Kind::Double)?)?);
        }
        Ok(out)
    }

    /// Adds the head to a PEFT LoRA checkpoint that [`crate::AttachedAdapter::save`] wrote into `dir`, as
    /// PEFT saves `modules_to_save` of a `SEQ_CLS` model.
    pub fn add_to_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
        let mut cfg: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", cfg_path.display())))?;
        cfg["task_type"] = json!("SEQ_CLS");
        cfg["modules_to_save"] = json!(["score"]);
        let text =
            serde_json::to_string_pretty(&cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(&cfg_path, text).map_err(|e| TrainError::io(&cfg_path, e))?;
        let file = dir.join("adapter_model.safetensors");
        let mut saved: Vec<(String, Tensor)> = {
            let ckpt = Checkpoint::open(std::slice::from_ref(&file))?;
            let mut names: Vec<String> = ckpt.names().map(String::from).collect();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let t = ckpt
                        .load(&n, self.weight.kind(), Device::Cpu)?
                        .tensor
                        .copy();
                    Ok((n, t))
                })
                .collect::<Result<_, TrainError>>()?
        };
        saved.push((PEFT_SCORE_WEIGHT.into(), self.weight.shallow_clone()));
        save_safetensors(&file, &saved)
    }

    /// Writes a full reward model into `dir`: `model.safetensors` (the model's parameters without
    /// an untied LM head, plus `score.weight`) and `config.json` (`source_config` as a
    /// `*ForSequenceClassification` with one label; `swift_template` records the template).
    pub fn save_full(
        &self,
        dir: &Path,
        model: &LoadedModel,
        source_config: &Value,
        template: &str,
    ) -> Result<(), TrainError> {
        let layout = model.layout();
        let head = layout
            .slot(&layout.output_slot)
            .map(|s| s.weight.clone())
            .unwrap_or_default();
        let tied = layout
            .slots
            .iter()
            .any(|s| s.name != layout.output_slot && s.weight == head);
        let mut tensors: Vec<(String, Tensor)> = model
            .state_dict()?
            .into_iter()
            .filter(|(n, _)| tied || *n != head)
            .collect();
        tensors.push((SCORE_WEIGHT.into(), self.weight.shallow_clone()));
        save_safetensors(&dir.join("model.safetensors"), &tensors)?;
        let cfg = reward_config(source_config, template);
        let path = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
    }
}

/// `config` as transformers writes a one-label sequence classifier of the same model:
/// `architectures` `XForCausalLM` → `XForSequenceClassification`, `id2label` / `label2id`.
pub fn reward_config(config: &Value, template: &str) -> Value {
    let mut cfg = config.clone();
    let archs: Vec<Value> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|arch| {
                    let stem = arch
                        .strip_suffix("ForCausalLM")
                        .or_else(|| arch.strip_suffix("LMHeadModel"))
                        .or_else(|| arch.strip_suffix("ForSequenceClassification"))
                        .unwrap_or(arch);
                    json!(format!("{stem}ForSequenceClassification"))
                })
                .collect()
        })
        .unwrap_or_default();
    cfg["architectures"] = Value::Array(archs);
    cfg["id2label"] = json!({"0": "LABEL_0"});
    cfg["label2id"] = json!({"LABEL_0": 0});
    cfg["swift_template"] = json!(template);
    cfg
}

/// Whether a model folder's config.json describes a sequence classifier (a reward model).
pub fn is_reward_config(config: &Value) -> bool {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|s| s.ends_with("ForSequenceClassification"))
        })
}

/// The number of labels a sequence-classifier config declares (`num_labels`, else the size of
/// `id2label`; transformers' default is 2).
pub fn num_labels(config: &Value) -> usize {
    config
        .get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| {
            config
                .get("id2label")
                .and_then(Value::as_object)
                .map(|m| m.len())
        })
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_becomes_a_one_label_classifier() {
        let src = json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama"});
        let cfg = reward_config(&src, "chatml");
        assert_eq!(
            cfg["architectures"],
            json!(["LlamaForSequenceClassification"])
        );
        assert!(is_reward_config(&cfg));
        assert!(!is_reward_config(&src));
        assert_eq!(num_labels(&cfg), 1);
        assert_eq!(cfg["swift_template"], "chatml");
        let gpt2 = reward_config(&json!({"architectures": ["GPT2LMHeadModel"]}), "t");
        assert_eq!(
            gpt2["architectures"],
            json!(["GPT2ForSequenceClassification"])
        );
    }

    #[test]
    fn init_is_seeded() {
        let a = ValueHead::init(8, 0.02, 7, Kind::Float, Device::Cpu).unwrap();
        let b = ValueHead::init(8, 0.02, 7, Kind::Float, Device::Cpu).unwrap();
        let c = ValueHead::init(8, 0.02, 8, Kind::Float, Device::Cpu).unwrap();
        assert!(a.weight.equal(&b.weight));
        assert!(!a.weight.equal(&c.weight));
        assert!(a.weight.requires_grad());
        let max = f64::try_from(a.weight.abs().max()).unwrap();
        assert!(max > 0.0 && max < 0.2, "{max}");
    }
}
