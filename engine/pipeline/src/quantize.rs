//! Quantization through the quantizer contract: `swift export --quant_method M --quant_bits B`
//! (post-training quantization into a folder that `swift infer` loads directly), the loader
//! `infer` and `deploy` use for such folders, and the frozen quantized base of QLoRA
//! (`swift sft --quant_method bnb`).
//!
//! `--quant_method` (or a folder's `quantization_config.quant_method`) is resolved in the
//! `quantizers` registry (built-ins from plugins/quantizers, or a third-party plugin); the
//! quantizer configures a scheme ([`SchemeRequest`]), whose plan says which calibration
//! statistics the host gathers (swift-quant's `calib`) and what `quantization_config` records;
//! the scheme packs each slot's weight and reads it back, and its packed slots compute the
//! forward (swift-quant's `PluginLinear`). No method is known here by name.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use swift_data::{open_datasets, DatasetOptions};
use swift_model::{LoadedModel, QuantizedLinear};
use swift_plugin_tensors::quantizer::{
    Calibration, QuantizeCall, SchemeHandle, SchemeMode, SchemeRequest,
};
use swift_plugin_tensors::SchemeHandleExt;
use swift_quant::calib::{calibrate, CalibOptions};
use swift_quant::PluginLinear;
use swift_registry::Registries;

use swift_spec::ExportSpec;

use crate::bundle::ModelBundle;
use swift_registry::PluginSettings;

/// Resolves `name` through the registry and asks the quantizer for a scheme.
fn scheme(
    regs: &Registries,
    name: &str,
    request: &SchemeRequest,
) -> Result<(String, SchemeHandle)> {
    let entry = regs.quantizers.resolve(name)?;
    let resolved = entry.record.name.clone();
    let imp = entry
        .imp
        .clone()
        .ok_or_else(|| anyhow!("quantizer `{resolved}` has no behaviour"))?;
    if let Some(bits) = request.bits {
        imp.check_bits(bits).map_err(|e| anyhow!("{e}"))?;
    }
    let s = imp
        .scheme(request)
        .map_err(|e| anyhow!("quantizer `{resolved}` ({}): {e}", entry.provenance))?;
    Ok((resolved, s))
}

/// The loader for a quantized model folder (None when `config.json` has no
/// `quantization_config`): the scheme of the quantizer its `quant_method` names.
pub fn loader(
    config: &Value,
    config_file: &Path,
    regs: &Registries,
    kind: tch::Kind,
) -> Result<Option<swift_quant::SchemeLoader>> {
    let Some(q) = config.get("quantization_config") else {
        return Ok(None);
    };
    let file = config_file.display();
    let options = q
        .as_object()
        .cloned()
        .ok_or_else(|| anyhow!("{file}: quantization_config is not an object"))?;
    let method = options
        .get("quant_method")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{file}: quantization_config has no quant_method"))?
        .to_string();
    if regs.quantizers.resolve(&method).is_err() {
        bail!(
            "{file}: quantization_config has quant_method `{method}`, which no registered quantizer provides (`swift list quantizers`; a plugin's with --plugin-dir)"
        );
    }
    let request = SchemeRequest {
        mode: SchemeMode::Load,
        bits: None,
        options,
        config_file: file.to_string(),
    };
    let (_, scheme) = scheme(regs, &method, &request)?;
    tracing::info!("quantized folder: {}", scheme.plan().summary);
    Ok(Some(swift_quant::SchemeLoader::new(scheme, kind)))
}

/// Linear slots to quantize: every linear slot but the output projection, which is included
/// when `lm_head` (the scheme's plan says so in its `quantization_config`: `lm_head: true`).
fn target_slots(model: &LoadedModel, lm_head: bool) -> Vec<String> {
    let layout = model.layout();
    layout
        .slots
        .iter()
        .filter(|s| s.kind == swift_plugin_tensors::model::SlotKind::Linear)
        .filter(|s| lm_head || s.name != layout.output_slot)
        .map(|s| s.name.clone())
        .collect()
}

