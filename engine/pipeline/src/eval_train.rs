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
//! `--eval_few_shot`; a name given to both is refused. Only log-likelihood (multiple-choice)
//! benchmarks run during training in this version; a generation benchmark is refused by name.

use std::path::{Path, PathBuf};

use crate::eval::LoadedBenchmark;
use anyhow::{bail, Result};
use serde_json::{Map, Value};
use swift_eval::Benchmark;
use swift_model::LoadedModel;
use swift_plugin_tensors::records::BenchmarkScoring;
use swift_registry::Registries;
use swift_spec::TrainSpec;
use swift_template::Tokenizer;

/// The benchmarks of a training run.
pub struct TrainingBenchmarks {
    benches: Vec<LoadedBenchmark>,
    limit: Option<usize>,
    /// `eval/` in the run folder.
    out: PathBuf,
}

/// The flag checks, before anything loads.
pub fn check_flags(s: &TrainSpec) -> Result<()> {
    let g = &s.given;
    if !s.evalscope.eval_use_evalscope {
        g.refuse(
            &["eval_dataset", "eval_limit", "eval_few_shot"],
            "without --eval_use_evalscope true (during training --eval_dataset names benchmarks, as in ms-swift; the validation set whose loss is logged is --val_dataset)",
        )
        .map_err(anyhow::Error::msg)?;
        return Ok(());
    }
    if s.eval.eval_dataset.is_empty() {
        bail!("--eval_use_evalscope true needs --eval_dataset NAME... (benchmarks: `swift list benchmarks`, or an mcq .csv)");
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
    pub fn prepare(s: &TrainSpec, regs: &Registries) -> Result<Option<Self>> {
        if !s.evalscope.eval_use_evalscope {
            return Ok(None);
        }
        let asset_dir = swift_data::DatasetOptions::default().asset_dir();
        let mut benches: Vec<LoadedBenchmark> = Vec::new();
        for spec in &s.eval.eval_dataset {
            let b = Benchmark::resolve(spec, regs, &asset_dir)?;
            if b.record.scoring != BenchmarkScoring::Loglikelihood {
                bail!(
                    "--eval_dataset {spec}: benchmark `{}` is scored by generation, which does not run during training in this version; use a multiple-choice benchmark, or evaluate a checkpoint with `swift eval --adapters CKPT --eval_dataset {spec}`",
                    b.record.name
                );
            }
            let few = b.few_shot(
                s.eval
                    .eval_few_shot
                    .map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
            )? as usize;
            let rows = swift_eval::rows::read(&b.file, b.record.format)?;
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
        }
        Ok(Some(Self {
            benches,
            limit: s.eval.eval_limit,
            out: PathBuf::new(),
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
        let mut results = Vec::new();
        for (b, few, rows) in &self.benches {
            let result = crate::eval::score_mcq(
                b,
                *few,
                rows,
                self.limit,
                &step_dir,
                &pred_dir,
                &mut |prefix, scored, bar| {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                    crate::eval::loglikelihoods(model, tok, prefix, scored, bar)
                },
            )?;
            if let Some(m) = result["metrics"].as_object() {
                for (k, v) in m {
                    out.insert(format!("{}_{k}", b.record.name), v.clone());
                }
            }
            results.push(result);
        }
        let report = serde_json::json!({"step": step, "benchmarks": results});
        let path = crate::eval::report_path(&step_dir);
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(out)
    }
}
