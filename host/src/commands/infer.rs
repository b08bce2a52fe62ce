//! `swift infer`: chat with a model in the terminal, or run it over a dataset.
//!
//! The model is a Hugging Face folder (config.json, safetensors, tokenizer.json) or a `.gguf`
//! file, converted once into a cached folder. Its family comes from `--model_type`, else from
//! config.json's `architectures` / `model_type` matched against the registered families; the
//! template from `--template`, else config.json's `swift_template` (recorded by `swift export
//! --merge_lora`), else the tokenizer's own `chat_template` (`jinja`), else the family's default.
//!
//! * No `--val_dataset`: an interactive multi-turn chat (streamed answers, `/clear` forgets the
//!   conversation, `/exit` or end of input leaves; older turns are dropped to stay within
//!   `--max_length`).
//! * `--val_dataset SPEC --result_path FILE`: one JSON line per row (prompt messages, response,
//!   the reference answer when the row has one, token counts), `--max_batch_size` rows at a time.
//!
//! * A reward model (`swift rlhf --rlhf_type rm` checkpoints) scores conversations instead:
//!   see `commands::reward`.
//!
//! Hidden diagnostics for the tests: `--debug_input_ids 1,2,3` prints the last position's
//! logits and a greedy continuation as JSON; `--nll_file FILE --nll_tokens N` prints the mean
//! negative log-likelihood of the file's first N tokens.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use swift_data::{open_datasets, DatasetOptions};
use swift_model::{generate, parse_device, parse_dtype, LoadedModel, SamplingParams, StopCriteria};
use swift_plugin_api::{Message, StandardRow};
use swift_registry::Registries;
use swift_template::{EncodeOptions, Encoder, RenderOptions, Template, Tokenizer, Truncation};

use crate::cli::parse_bool;
use crate::config::GlobalSettings;