/// Whether a scheme's `quantization_config` quantizes the output projection (`lm_head: true`,
/// GPTQModel's key; a scheme that honours `--quant_lm_head` writes it).
fn quantizes_lm_head(config: &Value) -> bool {
    config.get("lm_head").and_then(Value::as_bool) == Some(true)
}

/// `swift sft --quant_method NAME --quant_bits B`: checks the combination and quantizes the
/// base (see [`quantize_for_training`]).
pub fn qlora_base(
    model: &mut LoadedModel,
    regs: &Registries,
    name: &str,
    bits: Option<u8>,
    tuner: &str,
) -> Result<()> {
    let Some(bits) = bits else {
        bail!("--quant_method {name} needs --quant_bits (4 or 8)");
    };
    if tuner == "full" {
        bail!("--quant_method freezes a quantized base; it trains adapters (--tuner_type lora), not --tuner_type full");
    }
    let started = std::time::Instant::now();
    let n = quantize_for_training(model, regs, name, bits)?;
    tracing::info!(
        "QLoRA: {n} linear slots frozen as {name} {bits}-bit in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// QLoRA: replaces every linear slot but the output projection of `model` by a frozen
/// quantized copy computing in bfloat16 (autograd keeps only bfloat16 copies of the dequantized
/// weights for the backward pass). Returns how many slots were quantized.
fn quantize_for_training(
    model: &mut LoadedModel,
    regs: &Registries,
    name: &str,
    bits: u8,
) -> Result<usize> {
    let request = SchemeRequest {
        mode: SchemeMode::Train,
        bits: Some(bits),
        options: Map::new(),
        config_file: String::new(),
    };
    let (_, scheme) = scheme(regs, name, &request)?;
    if scheme.plan().calibration != Calibration::None {
        bail!(
            "--quant_method {name} needs calibration data; QLoRA quantizes the base on the fly: use --quant_method bnb (or hqq / rtn)"
        );
    }
    let targets = target_slots(model, false);
    let done = model.quantize_slots(&mut |slot, w| {
        if !targets.iter().any(|t| t == slot) {
            return Ok(None);
        }
        let packed = scheme
            .quantize(&call(slot, w))
            .map_err(|e| format!("{slot}: {e}"))?;
        let p = PluginLinear::new(packed, [w.size()[0], w.size()[1]])
            .map_err(|e| format!("{slot}: {e}"))?
            .with_compute(tch::Kind::BFloat16);
        Ok(Some(
            std::sync::Arc::new(p) as std::sync::Arc<dyn QuantizedLinear>
        ))
    })?;
    Ok(done.len())
}

/// A quantize call without statistics.
fn call<'a>(slot: &'a str, w: &'a tch::Tensor) -> QuantizeCall<'a> {
    QuantizeCall {
        slot,
        weight: w,
        hessian: None,
        act_mean: None,
        act_rows: None,
    }
}

/// Token ids of up to `n` calibration texts (each message's text joined), cut at `max_length`.
fn calibration_samples(
    specs: &[String],
    regs: &Registries,
    tokenizer: &swift_template::Tokenizer,
    n: usize,
    max_length: usize,
) -> Result<Vec<Vec<i64>>> {
    let mut out = Vec::new();
    for item in open_datasets(specs, regs, &DatasetOptions::default())? {
        let item = item?;
        let text: Vec<&str> = item
            .row
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        let ids: Vec<i64> = tokenizer
            .encode(&text.join("\n"))?
            .into_iter()
            .take(max_length)
            .map(i64::from)
            .collect();
        if ids.len() >= 2 {
            out.push(ids);
        }
        if out.len() >= n {
            break;
        }
    }
    if out.is_empty() {
        bail!("the calibration set {} yielded no text", specs.join(" "));
    }
    Ok(out)
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_string());
    b
}

/// The quantization flags the user gave, by name (what the scheme reads or refuses).
fn export_options(args: &ExportSpec) -> Map<String, Value> {
    let mut o = Map::new();
    if let Some(g) = args.group_size {
        o.insert("group_size".into(), g.into());
    }
    if let Some(a) = args.act_order {
        o.insert("act_order".into(), a.into());
    }
    if let Some(l) = args.quant_lm_head {
        o.insert("quant_lm_head".into(), l.into());
    }
    if let Some(t) = &args.bnb_4bit_quant_type {
        o.insert("bnb_4bit_quant_type".into(), t.clone().into());
    }
    if let Some(d) = args.bnb_4bit_use_double_quant {
        o.insert("bnb_4bit_use_double_quant".into(), d.into());
    }
    o
}

/// `swift export --quant_method M --quant_bits B --model DIR [--dataset CALIB] --output_dir OUT`.
/// Returns the summary line (JSON) the command prints.
pub fn run(args: &ExportSpec, plugins: &PluginSettings) -> Result<String> {
    let name = args.quant.quant_method.as_deref().unwrap_or_default();
    let Some(bits) = args.quant.quant_bits else {
        bail!("--quant_method {name} needs --quant_bits (4 or 8; awq: 4)");
    };
    let Some(model_path) = &args.model else {
        bail!("--quant_method needs --model DIR (the float model to quantize)");
    };
    let report = plugins.load()?;
    let regs = &report.registries;
    let request = SchemeRequest {
        mode: SchemeMode::Export,
        bits: Some(bits),
        options: export_options(args),
        config_file: String::new(),
    };
    let (method, scheme) = scheme(regs, name, &request)?;
    let plan = scheme.plan().clone();
    if plan.calibration == Calibration::None {
        args.given
            .refuse(
                &["dataset", "quant_n_samples", "max_length"],
                &format!("to --quant_method {method} (it needs no calibration data)"),
            )
            .map_err(anyhow::Error::msg)?;
    } else if args.dataset.is_empty() {
        bail!(
            "{method} needs a calibration set: pass --dataset FILE or a registered name (e.g. --dataset c4-demo; `swift list datasets`)"
        );
    }
    let out = args.output_dir.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{method}-int{bits}",
            model_path.display().to_string().trim_end_matches('/'),
        ))
    });
    if out.join("config.json").exists() && out.canonicalize().ok() == model_path.canonicalize().ok()
    {
        bail!("--output_dir must differ from --model");
    }
    let bundle = ModelBundle::load(model_path, None, Some("float32"), &args.device, false, regs)?;
    let dir = bundle.dir.clone();
    let float_bytes: i64 = bundle.model.num_parameters() * 4;
    let ModelBundle {
        mut model,
        tokenizer,
        config,
        ..
    } = bundle;
    if config.get("quantization_config").is_some() {
        bail!(
            "{} is already quantized: quantize its float model instead",
            dir.display()
        );
    }
    let lm_head = quantizes_lm_head(&plan.config);
    let targets = target_slots(&model, lm_head);
    let started = std::time::Instant::now();
    tracing::info!("quantizing with {}", plan.summary);

    let calib = if plan.calibration != Calibration::None {
        let samples = calibration_samples(
            &args.dataset,
            regs,
            &tokenizer,
            args.quant_n_samples,
            args.max_length,
        )?;
        let tokens: usize = samples.iter().map(Vec::len).sum();
        tracing::info!("calibrating on {} samples ({tokens} tokens)", samples.len());
        let b = bar(samples.len() as u64, "calibration");
        let opts = CalibOptions {
            hessian: plan.calibration == Calibration::Hessian,
            rows: plan.calibration == Calibration::Activations,
            max_rows: 512,
        };
        let c = calibrate(&mut model, &targets, &samples, opts, |i| {
            b.set_position(i as u64)
        })?;
        b.finish_and_clear();
        Some(c)
    } else {
        None
    };

    let b = bar(targets.len() as u64, "quantizing");
    let mut packed_bytes = 0i64;
    model.quantize_slots(&mut |slot, w| {
        if !targets.iter().any(|t| t == slot) {
            return Ok(None);
        }
        let p = quantize_slot(&scheme, slot, w, calib.as_ref())
            .map_err(|e| format!("{slot}: {e:#}"))?;
        packed_bytes += p.stored_bytes();
        b.inc(1);
        Ok(Some(
            std::sync::Arc::new(p) as std::sync::Arc<dyn QuantizedLinear>
        ))
    })?;
    b.finish_and_clear();
    let quant_secs = started.elapsed().as_secs_f64();

    let bytes = swift_quant::save(&model, &out, tch::Kind::Half)
        .with_context(|| format!("writing {}", out.display()))?;
    copy_side_files(&dir, &out)?;
    let mut qc = plan.config.clone();
    let Some(obj) = qc.as_object_mut() else {
        bail!("quantizer `{method}` returned a quantization_config that is not an object");
    };
    let not_converted: Vec<String> = if lm_head {
        Vec::new()
    } else {
        vec![model.layout().output_slot.clone()]
    };
    obj.insert(
        "modules_not_converted".into(),
        serde_json::json!(not_converted),
    );
    let group_size = obj.get("group_size").cloned().unwrap_or(Value::Null);
    let mut config = config;
    config["quantization_config"] = qc;
    let path = out.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let summary = serde_json::json!({
        "output_dir": out,
        "quant_method": method,
        "bits": bits,
        "group_size": group_size,
        "slots": targets.len(),
        "weights_bytes": bytes,
        "float32_bytes": float_bytes,
        "ratio_to_float32": bytes as f64 / float_bytes.max(1) as f64,
        "packed_linear_bytes": packed_bytes,
        "seconds": quant_secs,
    });
    tracing::info!(
        "quantized {} linear slots with {method} {bits}-bit in {quant_secs:.1}s; weights {:.1} MB ({:.2}x float32)",
        targets.len(),
        bytes as f64 / 1e6,
        bytes as f64 / float_bytes.max(1) as f64
    );
    Ok(summary.to_string())
}

