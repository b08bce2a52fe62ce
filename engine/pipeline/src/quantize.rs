//! Quantization: `swift export --quant_method M --quant_bits B` (post-training
//! quantization into a folder that `swift infer` loads directly), the loader `infer` uses for
//! such folders, and the frozen 4-bit base of QLoRA (`swift sft --quant_method bnb`).
//!
//! `--quant_method` is resolved through the `quantizers` registry (built-ins from
//! plugins/quantizers, or a third-party plugin), which also checks `--quant_bits`; the host then
//! dispatches to the math in swift-quant by the resolved name, as it does for LoRA with the
//! `tuners` registry. A registered name swift-quant does not know is refused clearly.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use swift_data::{open_datasets, DatasetOptions};
use swift_model::{LoadedModel, QuantizedLinear};
use swift_quant::calib::{calibrate, CalibOptions};
use swift_quant::linear::Packed;
use swift_quant::{awq, gptq, Bnb4Type, Method, PackedLinear, QuantConfig};
use swift_registry::Registries;

use swift_spec::ExportSpec;

use crate::bundle::ModelBundle;
use swift_registry::PluginSettings;

/// Resolves `name` through the registry, checks `bits` with the quantizer, and returns the
/// swift-quant method it dispatches to.
pub fn resolve(regs: &Registries, name: &str, bits: u8) -> Result<Method> {
    let entry = regs.quantizers.resolve(name)?;
    let resolved = entry.record.name.clone();
    let imp = entry
        .imp
        .clone()
        .ok_or_else(|| anyhow!("quantizer `{resolved}` has no behaviour"))?;
    imp.check_bits(bits).map_err(|e| anyhow!("{e}"))?;
    Method::from_name(&resolved).ok_or_else(|| {
        anyhow!(
            "quantizer `{resolved}` ({}) is registered, but this build has no quantization math for it (it knows bnb, hqq, gptq, awq and rtn)",
            entry.provenance
        )
    })
}

/// The loader for a quantized model folder (None when `config.json` has no
/// `quantization_config`); its method must be registered.
pub fn loader(config: &Value, regs: &Registries) -> Result<Option<swift_quant::Loader>> {
    let Some(cfg) = QuantConfig::from_model_config(config)? else {
        return Ok(None);
    };
    resolve(regs, cfg.quant_method.name(), cfg.bits)?;
    Ok(Some(swift_quant::Loader::new(cfg)))
}

