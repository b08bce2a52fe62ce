//! Streaming row readers, one per file format. Each yields raw rows (JSON objects) one at a time,
//! with the line (or row number) they came from, and never holds more than one row in memory.
//!
//! | extension | rows | `line` |
//! |---|---|---|
//! | `.jsonl`, `.ndjson` | one JSON object per non-blank line | the line |
//! | `.json` | a top-level array of objects, `{"KEY": [rows]}` with one key, or `{"id": row, ...}` | the line the row starts on |
//! | `.csv`, `.tsv` | a header row, then one row per record; empty cells are `null` | the line the record starts on |
//! | `.parquet` | one row per record (nested columns become JSON) | the row number (1-based) |
//! | `.txt` | each non-blank line is `{"text": line}` | the line |
//!
//! Rows are numbered from 0 in file order (blank lines are not rows; malformed rows are), which
//! is what `#N` sampling selects by.

mod json;
mod tabular;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::DataError;

/// A file format we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Json,
    Csv,
    Tsv,
    Parquet,
    Text,
}

impl Format {
    /// The format for a path, from its extension.
    pub fn of(path: &Path) -> Result<Format, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "jsonl" | "ndjson" => Format::Jsonl,
            "json" => Format::Json,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "parquet" | "pq" => Format::Parquet,
            "txt" | "text" => Format::Text,
            _ => {
                return Err(DataError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    extension: if ext.is_empty() {
                        "(none)".into()
                    } else {
                        format!(".{ext}")
                    },
                })
            }
        })
    }
}

/// One raw row.
#[derive(Debug)]
pub struct RawRow {
    /// 1-based line where the row starts (JSONL, JSON, CSV, text) or 1-based row number (Parquet).
    pub line: usize,
    /// 0-based position among the file's rows.
    pub index: u64,
    /// The row's columns (empty when the reader was asked to skip the row unparsed).
    pub map: Map<String, Value>,
}

/// A source of raw rows.
pub trait RowReader: Send {
    /// The next row: parsed when `parse` is true, otherwise only stepped over (for sampling and
    /// counting). A row error (`DataError::is_row_error`) leaves the reader usable; any other
    /// error ends the file.
    fn next_row(&mut self, parse: bool) -> Option<Result<RawRow, DataError>>;

    /// The number of rows, when the format knows it without reading them (Parquet).
    fn known_len(&self) -> Option<u64> {
        None
    }
}

/// Opens a reader for `path`.
pub fn open(path: &Path, format: Format) -> Result<Box<dyn RowReader>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    Ok(match format {
        Format::Jsonl | Format::Text => {
            let file = File::open(path).map_err(io)?;
            Box::new(LineReader {
                path: path.to_path_buf(),
                reader: BufReader::with_capacity(1 << 16, file),
                buf: Vec::new(),
                line: 0,
                index: 0,
                text: format == Format::Text,
                failed: false,
            })
        }
        Format::Json => Box::new(json::JsonReader::open(path)?),
        Format::Csv => Box::new(tabular::CsvReader::open(path, b',')?),
        Format::Tsv => Box::new(tabular::CsvReader::open(path, b'\t')?),
        Format::Parquet => tabular::open_parquet(path)?,
    })
}

/// Counts the rows of a file (the first pass of `#N` sampling); stops at the first error that
/// is not about a single row.
pub fn count_rows(path: &Path, format: Format) -> Result<u64, DataError> {
    let mut reader = open(path, format)?;
    if let Some(n) = reader.known_len() {
        return Ok(n);
    }
    let mut n = 0;
    while let Some(r) = reader.next_row(false) {
        match r {
            Ok(_) => n += 1,
            Err(e) if e.is_row_error() => n += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The JSON kind of a value, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A serde_json error without its "at line 1 column N" suffix, positioned as a column of the
/// row (or, with `first_line`, as a line of the file when the row spans several lines).
pub(crate) fn json_error(e: &serde_json::Error, first_line: Option<usize>) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    match first_line {
        Some(l) if e.line() > 1 => format!(
            "invalid JSON at line {} column {}: {msg}",
            l + e.line() - 1,
            e.column()
        ),
        _ => format!("invalid JSON at column {}: {msg}", e.column()),
    }
}

/// JSON Lines and plain text: one row per non-blank line.
struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: usize,
    index: u64,
    /// Plain text: the line is the `text` column.
    text: bool,
    failed: bool,
}

impl RowReader for LineReader {
    fn next_row(&mut self, parse: bool) -> Option<Result<RawRow, DataError>> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
            self.line += 1;
            let mut bytes = self.buf.as_slice();
            if self.line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.trim_ascii().is_empty() {
                continue;
            }
            let (line, index) = (self.line, self.index);
            self.index += 1;
            if !parse {
                return Some(Ok(RawRow {
                    line,
                    index,
                    map: Map::new(),
                }));
            }
            let parse_err = |message: String| DataError::Parse {
                path: self.path.clone(),
                line,
                message,
            };
            if self.text {
                let text = match std::str::from_utf8(bytes) {
                    Ok(t) => t.trim_end_matches(['\n', '\r']).to_string(),
                    Err(e) => {
                        return Some(Err(parse_err(format!("the line is not UTF-8 text: {e}"))))
                    }
                };
                let mut map = Map::new();
                map.insert("text".into(), Value::String(text));
                return Some(Ok(RawRow { line, index, map }));
            }
            return Some(match serde_json::from_slice::<Value>(bytes.trim_ascii()) {
                Ok(Value::Object(map)) => Ok(RawRow { line, index, map }),
                Ok(other) => Err(parse_err(format!(
                    "each line should be a JSON object, found {}",
                    kind(&other)
                ))),
                Err(e) => Err(parse_err(json_error(&e, None))),
            });
        }
    }
}
