//! `swift infer`: chat with a model in the terminal, or run it over a dataset.
//!
//! * No `--val_dataset`: an interactive multi-turn chat (streamed answers, `/clear` forgets the
//!   conversation, `/exit` or end of input leaves; older turns are dropped to stay within
//!   `--max_length`).
//! * `--val_dataset SPEC --result_path FILE`: one JSON line per row (prompt messages, response,
//!   the reference answer when the row has one, token counts, and the token ids: `prompt_ids` as
//!   the model saw them, `response_ids` as generated, an ending EOS excluded as in `response`),
//!   `--max_batch_size` rows at a time.
//! * A reward model (`swift rlhf --rlhf_type rm` checkpoints) scores conversations instead:
//!   see [`crate::score`].
//!
//! Hidden diagnostics for the tests: `--debug_input_ids 1,2,3` prints the last position's
//! logits and a greedy continuation as JSON; `--nll_file FILE --nll_tokens N` prints the mean
//! negative log-likelihood of the file's first N tokens.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::cell::RefCell;
use std::sync::Arc;
use swift_data::{open_datasets, DatasetOptions};

use swift_model::{generate, FinishReason, SamplingParams, StopCriteria};
use swift_plugin_tensors::backend::{BackendModelHandle, Sampling};
use swift_plugin_tensors::{Message, StandardRow};
use swift_registry::Registries;
use swift_serve::batcher::{channel, rows_of, Decoder, EventKind, Job};
use swift_spec::InferSpec;
use swift_template::Encoder;

use crate::adapters::Adapters;
use crate::bundle::{ModelBundle, ModelText};
use swift_registry::PluginSettings;
use swift_serve::images::{ImagePrompt, PromptImages};

/// `swift infer`.
pub fn run(args: &InferSpec, plugins: &PluginSettings) -> Result<()> {
    // Adapters (swift sft checkpoints): model, template and plugin files from their args.json.
    if args.max_batch_size == 0 {
        bail!("--max_batch_size must be at least 1");
    }
    check_flags(args)?;
    let adapters = Adapters::resolve(args.model.model.as_deref(), &args.adapters)?;
    let report = adapters.with_plugins(plugins).load()?;
    let regs = &report.registries;
    let crate::backend::ForModel {
        chosen,
        template_name,
    } = crate::backend::for_model(
        regs,
        &args.backend,
        &args.model.device,
        &args.template,
        &adapters,
        &args.given,
    )?;
    let batch_rows = if args.val_dataset.is_empty() {
        1
    } else {
        args.max_batch_size
    };
    let (model, template, tokenizer, eos_ids, images) = if chosen.is_pt {
        // Merging LoRA needs float base weights; otherwise a GGUF's blocks stay packed.
        let load = if args.merge_lora {
            ModelBundle::load
        } else {
            ModelBundle::load_for_decoding
        };
        let mut bundle = load(
            &adapters.model,
            args.model.model_type.as_deref(),
            args.model.torch_dtype.as_deref(),
            &args.model.device,
            args.model.allow_unused_weights,
            regs,
        )?;
        adapters.check_base(&bundle, args.adapter_check.ignore_adapter_mismatch)?;
        adapters.attach(regs, &mut bundle.model, args.merge_lora)?;
        // A reward model (value head) scores instead of generating.
        if let Some(head) = crate::score::find_head(&bundle, &adapters.dirs)? {
            args.given
                .refuse(
                    &[
                        "max_new_tokens",
                        "temperature",
                        "top_k",
                        "top_p",
                        "repetition_penalty",
                        "seed",
                        "stop_words",
                        "stream",
                    ],
                    "to a reward model (it scores instead of generating)",
                )
                .map_err(anyhow::Error::msg)?;
            let template = bundle.template(regs, template_name.as_deref())?;
            return crate::score::run(args, bundle, template, head, regs);
        }
        if let Some(ids) = &args.debug_input_ids {
            let side = crate::images::prompt_images(&bundle, args.image.max_pixels, &args.given)?;
            return debug_logits(&bundle, ids, args.debug_greedy_tokens, &args.images, side);
        }
        if let Some(file) = &args.nll_file {
            return nll(&bundle, file, args.nll_tokens);
        }
        let template = bundle.template(regs, template_name.as_deref())?;
        let vocab = vocab_size(&bundle.config);
        let description = format!("{} ({}) on libtorch", bundle.dir.display(), bundle.family);
        let images = crate::images::prompt_images(&bundle, args.image.max_pixels, &args.given)?;
        let pt = swift_serve::pt::PtModel::new(bundle.model, None, vocab, description);
        let model = BackendModelHandle::from_model(Box::new(pt)).map_err(anyhow::Error::msg)?;
        (model, template, bundle.tokenizer, bundle.eos_ids, images)
    } else {
        let n = &chosen.record.name;
        args.given
            .refuse(
                &[
                    "debug_input_ids",
                    "nll_file",
                    "allow_unused_weights",
                    "merge_lora",
                ],
                &format!("to --infer_backend {n} (libtorch diagnostics: use --infer_backend pt)"),
            )
            .map_err(anyhow::Error::msg)?;
        args.given
            .refuse(
                &["max_pixels"],
                &format!("to --infer_backend {n}, which takes no images"),
            )
            .map_err(anyhow::Error::msg)?;
        let max_len = args.max_length.unwrap_or(0) + args.generation.max_new_tokens;
        let p = plugin_model(
            regs,
            &chosen,
            &adapters,
            &args.model,
            args.adapter_check.ignore_adapter_mismatch,
            template_name.as_deref(),
            batch_rows,
            max_len,
        )?;
        let images = Err(format!("--infer_backend {n} does not take images"));
        (p.model, p.template, p.tokenizer, p.eos_ids, images)
    };
    let mut stop_words = template.stop_words.clone();
    stop_words.extend(args.generation.stop_words.iter().cloned());
    let options = crate::bundle::prompt_options(&args.template);
    let encoder = Arc::new(Encoder::new(template, tokenizer, options)?);
    let params = sampling(&args.generation);
    let caps = &chosen.record.capabilities;
    caps.refuse(
        &Sampling {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            repetition_penalty: params.repetition_penalty,
            seed: params.seed,
        },
        false,
    )
    .map_err(|(p, m)| anyhow!("--{p}: {m}"))?;
    let adapter = (!chosen.is_pt && !adapters.dirs.is_empty()).then_some(0);
    let gen =
        Gen::new(model, caps, encoder, eos_ids, params, stop_words, adapter).with_images(images);
    if args.val_dataset.is_empty() {
        if args.result_path.is_some() {
            bail!("--result_path needs --val_dataset (without a dataset, swift infer is an interactive chat)");
        }
        return chat(&gen, args.max_length, args.generation.stream, &args.images);
    }
    if !args.images.is_empty() {
        bail!("--images goes with the interactive chat (its first question); with --val_dataset, give each row its `images` column");
    }
    let Some(result_path) = &args.result_path else {
        bail!("--val_dataset needs --result_path FILE (one JSON line per row is written there)");
    };
    batch(
        &gen,
        regs,
        &args.val_dataset,
        result_path,
        args.max_batch_size,
        args.max_length,
    )
}

