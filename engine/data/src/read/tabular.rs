//! Tabular files: CSV/TSV (the `csv` crate; a header row, empty cells read as `null`) and
//! Parquet (the `parquet` crate's row API, behind the default-on `parquet` feature; nested
//! columns become JSON lists and objects).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{RawRow, RowReader};
use crate::error::DataError;

/// Rows of a CSV or TSV file.
pub struct CsvReader {
    path: PathBuf,
    reader: csv::Reader<File>,
    headers: Vec<String>,
    record: csv::StringRecord,
    index: u64,
    failed: bool,
}

impl CsvReader {
    /// Opens the file and reads its header row.
    pub fn open(path: &Path, delimiter: u8) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(false)
            .from_reader(file);
        let headers = match reader.headers() {
            Ok(h) => h
                .iter()
                .map(|s| s.trim_start_matches('\u{feff}').to_string())
                .collect::<Vec<_>>(),
            Err(e) => return Err(csv_error(path, e)),
        };
        if headers.iter().all(String::is_empty) {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            headers,
            record: csv::StringRecord::new(),
            index: 0,
            failed: false,
        })
    }
}

/// A csv error as a row error (bad record) or a file error (I/O).
fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(1);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("the record has {len} fields but the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { err, .. } => DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("the record is not UTF-8 text: {err}"),
        },
        other => DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("{other:?}"),
        },
    }
}

impl RowReader for CsvReader {
    fn next_row(&mut self, parse: bool) -> Option<Result<RawRow, DataError>> {
        if self.failed {
            return None;
        }
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(0);
                let index = self.index;
                self.index += 1;
                let mut map = Map::new();
                if parse {
                    for (h, cell) in self.headers.iter().zip(self.record.iter()) {
                        let v = if cell.is_empty() {
                            Value::Null
                        } else {
                            Value::String(cell.to_string())
                        };
                        map.insert(h.clone(), v);
                    }
                }
                Some(Ok(RawRow { line, index, map }))
            }
            Err(e) => {
                let err = csv_error(&self.path, e);
                if err.is_row_error() {
                    self.index += 1;
                } else {
                    self.failed = true;
                }
                Some(Err(err))
            }
        }
    }
}

/// Opens a Parquet file.
#[cfg(feature = "parquet")]
pub fn open_parquet(path: &Path) -> Result<Box<dyn RowReader>, DataError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(|e| DataError::Structure {
        path: path.to_path_buf(),
        line: 0,
        message: format!("not a readable Parquet file: {e}"),
    })?;
    let len = reader.metadata().file_metadata().num_rows().max(0) as u64;
    let rows = reader.into_iter();
    Ok(Box::new(ParquetReader {
        path: path.to_path_buf(),
        rows,
        len,
        index: 0,
        failed: false,
    }))
}

/// Without the `parquet` feature: a clear error.
#[cfg(not(feature = "parquet"))]
pub fn open_parquet(path: &Path) -> Result<Box<dyn RowReader>, DataError> {
    Err(DataError::ParquetDisabled {
        path: path.to_path_buf(),
    })
}

#[cfg(feature = "parquet")]
struct ParquetReader {
    path: PathBuf,
    rows: parquet::record::reader::RowIter<'static>,
    len: u64,
    index: u64,
    failed: bool,
}

#[cfg(feature = "parquet")]
impl RowReader for ParquetReader {
    fn next_row(&mut self, _parse: bool) -> Option<Result<RawRow, DataError>> {
        if self.failed {
            return None;
        }
        let row = self.rows.next()?;
        let index = self.index;
        self.index += 1;
        let line = index as usize + 1;
        Some(match row {
            Ok(row) => match row.to_json_value() {
                Value::Object(map) => Ok(RawRow { line, index, map }),
                _ => Ok(RawRow {
                    line,
                    index,
                    map: Map::new(),
                }),
            },
            Err(e) => {
                self.failed = true;
                Err(DataError::Structure {
                    path: self.path.clone(),
                    line,
                    message: format!("cannot decode Parquet row {line}: {e}"),
                })
            }
        })
    }

    fn known_len(&self) -> Option<u64> {
        Some(self.len)
    }
}
