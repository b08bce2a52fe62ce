//! Attaching a registered tuner to a loaded model for training: the tuner's record names the
//! host adapter (`lora`, `full`, `freeze`, `lisa`) and its default options; the user's flags
//! override them. Returns the tensors the optimiser trains and what the trainer needs to know
//! (learning-rate factors, LISA).

use anyhow::{bail, Result};
use serde_json::Value;
use swift_plugin_tensors::TunerRecord;
use swift_train::lora::{LoraInit, LoraVariant};
use swift_train::trainer::LisaConfig;
use swift_train::{Lora, LoraConfig};

use swift_spec::{GivenFlags, TunerArgs};
use tch::Tensor;

/// What attaching produced.
pub struct Attached {
    /// The LoRA adapters (saved as a PEFT checkpoint), or none for full-style training.
    pub lora: Option<Lora>,
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

/// Attaches `record`'s adapter on `targets` (the slots its behaviour picked), with the tuner
/// settings of `flags` (an unset option falls back to the record's, then to the default).
pub fn attach(
    model: &mut swift_model::LoadedModel,
    record: &TunerRecord,
    targets: &[String],
    flags: &TunerArgs,
    given: &GivenFlags,
    llamapro_new_layers: &[usize],
) -> Result<Attached> {
    let option = |key: &str| record.options.get(key).filter(|v| !v.is_null());
    let bool_option = |flag: Option<bool>, key: &str| -> Result<bool> {
        match (flag, option(key)) {
            (Some(b), _) => Ok(b),
            (None, Some(Value::Bool(b))) => Ok(*b),
            (None, Some(other)) => bail!(
                "tuner `{}`: option {key} must be true or false, got {other}",
                record.name
            ),
            (None, None) => Ok(false),
        }
    };
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
    if !flags.modules_to_save.is_empty() && record.adapter() != "lora" {
        bail!(
            "--modules_to_save is for LoRA tuners (tuner `{}` uses the `{}` adapter, which trains or freezes whole parameters itself: use --trainable_parameters)",
            record.name,
            record.adapter()
        );
    }
    refuse_other_adapters_flags(record, given, flags.lora_dropout == 0.0)?;
    match record.adapter() {
        "lora" => {
            if flags.lora_rank <= 0 {
                bail!("--lora_rank must be positive, got {}", flags.lora_rank);
            }
            let init = match (&flags.init_weights, option("init_weights")) {
                (Some(s), _) => LoraInit::parse(s)?,
                (None, Some(Value::String(s))) => LoraInit::parse(s)?,
                (None, Some(Value::Bool(true)) | None) => LoraInit::Kaiming,
                (None, Some(other)) => bail!(
                    "tuner `{}`: option init_weights must be true, gaussian, pissa or olora, got {other}",
                    record.name
                ),
            };
            let variant = LoraVariant {
                use_dora: bool_option(flags.use_dora, "use_dora")?,
                init,
            };
            let config = LoraConfig {
                r: flags.lora_rank,
                alpha: flags.lora_alpha,
                dropout: flags.lora_dropout,
                use_rslora: bool_option(flags.use_rslora, "use_rslora")?,
            };
            let ratio = match (flags.lora_lr_ratio, option("lora_lr_ratio")) {
                (Some(r), _) => Some(r),
                (None, Some(v)) => Some(v.as_f64().ok_or_else(|| {
                    anyhow::anyhow!(
                        "tuner `{}`: option lora_lr_ratio must be a number, got {v}",
                        record.name
                    )
                })?),
                (None, None) => None,
            };
            if let Some(r) = ratio {
                if !(r > 0.0 && r.is_finite()) {
                    bail!("--lora_lr_ratio must be a positive number, got {r}");
                }
            }
            let mut lora = Lora::attach_variant(model, targets, config, variant)?;
            if !flags.modules_to_save.is_empty() {
                let slots = swift_train::lora::modules_to_save_slots(model, &flags.modules_to_save)?;
                lora.add_modules_to_save(model, &slots)?;
                tracing::info!("modules_to_save: {} trained whole", slots.join(", "));
            }
            let trainable = lora.named_tensors();
            Ok(Attached {
                lora: Some(lora),
                trainable,
                lr_factors: ratio
                    .map(|r| vec![(".lora_B.".to_string(), r)])
                    .unwrap_or_default(),
                lisa: None,
                full: false,
            })
        }
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
                lora: None,
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
                lora: None,
                trainable,
                lr_factors: Vec::new(),
                lisa: None,
                full: true,
            })
        }
        other => bail!(
            "tuner `{}` uses the adapter `{other}`, which this build's trainer does not have (it has lora, full, freeze, lisa, llamapro)",
            record.name
        ),
    }
}

/// The tuner flags of each host adapter; a flag of another adapter is refused by name.
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
    given: &GivenFlags,
    no_dropout: bool,
) -> Result<()> {
    let adapter = record.adapter();
    let why = format!(
        "to tuner `{}` (it trains with the `{adapter}` adapter)",
        record.name
    );
    let others: Vec<&[&str]> = match adapter {
        "lora" => vec![WHOLE_FLAGS, LLAMAPRO_FLAGS],
        "full" | "freeze" | "lisa" => vec![LORA_FLAGS, LLAMAPRO_FLAGS],
        "llamapro" => vec![LORA_FLAGS, WHOLE_FLAGS],
        _ => Vec::new(),
    };
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