/// A plugin backend's model (not `pt`) and what prompts and stops it.
pub(crate) struct PluginModel {
    pub model: BackendModelHandle,
    pub template: swift_template::Template,
    pub tokenizer: swift_template::Tokenizer,
    pub eos_ids: Vec<i64>,
}

/// Loads `adapters`' model (and its one checkpoint, checked against the base) on the plugin
/// backend `chosen`, for batches of `batch_rows` and sequences of `max_len` tokens (at least the
/// config's position limit): what `swift infer` and `swift eval` generate with.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plugin_model(
    regs: &Registries,
    chosen: &crate::backend::Chosen,
    adapters: &Adapters,
    model: &swift_spec::ModelArgs,
    ignore_adapter_mismatch: bool,
    template_name: Option<&str>,
    batch_rows: usize,
    max_len: usize,
) -> Result<PluginModel> {
    let n = &chosen.record.name;
    if adapters.dirs.len() > 1 {
        bail!("--adapters: --infer_backend {n} applies one adapter at a time; merge the others first (swift export --merge_lora true)");
    }
    let text = ModelText::open(&adapters.model, model.model_type.as_deref(), regs)?;
    for d in &adapters.dirs {
        crate::adapters::check_base(
            d,
            &text.dir,
            &text.family,
            &text.config,
            ignore_adapter_mismatch,
        )?;
    }
    let named: Vec<(String, std::path::PathBuf)> = adapters
        .dirs
        .iter()
        .map(|d| (d.display().to_string(), d.clone()))
        .collect();
    let handle = chosen.load(
        &text,
        &adapters.model,
        &model.device,
        model.torch_dtype.as_deref(),
        &named,
        batch_rows,
        max_len.max(config_len(&text.config).unwrap_or(max_len)),
    )?;
    let template = text.template(regs, template_name)?;
    Ok(PluginModel {
        model: handle,
        template,
        tokenizer: text.tokenizer,
        eos_ids: text.eos_ids,
    })
}