/// One slot through the scheme, with the statistics its plan asked for.
fn quantize_slot(
    scheme: &SchemeHandle,
    slot: &str,
    w: &tch::Tensor,
    calib: Option<&swift_quant::calib::Calibration>,
) -> Result<PluginLinear> {
    let shape = [w.size()[0], w.size()[1]];
    let _g = tch::no_grad_guard();
    let (mut hessian, mut mean, mut rows) = (None, None, None);
    if let Some(c) = calib {
        let st = c
            .stats(slot)
            .ok_or_else(|| anyhow!("the calibration passes never reached this slot"))?;
        let st = st.lock().map_err(|e| anyhow!("{e}"))?;
        hessian = st.hessian();
        mean = st.abs_mean();
        rows = st.rows()?;
    }
    let packed = scheme
        .quantize(&QuantizeCall {
            slot,
            weight: w,
            hessian: hessian.as_ref(),
            act_mean: mean.as_ref(),
            act_rows: rows.as_ref(),
        })
        .map_err(|e| anyhow!("{e}"))?;
    PluginLinear::new(packed, shape).map_err(|e| anyhow!("{e}"))
}

/// Copies the model folder's files other than weights (config, tokenizer, generation config,
/// templates) into `out` (config.json is rewritten afterwards).
fn copy_side_files(dir: &Path, out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !p.is_file()
            || name.ends_with(".safetensors")
            || name == "model.safetensors.index.json"
            || name.ends_with(".bin")
            || name.ends_with(".gguf")
            || swift_train::run_dir::CHECKPOINT_ONLY_FILES.contains(&name)
        {
            continue;
        }
        std::fs::copy(&p, out.join(name))
            .with_context(|| format!("copying {} into {}", p.display(), out.display()))?;
    }
    Ok(())
}
