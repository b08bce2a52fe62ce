//! Benchmarks during training (ms-swift's `--eval_use_evalscope true --eval_dataset NAME...
//! [--eval_limit N]`): at every evaluation step (`--eval_steps`, and at the end) the benchmarks
//! run in-process on the model being trained (adapters on, dropout off: the loop switches
//! training-only behaviour off around evaluation), scored as `swift eval` scores them
//! (crate::eval's log-likelihoods and `score_mcq`). Their metrics go into the evaluation record of
//! `logging.jsonl` as `eval_<benchmark>_<metric>` beside `eval_loss` (ms-swift logs
//! `test_<dataset>`), and so into the charts; each step's per-question predictions are written
//! to `eval/step-<N>/predictions/` in the run folder.
//!
//! The two meanings of "evaluation data" stay apart: `--val_dataset` (or
//! `--split_dataset_ratio`) is the set whose loss is logged; `--eval_dataset` names benchmarks
//! and is refused without `--eval_use_evalscope true`, as are `--eval_limit` and
//! `--eval_few_shot`; a name given to both is refused.
//!
//! Generation benchmarks (`general_qa`, the math set, tool calls) are answered with `swift
//! eval`'s defaults (greedy, at most 512 new tokens), or `--eval_generation_config`'s settings
//! (ms-swift's JSON: `max_tokens`, `temperature`, ...), on the run's chat template, through the
//! same generation loop `swift eval` uses (crate::generate's `Gen` over swift-serve's `PtModel`),
//! on a second [`LoadedModel`] that shares the trained parameters and the tuner's hooks
//! ([`LoadedModel::share`]), and scored by the same code (crate::eval's `score_generation`):
//! a step's metrics equal what `swift eval --adapters` gives for that step's checkpoint with
//! the same settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::eval::LoadedBenchmark;
use crate::train::Prepared;
use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};
use swift_eval::Benchmark;
use swift_model::LoadedModel;
use swift_plugin_tensors::backend::{BackendModelHandle, Capabilities};
use swift_plugin_tensors::records::BenchmarkScoring;
use swift_plugin_tensors::ModelFamilyHandle;
use swift_spec::TrainSpec;
use swift_template::{Encoder, Tokenizer};

/// `--eval_generation_config` (JSON, ms-swift's EvalScope keys) over `swift eval`'s defaults.
fn generation_config(text: &str) -> Result<swift_model::SamplingParams> {
    let flag = "--eval_generation_config";
    let v: Value = serde_json::from_str(text)
        .map_err(|e| anyhow!("{flag} {text}: not JSON ({e}); e.g. '{{\"max_tokens\": 64}}'"))?;
    let Value::Object(map) = v else {
        bail!("{flag} {text}: expected a JSON object, e.g. '{{\"max_tokens\": 64}}'");
    };
    let mut p = swift_model::SamplingParams::default();
    for (key, value) in &map {
        let number = value.as_f64();
        let count = value.as_u64();
        let bad = |range: &str| anyhow!("{flag}: `{key}` is {value}; it takes {range}");
        match key.as_str() {
            "max_tokens" | "max_new_tokens" => {
                p.max_new_tokens = count
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| bad("an integer of at least 1"))?
                    as usize
            }
            "temperature" => {
                p.temperature = number
                    .filter(|&t| t >= 0.0)
                    .ok_or_else(|| bad("a number of at least 0 (0: greedy)"))?
            }
            "top_p" => {
                p.top_p = number
                    .filter(|&t| t > 0.0 && t <= 1.0)
                    .ok_or_else(|| bad("a number in (0, 1]"))?
            }
            "top_k" => p.top_k = count.ok_or_else(|| bad("an integer of at least 0"))? as usize,
            "repetition_penalty" => {
                p.repetition_penalty = number
                    .filter(|&t| t > 0.0)
                    .ok_or_else(|| bad("a number above 0"))?
            }
            "seed" => p.seed = count.ok_or_else(|| bad("an integer of at least 0"))?,
            other => bail!(
                "{flag}: unknown key `{other}` (max_tokens, temperature, top_p, top_k, repetition_penalty, seed)"
            ),
        }
    }
    Ok(p)
}

