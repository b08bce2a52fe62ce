//! A model ready to run: the folder (a `.gguf` file is converted once into a cached folder), its
//! family (`--model_type`, else config.json's `architectures` / `model_type` matched against the
//! registered families), dtype and device, a quantized folder's loader, the tokenizer, the
//! template (`--template`, else config.json's `swift_template`, else the tokenizer's own
//! `chat_template` as `jinja`, else the family's default) and the end-of-sequence ids.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use swift_model::{parse_device, parse_dtype, LoadedModel};
use swift_registry::Registries;
use swift_template::{Template, Tokenizer};
use swift_train::reward::is_reward_config;

/// A model ready to generate: weights, tokenizer, template, stop criteria.
pub struct ModelBundle {
    pub dir: PathBuf,
    pub family: String,
    pub model: LoadedModel,
    pub tokenizer: Tokenizer,
    pub config: Value,
    pub default_template: Option<String>,
    pub eos_ids: Vec<i64>,
}

impl ModelBundle {
    /// Resolves the folder (converting a GGUF file to float32), the family, dtype and device,
    /// and loads.
    pub fn load(
        model: &Path,
        model_type: Option<&str>,
        dtype: Option<&str>,
        device: &str,
        allow_unused_weights: bool,
        regs: &Registries,
    ) -> Result<Self> {
        let dir = model_dir(model)?;
        Self::load_dir(dir, model_type, dtype, device, allow_unused_weights, regs)
    }

    /// [`ModelBundle::load`] for generation (`swift infer`, `swift deploy`): on the CPU, a GGUF
    /// file's Q8_0/Q6_K/Q5_0/Q4_0/Q4_1/Q4_K weights stay packed and decode on the integer kernels
    /// ([`model_dir_packed`]), so the weights take about the file's size in memory.
    pub fn load_for_decoding(
        model: &Path,
        model_type: Option<&str>,
        dtype: Option<&str>,
        device: &str,
        allow_unused_weights: bool,
        regs: &Registries,
    ) -> Result<Self> {
        let is_gguf = model.is_file() && model.extension().and_then(|e| e.to_str()) == Some("gguf");
        if !is_gguf || parse_device(device)? != tch::Device::Cpu {
            return Self::load(model, model_type, dtype, device, allow_unused_weights, regs);
        }
        let dir = model_dir_packed(model)?;
        Self::load_dir(dir, model_type, dtype, device, allow_unused_weights, regs)
    }

    fn load_dir(
        dir: PathBuf,
        model_type: Option<&str>,
        dtype: Option<&str>,
        device: &str,
        allow_unused_weights: bool,
        regs: &Registries,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            bail!("{} has no config.json: --model must be a Hugging Face model folder or a .gguf file", dir.display());
        }
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let (family, default_template, handle) = resolve_family(regs, &config, model_type)?;
        let instance = handle.instantiate(&family_config(&config)).map_err(|e| {
            anyhow!(
                "model family `{family}` cannot run {}: {e}",
                config_path.display()
            )
        })?;
        let device = parse_device(device)?;
        let kind = match dtype {
            Some(d) => parse_dtype(d)?,
            None if device == tch::Device::Cpu => tch::Kind::Float,
            None => match config.get("torch_dtype").and_then(Value::as_str) {
                Some(d) => parse_dtype(d).unwrap_or(tch::Kind::BFloat16),
                None => tch::Kind::BFloat16,
            },
        };
        // The tokenizer first: parsing tokenizer.json holds about 45 MB of transient heap
        // (SmolLM2's; serde's buffered content), handed back to the system before the weights'
        // pages are touched (repacking touches them at load), so peak RSS is not the sum of both.
        let tokenizer = Tokenizer::from_dir(&dir)?;
        swift_kernels::release_freed_heap();
        let started = Instant::now();
        let packed;
        let gguf;
        let quant: Option<&dyn swift_model::QuantizedLoader> =
            if swift_quant::gguf::is_gguf_config(&config) {
                gguf = swift_quant::gguf::GgufLoader::new(kind);
                tracing::info!(
                    "the GGUF blocks decode on swift-kernels' `{}` integer kernel",
                    swift_quant::gguf::kernel_name()
                );
                Some(&gguf)
            } else {
                packed = crate::quantize::loader(&config, &config_path, regs, kind)?;
                packed
                    .as_ref()
                    .map(|q| q as &dyn swift_model::QuantizedLoader)
            };
        let model =
            LoadedModel::load_checked(&dir, instance, kind, device, quant, allow_unused_weights)
                .with_context(|| format!("loading {} as `{family}`", dir.display()))?;
        tracing::info!(
            "loaded {} ({family}, {} parameters, {} on {:?}) in {:.2}s",
            dir.display(),
            model.num_parameters(),
            swift_model::dtype_name(kind),
            device,
            started.elapsed().as_secs_f64()
        );
        let eos_ids = eos_ids(&dir, &config, &tokenizer);
        Ok(Self {
            dir,
            family,
            model,
            tokenizer,
            config,
            default_template,
            eos_ids,
        })
    }

    /// The template: see [`pick_template`].
    pub fn template(&self, regs: &Registries, name: Option<&str>) -> Result<Template> {
        pick_template(
            regs,
            name,
            &self.config,
            &self.tokenizer,
            self.default_template.as_deref(),
            &self.dir,
            &self.family,
        )
    }
}

