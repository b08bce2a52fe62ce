//! `swift eval`: benchmarks (`--eval_dataset NAME|PATH`, swift-eval resolves and reads them) on
//! the host's model or its `--adapters`, a progress bar, a table at the end, and a run folder
//! (`v<N>-<timestamp>/` under `--output_dir`, as training runs have) holding `args.json`,
//! `report.json` (every benchmark's metrics) and `predictions/<benchmark>.jsonl` (one line per
//! scored row: prompt, prediction, reference, score).
//!
//! Generation benchmarks (`general_qa` rows; multiple choice or math answered in words) run
//! through the backend contract's generation loop, as `swift infer` does (crate::generate's
//! `Gen` over swift-serve's `Decoder`; `pt`, or a plugin's backend by `--infer_backend`), on
//! the model's chat template, and are scored by
//! swift-eval's metrics (ROUGE, BLEU, exact match of an extracted letter or number).
//!
//! Multiple choice is scored by log-likelihood as lm-evaluation-harness scores it
//! (swift-eval's `prompt` and `metrics`): every choice's continuation tokens summed after the
//! context, which needs every position's logits, so only `pt` runs it. The prompt's shared
//! part (the header and the few-shot examples) is computed once, as far as every question's
//! tokens share it (a BPE tokenizer may split its trailing "\n\n" differently once a question
//! follows); a question sharing less than half of it is computed whole. Questions are laid end
//! to end, longest first, in passes of a few hundred tokens that attend block-causally to the
//! cached prefix and to themselves (no padding, no copy of the prefix per question), spread over
//! libtorch's thread count of threads of one libtorch thread each (`eval_passes`); the
//! vocabulary projection runs only at the continuation's positions.
//!
//! Tool-calling benchmarks are generated with the row's tools offered (a local answer's calls
//! read as the server reads them) and scored by swift-eval's `agent` (EvalScope's `tool_bench`).
//!
//! With `--eval_url` nothing is loaded: swift-eval's `remote` asks the server, generation through
//! its chat completions (tools included) and log-likelihoods through the prompt log-probabilities
//! of `echo` on its completions, several requests in flight; the scoring, report and run folder
//! are the same code as for a local model.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use swift_eval::metrics::mcq_predictions;
use swift_eval::prompt::{
    cached_prefix_len, choices, encode_pair, question_text, shared_len, shared_prefix,
};
use swift_eval::remote::{parallel, GenerationSettings, Remote, RemoteError};
use swift_eval::rows::{EvalRow, McqRow, LETTERS};
use swift_eval::Benchmark;
use swift_model::LoadedModel;
use swift_plugin_tensors::records::BenchmarkScoring;
use swift_plugin_tensors::{FunctionCall, Message, StandardRow, ToolCall};
use swift_registry::PluginSettings;
use swift_spec::EvalSpec;
use swift_template::Tokenizer;
use swift_train::RunDir;
use tch::Tensor;

use crate::adapters::Adapters;
use crate::bundle::ModelBundle;

/// Rows generated together (generation benchmarks).
const BATCH: usize = 8;

/// A benchmark to run: its record and file, its few-shot count, its rows with their lines.
pub(crate) type LoadedBenchmark = (Benchmark, usize, Vec<(u64, EvalRow)>);

