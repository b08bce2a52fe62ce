//! The parts of a tuner's plan the host carries out beside the adapter's own tensors while
//! training (ARCHITECTURE.md §3.8), both LongLoRA's: `train_whole`, base parameters trained
//! whole (its embeddings and norms), and a training-only attention mode (its shifted sparse
//! attention, `swift_model::sparse`).
//!
//! * `train_whole` patterns (`*` globs, [`crate::tuning::name_matches`]) are matched against each
//!   slot's `<slot>.weight`; the slots they pick train as PEFT `modules_to_save` copies
//!   (`AttachedAdapter::add_modules_to_save`: switched off with the adapter, saved as
//!   `base_model.model.<slot>.weight` and listed in adapter_config.json's `modules_to_save`,
//!   so Python peft loads them; a tied embedding is untied by its copy, as peft does).
//! * `shifted_sparse { group_size_ratio }`: groups of `int(--max_length × ratio)` tokens over
//!   each batch padded to `--max_length` inside the attention (ms-swift pads LongLoRA batches to
//!   `--max_length` and refuses a length the group does not divide, and so does this; only the
//!   attention sees the padding here, not the other layers), in the training passes only,
//!   while the adapter is training and on; evaluation, the preference reference (adapters off)
//!   and inference attend fully.

use anyhow::{anyhow, bail, Result};
use swift_model::LoadedModel;
use swift_plugin_tensors::tuner::AttentionMode;
use swift_train::adapter::AttachedAdapter;

use crate::tuning::name_matches;

/// Trains the slots the plan's `train_whole` patterns pick as whole copies; returns them.
pub fn train_whole(model: &mut LoadedModel, adapter: &mut AttachedAdapter) -> Result<Vec<String>> {
    let patterns = adapter.plan().train_whole.clone();
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let mut slots: Vec<String> = Vec::new();
    for p in &patterns {
        let hits: Vec<String> = model
            .layout()
            .slots
            .iter()
            .filter(|s| name_matches(p, &format!("{}.weight", s.name)))
            .map(|s| s.name.clone())
            .collect();
        if hits.is_empty() {
            bail!(
                "the {} adapter trains `{p}` whole, which matches no layer of this model",
                adapter.plan().method
            );
        }
        for h in hits {
            if !slots.contains(&h) {
                slots.push(h);
            }
        }
    }
    adapter.add_modules_to_save(model, &slots)?;
    tracing::info!("trained whole: {}", slots.join(", "));
    Ok(slots)
}

/// Sets the model's training attention from the plan (`max_length`: every training batch's
/// length, `--max_length`).
pub fn training_attention(
    model: &mut LoadedModel,
    adapter: &AttachedAdapter,
    max_length: usize,
) -> Result<()> {
    match &adapter.plan().attention {
        AttentionMode::Full => Ok(()),
        AttentionMode::ShiftedSparse { group_size_ratio } => {
            let length = i64::try_from(max_length).map_err(|e| anyhow!("--max_length: {e}"))?;
            let group = swift_model::sparse::group_size(length, *group_size_ratio)
                .map_err(anyhow::Error::msg)?;
            model.set_training_attention(Some(swift_model::TrainingAttention {
                group,
                length,
                switches: adapter.training_switches(),
            }));
            tracing::info!(
                "shifted sparse attention while training: groups of {group} tokens over --max_length {length}, half of the heads shifted by {}",
                group / 2
            );
            Ok(())
        }
    }
}
