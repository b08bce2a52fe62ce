//! The built-in tuners, registered through the plugin contract (the same `register` path a
//! third-party plugin uses):
//!
//! * `lora`: low-rank adapters on the linear slots `target_modules` picks (`all-linear`: every
//!   linear slot except the output projection; otherwise a name matches a slot that equals it or
//!   ends with `.NAME`, as PEFT matches module names).
//! * `rslora`, `dora`, `lora_plus` (alias `lora+`), `pissa`, `olora`: the same slot choice on
//!   the `lora` adapter with one option set (`use_rslora`, `use_dora`, `lora_lr_ratio`,
//!   `init_weights`); the flags `--use_rslora`, `--use_dora`, `--lora_lr_ratio` and
//!   `--init_weights` set the same options on any LoRA tuner.
//! * `ia3`: (IA)³ (`ia3.rs`), PEFT's layout, `--feedforward_modules`.
//! * `vera`: VeRA (`vera.rs`), shared projections across slots, PEFT's layout.
//! * `boft`: BOFT (`boft.rs`), butterfly orthogonal rotations of each slot's input, PEFT's layout.
//! * `fourierft`: FourierFT (`fourierft.rs`), trained coefficients of a seeded sparse spectrum.
//! * `adalora`: AdaLoRA (`adalora.rs`), SVD-shaped updates whose ranks a budget schedule prunes
//!   (the contract's extra loss and after-backward hooks), PEFT's layout.
//! * `longlora`: LongLoRA (`longlora.rs`): LoRA's adapter plus embeddings and norms trained
//!   whole and shifted sparse attention while training, both carried out by the host.
//! * `full`: every parameter is trained (its targets are every linear slot).
//! * `freeze`: full training of the parameters that `--freeze_parameters` does not match (or that
//!   `--trainable_parameters` matches).
//! * `llamapro`: inserts `--llamapro_num_new_blocks` copies of decoder layers whose output
//!   projections start at zero (the model is unchanged) and trains only those.
//! * `lisa`: full training of a few randomly chosen decoder layers at a time
//!   (`--lisa_activated_layers`, re-drawn every `--lisa_step_interval` steps).
//!
//! `lora` carries its math across the tuner contract (`lora.rs`: an `AdapterTuner` whose
//! adapter declares its tensors, computes each slot's output, saves and loads PEFT's layout and
//! merges); its variants are records that name it as their `adapter` with one option set, so a
//! third-party plugin can register its own tuner on it the same way. `full`, `freeze`,
//! `llamapro` and `lisa` name the host's whole-parameter modes. The records are `records.rs`,
//! which the `swift` binary also compiles to list them without libtorch.

pub mod adalora;
pub mod boft;
pub mod dropout;
pub mod fourierft;
pub mod ia3;
pub mod longlora;
pub mod lora;
pub mod records;
#[cfg(test)]
mod tests;
pub mod vera;

use swift_plugin_tensors::prelude::*;

/// PEFT's `adapter_config.json` for a tuner here: `peft_type`, the targeted module names, the
/// fields every tuner writes alike (no fan-in/fan-out transposition, no hub revision) and, where
/// the PEFT config has them (`layered`: every tuner but IA³), no bias and no layer selection;
/// then the tuner's own fields (`own`, an object), which win over these.
pub fn peft_config(
    peft_type: &str,
    target_modules: &[String],
    layered: bool,
    own: serde_json::Value,
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "peft_type": peft_type,
        "target_modules": target_modules,
        "fan_in_fan_out": false,
        "revision": null,
    });
    if layered {
        config["bias"] = "none".into();
        config["layers_to_transform"] = serde_json::Value::Null;
        config["layers_pattern"] = serde_json::Value::Null;
    }
    if let (Some(all), serde_json::Value::Object(own)) = (config.as_object_mut(), own) {
        all.extend(own);
    }
    config
}

/// Picks slots for `target_modules` (`args.target_modules`, a list or one string; default
/// `all-linear`), skipping `args.output_slot` for `all-linear`.
pub fn select_targets(args: &serde_json::Value, slots: &[String]) -> Result<Vec<String>, String> {
    let wanted: Vec<String> = match args.get("target_modules") {
        None | Some(serde_json::Value::Null) => vec!["all-linear".into()],
        Some(serde_json::Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("target_modules entries are names, got {v}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "target_modules must be a list of names, got {other}"
            ))
        }
    };
    let output = args.get("output_slot").and_then(|v| v.as_str());
    let mut out: Vec<String> = Vec::new();
    for w in &wanted {
        let hits: Vec<&String> = if w == "all-linear" || w == "all_linear" {
            slots
                .iter()
                .filter(|s| Some(s.as_str()) != output)
                .collect()
        } else {
            slots
                .iter()
                .filter(|s| s.as_str() == w || s.ends_with(&format!(".{w}")))
                .collect()
        };
        if hits.is_empty() {
            let mut names: Vec<&str> = slots
                .iter()
                .map(|s| s.rsplit('.').next().unwrap_or(s))
                .collect();
            names.sort();
            names.dedup();
            return Err(format!(
                "target_modules `{w}` matches no linear slot of this model; its linear slots end in: {} (or use all-linear)",
                names.join(", ")
            ));
        }
        for h in hits {
            if !out.contains(h) {
                out.push(h.clone());
            }
        }
    }
    // Keep the model's slot order.
    out.sort_by_key(|s| slots.iter().position(|x| x == s));
    Ok(out)
}

struct Full;

impl Tuner for Full {
    fn targets(&self, _args: &serde_json::Value, slots: &[String]) -> Result<Vec<String>, String> {
        Ok(slots.to_vec())
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for record in records::all() {
        if record.name == "lora" {
            r.adapter_tuner(record, lora::LoraTuner)?;
        } else if record.name == "ia3" {
            r.adapter_tuner(record, ia3::Ia3Tuner)?;
        } else if record.name == "vera" {
            r.adapter_tuner(record, vera::VeraTuner)?;
        } else if record.name == "boft" {
            r.adapter_tuner(record, boft::BoftTuner)?;
        } else if record.name == "fourierft" {
            r.adapter_tuner(record, fourierft::FourierTuner)?;
        } else if record.name == "adalora" {
            r.adapter_tuner(record, adalora::AdaloraTuner)?;
        } else if record.name == "longlora" {
            r.adapter_tuner(record, longlora::LongLoraTuner)?;
        } else if record.adapter() == "lora" {
            r.tuner(record, lora::LoraTuner)?;
        } else {
            r.tuner(record, Full)?;
        }
    }
    Ok(())
}

swift_plugin_tensors::builtin_plugin!(register);