/// What generating needs besides the weights, for a backend that loads them itself: the folder
/// (a `.gguf` file's converted folder), config.json, the family's name and default template, the
/// tokenizer and the end-of-sequence ids.
pub struct ModelText {
    pub dir: PathBuf,
    pub family: String,
    pub config: Value,
    pub default_template: Option<String>,
    pub tokenizer: Tokenizer,
    pub eos_ids: Vec<i64>,
}

impl ModelText {
    /// Resolves the folder and the family as [`ModelBundle::load`] does, without the weights.
    pub fn open(model: &Path, model_type: Option<&str>, regs: &Registries) -> Result<Self> {
        let dir = model_dir(model)?;
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            bail!("{} has no config.json: --model must be a Hugging Face model folder or a .gguf file", dir.display());
        }
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let (family, default_template, _) = resolve_family(regs, &config, model_type)?;
        let tokenizer = Tokenizer::from_dir(&dir)?;
        let eos_ids = eos_ids(&dir, &config, &tokenizer);
        Ok(Self {
            dir,
            family,
            config,
            default_template,
            tokenizer,
            eos_ids,
        })
    }

    /// The template: see [`pick_template`].
    pub fn template(&self, regs: &Registries, name: Option<&str>) -> Result<Template> {
        pick_template(
            regs,
            name,
            &self.config,
            &self.tokenizer,
            self.default_template.as_deref(),
            &self.dir,
            &self.family,
        )
    }
}

/// The template: `--template`, else config.json's `swift_template` (written by `swift export
/// --merge_lora`), else `jinja` when the tokenizer has a chat_template, else the family's
/// default.
fn pick_template(
    regs: &Registries,
    name: Option<&str>,
    config: &Value,
    tokenizer: &Tokenizer,
    default_template: Option<&str>,
    dir: &Path,
    family: &str,
) -> Result<Template> {
    let recorded = config.get("swift_template").and_then(Value::as_str);
    let name = match name.or(recorded) {
        Some(n) => n.to_string(),
        None if tokenizer.chat_template.is_some() => "jinja".into(),
        None => default_template.map(str::to_string).ok_or_else(|| {
            anyhow!("{} has no chat_template and family `{family}` no default template: pass --template (`swift list templates`)", dir.display())
        })?,
    };
    let record = &regs.templates.resolve(&name)?.record;
    Ok(Template::from_record(record)?)
}

/// `$SWIFT_RS_CACHE`, else `~/.cache/swift-rs`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/swift-rs")))
        .unwrap_or_else(std::env::temp_dir)
}

/// A model folder for `--model`: the folder itself, or a `.gguf` file's converted folder (kept
/// under `$SWIFT_RS_CACHE/converted/`, keyed by the file's name, size and modification time).
pub fn model_dir(model: &Path) -> Result<PathBuf> {
    gguf_folder(model, false)
}

/// [`model_dir`], where a `.gguf` file's Q8_0/Q6_K/Q5_0/Q4_0/Q4_1/Q4_K weights stay packed
/// (`swift_gguf::convert_to_hf_packed`; cached beside the float32 folder with a `-packed`
/// suffix and the packed layout's version, `swift_gguf::PACKED_LAYOUT_VERSION`: a folder
/// converted before more types were packed is not reused).
pub fn model_dir_packed(model: &Path) -> Result<PathBuf> {
    gguf_folder(model, true)
}

fn gguf_folder(model: &Path, packed: bool) -> Result<PathBuf> {
    if !model.exists() {
        bail!("--model {}: no such file or folder", model.display());
    }
    if model.is_dir() {
        // A full-training checkpoint is checked against its manifest.
        swift_train::check_checkpoint(model)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--model {}", model.display()))?;
        return Ok(model.to_path_buf());
    }
    if model.extension().and_then(|e| e.to_str()) != Some("gguf") {
        bail!(
            "--model {}: expected a model folder or a .gguf file",
            model.display()
        );
    }
    let meta = std::fs::metadata(model)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = if packed {
        format!("-packed-v{}", swift_gguf::PACKED_LAYOUT_VERSION)
    } else {
        String::new()
    };
    let out = cache_dir()
        .join("converted")
        .join(format!("{stem}-{}-{mtime}{suffix}", meta.len()));
    if !out.join("config.json").is_file() {
        tracing::info!("converting {} into {}", model.display(), out.display());
        let convert = if packed {
            swift_gguf::convert_to_hf_packed
        } else {
            swift_gguf::convert_to_hf
        };
        let report =
            convert(model, &out).with_context(|| format!("converting {}", model.display()))?;
        tracing::info!("{report}");
    }
    Ok(out)
}