#[derive(Debug, Args)]
pub struct InferArgs {
    /// A model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
    #[arg(
        long,
        value_name = "DIR|FILE.gguf",
        required_unless_present = "adapters"
    )]
    pub model: Option<PathBuf>,
    /// LoRA checkpoints (PEFT layout, e.g. `output/.../checkpoint-N` from `swift sft`); their
    /// args.json supplies the model and template when --model / --template are not given.
    #[arg(long, num_args = 1.., value_name = "CKPT")]
    pub adapters: Vec<PathBuf>,
    /// Fold the --adapters into the base weights at load time (faster decoding, same output;
    /// `swift export --merge_lora` writes such a model to disk).
    #[arg(long = "merge-lora", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::parse_bool)]
    pub merge_lora: Option<bool>,
    /// The model family (`swift list models`); default: from config.json.
    #[arg(long = "model-type")]
    pub model_type: Option<String>,
    /// The chat template (`swift list templates`); default: the tokenizer's chat_template, else
    /// the family's default.
    #[arg(long)]
    pub template: Option<String>,
    /// System message (replaces the template's default).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long = "max-new-tokens", default_value_t = 512)]
    pub max_new_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long = "repetition-penalty", default_value_t = 1.0)]
    pub repetition_penalty: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Extra strings that end an answer (besides EOS and the template's). Repeatable.
    #[arg(long = "stop-words", num_args = 1..)]
    pub stop_words: Vec<String>,
    /// Rows generated together with --val_dataset.
    #[arg(long = "max-batch-size", default_value_t = 8)]
    pub max_batch_size: usize,
    /// Longest prompt in tokens (chat: older turns are dropped to fit).
    #[arg(long = "max-length")]
    pub max_length: Option<usize>,
    /// float32, bfloat16 or float16 (default: float32 on the CPU, config.json's on CUDA).
    #[arg(long = "torch-dtype")]
    pub torch_dtype: Option<String>,
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Datasets to answer (files or registered names, NAME#N samples N rows).
    #[arg(long = "val-dataset", num_args = 1..)]
    pub val_dataset: Vec<String>,
    /// Where --val_dataset results go (JSON lines).
    #[arg(long = "result-path")]
    pub result_path: Option<PathBuf>,
    /// Stream answers token by token in the chat (default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub stream: Option<bool>,
    /// Qwen3 thinking switch (templates that support it).
    #[arg(long = "enable-thinking", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_thinking: Option<bool>,
    /// The inference backend (`swift list backends`); `pt` is the built-in one.
    #[arg(long = "infer-backend", default_value = "pt")]
    pub infer_backend: String,
    #[arg(long = "debug-input-ids", hide = true)]
    pub debug_input_ids: Option<String>,
    #[arg(long = "debug-greedy-tokens", hide = true, default_value_t = 32)]
    pub debug_greedy_tokens: usize,
    #[arg(long = "nll-file", hide = true)]
    pub nll_file: Option<PathBuf>,
    #[arg(long = "nll-tokens", hide = true, default_value_t = 192)]
    pub nll_tokens: usize,
}

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
    /// Resolves the folder (converting a GGUF file), the family, dtype and device, and loads.
    pub fn load(
        model: &Path,
        model_type: Option<&str>,
        dtype: Option<&str>,
        device: &str,
        regs: &Registries,
    ) -> Result<Self> {
        let dir = model_dir(model)?;
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            bail!("{} has no config.json: --model must be a Hugging Face model folder or a .gguf file", dir.display());
        }
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let (family, default_template, handle) = resolve_family(regs, &config, model_type)?;
        let instance = handle
            .instantiate(&super::reward::family_config(&config))
            .map_err(|e| {
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
        let started = Instant::now();
        let quant = super::quantize::loader(&config, regs)?;
        let quant = quant
            .as_ref()
            .map(|q| q as &dyn swift_model::QuantizedLoader);
        let model = LoadedModel::load_with(&dir, instance, kind, device, quant)
            .with_context(|| format!("loading {} as `{family}`", dir.display()))?;
        tracing::info!(
            "loaded {} ({family}, {} parameters, {} on {:?}) in {:.2}s",
            dir.display(),
            model.num_parameters(),
            swift_model::dtype_name(kind),
            device,
            started.elapsed().as_secs_f64()
        );
        let tokenizer = Tokenizer::from_dir(&dir)?;
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

    /// The template: `--template`, else `jinja` when the tokenizer has a chat_template, else the
    /// family's default.
    pub fn template(&self, regs: &Registries, name: Option<&str>) -> Result<Template> {
        // `swift export --merge_lora` records the adapter's template in config.json.
        let recorded = self.config.get("swift_template").and_then(Value::as_str);
        let name = match name.or(recorded) {
            Some(n) => n.to_string(),
            None if self.tokenizer.chat_template.is_some() => "jinja".into(),
            None => self.default_template.clone().ok_or_else(|| {
                anyhow!("{} has no chat_template and family `{}` no default template: pass --template (`swift list templates`)", self.dir.display(), self.family)
            })?,
        };
        let record = &regs.templates.resolve(&name)?.record;
        Ok(Template::from_record(record)?)
    }
}

/// A model folder for `--model`: the folder itself, or a `.gguf` file's converted folder (kept
/// under `$SWIFT_RS_CACHE/converted/`, keyed by the file's name, size and modification time).
pub(crate) fn model_dir(model: &Path) -> Result<PathBuf> {
    if !model.exists() {
        bail!("--model {}: no such file or folder", model.display());
    }
    if model.is_dir() {
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
    let cache = std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/swift-rs")))
        .unwrap_or_else(std::env::temp_dir);
    let out = cache
        .join("converted")
        .join(format!("{stem}-{}-{mtime}", meta.len()));
    if !out.join("config.json").is_file() {
        tracing::info!("converting {} into {}", model.display(), out.display());
        let report = swift_gguf::convert_to_hf(model, &out)
            .with_context(|| format!("converting {}", model.display()))?;
        tracing::info!("{report}");
    }
    Ok(out)
}

/// Finds the family: `--model_type` names it; else config.json's `architectures`, then its
/// `model_type`. Declarative families (`alias_of`) run their target's behaviour with their own
/// default template.
pub(crate) fn resolve_family(
    regs: &Registries,
    config: &Value,
    model_type: Option<&str>,
) -> Result<(
    String,
    Option<String>,
    std::sync::Arc<swift_plugin_api::ModelFamilyHandle>,
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
fn eos_ids(dir: &Path, config: &Value, tok: &Tokenizer) -> Vec<i64> {
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

pub fn run(args: &InferArgs, settings: &GlobalSettings) -> Result<()> {
    // Adapters (swift sft checkpoints): model, template and plugin files from their args.json.
    let adapters = crate::commands::sft::Adapters::resolve(args.model.as_deref(), &args.adapters)?;
    let settings = &adapters.with_plugins(settings);
    let report = crate::plugins::load(settings)?;
    let regs = &report.registries;
    let backend = regs.backends.resolve(&args.infer_backend)?;
    if backend.record.name != "pt" {
        bail!(
            "--infer_backend {}: this swift generates with the built-in `pt` backend only",
            backend.record.name
        );
    }
    let mut bundle = ModelBundle::load(
        &adapters.model,
        args.model_type.as_deref(),
        args.torch_dtype.as_deref(),
        &args.device,
        regs,
    )?;
    adapters.attach(&mut bundle.model, args.merge_lora.unwrap_or(false))?;
    let template_name = args.template.clone().or(adapters.template.clone());
    // A reward model (value head) scores instead of generating.
    if let Some(head) = super::reward::find_head(&bundle, &adapters.dirs)? {
        let template = bundle.template(regs, template_name.as_deref())?;
        return super::reward::run(args, bundle, template, head, regs);
    }
    if let Some(ids) = &args.debug_input_ids {
        return debug_logits(&bundle, ids, args.debug_greedy_tokens);
    }
    if let Some(file) = &args.nll_file {
        return nll(&bundle, file, args.nll_tokens);
    }
    let template = bundle.template(regs, template_name.as_deref())?;
    let mut stop_words = template.stop_words.clone();
    stop_words.extend(args.stop_words.iter().cloned());
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: true,
            system: args.system.clone(),
            enable_thinking: args.enable_thinking,
        },
        max_length: None,
        truncation: Truncation::Left,
        ..Default::default()
    };
    let encoder = Encoder::new(template, bundle.tokenizer, options)?;
    let stop = StopCriteria {
        eos_ids: bundle.eos_ids.clone(),
        stop_words,
    };
    let params = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    let gen = Gen {
        model: &bundle.model,
        encoder: &encoder,
        params,
        stop,
    };
    if args.val_dataset.is_empty() {
        if args.result_path.is_some() {
            bail!("--result_path needs --val_dataset (without a dataset, swift infer is an interactive chat)");
        }
        return chat(&gen, args.max_length, args.stream.unwrap_or(true));
    }
    let Some(result_path) = &args.result_path else {
        bail!("--val_dataset needs --result_path FILE (one JSON line per row is written there)");
    };
    batch(
        &gen,
        regs,
        &args.val_dataset,
        result_path,
        args.max_batch_size.max(1),
        args.max_length,
    )
}

/// What generating needs, bundled.
struct Gen<'a> {
    model: &'a LoadedModel,
    encoder: &'a Encoder,
    params: SamplingParams,
    stop: StopCriteria,
}

impl Gen<'_> {
    fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.encoder.tokenizer.decode(&ids).unwrap_or_default()
    }

    /// The answer's text: decoded, cut at the first stop word.
    fn response(&self, tokens: &[i64]) -> String {
        let mut text = self.decode(tokens);
        if let Some(cut) = self
            .stop
            .stop_words
            .iter()
            .filter(|w| !w.is_empty())
            .filter_map(|w| text.find(w.as_str()))
            .min()
        {
            text.truncate(cut);
        }
        text
    }

    fn prompt_ids(&self, row: &StandardRow) -> Result<Vec<i64>> {
        let enc = self
            .encoder
            .encode(row)?
            .ok_or_else(|| anyhow!("the prompt could not be encoded"))?;
        Ok(enc.input_ids.iter().map(|&i| i as i64).collect())
    }
}