/// `swift eval`.
pub fn run(args: &EvalSpec, plugins: &PluginSettings) -> Result<()> {
    if args.eval.eval_dataset.is_empty() {
        bail!("--eval_dataset is required: a benchmark name (`swift list benchmarks`) or a custom .csv (mcq) / .jsonl (general_qa) file");
    }
    let g = &args.given;
    let remote = match &args.remote.eval_url {
        Some(url) => {
            g.refuse(
                &[
                    "model",
                    "adapters",
                    "model_type",
                    "torch_dtype",
                    "device",
                    "allow_unused_weights",
                    "ignore_adapter_mismatch",
                    "infer_backend",
                    "template",
                    "system",
                    "enable_thinking",
                ],
                "with --eval_url (the server's model, template and backend are evaluated)",
            )
            .map_err(anyhow::Error::msg)?;
            Some(Remote::connect(url, args.api.api_key.as_deref())?)
        }
        None => {
            g.refuse(&["api_key"], "without --eval_url (it is sent to a server)")
                .map_err(anyhow::Error::msg)?;
            None
        }
    };
    let adapters = match &remote {
        Some(_) => None,
        None => Some(Adapters::resolve(
            args.model.model.as_deref(),
            &args.adapters,
        )?),
    };
    let report = match &adapters {
        Some(a) => a.with_plugins(plugins).load()?,
        None => plugins.load()?,
    };
    let regs = &report.registries;
    let asset_dir = swift_data::DatasetOptions::default().asset_dir();
    let mut benches = Vec::new();
    // Per benchmark: the rows its format leaves out (ASDiv's answers that are not a number).
    let mut excluded: Vec<Vec<(u64, String)>> = Vec::new();
    for spec in &args.eval.eval_dataset {
        let b = Benchmark::resolve(spec, regs, &asset_dir)?;
        let few = b.few_shot(
            args.eval
                .eval_few_shot
                .map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
        )?;
        let (rows, left_out) = swift_eval::rows::read_all(&b.file, b.record.format)?;
        if !left_out.is_empty() {
            tracing::info!(
                "benchmark `{}`: {} rows left out ({}:{}: {}, ...)",
                b.record.name,
                left_out.len(),
                b.file.display(),
                left_out[0].0,
                left_out[0].1
            );
        }
        let holdout = b.record.holdout as usize;
        if rows.len() <= holdout {
            bail!(
                "{}: {} rows, all of them in benchmark `{}`'s held-out few-shot pool ({holdout})",
                b.file.display(),
                rows.len(),
                b.record.name
            );
        }
        if benches
            .iter()
            .any(|(o, _, _): &(Benchmark, usize, Vec<_>)| o.record.name == b.record.name)
        {
            bail!(
                "--eval_dataset names benchmark `{}` twice (its predictions file would be written twice)",
                b.record.name
            );
        }
        benches.push((b, few as usize, rows));
        excluded.push(left_out);
    }
    let generates = |b: &Benchmark| b.record.scoring != BenchmarkScoring::Loglikelihood;
    // Log-likelihood benchmarks need `pt`: refused before a named backend is even resolved (an
    // unknown or unloaded backend would otherwise hide the reason), and again once resolved.
    let refuse_loglikelihood = |is_pt: bool| -> Result<()> {
        for (b, _, _) in &benches {
            if !is_pt && !generates(b) {
                bail!(
                    "--infer_backend {}: benchmark `{}` scores each choice by its log-likelihood, which needs every position's logits; only `pt` gives them (leave --infer_backend out, or evaluate generation benchmarks only)",
                    args.backend.infer_backend,
                    b.record.name
                );
            }
        }
        Ok(())
    };
    refuse_loglikelihood(args.backend.infer_backend == "pt")?;
    // The backend a local model generates with (`--infer_backend`, resolved and checked).
    let backend = match &adapters {
        Some(a) => Some(crate::backend::for_model(
            regs,
            &args.backend,
            &args.model.device,
            &args.template,
            a,
            &args.given,
        )?),
        None => None,
    };
    let is_pt = backend.as_ref().is_none_or(|f| f.chosen.is_pt);
    refuse_loglikelihood(is_pt)?;
    g.refuse(&["stream"], "to swift eval (answers are scored, not shown)")
        .map_err(anyhow::Error::msg)?;
    if !benches.iter().any(|(b, _, _)| generates(b)) {
        g.refuse(
            &[
                "max_new_tokens",
                "temperature",
                "top_k",
                "top_p",
                "repetition_penalty",
                "seed",
                "stop_words",
                "template",
                "system",
                "enable_thinking",
            ],
            "to multiple-choice benchmarks (scored by log-likelihood on a plain-text prompt, nothing is generated)",
        )
        .map_err(anyhow::Error::msg)?;
    }

    // The model: loaded here, or the server's.
    let mut local = match &adapters {
        Some(adapters) if is_pt => {
            let mut bundle = ModelBundle::load(
                &adapters.model,
                args.model.model_type.as_deref(),
                args.model.torch_dtype.as_deref(),
                &args.model.device,
                args.model.allow_unused_weights,
                regs,
            )?;
            adapters.check_base(&bundle, args.adapter_check.ignore_adapter_mismatch)?;
            adapters.attach(regs, &mut bundle.model, false)?;
            Some(bundle)
        }
        _ => None,
    };

    let label = match (&adapters, &remote) {
        (Some(a), _) => a
            .model
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
        (None, Some(r)) => r.model.replace(['/', '\\'], "_"),
        (None, None) => "model".into(),
    };
    let parent = match &args.output_dir {
        Some(d) => d.clone(),
        None => Path::new("output").join("eval").join(&label),
    };
    let mut run = RunDir::open(&parent, true, false)?;
    let mut args_json = serde_json::to_value(args)?;
    args_json["command"] = json!("eval");
    if let Some(k) = args_json.get_mut("api_key") {
        if !k.is_null() {
            *k = json!("<given>");
        }
    }
    match (&adapters, &local, &remote) {
        (Some(a), Some(bundle), _) => {
            args_json["model"] = json!(std::fs::canonicalize(&a.model).unwrap_or(a.model.clone()));
            args_json["model_type"] = json!(bundle.family);
            args_json["torch_dtype"] = json!(swift_model::dtype_name(bundle.model.kind()));
        }
        (Some(a), None, _) => {
            args_json["model"] = json!(std::fs::canonicalize(&a.model).unwrap_or(a.model.clone()));
        }
        (_, _, Some(r)) => {
            args_json["model"] = json!(r.model);
            args_json["eval_url"] = json!(r.url);
        }
        _ => {}
    }
    args_json["plugins"] = serde_json::to_value(&report.plugins)?;
    run.write_args(&args_json)?;
    eprintln!("run folder: {}", run.path().display());
    let pred_dir = run.path().join("predictions");
    std::fs::create_dir_all(&pred_dir)
        .with_context(|| format!("creating {}", pred_dir.display()))?;

    let mut results: Vec<(usize, Value)> = Vec::new();
    for (index, (b, few, rows)) in benches.iter().enumerate() {
        if generates(b) {
            continue;
        }
        let result = match (&local, &remote) {
            (Some(bundle), _) => score_mcq(
                b,
                *few,
                rows,
                args.eval.eval_limit,
                run.path(),
                &pred_dir,
                &mut |prefix, scored, bar| {
                    let more = || {
                        crate::eval_passes::another(regs, bundle, args.model.model_type.as_deref())
                    };
                    loglikelihoods(
                        &bundle.model,
                        Some(&more),
                        &bundle.tokenizer,
                        prefix,
                        scored,
                        bar,
                    )
                },
            )?,
            (None, Some(r)) => score_mcq(
                b,
                *few,
                rows,
                args.eval.eval_limit,
                run.path(),
                &pred_dir,
                &mut |prefix, scored, bar| {
                    remote_loglikelihoods(r, &b.record.name, prefix, scored, bar)
                },
            )?,
            (None, None) => bail!("no model to evaluate"),
        };
        run.log(&result)?;
        results.push((index, result));
    }
    // Generation benchmarks last: a local model moves into the backend's generation loop.
    let gen_benches: Vec<(usize, &LoadedBenchmark)> = benches
        .iter()
        .enumerate()
        .filter(|(_, b)| generates(&b.0))
        .collect();
    if !gen_benches.is_empty() {
        let mut answer: Box<AnswerFn<'_>> = match (backend, &remote, &adapters) {
            (Some(backend), _, Some(adapters)) => local_answers(local_generator(
                args,
                regs,
                adapters,
                backend,
                local.take(),
            )?),
            (None, Some(r), _) => {
                let settings = GenerationSettings {
                    max_tokens: args.generation.max_new_tokens,
                    temperature: args.generation.temperature,
                    top_p: args.generation.top_p,
                    top_k: args.generation.top_k,
                    repetition_penalty: args.generation.repetition_penalty,
                    seed: args.generation.seed,
                    stop: args.generation.stop_words.clone(),
                };
                Box::new(move |chunk: &[(u64, StandardRow)], _: &Path| {
                    let ask = |i: usize| {
                        let row = &chunk[i].1;
                        let messages: Vec<Value> =
                            row.messages.iter().map(openai_message).collect();
                        r.chat(&Value::Array(messages), row.tools.as_deref(), &settings)
                    };
                    Ok(parallel(chunk.len(), &ask, &|| {})?)
                })
            }
            _ => bail!("no model to evaluate"),
        };
        for (index, (b, _, rows)) in gen_benches {
            let result = score_generation(
                &mut *answer,
                b,
                rows,
                args.eval.eval_limit,
                &excluded[index],
                run.path(),
                &pred_dir,
            )?;
            run.log(&result)?;
            results.push((index, result));
        }
    }
    results.sort_by_key(|r| r.0);
    let results: Vec<Value> = results.into_iter().map(|r| r.1).collect();
    let report_json = json!({
        "model": args_json["model"],
        "eval_url": remote.as_ref().map(|r| r.url.clone()),
        "adapters": adapters.as_ref().map(|a| a.dirs.clone()).unwrap_or_default(),
        "benchmarks": results,
    });
    let path = report_path(run.path());
    std::fs::write(&path, serde_json::to_string_pretty(&report_json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print_table(&results);
    eprintln!("run folder: {}", run.path().display());
    Ok(())
}

/// The generation loop over a local model (the backend contract's, as `swift infer`): `bundle`
/// on `pt`, or the model loaded by a plugin's backend.
fn local_generator(
    args: &EvalSpec,
    regs: &swift_registry::Registries,
    adapters: &Adapters,
    backend: crate::backend::ForModel,
    bundle: Option<ModelBundle>,
) -> Result<crate::generate::Gen> {
    let crate::backend::ForModel {
        chosen,
        template_name,
    } = backend;
    let caps = &chosen.record.capabilities;
    let (model, template, tokenizer, eos_ids) = match bundle {
        Some(bundle) => {
            let template = bundle.template(regs, template_name.as_deref())?;
            let vocab = crate::generate::vocab_size(&bundle.config);
            let description = format!("{} ({}) on libtorch", bundle.dir.display(), bundle.family);
            let pt = swift_serve::pt::PtModel::new(bundle.model, None, vocab, description);
            let model = swift_plugin_tensors::backend::BackendModelHandle::from_model(Box::new(pt))
                .map_err(anyhow::Error::msg)?;
            (model, template, bundle.tokenizer, bundle.eos_ids)
        }
        None => {
            let rows = match caps.max_batch {
                0 => BATCH,
                n => BATCH.min(n),
            };
            let p = crate::generate::plugin_model(
                regs,
                &chosen,
                adapters,
                &args.model,
                args.adapter_check.ignore_adapter_mismatch,
                template_name.as_deref(),
                rows,
                args.generation.max_new_tokens,
            )?;
            (p.model, p.template, p.tokenizer, p.eos_ids)
        }
    };
    let mut stop_words = template.stop_words.clone();
    stop_words.extend(args.generation.stop_words.iter().cloned());
    let encoder = std::sync::Arc::new(swift_template::Encoder::new(
        template,
        tokenizer,
        crate::bundle::prompt_options(&args.template),
    )?);
    let params = crate::generate::sampling(&args.generation);
    caps.refuse(
        &swift_plugin_tensors::backend::Sampling {
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
    Ok(crate::generate::Gen::new(
        model, caps, encoder, eos_ids, params, stop_words, adapter,
    ))
}

/// Answers through a local generation loop: the rows' prompts on its chat template, generated
/// together; a row that offers tools has its answer's calls read as the server reads them.
pub(crate) fn local_answers<'a>(gen: crate::generate::Gen) -> Box<AnswerFn<'a>> {
    Box::new(move |chunk: &[(u64, StandardRow)], file: &Path| {
        let mut prompts = Vec::new();
        for (line, row) in chunk {
            prompts.push(
                gen.prompt_ids(row)
                    .with_context(|| format!("{}:{line}", file.display()))?,
            );
        }
        let answers = gen.generate(&prompts, &mut |_, _| {}, &mut || {})?;
        Ok(answers
            .into_iter()
            .zip(chunk)
            .map(|(a, (_, row))| match row.tools {
                Some(_) => parsed_calls(a.text),
                None => (a.text, Vec::new()),
            })
            .collect())
    })
}

/// What scores a batch of multiple-choice rows: the log-likelihood of each choice after the
/// shared prefix and the question.
pub(crate) type LoglikelihoodFn<'a> =
    dyn FnMut(&str, &[(u64, McqRow)], &indicatif::ProgressBar) -> Result<Vec<Vec<f64>>> + 'a;

/// Scores a multiple-choice benchmark (acc, acc_norm) from the log-likelihoods `lls` gives;
/// writes its predictions file and returns its result.
pub(crate) fn score_mcq(
    b: &Benchmark,
    few: usize,
    rows: &[(u64, EvalRow)],
    limit: Option<usize>,
    run_path: &Path,
    pred_dir: &Path,
    lls_of: &mut LoglikelihoodFn<'_>,
) -> Result<Value> {
    let started = Instant::now();
    let holdout = b.record.holdout as usize;
    let mcq = |r: &(u64, EvalRow)| -> Result<McqRow> {
        match &r.1 {
            EvalRow::Mcq(m) => Ok(m.clone()),
            _ => Err(anyhow!(
                "{}:{}: not a multiple-choice row",
                b.file.display(),
                r.0
            )),
        }
    };
    let shots: Vec<McqRow> = rows[..few].iter().map(mcq).collect::<Result<_>>()?;
    let scored: Vec<(u64, McqRow)> = rows[holdout..]
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|r| mcq(r).map(|m| (r.0, m)))
        .collect::<Result<_>>()?;
    let prefix = shared_prefix(&b.record.header, &shots);
    let bar = crate::train::progress_bar(&b.record.name);
    bar.set_length(scored.len() as u64);
    let lls = lls_of(&prefix, &scored, &bar)?;
    bar.finish_and_clear();
    let file = pred_dir.join(format!("{}.jsonl", b.record.name));
    let mut w = BufWriter::new(
        std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?,
    );
    let (mut acc, mut acc_norm) = (0usize, 0usize);
    for ((line, row), ll) in scored.iter().zip(&lls) {
        let strings: Vec<String> = choices(row).into_iter().map(|c| c.1).collect();
        let (pred, pred_norm) = mcq_predictions(ll, &strings);
        let (a, an) = (
            usize::from(pred == row.answer),
            usize::from(pred_norm == row.answer),
        );
        acc += a;
        acc_norm += an;
        let line_json = json!({
            "line": line,
            "prompt": format!("{prefix}{}", question_text(row)),
            "choices": strings,
            "loglikelihoods": ll,
            "prediction": LETTERS[pred],
            "prediction_norm": LETTERS[pred_norm],
            "reference": LETTERS[row.answer],
            "score": {"acc": a, "acc_norm": an},
        });
        serde_json::to_writer(&mut w, &line_json)?;
        writeln!(w)?;
    }
    w.flush()?;
    let n = scored.len().max(1) as f64;
    let mut metrics = serde_json::Map::new();
    for m in &b.record.metrics {
        let v = match m.as_str() {
            "acc" => acc as f64 / n,
            "acc_norm" => acc_norm as f64 / n,
            other => bail!(
                "benchmark `{}`: metric `{other}` is not computed by log-likelihood scoring",
                b.record.name
            ),
        };
        metrics.insert(m.clone(), json!(v));
    }
    Ok(json!({
        "name": b.record.name,
        "file": b.file,
        "format": swift_eval::bench::format_name(b.record.format),
        "scoring": b.record.scoring,
        "few_shot": few,
        "few_shot_lines": rows[..few].iter().map(|r| r.0).collect::<Vec<_>>(),
        "held_out": holdout,
        "rows": scored.len(),
        "first_line": scored.first().map(|r| r.0),
        "metrics": metrics,
        "predictions": file.strip_prefix(run_path).unwrap_or(&file),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// The log-likelihood of every choice of every question from a server's prompt
/// log-probabilities (swift-eval's `remote`); a server without them is refused naming the
/// benchmark.
fn remote_loglikelihoods(
    r: &Remote,
    name: &str,
    prefix: &str,
    rows: &[(u64, McqRow)],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Vec<f64>>> {
    let requests: Vec<(usize, String, String)> = rows
        .iter()
        .enumerate()
        .flat_map(|(q, (_, row))| {
            let context = format!("{prefix}{}", question_text(row));
            choices(row)
                .into_iter()
                .map(move |(cont, _)| (q, context.clone(), cont))
        })
        .collect();
    let lls = parallel(
        requests.len(),
        &|i| r.loglikelihood(&requests[i].1, &requests[i].2),
        &|| {},
    )
    .map_err(|e| match e {
        RemoteError::Status { status: 400, .. } | RemoteError::Shape { .. } => anyhow!(
            "benchmark `{name}` scores each choice by its log-likelihood, which needs the prompt log-probabilities of /v1/completions with `echo` and `logprobs` (as OpenAI's legacy API and vLLM give them); this server does not give them: {e}"
        ),
        other => anyhow!(other),
    })?;
    let mut out: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| Vec::with_capacity(r.1.choices.len()))
        .collect();
    for ((q, _, _), ll) in requests.iter().zip(lls) {
        out[*q].push(ll);
    }
    bar.inc(rows.len() as u64);
    Ok(out)
}

/// Scores a generation benchmark (its rows after the held-out ones, the first `limit`) with the
/// answers `answer` gives; writes its predictions file and returns its result. `left_out`: the
/// rows its format leaves out.
pub(crate) fn score_generation(
    answer: &mut AnswerFn<'_>,
    b: &Benchmark,
    rows: &[(u64, EvalRow)],
    limit: Option<usize>,
    left_out: &[(u64, String)],
    run_path: &Path,
    pred_dir: &Path,
) -> Result<Value> {
    let started = Instant::now();
    let scored: Vec<&(u64, EvalRow)> = rows[b.record.holdout as usize..]
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let file = pred_dir.join(format!("{}.jsonl", b.record.name));
    let metrics = generate_and_score(answer, b, &scored, &file)?;
    Ok(json!({
        "name": b.record.name,
        "file": b.file,
        "format": swift_eval::bench::format_name(b.record.format),
        "scoring": b.record.scoring,
        "few_shot": 0,
        "held_out": b.record.holdout,
        "rows": scored.len(),
        "first_line": scored.first().map(|r| r.0),
        "left_out_rows": left_out.len(),
        "left_out_lines": left_out.iter().map(|e| e.0).collect::<Vec<_>>(),
        "metrics": metrics,
        "predictions": file.strip_prefix(run_path).unwrap_or(&file),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Generates an answer to every row (`BATCH` rows at a time, through `answer`: a local model's
/// chat template or a server's) and scores it: ROUGE-1/2/L F1 (mean over rows) and corpus
/// BLEU-4, or exact match of an extracted letter or number. Writes one predictions line per
/// row; returns the record's metrics.
fn generate_and_score(
    answer: &mut AnswerFn<'_>,
    b: &Benchmark,
    rows: &[&(u64, EvalRow)],
    file: &Path,
) -> Result<serde_json::Map<String, Value>> {
    use swift_eval::metrics::{corpus_bleu, extract_letter, extract_number, rouge_l, rouge_n};
    let bar = crate::train::progress_bar(&b.record.name);
    bar.set_length(rows.len() as u64);
    let mut w = BufWriter::new(
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
    );
    let (mut predictions, mut references) = (Vec::new(), Vec::new());
    let mut sums: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut tool_samples = Vec::new();
    for chunk in rows.chunks(BATCH) {
        let mut asked = Vec::new();
        let mut texts = Vec::new();
        for (line, row) in chunk.iter().map(|r| (&r.0, &r.1)) {
            let mut tools = None;
            let (messages, reference) = match row {
                EvalRow::Qa(q) => {
                    let mut m = Vec::new();
                    for (u, a) in &q.history {
                        m.push(Message::new("user", u.clone()));
                        m.push(Message::new("assistant", a.clone()));
                    }
                    m.push(Message::new("user", q.query.clone()));
                    (m, q.response.clone())
                }
                EvalRow::Mcq(m) => (
                    vec![Message::new("user", question_text(m))],
                    LETTERS[m.answer].to_string(),
                ),
                EvalRow::Tool(t) => {
                    tools = Some(t.tools.clone());
                    (t.messages.clone(), t.target.clone())
                }
            };
            let names = match row {
                EvalRow::Tool(t) => t.tool_names(),
                _ => Vec::new(),
            };
            asked.push((
                *line,
                StandardRow {
                    messages: messages.clone(),
                    tools,
                    ..Default::default()
                },
            ));
            texts.push((*line, messages, reference, names));
        }
        let answers = answer(&asked, &b.file)?;
        for ((line, messages, reference, names), (prediction, calls)) in
            texts.into_iter().zip(answers)
        {
            let score = match b.record.scoring {
                BenchmarkScoring::ToolCall => {
                    let step = swift_eval::agent::step_text(&prediction, &calls);
                    let m = swift_eval::agent::sample_metrics(&reference, &step, &names);
                    let v = json!({"step": step, "metrics": m});
                    tool_samples.push(m);
                    v
                }
                BenchmarkScoring::Generate => json!({
                    "rouge-1": rouge_n(&reference, &prediction, 1),
                    "rouge-2": rouge_n(&reference, &prediction, 2),
                    "rouge-l": rouge_l(&reference, &prediction),
                }),
                BenchmarkScoring::ExtractLetter => {
                    let got = extract_letter(&prediction);
                    let want = reference.chars().next();
                    json!({"exact_match": u8::from(got.is_some() && got == want), "extracted": got.map(String::from)})
                }
                BenchmarkScoring::ExtractNumber => {
                    let got = extract_number(&prediction);
                    let want = extract_number(&reference).ok_or_else(|| {
                        anyhow!(
                            "{}:{line}: the reference answer has no number",
                            b.file.display()
                        )
                    })?;
                    json!({"exact_match": u8::from(got.is_some_and(|g| (g - want).abs() < 1e-9)), "extracted": got})
                }
                BenchmarkScoring::Loglikelihood => {
                    bail!("log-likelihood benchmarks are not generated")
                }
            };
            for m in ["rouge-1", "rouge-2", "rouge-l", "exact_match"] {
                if let Some(v) = score[m].as_f64() {
                    *sums.entry(m).or_default() += v;
                }
            }
            serde_json::to_writer(
                &mut w,
                &json!({
                    "line": line,
                    "prompt": messages,
                    "prediction": prediction,
                    "tool_calls": (!calls.is_empty()).then_some(&calls),
                    "tools": (!names.is_empty()).then_some(&names),
                    "reference": reference,
                    "score": score,
                }),
            )?;
            writeln!(w)?;
            predictions.push(prediction);
            references.push(reference);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    w.flush()?;
    let n = predictions.len().max(1) as f64;
    let (tool_metrics, tool_scored) = swift_eval::agent::aggregate(&tool_samples);
    let mut metrics = serde_json::Map::new();
    if b.record.scoring == BenchmarkScoring::ToolCall {
        metrics.insert("scored_steps".into(), json!(tool_scored));
    }
    for m in &b.record.metrics {
        let v = match m.as_str() {
            "bleu-4" => corpus_bleu(&predictions, &references),
            other if b.record.scoring == BenchmarkScoring::ToolCall => {
                match tool_metrics.get(other) {
                    Some(v) => v.clone().as_f64().unwrap_or(0.0),
                    None => bail!(
                        "benchmark `{}`: metric `{other}` is not computed by tool_call scoring",
                        b.record.name
                    ),
                }
            }
            other => match sums.get(other) {
                Some(s) => s / n,
                None => bail!(
                    "benchmark `{}`: metric `{other}` is not computed by {:?} scoring",
                    b.record.name,
                    b.record.scoring
                ),
            },
        };
        metrics.insert(m.clone(), json!(v));
    }
    Ok(metrics)
}

/// Answers a batch of rows (a local model through its chat template, or a server): each answer's
/// text and its tool calls (when the row offers tools).
pub(crate) type AnswerFn<'a> =
    dyn FnMut(&[(u64, StandardRow)], &Path) -> Result<Vec<(String, Vec<ToolCall>)>> + 'a;

/// A local answer's tool calls, read as the server reads them (swift-serve's `tool_calls`).
fn parsed_calls(text: String) -> (String, Vec<ToolCall>) {
    match swift_serve::tool_calls::parse(&text) {
        Some((rest, calls)) => (
            rest,
            calls
                .into_iter()
                .map(|c| ToolCall {
                    id: None,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: c.name,
                        arguments: Value::String(c.arguments),
                    },
                })
                .collect(),
        ),
        None => (text, Vec::new()),
    }
}

/// A message in OpenAI's chat shape (tool-call arguments as a JSON string, written as the
/// templates write an argument object, Python's `json.dumps`, so that a server renders the same
/// prompt as the local template does).
fn openai_message(m: &Message) -> Value {
    let mut v = json!({"role": m.role, "content": m.content});
    if let Some(calls) = &m.tool_calls {
        v["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let args = match &c.function.arguments {
                    Value::String(s) => s.clone(),
                    other => swift_template::tools::py_json(other),
                };
                json!({"id": c.id.clone().unwrap_or_else(|| format!("call_{i}")), "type": "function",
                       "function": {"name": c.function.name, "arguments": args}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// The table printed at the end (stdout).
fn print_table(results: &[Value]) {
    println!(
        "{:<24} {:>6} {:>8} {:<10} {:>8}",
        "benchmark", "rows", "few-shot", "metric", "value"
    );
    for r in results {
        if let Some(m) = r["metrics"].as_object() {
            for (k, v) in m {
                println!(
                    "{:<24} {:>6} {:>8} {:<10} {:>8.4}",
                    r["name"].as_str().unwrap_or(""),
                    r["rows"].as_u64().unwrap_or(0),
                    r["few_shot"].as_u64().unwrap_or(0),
                    k,
                    v.as_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
}

/// One forward row: its input tokens and, per choice scored from it, the (position, target)
/// pairs whose log-probabilities sum to the choice's log-likelihood.
pub(crate) struct Item {
    pub(crate) question: usize,
    pub(crate) input: Vec<i64>,
    pub(crate) targets: Vec<(usize, Vec<(usize, i64)>)>,
}

/// The log-likelihood of every choice of every question, after `prefix` + the question text.
/// `more` makes further instances of the model over its parameters, so that passes run on
/// several threads (`eval_passes::run`); without it they run one after the other.
pub(crate) fn loglikelihoods(
    model: &LoadedModel,
    more: Option<&crate::eval_passes::MoreFn<'_>>,
    tok: &Tokenizer,
    prefix: &str,
    rows: &[(u64, McqRow)],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Vec<f64>>> {
    let encode = |s: &str| tok.encode(s);
    let prefix_tokens: Vec<i64> = tok.encode(prefix)?.into_iter().map(i64::from).collect();
    let mut items = Vec::new();
    for (q, (line, row)) in rows.iter().enumerate() {
        let context = format!("{prefix}{}", question_text(row));
        let mut by_input: Vec<Item> = Vec::new();
        for (c, (cont, _)) in choices(row).iter().enumerate() {
            let req = encode_pair(&context, cont, &encode)
                .with_context(|| format!("tokenizing line {line}"))?;
            if req.continuation.is_empty() || req.context.is_empty() {
                bail!(
                    "line {line}: choice {} has no tokens to score after its context",
                    LETTERS[c]
                );
            }
            let whole: Vec<i64> = req
                .context
                .iter()
                .chain(&req.continuation)
                .map(|&t| i64::from(t))
                .collect();
            let input = whole[..whole.len() - 1].to_vec();
            let targets: Vec<(usize, i64)> = (req.context.len()..whole.len())
                .map(|p| (p - 1, whole[p]))
                .collect();
            match by_input.iter_mut().find(|i| i.input == input) {
                Some(i) => i.targets.push((c, targets)),
                None => by_input.push(Item {
                    question: q,
                    input,
                    targets: vec![(c, targets)],
                }),
            }
        }
        items.extend(by_input);
    }
    // The cached tokens: those every row shares with the prefix (swift-eval's
    // `cached_prefix_len`); a row sharing fewer runs whole.
    let scored_from = |i: &Item| {
        i.targets
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(p, _)| *p))
            .min()
            .unwrap_or(0)
    };
    let inputs: Vec<(&[i64], usize)> = items
        .iter()
        .map(|i| (i.input.as_slice(), scored_from(i)))
        .collect();
    let prefix_ids = prefix_tokens[..cached_prefix_len(&prefix_tokens, &inputs)].to_vec();
    let cached = !prefix_ids.is_empty();
    let fits = |i: &Item| {
        cached && shared_len(&prefix_tokens, &i.input, scored_from(i)) >= prefix_ids.len()
    };
    let prefix_cache = if cached && items.iter().any(fits) {
        let mut c = model.new_cache(1);
        // Only its keys and values are needed.
        let _hidden =
            model.forward(&Tensor::from_slice(&prefix_ids).view([1, -1]), None, &mut c)?;
        Some(c)
    } else {
        None
    };
    let (mut with, mut without): (Vec<&Item>, Vec<&Item>) = items.iter().partition(|i| fits(i));
    // Longest first: the passes' lengths then fall, and the last ones, which the threads
    // finish unevenly, are short.
    with.sort_by_key(|i| std::cmp::Reverse(i.input.len()));
    without.sort_by_key(|i| std::cmp::Reverse(i.input.len()));
    let mut passes = crate::eval_passes::packs(&with, prefix_ids.len());
    passes.extend(crate::eval_passes::packs(&without, 0));
    let needed: Vec<usize> = (0..rows.len())
        .map(|q| items.iter().filter(|i| i.question == q).count())
        .collect();
    let done = std::sync::Mutex::new(vec![0usize; rows.len()]);
    let progress = |items: &[&Item]| {
        if let Ok(mut done) = done.lock() {
            for i in items {
                done[i.question] += 1;
                if done[i.question] == needed[i.question] {
                    bar.inc(1);
                }
            }
        }
    };
    let sums = crate::eval_passes::run(model, more, prefix_cache, &passes, &progress)?;
    let mut out: Vec<Vec<f64>> = rows.iter().map(|r| vec![0.0; r.1.choices.len()]).collect();
    for (pass, sums) in passes.iter().zip(sums) {
        for (item, sums) in pass.items.iter().zip(sums) {
            for (c, s) in sums {
                out[item.question][c] = s;
            }
        }
    }
    Ok(out)
}

/// Where `report.json` goes.
pub fn report_path(run: &Path) -> PathBuf {
    run.join("report.json")
}
