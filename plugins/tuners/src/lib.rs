//! The built-in tuners, registered through the plugin contract (the same `register` path a
//! third-party plugin uses):
//!
//! * `lora`: low-rank adapters on the linear slots `target_modules` picks (`all-linear`: every
//!   linear slot except the output projection; otherwise a name matches a slot that equals it or
//!   ends with `.NAME`, as PEFT matches module names).
//! * `full`: every parameter is trained (its targets are every linear slot).
//!
//! A tuner's behaviour here is the choice of slots; the host's trainer (swift-train) holds the
//! adapter tensors and their hooks for the registered names.

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
    r.tuner(
        TunerRecord::new("full", "full fine-tuning: every parameter is trained"),
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