fn batch(
    gen: &Gen,
    regs: &Registries,
    specs: &[String],
    out: &Path,
    batch_size: usize,
    max_length: Option<usize>,
) -> Result<()> {
    let dataset = open_datasets(specs, regs, &DatasetOptions::default())?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::new(file);
    let started = Instant::now();
    let (mut rows, mut prompt_tokens, mut generated) = (0usize, 0usize, 0usize);
    // Time to the first token of each batch (the prefill) and the rest (decoding).
    let (mut prefill_s, mut decode_s, mut batches) = (0.0f64, 0.0f64, 0usize);
    // Each batch's time to first token, in order (the first batch's includes libtorch's
    // first-call set-up; benchmarks read the later ones).
    let mut ttfts: Vec<f64> = Vec::new();
    let mut pending: Vec<(Vec<Message>, Option<String>, Vec<i64>)> = Vec::new();
    let mut flush = |pending: &mut Vec<(Vec<Message>, Option<String>, Vec<i64>)>,
                     w: &mut BufWriter<std::fs::File>|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let prompts: Vec<Vec<i64>> = pending.iter().map(|p| p.2.clone()).collect();
        let t0 = Instant::now();
        let mut first: Option<f64> = None;
        let results = generate(
            gen.model,
            &prompts,
            &gen.params,
            &gen.stop,
            &|ids| gen.decode(ids),
            &mut |_, _| {
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            },
        )?;
        let total = t0.elapsed().as_secs_f64();
        let ttft = first.unwrap_or(total);
        prefill_s += ttft;
        ttfts.push(ttft);
        decode_s += total - ttft;
        batches += 1;
        for ((messages, reference, _), r) in pending.drain(..).zip(results) {
            prompt_tokens += r.prompt_tokens;
            generated += r.generated_tokens;
            rows += 1;
            let line = json!({
                "messages": messages,
                "response": gen.response(&r.tokens),
                "labels": reference,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.generated_tokens,
                "finish_reason": r.finish.as_openai(),
            });
            serde_json::to_writer(&mut *w, &line)?;
            writeln!(w)?;
        }
        w.flush()?;
        Ok(())
    };
    for item in dataset {
        let item = item?;
        let mut messages = item.row.messages.clone();
        let reference = match messages.last() {
            Some(m) if m.role == "assistant" => messages.pop().map(|m| m.content),
            _ => None,
        };
        let row = StandardRow {
            messages: messages.clone(),
            tools: item.row.tools.clone(),
            ..Default::default()
        };
        let mut ids = gen
            .prompt_ids(&row)
            .with_context(|| format!("row at {}:{}", item.file.display(), item.line))?;
        if let Some(max) = max_length {
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
        }
        pending.push((messages, reference, ids));
        if pending.len() >= batch_size {
            flush(&mut pending, &mut w)?;
        }
    }
    flush(&mut pending, &mut w)?;
    let secs = started.elapsed().as_secs_f64();
    // Tokens after each batch's first are decode steps; its first tokens come with the prefill.
    let decoded = generated.saturating_sub(rows);
    let summary = json!({
        "rows": rows,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "seconds": secs,
        "time_to_first_token_s": prefill_s / batches.max(1) as f64,
        "time_to_first_token_per_batch_s": ttfts,
        "prompt_tokens_per_s": prompt_tokens as f64 / prefill_s.max(1e-9),
        "generated_tokens_per_s": generated as f64 / secs.max(1e-9),
        "decode_tokens_per_s": decoded as f64 / decode_s.max(1e-9),
    });
    tracing::info!(
        "answered {rows} rows; results in {}; {summary}",
        out.display()
    );
    Ok(())
}

