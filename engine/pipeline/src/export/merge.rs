//! `swift export --adapters CKPT --merge_lora true`: folds adapter checkpoints into their base
//! model's weights and writes a complete Hugging Face folder, through the tuner contract: the
//! tuner that reads the checkpoint (`adapters::tuner_for`) declares its tensors against the
//! base's layout, and its `merge` folds each targeted weight (LoRA: `W + scale · B · A`; in
//! float32, stored back in the checkpoint's own dtype; transposed for slots the family stores as
//! `[in, out]`), tensors the
//! adapter saved whole (PEFT `modules_to_save`) replace the base's, and every other tensor is
//! copied. The base model's other files (tokenizer, generation config, ...) are copied, and
//! `config.json` records the adapter's template as `swift_template`, so `swift infer --model
//! MERGED` chats exactly as `swift infer --adapters CKPT` did, with no flags.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use swift_model::weights::{checkpoint_files, Checkpoint};
use swift_plugin_tensors::model::{ModelLayout, SlotKind};
use swift_plugin_tensors::tuner::{AdapterHandle, AdapterHandleExt, SlotInfo};
use swift_train::AdapterFiles;
use tch::{Device, Kind, Tensor};

use swift_spec::ExportSpec;

use crate::adapters::Adapters;
use crate::bundle::{model_dir, resolve_family};
use swift_registry::PluginSettings;

/// What a merge wrote.
pub struct Merged {
    pub dir: PathBuf,
    pub template: Option<String>,
}

/// Files of a model folder that hold weights (replaced by the merged `model.safetensors`) or
/// that the merge rewrites.
fn is_weight_or_config(name: &str) -> bool {
    name == "config.json"
        || name.ends_with(".safetensors")
        || name.ends_with(".safetensors.index.json")
        || name.ends_with(".bin")
        || name.ends_with(".bin.index.json")
        || name.ends_with(".pt")
        || name.ends_with(".pth")
        || name.ends_with(".gguf")
        || name.ends_with(".h5")
        || name.ends_with(".msgpack")
}