/// A config.json key, or the same key of its `text_config` (vision-language models keep the
/// language model's there).
fn config_key<'a>(config: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    config
        .get(key)
        .or_else(|| config.get("text_config").and_then(|t| t.get(key)))
}

/// config.json's `vocab_size`.
pub(crate) fn vocab_size(config: &serde_json::Value) -> usize {
    config_key(config, "vocab_size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize
}

/// config.json's position limit.
pub(crate) fn config_len(config: &serde_json::Value) -> Option<usize> {
    config_key(config, "max_position_embeddings")
        .or_else(|| config.get("n_positions"))
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize)
}

/// Refuses the flags that cannot apply to what `swift infer` was asked.
fn check_flags(args: &InferSpec) -> Result<()> {
    let g = &args.given;
    let msg = anyhow::Error::msg;
    if args.adapters.is_empty() {
        g.refuse(&["merge_lora"], "without --adapters")
            .map_err(msg)?;
    }
    if args.val_dataset.is_empty() {
        g.refuse(
            &["max_batch_size"],
            "to the interactive chat (it batches --val_dataset rows)",
        )
        .map_err(msg)?;
    } else {
        g.refuse(
            &["stream"],
            "with --val_dataset (it streams the interactive chat)",
        )
        .map_err(msg)?;
    }
    Ok(())
}

/// What generating needs, bundled: the backend's model behind the one generation loop (also
/// `swift eval`'s generation benchmarks: crate::eval).
pub(crate) struct Gen {
    decoder: RefCell<Decoder>,
    encoder: Arc<Encoder>,
    params: SamplingParams,
    stop_words: Vec<String>,
    /// The model's position limit.
    max_len: Option<usize>,
    /// The adapter every row uses (a plugin backend given `--adapters`).
    adapter: Option<usize>,
    /// A vision-language model's image side (`crate::images`), or why prompts cannot hold
    /// images (a text-only family, a backend without images).
    images: std::result::Result<PromptImages, String>,
}

/// One prompt's answer.
pub(crate) struct Answer {
    pub(crate) text: String,
    tokens: Vec<i64>,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish: FinishReason,
}

/// The sampling settings of the generation flags.
pub(crate) fn sampling(g: &swift_spec::GenerationArgs) -> SamplingParams {
    SamplingParams {
        max_new_tokens: g.max_new_tokens,
        temperature: g.temperature,
        top_k: g.top_k,
        top_p: g.top_p,
        repetition_penalty: g.repetition_penalty,
        seed: g.seed,
    }
}

impl Gen {
    /// The generation loop over `model` (the backend's, with its capabilities `caps`).
    pub(crate) fn new(
        model: BackendModelHandle,
        caps: &swift_plugin_tensors::backend::Capabilities,
        encoder: Arc<Encoder>,
        eos_ids: Vec<i64>,
        params: SamplingParams,
        stop_words: Vec<String>,
        adapter: Option<usize>,
    ) -> Self {
        let max_len = model.info().max_len;
        Gen {
            decoder: RefCell::new(Decoder::new(model, caps, encoder.clone(), eos_ids)),
            encoder,
            params,
            stop_words,
            max_len,
            adapter,
            images: Err("this model reads no images".into()),
        }
    }

    /// Prompts with images go through `images`; `Err` says why they are refused.
    pub(crate) fn with_images(mut self, images: std::result::Result<PromptImages, String>) -> Self {
        self.images = images;
        self
    }

    /// `row`'s prompt: its token ids and images (`base`: where relative image paths start).
    pub(crate) fn prompt(&self, row: &StandardRow, base: Option<&Path>) -> Result<ImagePrompt> {
        if row.images.is_empty() {
            return Ok(ImagePrompt {
                ids: self.prompt_ids(row)?,
                images: Vec::new(),
            });
        }
        match &self.images {
            Ok(images) => images
                .encode(&self.encoder, row, base)
                .map_err(anyhow::Error::msg),
            Err(why) => bail!("the prompt holds images, but {why}"),
        }
    }

    pub(crate) fn prompt_ids(&self, row: &StandardRow) -> Result<Vec<i64>> {
        let enc = self
            .encoder
            .encode(row)?
            .ok_or_else(|| anyhow!("the prompt could not be encoded"))?;
        Ok(enc.input_ids.iter().map(|&i| i as i64).collect())
    }

