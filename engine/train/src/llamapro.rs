//! LLaMA-Pro block expansion: a model of `L` decoder layers becomes one of `L + N`, with a copy of
//! the last layer of each of the `N` groups of `L / N` layers inserted after it. The copy's output
//! projections (attention `o_proj` and MLP `down_proj`, with their biases) are zero, so each new
//! block adds nothing to the residual stream and the expanded model computes exactly what the
//! original did; training then updates only the new blocks.
//!
//! The expansion writes a new model folder (config.json with the new `num_hidden_layers`,
//! model.safetensors, and every other file of the source, such as the tokenizer), which the host
//! then loads like any model; so it works for every family whose layers are named
//! `….layers.N.…` and whose output projections are named `o_proj` and `down_proj`.

use std::path::Path;

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{save_safetensors, TrainError};

/// The output projections a new block starts with at zero.
const ZEROED: [&str; 2] = ["o_proj", "down_proj"];

/// Splits `model.layers.7.mlp.up_proj.weight` into ("model.layers.", 7, ".mlp.up_proj.weight").
fn split_layer(name: &str) -> Option<(&str, usize, &str)> {
    let at = name.find("layers.")? + "layers.".len();
    let rest = &name[at..];
    let end = rest.find('.')?;
    let index = rest[..end].parse().ok()?;
    Some((&name[..at], index, &rest[end..]))
}

/// The decoder layer a parameter name belongs to (`model.layers.3.mlp…` → 3).
pub fn layer_index(name: &str) -> Option<usize> {
    split_layer(name).map(|(_, i, _)| i)
}

/// The new layer order: for each position of the expanded model, the source layer it copies and
/// whether it is a new (zero-output) block.
pub fn expansion_plan(layers: usize, new_blocks: usize) -> Result<Vec<(usize, bool)>, TrainError> {
    if new_blocks == 0 || layers == 0 || !layers.is_multiple_of(new_blocks) {
        return Err(TrainError::Config(format!(
            "--llamapro_num_new_blocks must divide the model's {layers} layers (got {new_blocks})"
        )));
    }
    let group = layers / new_blocks;
    let mut plan = Vec::with_capacity(layers + new_blocks);
    for g in 0..new_blocks {
        for l in g * group..(g + 1) * group {
            plan.push((l, false));
        }
        plan.push(((g + 1) * group - 1, true));
    }
    Ok(plan)
}

/// Writes the expanded model of `src` into `dst`; returns the indices of the new blocks.
pub fn expand(src: &Path, dst: &Path, new_blocks: usize) -> Result<Vec<usize>, TrainError> {
    let config_path = src.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
    let layers = config["num_hidden_layers"].as_u64().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no num_hidden_layers, so LLaMA-Pro cannot expand it",
            config_path.display()
        ))
    })? as usize;
    let plan = expansion_plan(layers, new_blocks)?;
    let files = swift_model::weights::checkpoint_files(src)?;
    let ckpt = swift_model::weights::Checkpoint::open(&files)?;
    let names: Vec<String> = ckpt.names().map(String::from).collect();
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let load = |name: &str| -> Result<Tensor, TrainError> {
        Ok(ckpt.load(name, Kind::Float, Device::Cpu)?.tensor.copy())
    };
    for name in &names {
        if split_layer(name).is_none() {
            out.push((name.clone(), load(name)?));
        }
    }
    for (position, &(source, new)) in plan.iter().enumerate() {
        let mut zeroed = 0;
        for name in &names {
            let Some((head, index, tail)) = split_layer(name) else {
                continue;
            };
            if index != source {
                continue;
            }
            let mut t = load(name)?;
            if new && ZEROED.iter().any(|z| tail.contains(&format!(".{z}."))) {
                t = t.f_zero_()?;
                zeroed += 1;
            }
            out.push((format!("{head}{position}{tail}"), t));
        }
        if new && zeroed == 0 {
            return Err(TrainError::Config(format!(
                "LLaMA-Pro needs layers with o_proj and down_proj projections; layer {source} of {} has neither",
                src.display()
            )));
        }
    }
    std::fs::create_dir_all(dst).map_err(|e| TrainError::io(dst, e))?;
    save_safetensors(&dst.join("model.safetensors"), &out)?;
    config["num_hidden_layers"] = Value::from(plan.len());
    // Per-layer lists (e.g. Qwen2's `layer_types`) follow the same plan.
    if let Some(obj) = config.as_object_mut() {
        for value in obj.values_mut() {
            if let Value::Array(items) = value {
                if items.len() == layers {
                    *items = plan.iter().map(|&(s, _)| items[s].clone()).collect();
                }
            }
        }
    }
    let path = dst.join("config.json");
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| TrainError::io(src, e))? {
        let entry = entry.map_err(|e| TrainError::io(src, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = name == "config.json"
            || name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
            || crate::run_dir::CHECKPOINT_ONLY_FILES.contains(&name.as_str())
            || !entry.path().is_file();
        if !skip {
            std::fs::copy(entry.path(), dst.join(&name))
                .map_err(|e| TrainError::io(&entry.path(), e))?;
        }
    }
    Ok(plan
        .iter()
        .enumerate()
        .filter(|(_, &(_, new))| new)
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_inserts_a_copy_after_each_group() {
        // 4 layers, 2 new blocks: [0, 1, 1*, 2, 3, 3*].
        let plan = expansion_plan(4, 2).unwrap();
        assert_eq!(
            plan,
            [
                (0, false),
                (1, false),
                (1, true),
                (2, false),
                (3, false),
                (3, true)
            ]
        );
        assert!(expansion_plan(4, 3).is_err());
        assert!(expansion_plan(4, 0).is_err());
    }

    #[test]
    fn layer_names_split() {
        assert_eq!(
            split_layer("model.layers.12.mlp.down_proj.weight"),
            Some(("model.layers.", 12, ".mlp.down_proj.weight"))
        );
        assert_eq!(split_layer("model.norm.weight"), None);
    }
}
