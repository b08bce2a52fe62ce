//! `DataError`: every way loading a dataset can fail. Each variant names the file (or the spec
//! that named no file) and, for problems with one row, its line, and says what to do about it.

use std::path::PathBuf;

/// How to point at a row in messages: `file:line`.
fn at(path: &std::path::Path, line: usize) -> String {
    format!("{}:{line}", path.display())
}

/// A dataset could not be opened or a row could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The `--dataset` value is neither a file nor a registered dataset.
    #[error(
        "--dataset {spec}: no such file, and no registered dataset of that name ({reason}); \
         `swift list datasets` shows the registered ones"
    )]
    UnknownDataset { spec: String, reason: String },

    /// A malformed `#N` suffix or an empty spec.
    #[error("--dataset {spec}: {reason}")]
    BadSpec { spec: String, reason: String },

    /// A registered dataset whose file is missing.
    #[error("dataset `{name}` ({provenance}) reads {}, which does not exist{hint}", path.display())]
    MissingFile {
        name: String,
        provenance: String,
        path: PathBuf,
        hint: String,
    },

    /// The file's extension is not one we read.
    #[error(
        "{}: unsupported file type `{extension}`; datasets are .jsonl, .json, .csv, .parquet or .txt files",
        path.display()
    )]
    UnsupportedFormat { path: PathBuf, extension: String },

    /// Parquet support was left out of this build.
    #[error("{}: this swift-rs was built without parquet support (cargo feature `parquet` of swift-data)", path.display())]
    ParquetDisabled { path: PathBuf },

    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file holds no rows.
    #[error("{}: the file is empty (it holds no rows); check the path or remove it from --dataset", path.display())]
    Empty { path: PathBuf },

    /// A row that is not valid JSON/CSV, or not a JSON object.
    #[error("{}: malformed row: {message} (fix the row, or pass --skip_bad_rows to skip such rows)", at(path, *line))]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// The file's structure is broken past recovery (e.g. a `.json` array that never closes).
    #[error("{}: {message}", at(path, *line))]
    Structure {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// `auto` found no preprocessor for the row's columns.
    #[error(
        "{}: no known format matches the columns [{}]; known formats (preprocessor: columns it needs, \
         a|b meaning either): {known}. Rename columns with --columns '{{\"old\": \"new\"}}', or pass \
         --skip_bad_rows to skip such rows",
        at(path, *line),
        columns.join(", ")
    )]
    NoFormat {
        path: PathBuf,
        line: usize,
        columns: Vec<String>,
        known: String,
    },

    /// The preprocessor refused the row, or its result is not a trainable row.
    #[error("{}: {preprocessor}: {message} (fix the row, or pass --skip_bad_rows to skip such rows)", at(path, *line))]
    BadRow {
        path: PathBuf,
        line: usize,
        preprocessor: String,
        message: String,
    },

    /// The row has `{{name}}`/`{{author}}` placeholders and the flag that fills them is missing.
    #[error("{}: the row contains `{placeholder}`; pass {flag} to fill it in", at(path, *line))]
    Placeholder {
        path: PathBuf,
        line: usize,
        placeholder: String,
        flag: String,
    },

    /// The preprocessor named by the dataset record (or `--preprocessor`) is not registered.
    #[error("{}: {reason}", path.display())]
    UnknownPreprocessor { path: PathBuf, reason: String },

    /// Every row of a file was dropped or skipped.
    #[error(
        "{}: none of its {read} rows is usable ({bad} bad, {dropped} dropped as empty by the preprocessor){detail}",
        path.display()
    )]
    NoUsableRows {
        path: PathBuf,
        read: u64,
        bad: u64,
        dropped: u64,
        /// `; the first bad row: ...` when there was one.
        detail: String,
    },

    /// `--columns` is not a JSON object of strings.
    #[error("--columns: {reason}; write it as '{{\"old_name\": \"new_name\"}}'")]
    BadColumns { reason: String },
}

impl DataError {
    /// True for problems with one row, which `skip_bad_rows` turns into a counted warning; false
    /// for problems with a whole file or spec.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            DataError::Parse { .. }
                | DataError::NoFormat { .. }
                | DataError::BadRow { .. }
                | DataError::Placeholder { .. }
        )
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::MissingFile { path, .. }
            | DataError::UnsupportedFormat { path, .. }
            | DataError::ParquetDisabled { path }
            | DataError::Io { path, .. }
            | DataError::Empty { path }
            | DataError::Parse { path, .. }
            | DataError::Structure { path, .. }
            | DataError::NoFormat { path, .. }
            | DataError::BadRow { path, .. }
            | DataError::Placeholder { path, .. }
            | DataError::UnknownPreprocessor { path, .. }
            | DataError::NoUsableRows { path, .. } => Some(path),
            DataError::UnknownDataset { .. }
            | DataError::BadSpec { .. }
            | DataError::BadColumns { .. } => None,
        }
    }

    /// The line (or row number) the error is about, for row errors.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::Parse { line, .. }
            | DataError::Structure { line, .. }
            | DataError::NoFormat { line, .. }
            | DataError::BadRow { line, .. }
            | DataError::Placeholder { line, .. } => Some(*line),
            _ => None,
        }
    }
}
