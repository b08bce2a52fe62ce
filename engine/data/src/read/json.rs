//! Streaming `.json` reader. A byte scanner that knows strings, escapes and bracket depth cuts the
//! file into top-level rows, and serde_json parses one row at a time, so a large array is never
//! held whole and a malformed row is reported (with its line) without losing the rows after it.
//!
//! Accepted shapes:
//! * `[row, row, ...]`: the usual one;
//! * `{"KEY": [row, row, ...]}`: an object with a single key holding the list of rows (e.g.
//!   `{"data": [...]}`, `{"train": [...]}`); a second key is an error, since it would be unclear
//!   which list is meant;
//! * `{"id1": row, "id2": row, ...}`: an object whose values are rows (the keys are dropped).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{json_error, kind, RawRow, RowReader};
use crate::error::DataError;

/// Buffered bytes with line counting.
struct Bytes {
    file: File,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// 1-based line of the next byte.
    line: usize,
}

impl Bytes {
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        self.len = self.file.read(&mut self.buf)?;
        self.pos = 0;
        Ok(self.len > 0)
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        Ok(if self.fill()? {
            Some(self.buf[self.pos])
        } else {
            None
        })
    }

    fn bump(&mut self) -> std::io::Result<Option<u8>> {
        let b = self.peek()?;
        if let Some(c) = b {
            self.pos += 1;
            if c == b'\n' {
                self.line += 1;
            }
        }
        Ok(b)
    }

    /// Skips whitespace; returns the next byte (not consumed).
    fn skip_ws(&mut self) -> std::io::Result<Option<u8>> {
        while let Some(c) = self.peek()? {
            if !c.is_ascii_whitespace() {
                return Ok(Some(c));
            }
            self.bump()?;
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening bracket.
    Start,
    /// Inside the top-level array (`nested`: the array is the value of the object's single key).
    Array { first: bool, nested: bool },
    /// Inside the top-level object, before a key (`first`: no key read yet).
    Object { first: bool },
    /// After the closing bracket.
    Done,
    /// After an error that is not about one row: the file has no more rows.
    Failed,
}

/// Rows of a `.json` file.
pub struct JsonReader {
    path: PathBuf,
    bytes: Bytes,
    state: State,
    index: u64,
    /// The single key whose list holds the rows, once seen.
    list_key: Option<String>,
    element: Vec<u8>,
}

impl JsonReader {
    /// Opens the file (nothing is read yet).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes: Bytes {
                file,
                buf: vec![0; 1 << 16],
                pos: 0,
                len: 0,
                line: 1,
            },
            state: State::Start,
            index: 0,
            list_key: None,
            element: Vec::new(),
        })
    }

    fn structure(&mut self, message: String) -> DataError {
        self.state = State::Failed;
        DataError::Structure {
            path: self.path.clone(),
            line: self.bytes.line,
            message,
        }
    }

    fn io(&mut self, source: std::io::Error) -> DataError {
        self.state = State::Failed;
        DataError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Copies one JSON value (object, array, string or scalar) into `self.element`.
    fn capture(&mut self) -> Result<(), DataError> {
        self.element.clear();
        let start = self.bytes.line;
        let unterminated = |this: &mut Self| {
            this.structure(format!(
                "the file ends inside the value that starts on line {start} (an unclosed bracket or string)"
            ))
        };
        let first = match self.bytes.peek() {
            Ok(Some(c)) => c,
            Ok(None) => return Err(unterminated(self)),
            Err(e) => return Err(self.io(e)),
        };
        if first == b'{' || first == b'[' || first == b'"' {
            let (mut depth, mut in_string, mut escape) = (0usize, false, false);
            loop {
                let c = match self.bytes.bump() {
                    Ok(Some(c)) => c,
                    Ok(None) => return Err(unterminated(self)),
                    Err(e) => return Err(self.io(e)),
                };
                self.element.push(c);
                if in_string {
                    if escape {
                        escape = false;
                    } else if c == b'\\' {
                        escape = true;
                    } else if c == b'"' {
                        in_string = false;
                        if depth == 0 {
                            return Ok(());
                        }
                    }
                    continue;
                }
                match c {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
        // A scalar: up to the next separator.
        loop {
            match self.bytes.peek() {
                Ok(Some(c)) if c == b',' || c == b']' || c == b'}' || c.is_ascii_whitespace() => {
                    return Ok(())
                }
                Ok(Some(c)) => {
                    self.element.push(c);
                    let _ = self.bytes.bump();
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Reads one row value at the current position and parses it (unless `parse` is false).
    fn row(&mut self, parse: bool) -> Result<RawRow, DataError> {
        let line = self.bytes.line;
        self.capture()?;
        let index = self.index;
        self.index += 1;
        if !parse {
            return Ok(RawRow {
                line,
                index,
                map: Map::new(),
            });
        }
        let parse_err = |message: String| DataError::Parse {
            path: self.path.clone(),
            line,
            message,
        };
        match serde_json::from_slice::<Value>(&self.element) {
            Ok(Value::Object(map)) => Ok(RawRow { line, index, map }),
            Ok(other) => Err(parse_err(format!(
                "rows should be JSON objects, found {}",
                kind(&other)
            ))),
            Err(e) => Err(parse_err(json_error(&e, Some(line)))),
        }
    }

    /// After a value inside a container: a comma (more follows) or the closing bracket.
    fn after_value(&mut self, close: u8) -> Result<bool, DataError> {
        match self.bytes.skip_ws() {
            Ok(Some(b',')) => {
                let _ = self.bytes.bump();
                Ok(true)
            }
            Ok(Some(c)) if c == close => {
                let _ = self.bytes.bump();
                Ok(false)
            }
            Ok(Some(c)) => Err(self.structure(format!(
                "expected `,` or `{}` between rows, found `{}`",
                close as char, c as char
            ))),
            Ok(None) => Err(self.structure(format!(
                "the file ends before the closing `{}`",
                close as char
            ))),
            Err(e) => Err(self.io(e)),
        }
    }

    fn step(&mut self, parse: bool) -> Result<Option<RawRow>, DataError> {
        loop {
            if self.state == State::Failed {
                return Ok(None);
            }
            let next = self.bytes.skip_ws().map_err(|e| self.io(e))?;
            match self.state {
                State::Failed => return Ok(None),
                State::Done => {
                    return match next {
                        None => Ok(None),
                        Some(c) => Err(self.structure(format!(
                            "unexpected `{}` after the end of the rows",
                            c as char
                        ))),
                    };
                }
                State::Start => {
                    // A UTF-8 byte order mark.
                    if next == Some(0xEF) {
                        for _ in 0..3 {
                            let _ = self.bytes.bump();
                        }
                        continue;
                    }
                    match next {
                        Some(b'[') => self.state = State::Array { first: true, nested: false },
                        Some(b'{') => self.state = State::Object { first: true },
                        None => return Ok(None),
                        Some(c) => {
                            return Err(self.structure(format!(
                                "a .json dataset is a list of rows `[{{...}}, ...]` or an object of rows; \
                                 found `{}` (for one JSON object per line, name the file .jsonl)",
                                c as char
                            )))
                        }
                    }
                    let _ = self.bytes.bump();
                }
                State::Array { first, nested } => {
                    let close_array = |this: &mut Self| {
                        let _ = this.bytes.bump();
                        this.state = if nested {
                            State::Object { first: false }
                        } else {
                            State::Done
                        };
                    };
                    if first && next == Some(b']') {
                        close_array(self);
                        continue;
                    }
                    if next.is_none() {
                        return Err(self.structure("the file ends before the closing `]`".into()));
                    }
                    // A trailing comma before `]` is tolerated.
                    if !first && next == Some(b']') {
                        close_array(self);
                        continue;
                    }
                    let row = self.row(parse);
                    if let Err(e) = &row {
                        if !e.is_row_error() {
                            return row.map(Some);
                        }
                    }
                    match self.after_value(b']') {
                        Ok(true) => {
                            self.state = State::Array {
                                first: false,
                                nested,
                            }
                        }
                        Ok(false) => {
                            self.state = if nested {
                                State::Object { first: false }
                            } else {
                                State::Done
                            }
                        }
                        Err(e) => return Err(e),
                    }
                    return row.map(Some);
                }
                State::Object { first } => {
                    match next {
                        Some(b'}') => {
                            let _ = self.bytes.bump();
                            self.state = State::Done;
                            continue;
                        }
                        Some(b',') if !first => {
                            let _ = self.bytes.bump();
                            continue;
                        }
                        Some(b'"') => {}
                        None => {
                            return Err(
                                self.structure("the file ends before the closing `}`".into())
                            )
                        }
                        Some(c) => {
                            return Err(self.structure(format!(
                                "expected a key string in the top-level object, found `{}`",
                                c as char
                            )))
                        }
                    }
                    self.capture()?;
                    let key: String = serde_json::from_slice(&self.element).map_err(|e| {
                        self.structure(format!("malformed key in the top-level object: {e}"))
                    })?;
                    match self.bytes.skip_ws() {
                        Ok(Some(b':')) => {
                            let _ = self.bytes.bump();
                        }
                        Ok(_) => {
                            return Err(
                                self.structure(format!("expected `:` after the key `{key}`"))
                            )
                        }
                        Err(e) => return Err(self.io(e)),
                    }
                    let value_start = self.bytes.skip_ws().map_err(|e| self.io(e))?;
                    if let Some(list_key) = &self.list_key {
                        let list_key = list_key.clone();
                        return Err(self.structure(format!(
                            "the top-level object holds the rows under `{list_key}` and also has a key `{key}`; \
                             a .json dataset object either has one key holding the list of rows or maps ids to rows"
                        )));
                    }
                    if first && value_start == Some(b'[') {
                        let _ = self.bytes.bump();
                        self.list_key = Some(key);
                        self.state = State::Array {
                            first: true,
                            nested: true,
                        };
                        continue;
                    }
                    if first && value_start != Some(b'{') {
                        return Err(self.structure(format!(
                            "the top-level object's values should be rows (objects), or it should hold one \
                             list of rows, but `{key}` holds something else; if the file has one JSON object \
                             per line, name it .jsonl"
                        )));
                    }
                    // Keyed rows: the value is a row.
                    self.state = State::Object { first: false };
                    let row = self.row(parse);
                    if let Err(e) = &row {
                        if !e.is_row_error() {
                            return row.map(Some);
                        }
                    }
                    if let Ok(Some(c)) = self.bytes.skip_ws() {
                        if c != b',' && c != b'}' {
                            return Err(self.structure(format!(
                                "expected `,` or `}}` after a row, found `{}`",
                                c as char
                            )));
                        }
                    }
                    return row.map(Some);
                }
            }
        }
    }
}

impl RowReader for JsonReader {
    fn next_row(&mut self, parse: bool) -> Option<Result<RawRow, DataError>> {
        self.step(parse).transpose()
    }
}