/// The benchmarks of a training run.
pub struct TrainingBenchmarks {
    benches: Vec<LoadedBenchmark>,
    /// Per benchmark: the rows its format leaves out.
    left_out: Vec<Vec<(u64, String)>>,
    limit: Option<usize>,
    /// `eval/` in the run folder.
    out: PathBuf,
    /// What generation benchmarks answer with (none when every benchmark is multiple choice).
    generation: Option<Generation>,
}

/// What a generation benchmark's answers need besides the trained model.
struct Generation {
    /// The model's family, instantiated afresh at each evaluation over the shared parameters.
    family: Arc<ModelFamilyHandle>,
    config: Value,
    vocab: usize,
    description: String,
    /// The `pt` backend's capabilities (what the generation loop drives).
    caps: Capabilities,
    /// The run's template with the generation prompt (as `swift infer` encodes a prompt).
    encoder: Arc<Encoder>,
    eos_ids: Vec<i64>,
    stop_words: Vec<String>,
    /// `--eval_generation_config` over `swift eval`'s defaults (greedy, 512 new tokens).
    params: swift_model::SamplingParams,
}

impl Generation {
    fn new(s: &TrainSpec, p: &Prepared) -> Result<Self> {
        let regs = &p.report.registries;
        let (family, _, handle) =
            crate::bundle::resolve_family(regs, &p.base_config, s.model.model_type.as_deref())?;
        let tokenizer = Tokenizer::from_dir(&p.model_dir)?;
        let eos_ids = crate::bundle::eos_ids(&p.model_dir, &p.base_config, &tokenizer);
        let template = p.encoder.template.clone();
        let stop_words = template.stop_words.clone();
        let encoder = Encoder::new(
            template,
            tokenizer,
            crate::bundle::prompt_options(&s.template),
        )?;
        Ok(Self {
            family: handle,
            config: p.base_config.clone(),
            vocab: crate::generate::vocab_size(&p.base_config),
            description: format!("{} ({family}) during training", p.model_dir.display()),
            caps: regs.backends.resolve("pt")?.record.capabilities.clone(),
            encoder: Arc::new(encoder),
            eos_ids,
            stop_words,
            params: match &s.evalscope.eval_generation_config {
                Some(text) => generation_config(text)?,
                None => swift_model::SamplingParams::default(),
            },
        })
    }

    /// The generation loop over `model` as it is now.
    fn generator(&self, model: &LoadedModel) -> Result<crate::generate::Gen> {
        let instance = self
            .family
            .instantiate(&crate::bundle::family_config(&self.config))
            .map_err(|e| anyhow!("instantiating the model family for generation: {e}"))?;
        let shared = model.share(instance)?;
        let pt = swift_serve::pt::PtModel::new(shared, None, self.vocab, self.description.clone());
        let handle = BackendModelHandle::from_model(Box::new(pt)).map_err(anyhow::Error::msg)?;
        Ok(crate::generate::Gen::new(
            handle,
            &self.caps,
            self.encoder.clone(),
            self.eos_ids.clone(),
            self.params.clone(),
            self.stop_words.clone(),
            None,
        ))
    }
}

/// The flag checks, before anything loads.
pub fn check_flags(s: &TrainSpec) -> Result<()> {
    let g = &s.given;
    if !s.evalscope.eval_use_evalscope {
        g.refuse(
            &[
                "eval_dataset",
                "eval_limit",
                "eval_few_shot",
                "eval_generation_config",
            ],
            "without --eval_use_evalscope true (during training --eval_dataset names benchmarks, as in ms-swift; the validation set whose loss is logged is --val_dataset)",
        )
        .map_err(anyhow::Error::msg)?;
        return Ok(());
    }
    if s.eval.eval_dataset.is_empty() {
        bail!("--eval_use_evalscope true needs --eval_dataset NAME... (benchmarks: `swift list benchmarks`, or an mcq .csv)");
    }
    if let Some(text) = &s.evalscope.eval_generation_config {
        generation_config(text)?;
    }
    for name in &s.eval.eval_dataset {
        if s.validation.val_dataset.iter().any(|v| v == name) {
            bail!("`{name}` is given both to --eval_dataset (a benchmark, run with --eval_use_evalscope) and to --val_dataset (a loss validation set): give it to one of them");
        }
    }
    Ok(())
}

