//! The run's optimizer: `--optimizer NAME` (ms-swift's `--use_galore true` is `galore`, with
//! `--galore_quantization true` `q_galore`) resolved in the optimizer registry, and its options:
//! every option its record declares, from the flag of the same name when the specification has
//! one (the trainer's `adam_*`/`weight_decay`, the galore flags), else the record's default. An
//! optimizer flag the user gave that the chosen optimizer's record does not list is refused by
//! name, so no flag is silently without effect.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use swift_registry::Registries;
use swift_spec::TrainSpec;
use swift_train::OptimizerSetting;

/// The flags that are optimizer options (each refused when the chosen optimizer does not read
/// it).
pub const OPTION_FLAGS: [&str; 8] = [
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "weight_decay",
    "galore_rank",
    "galore_update_proj_gap",
    "galore_scale",
    "galore_target_modules",
];

/// The optimizer's name as the flags ask for it.
pub fn name(s: &TrainSpec) -> Result<String> {
    let o = &s.optimizer;
    if o.use_galore {
        let galore = if o.galore_quantization {
            "q_galore"
        } else {
            "galore"
        };
        if s.given.contains("optimizer") && o.optimizer != galore {
            bail!(
                "--use_galore true{} selects the optimizer `{galore}`, but --optimizer {} was given too: pass one of them",
                if o.galore_quantization {
                    " --galore_quantization true"
                } else {
                    ""
                },
                o.optimizer
            );
        }
        return Ok(galore.into());
    }
    s.given
        .refuse(
            &["galore_quantization"],
            "without --use_galore true (or pass --optimizer q_galore)",
        )
        .map_err(anyhow::Error::msg)?;
    Ok(o.optimizer.clone())
}

/// Resolves the optimizer and gathers its options.
pub fn setting(s: &TrainSpec, regs: &Registries) -> Result<OptimizerSetting> {
    let name = name(s)?;
    let entry = regs.optimizers.resolve(&name)?;
    let kind = entry.imp.as_deref().cloned().ok_or_else(|| {
        anyhow!("optimizer `{name}` has no behaviour in this process (it is only listed)")
    })?;
    let record = &entry.record;
    let mut flags = serde_json::to_value(&s.trainer).context("the trainer flags")?;
    if let (Some(f), Value::Object(o)) = (
        flags.as_object_mut(),
        serde_json::to_value(&s.optimizer).context("the optimizer flags")?,
    ) {
        f.extend(o);
    }
    let listed: Vec<&str> = record.options.iter().map(|o| o.name.as_str()).collect();
    let unread: Vec<&str> = OPTION_FLAGS
        .iter()
        .copied()
        .filter(|f| !listed.contains(f))
        .collect();
    s.given
        .refuse(
            &unread,
            &format!(
                "with --optimizer {} (its options: {})",
                record.name,
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            ),
        )
        .map_err(anyhow::Error::msg)?;
    let mut options = Map::new();
    for decl in &record.options {
        let v = match flags.get(&decl.name) {
            Some(v) if !v.is_null() => v.clone(),
            _ => decl.default.clone(),
        };
        options.insert(decl.name.clone(), v);
    }
    Ok(OptimizerSetting {
        name: record.name.clone(),
        options: Value::Object(options),
        kind,
    })
}