    /// Generates for every prompt together; `on_delta(row, text)` sees streamed text and
    /// `on_first` the end of the first step (the prefill).
    pub(crate) fn generate(
        &self,
        prompts: &[Vec<i64>],
        on_delta: &mut dyn FnMut(usize, &str),
        on_first: &mut dyn FnMut(),
    ) -> Result<Vec<Answer>> {
        let prompts: Vec<ImagePrompt> = prompts
            .iter()
            .map(|ids| ImagePrompt {
                ids: ids.clone(),
                images: Vec::new(),
            })
            .collect();
        self.generate_prompts(&prompts, on_delta, on_first)
    }

    /// [`Gen::generate`] over prompts that may hold images.
    pub(crate) fn generate_prompts(
        &self,
        prompts: &[ImagePrompt],
        on_delta: &mut dyn FnMut(usize, &str),
        on_first: &mut dyn FnMut(),
    ) -> Result<Vec<Answer>> {
        let mut receivers = Vec::new();
        let mut joining = Vec::new();
        let mut answers: Vec<Option<Answer>> = Vec::new();
        for (i, prompt) in prompts.iter().enumerate() {
            let p = &prompt.ids;
            if p.is_empty() {
                bail!("prompt {i} has no tokens");
            }
            let mut params = self.params.clone();
            // Models with a bounded position table stop where it ends (finish reason `length`).
            if let Some(max) = self.max_len {
                if p.len() >= max {
                    bail!(
                        "a prompt of {} tokens does not fit the model's {max} positions",
                        p.len()
                    );
                }
                params.max_new_tokens = params.max_new_tokens.min(max - p.len());
            }
            if params.max_new_tokens == 0 {
                answers.push(Some(Answer {
                    text: String::new(),
                    tokens: Vec::new(),
                    prompt_tokens: p.len(),
                    completion_tokens: 0,
                    finish: FinishReason::Length,
                }));
                receivers.push(None);
                continue;
            }
            answers.push(None);
            let (tx, rx) = channel();
            receivers.push(Some(rx));
            joining.extend(rows_of(Job {
                prompt: p.clone(),
                adapter: self.adapter,
                choices: 1,
                params,
                stop_words: self.stop_words.clone(),
                ignore_eos: false,
                logprobs: None,
                images: Arc::new(prompt.images.clone()),
                events: tx,
            }));
        }
        let mut decoder = self.decoder.borrow_mut();
        let mut first = true;
        while first || decoder.running() > 0 {
            decoder.step(std::mem::take(&mut joining))?;
            if first {
                on_first();
                first = false;
            }
            for (i, rx) in receivers.iter_mut().enumerate() {
                let Some(rx) = rx else { continue };
                while let Ok(ev) = rx.try_recv() {
                    match ev.kind {
                        EventKind::Delta { text, .. } => on_delta(i, &text),
                        EventKind::Done {
                            rest,
                            text,
                            tokens,
                            finish,
                            prompt_tokens,
                            completion_tokens,
                        } => {
                            on_delta(i, &rest);
                            answers[i] = Some(Answer {
                                text,
                                tokens,
                                prompt_tokens,
                                completion_tokens,
                                finish,
                            });
                        }
                        EventKind::Failed(e) => bail!("generating: {e}"),
                    }
                }
            }
        }
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.ok_or_else(|| anyhow!("row {i} ended without an answer")))
            .collect()
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
    let mut pending: Vec<(Vec<Message>, Option<String>, ImagePrompt)> = Vec::new();
    let mut flush = |pending: &mut Vec<(Vec<Message>, Option<String>, ImagePrompt)>,
                     w: &mut BufWriter<std::fs::File>|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        #[allow(clippy::type_complexity)]
        let (meta, prompts): (
            Vec<(Vec<Message>, Option<String>, Vec<i64>)>,
            Vec<ImagePrompt>,
        ) = pending
            .drain(..)
            .map(|(m, r, p)| ((m, r, p.ids.clone()), p))
            .unzip();
        let t0 = Instant::now();
        let mut first: Option<f64> = None;
        let results = gen.generate_prompts(&prompts, &mut |_, _| {}, &mut || {
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        })?;
        let total = t0.elapsed().as_secs_f64();
        let ttft = first.unwrap_or(total);
        prefill_s += ttft;
        ttfts.push(ttft);
        decode_s += total - ttft;
        batches += 1;
        for ((messages, reference, prompt_ids), r) in meta.into_iter().zip(results) {
            prompt_tokens += r.prompt_tokens;
            generated += r.completion_tokens;
            rows += 1;
            let line = json!({
                "messages": messages,
                "response": r.text,
                "labels": reference,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "finish_reason": r.finish.as_openai(),
                "prompt_ids": prompt_ids,
                "response_ids": r.tokens,
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
            images: item.row.images.clone(),
            ..Default::default()
        };
        let mut prompt = gen
            .prompt(&row, item.file.parent())
            .with_context(|| format!("row at {}:{}", item.file.display(), item.line))?;
        if let Some(max) = max_length {
            if prompt.ids.len() > max {
                if !prompt.images.is_empty() {
                    bail!(
                        "row at {}:{}: its prompt takes {} tokens with its images' positions, more than --max_length {max} (cutting it would cut an image)",
                        item.file.display(),
                        item.line,
                        prompt.ids.len()
                    );
                }
                prompt.ids.drain(..prompt.ids.len() - max);
            }
        }
        pending.push((messages, reference, prompt));
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

fn chat(gen: &Gen, max_length: Option<usize>, stream: bool, images: &[String]) -> Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut history: Vec<Message> = Vec::new();
    let mut first_query = String::new();
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
        if history.len() == 1 {
            first_query = query.to_string();
        }
        // --images belong to the conversation's first question (until /clear).
        let row = |history: &[Message]| StandardRow {
            messages: history.to_vec(),
            images: if history.first().map(|m| m.content.as_str()) == Some(first_query.as_str()) {
                images.to_vec()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let mut prompt = gen.prompt(&row(&history), None)?;
        if let Some(max) = max_length {
            // Drop the oldest rounds until the prompt fits.
            while prompt.ids.len() > max && history.len() > 1 {
                let cut = history
                    .iter()
                    .skip(1)
                    .position(|m| m.role == "user")
                    .map(|i| i + 1)
                    .unwrap_or(history.len() - 1);
                history.drain(..cut);
                prompt = gen.prompt(&row(&history), None)?;
            }
            if prompt.ids.len() > max {
                if !prompt.images.is_empty() {
                    bail!("the prompt takes {} tokens with its images' positions, more than --max_length {max}", prompt.ids.len());
                }
                prompt.ids.drain(..prompt.ids.len() - max);
            }
        }
        write!(stdout, ">>> ")?;
        stdout.flush()?;
        let mut on_delta = |_: usize, text: &str| {
            if stream && !text.is_empty() {
                let _ = write!(std::io::stdout(), "{text}");
                let _ = std::io::stdout().flush();
            }
        };
        let result = gen.generate_prompts(&[prompt], &mut on_delta, &mut || {})?;
        let answer = result
            .into_iter()
            .next()
            .map(|r| r.text)
            .unwrap_or_default();
        if !stream {
            write!(stdout, "{answer}")?;
        }
        writeln!(stdout)?;
        history.push(Message::new("assistant", answer));
    }
    Ok(())
}

/// `--debug_input_ids`: the last position's logits and a greedy continuation, with `--images`
/// (processed by the model's image processor) over the ids' placeholders when given.
fn debug_logits(
    bundle: &ModelBundle,
    ids: &str,
    greedy_tokens: usize,
    images: &[String],
    side: std::result::Result<PromptImages, String>,
) -> Result<()> {
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
    let batch = if images.is_empty() {
        None
    } else {
        let side = side.map_err(|why| anyhow!("--images: {why}"))?;
        let processed = side
            .process(images, None)
            .map_err(|e| anyhow!("--images: {e}"))?;
        let inputs: Vec<_> = processed.iter().map(|p| &p.input).collect();
        swift_serve::pt::images_as_batch(&inputs)?
    };
    let x = tch::Tensor::from_slice(&ids).view([1, -1]);
    let hidden = m.forward_with_images(&x, None, &mut cache, batch.as_ref())?;
    let last = m.logits(&hidden.select(1, -1))?.to_device(tch::Device::Cpu);
    let logits: Vec<f32> = Vec::<f32>::try_from(&last.view([-1]))?;
    let greedy = if batch.is_none() {
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
        out.first().map(|g| g.tokens.clone()).unwrap_or_default()
    } else {
        // Decoding steps through the cache, which keeps the prompt's rope delta.
        let mut tokens = Vec::with_capacity(greedy_tokens);
        let mut next = i64::try_from(last.view([-1]).argmax(0, false))?;
        while tokens.len() < greedy_tokens {
            tokens.push(next);
            let h = m.forward(
                &tch::Tensor::from_slice(&[next]).view([1, 1]),
                None,
                &mut cache,
            )?;
            next = i64::try_from(m.logits(&h)?.view([-1]).argmax(0, false))?;
        }
        tokens
    };
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