impl TrainingBenchmarks {
    /// Resolves and reads `--eval_dataset` when `--eval_use_evalscope` is on.
    pub fn prepare(s: &TrainSpec, p: &Prepared) -> Result<Option<Self>> {
        if !s.evalscope.eval_use_evalscope {
            return Ok(None);
        }
        let regs = &p.report.registries;
        let asset_dir = swift_data::DatasetOptions::default().asset_dir();
        let mut benches: Vec<LoadedBenchmark> = Vec::new();
        let mut left_out = Vec::new();
        for spec in &s.eval.eval_dataset {
            let b = Benchmark::resolve(spec, regs, &asset_dir)?;
            let few = b.few_shot(
                s.eval
                    .eval_few_shot
                    .map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
            )? as usize;
            let (rows, excluded) = swift_eval::rows::read_all(&b.file, b.record.format)?;
            if rows.len() <= b.record.holdout as usize {
                bail!(
                    "{}: {} rows, all of them in benchmark `{}`'s held-out few-shot pool",
                    b.file.display(),
                    rows.len(),
                    b.record.name
                );
            }
            if benches.iter().any(|o| o.0.record.name == b.record.name) {
                bail!("--eval_dataset names benchmark `{}` twice", b.record.name);
            }
            benches.push((b, few, rows));
            left_out.push(excluded);
        }
        let generation = match benches.iter().any(|b| generates(&b.0)) {
            true => Some(Generation::new(s, p)?),
            false => None,
        };
        if generation.is_none() {
            s.given
                .refuse(
                    &["eval_generation_config"],
                    "when every --eval_dataset benchmark is multiple choice (scored by log-likelihood, nothing is generated)",
                )
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Some(Self {
            benches,
            left_out,
            limit: s.eval.eval_limit,
            out: PathBuf::new(),
            generation,
        }))
    }

    /// Where each evaluation's predictions go: `RUN/eval/step-N/predictions/`.
    pub fn set_run_dir(&mut self, run: &Path) {
        self.out = run.join("eval");
    }

    /// Runs every benchmark on `model` at `step`; metrics as `BENCHMARK_METRIC`.
    pub fn run(
        &self,
        model: &LoadedModel,
        tok: &Tokenizer,
        step: u64,
    ) -> Result<Map<String, Value>> {
        let step_dir = self.out.join(format!("step-{step}"));
        let pred_dir = step_dir.join("predictions");
        std::fs::create_dir_all(&pred_dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", pred_dir.display()))?;
        let mut out = Map::new();
        let mut results: Vec<(usize, Value)> = Vec::new();
        for (i, (b, few, rows)) in self.benches.iter().enumerate() {
            if generates(b) {
                continue;
            }
            let result = crate::eval::score_mcq(
                b,
                *few,
                rows,
                self.limit,
                &step_dir,
                &pred_dir,
                &mut |prefix, scored, bar| {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                    crate::eval::loglikelihoods(model, None, tok, prefix, scored, bar)
                },
            )?;
            results.push((i, result));
        }
        // Generation last, in one generation loop over the parameters as they are now (its
        // decoding thread settings end with it, before training resumes).
        if let Some(g) = &self.generation {
            let mut answer = crate::eval::local_answers(g.generator(model)?);
            for (i, (b, _, rows)) in self.benches.iter().enumerate() {
                if !generates(b) {
                    continue;
                }
                let result = crate::eval::score_generation(
                    &mut *answer,
                    b,
                    rows,
                    self.limit,
                    &self.left_out[i],
                    &step_dir,
                    &pred_dir,
                )?;
                results.push((i, result));
            }
        }
        results.sort_by_key(|r| r.0);
        let results: Vec<Value> = results.into_iter().map(|r| r.1).collect();
        for (b, result) in self.benches.iter().map(|b| &b.0).zip(&results) {
            if let Some(m) = result["metrics"].as_object() {
                for (k, v) in m {
                    out.insert(format!("{}_{k}", b.record.name), v.clone());
                }
            }
        }
        let report = serde_json::json!({"step": step, "benchmarks": results});
        let path = crate::eval::report_path(&step_dir);
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(out)
    }
}

/// Whether a benchmark is answered by generation (not scored by log-likelihood).
fn generates(b: &Benchmark) -> bool {
    b.record.scoring != BenchmarkScoring::Loglikelihood
}
