//! Attaching a registered tuner to a loaded model for training: the tuner's record names its
//! adapter (`TunerRecord::adapter`: a tuner with its own math, reached through the tuner
//! contract, or one of the host's whole-parameter modes `full`, `freeze`, `lisa`, `llamapro`) and
//! its default options; the user's flags override them. Returns the tensors the optimiser trains
//! and what the trainer needs to know (learning-rate factors, LISA).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use swift_plugin_tensors::{TunerHandle, TunerRecord};
use swift_registry::Registries;
use swift_train::adapter::{modules_to_save_slots, AttachedAdapter};
use swift_train::trainer::LisaConfig;

use swift_spec::{GivenFlags, TunerArgs};
use tch::Tensor;

/// What attaching produced.
pub struct Attached {
    /// The tuner's adapter (saved as a PEFT checkpoint), or none for full-style training.
    pub adapter: Option<AttachedAdapter>,
    /// The tensors the optimiser updates, by name.
    pub trainable: Vec<(String, Tensor)>,
    /// Learning-rate factors by name pattern (LoRA+).
    pub lr_factors: Vec<(String, f64)>,
    pub lisa: Option<LisaConfig>,
    /// True when the base weights themselves train (the default learning rate is lower).
    pub full: bool,
}

/// Whether a parameter name matches a `--freeze_parameters` / `--trainable_parameters` entry:
/// a prefix (`model.layers.0`, `lm_head`), or a pattern with `*` wildcards.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name == pattern || name.starts_with(&format!("{pattern}."));
    }
    // Glob: the pieces between stars appear in order, the first at the start and the last at
    // the end unless the pattern starts / ends with a star.
    let pieces: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, piece) in pieces.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(piece) else {
                return false;
            };
            rest = r;
        } else if i == pieces.len() - 1 {
            return rest.ends_with(piece);
        } else if let Some(at) = rest.find(piece) {
            rest = &rest[at + piece.len()..];
        } else {
            return false;
        }
    }
    rest.is_empty()
}

/// The host's whole-parameter modes (a tuner record naming one of them as its adapter).
const HOST_MODES: &[&str] = &["full", "freeze", "lisa", "llamapro"];