fn chat(gen: &Gen, max_length: Option<usize>, stream: bool) -> Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut history: Vec<Message> = Vec::new();
    eprintln!(
        "chat with the model: /clear forgets the conversation, /exit (or end of input) leaves"
    );
    let mut lines = stdin.lock().lines();
    loop {
        write!(stdout, "<<< ")?;
        stdout.flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        let query = line.trim();
        match query {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                history.clear();
                writeln!(stdout, "(conversation cleared)")?;
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", query));
        let mut ids = gen.prompt_ids(&StandardRow {
            messages: history.clone(),
            ..Default::default()
        })?;
        if let Some(max) = max_length {
            // Drop the oldest rounds until the prompt fits.
            while ids.len() > max && history.len() > 1 {
                let cut = history
                    .iter()
                    .skip(1)
                    .position(|m| m.role == "user")
                    .map(|i| i + 1)
                    .unwrap_or(history.len() - 1);
                history.drain(..cut);
                ids = gen.prompt_ids(&StandardRow {
                    messages: history.clone(),
                    ..Default::default()
                })?;
            }
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
        }
        write!(stdout, ">>> ")?;
        stdout.flush()?;
        let mut tokens: Vec<i64> = Vec::new();
        let mut printed = 0usize;
        let eos = gen.stop.eos_ids.clone();
        let mut on_token = |_: usize, t: i64| {
            if !stream || eos.contains(&t) {
                return;
            }
            tokens.push(t);
            let text = gen.response(&tokens);
            if !text.ends_with('\u{FFFD}') && text.len() > printed && text.is_char_boundary(printed)
            {
                let _ = write!(std::io::stdout(), "{}", &text[printed..]);
                let _ = std::io::stdout().flush();
                printed = text.len();
            }
        };
        let result = generate(
            gen.model,
            &[ids],
            &gen.params,
            &gen.stop,
            &|t| gen.decode(t),
            &mut on_token,
        )?;
        let answer = result
            .first()
            .map(|r| gen.response(&r.tokens))
            .unwrap_or_default();
        if !stream {
            write!(stdout, "{answer}")?;
        } else if answer.len() > printed && answer.is_char_boundary(printed) {
            write!(stdout, "{}", &answer[printed..])?;
        }
        writeln!(stdout)?;
        history.push(Message::new("assistant", answer));
    }
    Ok(())
}

