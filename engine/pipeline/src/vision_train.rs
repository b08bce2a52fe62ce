//! The image training flags (issue 21), ms-swift's names and defaults: `--freeze_vit` (true),
//! `--freeze_aligner` (true), `--freeze_llm` (false), `--vit_lr`, `--aligner_lr`, `--max_pixels`.
//!
//! They act through the part tag (`llm`, `vit`, `aligner`) a vision family puts on its slots and
//! parameters (`ModelLayout::part_of`), as ms-swift's `get_multimodal_target_regex` and
//! `freeze_parameters` do:
//!
//! * an adapter tuner with `--target_modules all-linear` gets no adapters on the slots of a
//!   frozen part, nor on a patch embedding stored as a convolution (PEFT's all-linear skips
//!   it); explicitly named slots are kept;
//! * the whole-parameter tuners (`full`, `freeze`, `lisa`) keep a frozen part's parameters frozen
//!   (they are added to `--freeze_parameters`);
//! * `--vit_lr` / `--aligner_lr` become learning-rate factors (`lr / --learning_rate`) on the
//!   trainable tensors of those parts (an adapter's by its slot).
//!
//! On a text-only model (no `vision` in its layout) each of them, when given, is refused by name.
//! `--max_pixels` is read where images are processed; here it is only refused for text models.

use anyhow::{bail, Result};
use swift_plugin_tensors::model::{ModelLayout, Part};
use swift_spec::{GivenFlags, VisionArgs};

/// The flags this module owns.
pub const FLAGS: &[&str] = &[
    "freeze_vit",
    "freeze_aligner",
    "freeze_llm",
    "vit_lr",
    "aligner_lr",
    "max_pixels",
];

/// Refuses the image flags on a text-only model.
pub fn check(layout: &ModelLayout, given: &GivenFlags, model: &str) -> Result<()> {
    if layout.vision.is_none() {
        given
            .refuse(
                FLAGS,
                &format!("to the text-only model {model} (its family declares no vision tower)"),
            )
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Whether `part` is frozen by the flags.
pub fn frozen(v: &VisionArgs, part: Part) -> bool {
    match part {
        Part::Llm => v.freeze_llm,
        Part::Vit => v.freeze_vit,
        Part::Aligner => v.freeze_aligner,
    }
}

/// The slots an adapter tuner targets, without those of frozen parts when the targets came from
/// `all-linear`.
pub fn filter_targets(
    layout: &ModelLayout,
    v: &VisionArgs,
    target_modules: &[String],
    targets: Vec<String>,
) -> Result<Vec<String>> {
    if layout.vision.is_none() || target_modules != ["all-linear"] {
        return Ok(targets);
    }
    let kept: Vec<String> = targets
        .into_iter()
        .filter(|t| match layout.slots.iter().find(|s| &s.name == t) {
            // A slot stored as a convolution (a patch embedding) is no linear layer to PEFT's
            // all-linear, which ms-swift's targets come from.
            Some(s) => !frozen(v, s.part) && s.stored_shape.is_none(),
            None => true,
        })
        .collect();
    if kept.is_empty() {
        bail!("--freeze_llm, --freeze_vit and --freeze_aligner leave no slot for the adapters: unfreeze one part");
    }
    Ok(kept)
}

/// The parameter names of frozen parts, for the whole-parameter tuners.
pub fn frozen_parameters(layout: &ModelLayout, v: &VisionArgs, names: &[String]) -> Vec<String> {
    if layout.vision.is_none() {
        return Vec::new();
    }
    names
        .iter()
        .filter(|n| frozen(v, layout.part_of(n).unwrap_or(Part::Llm)))
        .cloned()
        .collect()
}

/// Learning-rate factors for `--vit_lr` / `--aligner_lr`: `(pattern, lr / learning_rate)` for
/// each trainable tensor of those parts (`base_model.model.SLOT.` for an adapter's tensors, the
/// parameter's name for a whole one).
pub fn lr_factors(
    layout: &ModelLayout,
    v: &VisionArgs,
    learning_rate: f64,
    trainable: &[String],
) -> Vec<(String, f64)> {
    if layout.vision.is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (part, lr) in [(Part::Vit, v.vit_lr), (Part::Aligner, v.aligner_lr)] {
        let Some(lr) = lr else { continue };
        let factor = lr / learning_rate;
        for name in trainable {
            if let Some(slot) = name.strip_prefix("base_model.model.") {
                let s = layout
                    .slots
                    .iter()
                    .filter(|s| slot.starts_with(&format!("{}.", s.name)))
                    .max_by_key(|s| s.name.len());
                if let Some(s) = s.filter(|s| s.part == part) {
                    let pattern = format!("base_model.model.{}.", s.name);
                    if !out.iter().any(|(p, _)| p == &pattern) {
                        out.push((pattern, factor));
                    }
                }
            } else if layout.part_of(name) == Some(part) {
                out.push((name.clone(), factor));
            }
        }
    }
    out
}