/// The tuner whose math `record` uses (its `adapter`: itself or another registered tuner), or
/// `None` for the host's whole-parameter modes.
pub fn adapter_of(regs: &Registries, record: &TunerRecord) -> Result<Option<Arc<TunerHandle>>> {
    let adapter = record.adapter();
    if HOST_MODES.contains(&adapter) {
        return Ok(None);
    }
    let entry = regs.tuners.resolve(adapter).map_err(|e| {
        anyhow!(
            "tuner `{}` uses the adapter `{adapter}`, which no loaded tuner provides: {e}",
            record.name
        )
    })?;
    match &entry.imp {
        Some(h) if h.has_adapter() => Ok(Some(h.clone())),
        _ => bail!(
            "tuner `{}` uses the adapter `{adapter}`, which has no adapter math of its own (tuners with math: {}; host modes: {})",
            record.name,
            regs.tuners
                .iter()
                .filter(|e| e.imp.as_ref().is_some_and(|h| h.has_adapter()))
                .map(|e| e.record.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            HOST_MODES.join(", ")
        ),
    }
}

/// The options an adapter gets: the tuner flags (their defaults included), where the user did
/// not give a flag (or it is unset) the record's option of the same name instead.
pub fn adapter_options(
    record: &TunerRecord,
    flags: &TunerArgs,
    given: &GivenFlags,
) -> Result<Value> {
    let mut o = match serde_json::to_value(flags)? {
        Value::Object(m) => m,
        _ => bail!("internal: the tuner flags are not an object"),
    };
    for (k, v) in &record.options {
        if !given.contains(k) || o.get(k).is_none_or(Value::is_null) {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(o))
}

/// Attaches `record`'s adapter on `targets` (the slots its behaviour picked): `math`'s adapter
/// through the tuner contract, with the tuner settings of `flags` (an unset option falls back to
/// the record's, then to the default), or the host's whole-parameter mode when `math` is None.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    model: &mut swift_model::LoadedModel,
    record: &TunerRecord,
    math: Option<&TunerHandle>,
    targets: &[String],
    flags: &TunerArgs,
    given: &GivenFlags,
    llamapro_new_layers: &[usize],
) -> Result<Attached> {
    let lisa_flags = |default_layers: usize| -> Result<Option<LisaConfig>> {
        let layers = flags.lisa_activated_layers.unwrap_or(default_layers);
        if layers == 0 {
            return Ok(None);
        }
        let interval = flags.lisa_step_interval.unwrap_or(20);
        if interval == 0 {
            bail!("--lisa_step_interval must be at least 1");
        }
        Ok(Some(LisaConfig {
            activated_layers: layers,
            step_interval: interval,
        }))
    };
    if !flags.modules_to_save.is_empty() && math.is_none() {
        bail!(
            "--modules_to_save is for LoRA tuners and the other adapter tuners (tuner `{}` uses the `{}` adapter, which trains or freezes whole parameters itself: use --trainable_parameters)",
            record.name,
            record.adapter()
        );
    }
    refuse_other_adapters_flags(record, math.is_some(), given, flags.lora_dropout == 0.0)?;
    if let Some(math) = math {
        let options = adapter_options(record, flags, given)?;
        let mut adapter = AttachedAdapter::attach(model, math, options, targets)?;
        if !flags.modules_to_save.is_empty() {
            let slots = modules_to_save_slots(model, &flags.modules_to_save)?;
            adapter.add_modules_to_save(model, &slots)?;
            tracing::info!("modules_to_save: {} trained whole", slots.join(", "));
        }
        crate::training_modes::train_whole(model, &mut adapter)?;
        tracing::info!("adapter: {}", adapter.plan().summary);
        let trainable = adapter.named_tensors();
        let lr_factors = adapter.lr_factors();
        return Ok(Attached {
            adapter: Some(adapter),
            trainable,
            lr_factors,
            lisa: None,
            full: false,
        });
    }
    match record.adapter() {
        adapter @ ("full" | "freeze" | "lisa") => {
            if adapter == "freeze" && flags.freeze_parameters.is_empty() {
                bail!(
                    "tuner `{}` needs --freeze_parameters (name prefixes or * patterns of the parameters to keep frozen, e.g. model.embed_tokens model.layers.0)",
                    record.name
                );
            }
            let frozen = |name: &str| {
                flags
                    .freeze_parameters
                    .iter()
                    .any(|p| name_matches(p, name))
                    && !flags
                        .trainable_parameters
                        .iter()
                        .any(|p| name_matches(p, name))
            };
            let names: Vec<String> = model.state_dict()?.into_iter().map(|(n, _)| n).collect();
            for p in flags
                .freeze_parameters
                .iter()
                .chain(&flags.trainable_parameters)
            {
                if !names.iter().any(|name| name_matches(p, name)) {
                    bail!("`{p}` matches no parameter of this model (parameter names look like {})", names.first().map(String::as_str).unwrap_or("model.layers.0.mlp.up_proj.weight"));
                }
            }
            let trainable = model.make_trainable(&|name| !frozen(name))?;
            if trainable.is_empty() {
                bail!("--freeze_parameters froze every parameter: nothing is left to train");
            }
            let lisa = lisa_flags(if adapter == "lisa" { 2 } else { 0 })?;
            Ok(Attached {
                adapter: None,
                trainable,
                lr_factors: Vec::new(),
                lisa,
                full: true,
            })
        }
        "llamapro" => {
            let new = llamapro_new_layers;
            let trainable = model.make_trainable(&|name| {
                swift_train::llamapro::layer_index(name).is_some_and(|l| new.contains(&l))
            })?;
            if trainable.is_empty() {
                bail!("LLaMA-Pro found no parameters of the new blocks {new:?} to train");
            }
            Ok(Attached {
                adapter: None,
                trainable,
                lr_factors: Vec::new(),
                lisa: None,
                full: true,
            })
        }
        other => bail!(
            "tuner `{}` uses the adapter `{other}`, which is neither a tuner with its own math nor one of the host's modes ({})",
            record.name,
            HOST_MODES.join(", ")
        ),
    }
}

/// The tuner flags of each host adapter; a flag of another adapter is refused by name (the
/// adapter tuners' flags: an adapter tuner that lists its options reads only those).
const LORA_FLAGS: &[&str] = &[
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "modules_to_save",
    "use_rslora",
    "use_dora",
    "init_weights",
    "lora_lr_ratio",
    "feedforward_modules",
    "vera_rank",
    "vera_projection_prng_key",
    "vera_dropout",
    "vera_d_initial",
    "boft_block_size",
    "boft_block_num",
    "boft_n_butterfly_factor",
    "boft_dropout",
    "fourier_n_frequency",
    "fourier_scaling",
    "random_loc_seed",
    "adalora_init_r",
    "adalora_target_r",
    "adalora_tinit",
    "adalora_tfinal",
    "adalora_deltaT",
    "adalora_beta1",
    "adalora_beta2",
    "adalora_orth_reg_weight",
    "group_size_ratio",
    "embedder_and_normalizer",
];
const WHOLE_FLAGS: &[&str] = &[
    "freeze_parameters",
    "trainable_parameters",
    "lisa_activated_layers",
    "lisa_step_interval",
];
const LLAMAPRO_FLAGS: &[&str] = &["llamapro_num_new_blocks"];

fn refuse_other_adapters_flags(
    record: &TunerRecord,
    has_math: bool,
    given: &GivenFlags,
    no_dropout: bool,
) -> Result<()> {
    let adapter = record.adapter();
    let why = format!(
        "to tuner `{}` (it trains with the `{adapter}` adapter)",
        record.name
    );
    let mut others: Vec<&[&str]> = match adapter {
        _ if has_math => vec![WHOLE_FLAGS, LLAMAPRO_FLAGS],
        "full" | "freeze" | "lisa" => vec![LORA_FLAGS, LLAMAPRO_FLAGS],
        "llamapro" => vec![LORA_FLAGS, WHOLE_FLAGS],
        _ => Vec::new(),
    };
    // An adapter tuner that describes its options reads only those (and the slot choice).
    let unread: Vec<&str> = LORA_FLAGS
        .iter()
        .copied()
        .filter(|f| !matches!(*f, "target_modules" | "modules_to_save"))
        .filter(|f| !record.schema.iter().any(|o| o.name == *f))
        .collect();
    if has_math && !record.schema.is_empty() {
        others.push(&unread);
    }
    for flags in others {
        // `--lora_dropout 0` says "no dropout", which holds for every adapter.
        let flags: Vec<&str> = flags
            .iter()
            .copied()
            .filter(|f| !(*f == "lora_dropout" && no_dropout))
            .collect();
        given.refuse(&flags, &why).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn prefixes_and_globs() {
        let n = "model.layers.10.mlp.up_proj.weight";
        assert!(name_matches("model.layers.10", n));
        assert!(!name_matches("model.layers.1", n), "a prefix ends at a dot");
        assert!(name_matches("model.layers.*.mlp.*", n));
        assert!(name_matches("*.weight", n));
        assert!(!name_matches("*.bias", n));
        assert!(name_matches(n, n));
        assert!(!name_matches("lm_head", n));
    }
}
