//! How a PEFT checkpoint spells slot names (issue 21): by transformers' module names, which a
//! family declares where they differ from the stored weights' (`ModelLayout::module_names`:
//! LLaVA's `language_model.model.layers.0…` is the module `model.language_model.layers.0…`).
//! Inside swift-rs an adapter's slots and tensors carry the stored (slot) names; this module
//! respells them at the file's edge: tensor names under `base_model.model.` and the
//! adapter_config.json fields that name modules (`target_modules`, `modules_to_save`,
//! `exclude_modules` lists; `rank_pattern`, `alpha_pattern` keys). Text families declare no
//! rewrite, so their files are unchanged.

use serde_json::Value;
use swift_plugin_tensors::model::ModelLayout;

/// The adapter_config.json fields that hold lists of module names.
const NAME_LISTS: [&str; 3] = ["target_modules", "modules_to_save", "exclude_modules"];
/// The adapter_config.json fields whose keys are module names.
const NAME_KEYS: [&str; 2] = ["rank_pattern", "alpha_pattern"];

/// Which way to respell.
#[derive(Clone, Copy)]
pub enum Spelling {
    /// Slot names → module names (writing a checkpoint).
    Module,
    /// Either spelling → slot names (reading one).
    Slot,
}

fn respell_name(layout: &ModelLayout, to: Spelling, name: &str) -> String {
    match to {
        Spelling::Module => layout.module_name(name),
        Spelling::Slot => layout.stored_name(name),
    }
}

/// A checkpoint tensor name respelled: `base_model.model.<name>` has `<name>` rewritten (its
/// tail, `.lora_A.weight`, stays); shared tensors (`base_model.vera_A`) are left as they are.
pub fn respell_key(layout: &ModelLayout, to: Spelling, key: &str) -> String {
    match key.strip_prefix("base_model.model.") {
        Some(rest) => format!("base_model.model.{}", respell_name(layout, to, rest)),
        None => key.to_string(),
    }
}

/// adapter_config.json's module-naming fields respelled in place (a regex `target_modules`
/// string is left alone: it is matched against whichever names the reader uses).
pub fn respell_config(layout: &ModelLayout, to: Spelling, config: &mut Value) {
    if layout.module_names.is_empty() {
        return;
    }
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    for field in NAME_LISTS {
        if let Some(Value::Array(items)) = obj.get_mut(field) {
            for item in items.iter_mut() {
                if let Value::String(s) = item {
                    *s = respell_name(layout, to, s);
                }
            }
        }
    }
    for field in NAME_KEYS {
        if let Some(Value::Object(map)) = obj.get_mut(field) {
            let old = std::mem::take(map);
            for (k, v) in old {
                map.insert(respell_name(layout, to, &k), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use swift_plugin_tensors::model::ModuleName;

    fn llava() -> ModelLayout {
        ModelLayout {
            module_names: vec![
                ModuleName::new("language_model.model", "model.language_model"),
                ModuleName::new("language_model.lm_head", "lm_head"),
            ],
            ..ModelLayout::default()
        }
    }

    #[test]
    fn keys_and_config_fields_round_trip() {
        let l = llava();
        let k = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight";
        let m = respell_key(&l, Spelling::Module, k);
        assert_eq!(
            m,
            "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(respell_key(&l, Spelling::Slot, &m), k);
        assert_eq!(respell_key(&l, Spelling::Slot, k), k);
        assert_eq!(
            respell_key(&l, Spelling::Module, "base_model.vera_A"),
            "base_model.vera_A"
        );
        let mut cfg = json!({
            "target_modules": ["language_model.model.layers.0.mlp.up_proj", "q_proj"],
            "modules_to_save": ["language_model.lm_head"],
            "rank_pattern": {"language_model.model.layers.0.mlp.up_proj": 4},
            "r": 8,
        });
        respell_config(&l, Spelling::Module, &mut cfg);
        assert_eq!(
            cfg,
            json!({
                "target_modules": ["model.language_model.layers.0.mlp.up_proj", "q_proj"],
                "modules_to_save": ["lm_head"],
                "rank_pattern": {"model.language_model.layers.0.mlp.up_proj": 4},
                "r": 8,
            })
        );
        respell_config(&l, Spelling::Slot, &mut cfg);
        assert_eq!(
            cfg["target_modules"][0],
            "language_model.model.layers.0.mlp.up_proj"
        );
        assert_eq!(cfg["modules_to_save"][0], "language_model.lm_head");
    }
}