fn debug_logits(bundle: &ModelBundle, ids: &str, greedy_tokens: usize) -> Result<()> {
    let ids: Vec<i64> = ids
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|e| anyhow!("--debug_input_ids: `{s}`: {e}"))
        })
        .collect::<Result<_>>()?;
    let m = &bundle.model;
    let mut cache = m.new_cache(1);
    let hidden = m.forward(
        &tch::Tensor::from_slice(&ids).view([1, -1]),
        None,
        &mut cache,
    )?;
    let logits = m
        .logits(&hidden.select(1, -1))?
        .to_device(tch::Device::Cpu)
        .view([-1]);
    let logits: Vec<f32> = Vec::<f32>::try_from(&logits)?;
    let params = SamplingParams {
        max_new_tokens: greedy_tokens,
        ..Default::default()
    };
    let out = generate(
        m,
        std::slice::from_ref(&ids),
        &params,
        &StopCriteria::default(),
        &|_| String::new(),
        &mut |_, _| {},
    )?;
    let greedy = out.first().map(|g| g.tokens.clone()).unwrap_or_default();
    println!("{}", json!({ "last_logits": logits, "greedy": greedy }));
    Ok(())
}

fn nll(bundle: &ModelBundle, file: &Path, n: usize) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // Tokenizing a prefix is enough (and fast): keep generous room beyond n tokens.
    let end = text
        .char_indices()
        .nth(n.saturating_mul(24).max(4000))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let ids: Vec<i64> = bundle
        .tokenizer
        .encode(&text[..end])?
        .into_iter()
        .take(n)
        .map(i64::from)
        .collect();
    let value = bundle.model.nll(&ids)?;
    println!("{}", json!({ "nll": value, "tokens": ids.len() }));
    Ok(())
}