/// Merges `args.adapters` into their base model; returns the folder written.
pub fn run(args: &ExportSpec, plugins: &PluginSettings) -> Result<Merged> {
    if args.adapters.is_empty() {
        bail!("--merge_lora needs --adapters CKPT (a LoRA checkpoint from swift sft, PEFT layout)");
    }
    for d in &args.adapters {
        if !d.is_dir() {
            bail!("--adapters {}: no such checkpoint folder", d.display());
        }
    }
    let adapters = Adapters::resolve(args.model.as_deref(), &args.adapters)?;
    if !adapters.model.exists() {
        bail!(
            "the adapter's base model {} does not exist: pass --model DIR (the model the adapter was trained on)",
            adapters.model.display()
        );
    }
    let report = adapters.with_plugins(plugins).load()?;
    let regs = &report.registries;
    let base = model_dir(&adapters.model)?;
    let config_path = base.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let (family, _, handle) = resolve_family(regs, &config, None)?;
    for d in &args.adapters {
        crate::adapters::check_base(
            d,
            &base,
            &family,
            &config,
            args.adapter_check.ignore_adapter_mismatch,
        )?;
    }
    let layout = handle
        .instantiate(&config)
        .and_then(|m| m.layout())
        .map_err(|e| {
            anyhow!(
                "model family `{family}` cannot read {}: {e}",
                config_path.display()
            )
        })?;

    let files = checkpoint_files(&base)?;
    let ckpt = Checkpoint::open(&files)?;
    let mut stored = HashMap::new();
    for f in &files {
        stored.extend(stored_kinds(f)?);
    }

    // Plan every change before writing anything, so a mismatched adapter fails cleanly.
    let mut deltas: HashMap<String, Vec<Delta>> = HashMap::new();
    let mut replaced: HashMap<String, Tensor> = HashMap::new();
    // Saved modules of tied layers, by slot name (see `untie`).
    let mut untied: HashMap<String, Tensor> = HashMap::new();
    for dir in &args.adapters {
        let files = AdapterFiles::open(dir, &layout)
            .with_context(|| format!("reading adapter {}", dir.display()))?;
        let tuner = crate::adapters::tuner_for(regs, &files)?;
        let mismatch = |what: String| {
            anyhow!(
                "adapter {} does not match base model {} ({family}): {what}; pass --model with the model it was trained on",
                dir.display(),
                base.display()
            )
        };
        // The tuner reads the checkpoint against the base's linear slots (as `--adapters` does
        // on a loaded model), and merges through the contract.
        let linear: Vec<&swift_plugin_tensors::model::Slot> = layout
            .slots
            .iter()
            .filter(|s| s.kind == SlotKind::Linear)
            .collect();
        let infos = linear
            .iter()
            .map(|d| SlotInfo {
                name: d.name.clone(),
                kind: d.kind,
                shape: d.shape.clone(),
                has_bias: d.bias.is_some(),
                quantized: false,
                layer: d.block,
            })
            .collect();
        let names = linear.iter().map(|d| d.name.clone()).collect();
        let request = files.request(infos, names, Kind::Float);
        let adapter = tuner.attach(&request).map_err(&mismatch)?;
        let plan = adapter.plan().map_err(anyhow::Error::msg)?;
        if let Some(why) = &plan.merge_refused {
            bail!(
                "adapter {}: a {} adapter cannot be merged into the weights: {why}",
                dir.display(),
                plan.method
            );
        }
        let (tensors, shared) = files
            .load(&plan, Kind::Float, Device::Cpu)
            .map_err(|e| mismatch(e.to_string()))?;
        let adapter = Arc::new(adapter);
        let shared = Rc::new(shared);
        for (i, (sp, ts)) in plan.slots.iter().zip(tensors).enumerate() {
            let slot = &sp.slot;
            let decl = layout
                .slots
                .iter()
                .find(|s| &s.name == slot)
                .ok_or_else(|| mismatch(format!("the base has no layer `{slot}`")))?;
            if shares_weight(&layout, &decl.weight) {
                bail!(
                    "adapter {}: `{slot}` uses the weight `{}`, which other layers share (tied embeddings); merging would change them too",
                    dir.display(),
                    decl.weight
                );
            }
            deltas
                .entry(resolve_name(&ckpt, &decl.weight))
                .or_default()
                .push(Delta {
                    adapter: adapter.clone(),
                    slot: i,
                    tensors: ts,
                    shared: shared.clone(),
                    transposed: decl.transposed,
                    flattened: decl.stored_shape.as_ref().map(|_| decl.shape.clone()),
                });
        }
        let mut saved_whole = Vec::new();
        for n in files.unclaimed(&plan) {
            let Some(rest) = n.strip_prefix("base_model.model.") else {
                bail!(
                    "{}: tensor `{n}` is not under base_model.model. (not a PEFT file)",
                    files.weights_path.display()
                );
            };
            let t = files.tensor(&n, Kind::Float, Device::Cpu)?;
            saved_whole.push((rest.to_string(), t));
        }
        for (name, t) in saved_whole {
            // A saved module whose weight the base ties to another layer (SmolLM2's lm_head
            // is the embedding table): the merged model unties them, as peft trained them.
            let tied_slot = name.strip_suffix(".weight").and_then(|slot| {
                layout
                    .slots
                    .iter()
                    .find(|s| s.name == slot && shares_weight(&layout, &s.weight))
            });
            if let Some(decl) = tied_slot {
                let base_t = ckpt
                    .load(&resolve_name(&ckpt, &decl.weight), Kind::Float, Device::Cpu)
                    .map_err(|_| mismatch(format!("the base has no tensor `{}`", decl.weight)))?;
                let want: Vec<i64> = if decl.transposed {
                    decl.shape.iter().rev().copied().collect()
                } else {
                    decl.shape.clone()
                };
                if t.size() != want || base_t.tensor.size() != want {
                    return Err(mismatch(format!(
                        "`{name}` is {:?} in the adapter, the layer is {want:?}",
                        t.size()
                    )));
                }
                untied.insert(decl.name.clone(), t);
                continue;
            }
            let stored_name = resolve_name(&ckpt, &name);
            let base_t = ckpt
                .load(&stored_name, Kind::Float, Device::Cpu)
                .map_err(|_| mismatch(format!("the base has no tensor `{name}` to replace")))?;
            if base_t.tensor.size() != t.size() {
                return Err(mismatch(format!(
                    "`{name}` is {:?} in the base and {:?} in the adapter",
                    base_t.tensor.size(),
                    t.size()
                )));
            }
            replaced.insert(stored_name, t);
        }
    }

    let out = match &args.output_dir {
        Some(o) => o.clone(),
        None => {
            let first = &args.adapters[0];
            let name = first
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "checkpoint".into());
            first.with_file_name(format!("{name}-merged"))
        }
    };
    if out.join("adapter_config.json").exists() {
        bail!(
            "--output_dir {} holds a LoRA checkpoint; choose another folder for the merged model",
            out.display()
        );
    }
    if out.canonicalize().ok() == base.canonicalize().ok() {
        bail!(
            "--output_dir {} is the base model's folder; choose another",
            out.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out_config = out.join("config.json");
    if out_config.exists() {
        std::fs::remove_file(&out_config)?;
    }

    let extra = if untied.is_empty() {
        Vec::new()
    } else {
        untie(&mut config, &handle, &layout, &ckpt, untied, &mut replaced)?
    };
    let mut names: Vec<String> = ckpt.names().map(String::from).collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut merged_count = 0;
    for name in names {
        let kind = stored.get(&name).copied().unwrap_or(Kind::Float);
        let t = if let Some(t) = replaced.remove(&name) {
            t.to_kind(kind)
        } else if let Some(ds) = deltas.get(&name) {
            let mut w = ckpt.load(&name, Kind::Float, Device::Cpu)?.tensor;
            for d in ds {
                let merge = |w: &Tensor| {
                    d.adapter
                        .merge(d.slot, w, &d.tensors, &d.shared)
                        .map_err(|e| anyhow!("merging into `{name}`: {e}"))
                };
                w = if d.transposed {
                    merge(&w.tr())?.tr().contiguous()
                } else if let Some(slot_shape) = &d.flattened {
                    // A convolution kernel (a patch embedding) merges as the slot's flattened
                    // [out, in] matrix and is stored back in its own shape.
                    let stored = w.size();
                    merge(&w.reshape(slot_shape.as_slice()))?.reshape(stored.as_slice())
                } else {
                    merge(&w)?
                };
            }
            merged_count += 1;
            w.to_kind(kind)
        } else {
            ckpt.load(&name, kind, Device::Cpu)?.tensor
        };
        tensors.push((name, t));
    }
    for (name, t) in extra {
        let kind = stored.get(&name).copied().unwrap_or(Kind::Float);
        tensors.push((name, t.to_kind(kind)));
    }
    swift_train::save_safetensors(&out.join("model.safetensors"), &tensors)?;
    drop(tensors);

    for entry in std::fs::read_dir(&base).with_context(|| format!("reading {}", base.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file()
            && !is_weight_or_config(&name)
            && !swift_train::run_dir::CHECKPOINT_ONLY_FILES.contains(&name.as_str())
        {
            std::fs::copy(entry.path(), out.join(&name))
                .with_context(|| format!("copying {name} into {}", out.display()))?;
        }
    }
    let template = args.template.clone().or(adapters.template.clone());
    if let (Some(t), Some(obj)) = (&template, config.as_object_mut()) {
        regs.templates.resolve(t)?;
        obj.insert("swift_template".into(), Value::String(t.clone()));
    }
    let text = serde_json::to_string_pretty(&config)?;
    std::fs::write(&out_config, text + "\n")
        .with_context(|| format!("writing {}", out_config.display()))?;
    tracing::info!(
        "merged {} adapter(s) into {merged_count} weights of {} ({family}){}: {}",
        args.adapters.len(),
        base.display(),
        template
            .as_deref()
            .map(|t| format!(", template `{t}`"))
            .unwrap_or_default(),
        out.display()
    );
    Ok(Merged { dir: out, template })
}

/// Unties the tied layers among `untied`'s slots (saved modules of a tied weight): sets
/// `tie_word_embeddings` false in `config`, and gives every slot of each affected tied group its
/// own tensor under the name the untied layout declares: the saved module where the adapter
/// has one, else the base's shared tensor. Names the base already stores go into `replaced`;
/// the new ones are returned.
fn untie(
    config: &mut Value,
    handle: &swift_plugin_tensors::ModelFamilyHandle,
    layout: &ModelLayout,
    ckpt: &Checkpoint,
    mut untied: HashMap<String, Tensor>,
    replaced: &mut HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    if config.get("tie_word_embeddings").and_then(Value::as_bool) != Some(true) {
        bail!(
            "the adapter saves {} whole, whose weight the base shares with another layer, and config.json has no tie_word_embeddings to turn off; merge it by hand",
            untied.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    config["tie_word_embeddings"] = Value::Bool(false);
    let new_layout = handle
        .instantiate(config)
        .and_then(|m| m.layout())
        .map_err(|e| anyhow!("the untied model: {e}"))?;
    let shared: Vec<String> = layout
        .slots
        .iter()
        .filter(|s| untied.contains_key(&s.name))
        .map(|s| s.weight.clone())
        .collect();
    let mut extra = Vec::new();
    for decl in layout.slots.iter().filter(|s| shared.contains(&s.weight)) {
        let new_decl = new_layout
            .slots
            .iter()
            .find(|s| s.name == decl.name)
            .ok_or_else(|| anyhow!("the untied model has no layer `{}`", decl.name))?;
        let t = match untied.remove(&decl.name) {
            Some(t) => t,
            None => {
                ckpt.load(&resolve_name(ckpt, &decl.weight), Kind::Float, Device::Cpu)?
                    .tensor
            }
        };
        let stored = resolve_name(ckpt, &new_decl.weight);
        if ckpt.contains(&stored) {
            replaced.insert(stored, t);
        } else {
            extra.push((new_decl.weight.clone(), t));
        }
    }
    if new_layout
        .slots
        .iter()
        .filter(|s| shared.contains(&s.weight))
        .count()
        > 1
    {
        bail!("turning tie_word_embeddings off did not untie the layers of this model family; merge it by hand");
    }
    Ok(extra)
}

/// One adapter's contribution to a weight: its slot `slot`, merged by the adapter's `merge`.
struct Delta {
    adapter: Arc<AdapterHandle>,
    slot: usize,
    tensors: Vec<Tensor>,
    shared: Rc<Vec<Tensor>>,
    transposed: bool,
    /// The slot's `[out, in]` shape when the checkpoint stores its weight in another (a
    /// convolution kernel: `Slot::stored_shape`).
    flattened: Option<Vec<i64>>,
}

/// Whether `weight` is used by more than one slot or parameter (tied embeddings).
fn shares_weight(layout: &ModelLayout, weight: &str) -> bool {
    let uses = layout.slots.iter().filter(|s| s.weight == weight).count()
        + layout.params.iter().filter(|p| p.name == weight).count();
    uses > 1
}

/// The checkpoint's name for a layout name (the same rule the loader uses: `model.` and
/// `transformer.` prefixes may be present or absent).
fn resolve_name(ckpt: &Checkpoint, name: &str) -> String {
    if ckpt.contains(name) {
        return name.to_string();
    }
    for prefix in ["model.", "transformer."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if ckpt.contains(rest) {
                return rest.to_string();
            }
        }
        let with = format!("{prefix}{name}");
        if ckpt.contains(&with) {
            return with;
        }
    }
    name.to_string()
}

/// The dtype each tensor of a safetensors file is stored in (read from its JSON header), so the
/// merged file keeps the base's precision.
fn stored_kinds(file: &Path) -> Result<HashMap<String, Kind>> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!("{}: implausible safetensors header", file.display());
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let v: Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: the safetensors header is not JSON", file.display()))?;
    let mut out = HashMap::new();
    for (name, info) in v.as_object().into_iter().flatten() {
        let kind = match info.get("dtype").and_then(Value::as_str) {
            Some("F32") => Kind::Float,
            Some("F16") => Kind::Half,
            Some("BF16") => Kind::BFloat16,
            Some("F64") => Kind::Double,
            Some("I64") => Kind::Int64,
            _ => continue,
        };
        out.insert(name.clone(), kind);
    }
    Ok(out)
}