/// Finds the family: `--model_type` names it; else config.json's `architectures`, then its
/// `model_type`. Declarative families (`alias_of`) run their target's behaviour with their own
/// default template.
pub fn resolve_family(
    regs: &Registries,
    config: &Value,
    model_type: Option<&str>,
) -> Result<(
    String,
    Option<String>,
    std::sync::Arc<swift_plugin_tensors::ModelFamilyHandle>,
)> {
    let entry = match model_type {
        Some(t) => regs.models.resolve(t)?,
        None => {
            let archs: Vec<&str> = config
                .get("architectures")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mt = config.get("model_type").and_then(Value::as_str);
            let by_arch = regs.models.iter().find(|e| {
                archs
                    .iter()
                    .any(|a| e.record.architectures.iter().any(|x| x == a))
            });
            let by_type = || {
                regs.models
                    .iter()
                    .find(|e| mt.is_some_and(|m| e.record.model_types.iter().any(|x| x == m)))
            };
            match by_arch.or_else(by_type) {
                Some(e) => e,
                None => {
                    let mut known_archs: Vec<&str> = regs
                        .models
                        .iter()
                        .flat_map(|e| e.record.architectures.iter().map(String::as_str))
                        .collect();
                    let mut known_types: Vec<&str> = regs
                        .models
                        .iter()
                        .flat_map(|e| e.record.model_types.iter().map(String::as_str))
                        .collect();
                    known_archs.sort();
                    known_types.sort();
                    bail!(
                        "unknown architecture: config.json has architectures {archs:?} and model_type {:?}; \
                         known architectures: {}; known model types: {} (pass --model_type NAME to choose a family, \
                         or load a plugin that provides it with --plugin-dir)",
                        mt.unwrap_or("none"),
                        known_archs.join(", "),
                        known_types.join(", ")
                    )
                }
            }
        }
    };
    let name = entry.record.name.clone();
    let template = entry.record.default_template.clone();
    let mut cur = entry;
    for _ in 0..8 {
        if let Some(imp) = &cur.imp {
            return Ok((name, template, imp.clone()));
        }
        let Some(target) = &cur.record.alias_of else {
            break;
        };
        cur = regs.models.resolve(target)?;
    }
    bail!("model family `{name}` has no behaviour (its alias_of chain ends without a family that runs models)")
}

/// End-of-sequence ids: generation_config.json's and config.json's `eos_token_id` (a number or
/// a list) and the tokenizer's `eos_token`.
pub(crate) fn eos_ids(dir: &Path, config: &Value, tok: &Tokenizer) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut add = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => ids.extend(n.as_i64()),
        Some(Value::Array(a)) => ids.extend(a.iter().filter_map(Value::as_i64)),
        _ => {}
    };
    let gen = std::fs::read_to_string(dir.join("generation_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    add(gen.as_ref().and_then(|g| g.get("eos_token_id")));
    add(config.get("eos_token_id"));
    if let Some(id) = tok.eos_token.as_deref().and_then(|t| tok.token_to_id(t)) {
        ids.push(id as i64);
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The config a reward model's family is instantiated with: a sequence classifier has no LM
/// head, so its output projection is tied to the embeddings (never used: the value head
/// scores). Other configs pass unchanged.
pub fn family_config(config: &Value) -> std::borrow::Cow<'_, Value> {
    if is_reward_config(config) {
        let mut c = config.clone();
        c["tie_word_embeddings"] = json!(true);
        std::borrow::Cow::Owned(c)
    } else {
        std::borrow::Cow::Borrowed(config)
    }
}

/// How `swift infer` and `swift deploy` encode a prompt: the template's generation prompt, the
/// user's system message and thinking switch, long prompts cut from the left.
pub fn prompt_options(t: &swift_spec::TemplateArgs) -> swift_template::EncodeOptions {
    swift_template::EncodeOptions {
        render: swift_template::RenderOptions {
            generation_prompt: true,
            system: t.system.clone(),
            enable_thinking: t.enable_thinking,
        },
        max_length: None,
        truncation: swift_template::Truncation::Left,
        ..Default::default()
    }
}