/// Linear slots to quantize: every linear slot but the output projection.
fn target_slots(model: &LoadedModel) -> Vec<String> {
    let layout = model.layout();
    layout
        .slots
        .iter()
        .filter(|s| s.kind == swift_plugin_tensors::model::SlotKind::Linear)
        .filter(|s| s.name != layout.output_slot)
        .map(|s| s.name.clone())
        .collect()
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
/// `method`/`bits` quantized copy computing in bfloat16 (autograd keeps only bfloat16 copies of
/// the dequantized weights for the backward pass). Returns how many slots were quantized.
fn quantize_for_training(
    model: &mut LoadedModel,
    regs: &Registries,
    name: &str,
    bits: u8,
) -> Result<usize> {
    let method = resolve(regs, name, bits)?;
    if method.needs_calibration() {
        bail!(
            "--quant_method {name} needs calibration data; QLoRA quantizes the base on the fly: use --quant_method bnb (or hqq / rtn)"
        );
    }
    let cfg = QuantConfig::new(method, bits)?;
    let targets = target_slots(model);
    let done = model.quantize_slots(&mut |slot, w| {
        if !targets.iter().any(|t| t == slot) {
            return Ok(None);
        }
        let p = PackedLinear::quantize(w, &cfg)
            .map_err(|e| format!("{slot}: {e}"))?
            .with_compute(tch::Kind::BFloat16);
        Ok(Some(
            std::sync::Arc::new(p) as std::sync::Arc<dyn QuantizedLinear>
        ))
    })?;
    Ok(done.len())
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
    let method = resolve(regs, name, bits)?;
    if method.needs_calibration() && args.dataset.is_empty() {
        bail!(
            "{} needs a calibration set: pass --dataset FILE or a registered name (e.g. --dataset c4-demo; `swift list datasets`)",
            method.name()
        );
    }
    let mut cfg = QuantConfig::new(method, bits)?;
    if let Some(g) = args.group_size {
        if g < 0 {
            bail!("--group_size must be positive (or 0: one group per row), got {g}");
        }
        cfg.group_size = g;
    }
    if let Some(a) = args.act_order {
        cfg.desc_act = a && method == Method::Gptq;
    }
    if method == Method::Bnb && bits == 4 {
        if let Some(t) = &args.bnb_4bit_quant_type {
            cfg.bnb_4bit_quant_type = Some(match t.to_ascii_lowercase().as_str() {
                "nf4" => Bnb4Type::Nf4,
                "fp4" => Bnb4Type::Fp4,
                other => bail!("--bnb_4bit_quant_type must be nf4 or fp4, got `{other}`"),
            });
        }
        if let Some(d) = args.bnb_4bit_use_double_quant {
            cfg.bnb_4bit_use_double_quant = d;
        }
    }
    let out = args.output_dir.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}-int{bits}",
            model_path.display().to_string().trim_end_matches('/'),
            method.name()
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
    let targets = target_slots(&model);
    cfg.modules_not_converted = vec![model.layout().output_slot.clone()];
    let started = std::time::Instant::now();

    let calib = if method.needs_calibration() {
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
            hessian: method == Method::Gptq,
            rows: method == Method::Awq,
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
        let p =
            quantize_slot(slot, w, &cfg, calib.as_ref()).map_err(|e| format!("{slot}: {e:#}"))?;
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
    let mut config = config;
    config["quantization_config"] = serde_json::to_value(&cfg)?;
    let path = out.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let summary = serde_json::json!({
        "output_dir": out,
        "quant_method": method.name(),
        "bits": bits,
        "group_size": cfg.group_size,
        "slots": targets.len(),
        "weights_bytes": bytes,
        "float32_bytes": float_bytes,
        "ratio_to_float32": bytes as f64 / float_bytes.max(1) as f64,
        "packed_linear_bytes": packed_bytes,
        "seconds": quant_secs,
    });
    tracing::info!(
        "quantized {} linear slots with {} {bits}-bit in {quant_secs:.1}s; weights {:.1} MB ({:.2}x float32)",
        targets.len(),
        method.name(),
        bytes as f64 / 1e6,
        bytes as f64 / float_bytes.max(1) as f64
    );
    Ok(summary.to_string())
}

fn quantize_slot(
    slot: &str,
    w: &tch::Tensor,
    cfg: &QuantConfig,
    calib: Option<&swift_quant::calib::Calibration>,
) -> Result<PackedLinear> {
    let shape = [w.size()[0], w.size()[1]];
    let stats = || -> Result<_> {
        let c = calib.ok_or_else(|| anyhow!("no calibration statistics"))?;
        c.stats(slot)
            .ok_or_else(|| anyhow!("the calibration passes never reached this slot"))
    };
    let _g = tch::no_grad_guard();
    Ok(match cfg.quant_method {
        Method::Gptq => {
            let st = stats()?;
            let st = st.lock().map_err(|e| anyhow!("{e}"))?;
            let h = st.hessian().ok_or_else(|| anyhow!("no Hessian gathered"))?;
            let a = gptq::quantize(
                w,
                &h,
                gptq::GptqParams {
                    bits: cfg.bits,
                    group: cfg.group_size,
                    act_order: cfg.desc_act,
                    damp: 0.01,
                },
            )?;
            PackedLinear::new(Packed::Affine(a), shape)
        }
        Method::Awq => {
            let st = stats()?;
            let st = st.lock().map_err(|e| anyhow!("{e}"))?;
            let mean = st
                .abs_mean()
                .ok_or_else(|| anyhow!("no activations gathered"))?;
            let rows = st
                .rows()?
                .ok_or_else(|| anyhow!("no activations gathered"))?;
            let a = awq::quantize(
                w,
                &mean,
                &rows,
                awq::AwqParams {
                    bits: cfg.bits,
                    group: cfg.group_size,
                    ..Default::default()
                },
            )?;
            PackedLinear::new(Packed::Affine(a), shape)
        }
        _ => PackedLinear::quantize(w, cfg)?,
    })
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
