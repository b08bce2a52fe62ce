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
//! * `full`: every parameter is trained (its targets are every linear slot).
//! * `freeze`: full training of the parameters that `--freeze_parameters` does not match (or that
//!   `--trainable_parameters` matches).
//! * `llamapro`: inserts `--llamapro_num_new_blocks` copies of decoder layers whose output
//!   projections start at zero (the model is unchanged) and trains only those.
//! * `lisa`: full training of a few randomly chosen decoder layers at a time
//!   (`--lisa_activated_layers`, re-drawn every `--lisa_step_interval` steps).
//!
//! A tuner's behaviour here is the choice of slots, and its record names the host adapter that
//! holds the tensors (`TunerRecord::adapter`, `options`); the host's trainer (swift-train) attaches
//! them, so a third-party plugin can register its own tuner on these adapters.

use swift_plugin_api::prelude::*;

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

struct Lora;

impl Tuner for Lora {
    fn targets(&self, args: &serde_json::Value, slots: &[String]) -> Result<Vec<String>, String> {
        select_targets(args, slots)
    }
}

struct Full;

impl Tuner for Full {
    fn targets(&self, _args: &serde_json::Value, slots: &[String]) -> Result<Vec<String>, String> {
        Ok(slots.to_vec())
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.tuner(
        TunerRecord::new(
            "lora",
            "LoRA: trainable low-rank A·B beside frozen linear slots (--lora_rank, --lora_alpha, --lora_dropout, --target_modules)",
        ),
        Lora,
    )?;
    let variants: [(&str, &str, &str, serde_json::Value); 5] = [
        (
            "rslora",
            "rank-stabilised LoRA: scale alpha/√r",
            "use_rslora",
            true.into(),
        ),
        (
            "dora",
            "DoRA: LoRA plus a trained magnitude per output row",
            "use_dora",
            true.into(),
        ),
        (
            "lora_plus",
            "LoRA+: B learns --lora_lr_ratio (default 16) times faster than A",
            "lora_lr_ratio",
            16.0.into(),
        ),
        (
            "pissa",
            "PiSSA: LoRA started from the top singular vectors of each weight",
            "init_weights",
            "pissa".into(),
        ),
        (
            "olora",
            "OLoRA: LoRA started from the QR factors of each weight",
            "init_weights",
            "olora".into(),
        ),
    ];
    for (name, description, option, value) in variants {
        let mut record =
            TunerRecord::new(name, description).with_adapter("lora", [(option, value)]);
        if name == "lora_plus" {
            record.aliases.push("lora+".into());
        }
        r.tuner(record, Lora)?;
    }
    r.tuner(
        TunerRecord::new("full", "full fine-tuning: every parameter is trained"),
        Full,
    )?;
    r.tuner(
        TunerRecord::new(
            "freeze",
            "full fine-tuning except the parameters --freeze_parameters names (prefixes or globs); --trainable_parameters re-enables some",
        ),
        Full,
    )?;
    r.tuner(
        TunerRecord::new(
            "llamapro",
            "LLaMA-Pro: --llamapro_num_new_blocks zero-output copies of layers inserted and trained, the rest frozen",
        ),
        Full,
    )?;
    r.tuner(
        TunerRecord::new(
            "lisa",
            "LISA: full fine-tuning of --lisa_activated_layers random layers, re-drawn every --lisa_step_interval steps",
        ),
        Full,
    )?;
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slots() -> Vec<String> {
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.mlp.down_proj",
            "lm_head",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn all_linear_skips_the_output_projection() {
        let t = select_targets(&json!({"output_slot": "lm_head"}), &slots()).unwrap();
        assert_eq!(t.len(), 3);
        assert!(!t.contains(&"lm_head".to_string()));
    }

    #[test]
    fn names_match_by_suffix_and_unknown_names_are_errors() {
        let t = select_targets(&json!({"target_modules": ["v_proj", "q_proj"]}), &slots()).unwrap();
        assert_eq!(
            t,
            [
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.v_proj"
            ]
        );
        let e = select_targets(&json!({"target_modules": "qkv"}), &slots()).unwrap_err();
        assert!(e.contains("q_proj") && e.contains("all-linear"), "{e}");
    }
}
