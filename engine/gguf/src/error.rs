//! Error type of the crate: one enum, [`GgufError`], whose messages name the file, tensor,
//! metadata key or ggml type id involved, so a user can tell what is wrong with which file.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or converting GGUF files.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An operating-system error, with the path and what we were doing.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the `GGUF` magic.
    #[error("{}: not a GGUF file (magic bytes are {found:02x?}, expected \"GGUF\")", path.display())]
    BadMagic { path: PathBuf, found: [u8; 4] },

    /// A GGUF version this reader does not understand.
    #[error("{}: unsupported GGUF version {version} (this reader supports versions 2 and 3{hint})", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        hint: &'static str,
    },

    /// The file's structure is broken (truncated, offsets out of range, bad UTF-8, ...).
    #[error("{}: malformed GGUF file: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },

    /// A metadata key that is needed is absent.
    #[error("{}: required metadata key '{key}' is missing", path.display())]
    MissingMetadata { path: PathBuf, key: String },

    /// A metadata key holds a value of a type we cannot use there.
    #[error("{}: metadata key '{key}' has type {found}, expected {expected}", path.display())]
    MetadataType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A tensor that was asked for is not in the file.
    #[error("{}: no tensor named '{name}'", path.display())]
    NoSuchTensor { path: PathBuf, name: String },

    /// A ggml type id this crate does not know at all.
    #[error("tensor '{tensor}': unknown ggml type id {type_id}")]
    UnknownType { tensor: String, type_id: u32 },

    /// A known ggml type that this crate cannot (de)quantize.
    #[error(
        "tensor '{tensor}': ggml type {type_name} (id {type_id}) is not supported for {operation}"
    )]
    UnsupportedType {
        tensor: String,
        type_name: &'static str,
        type_id: u32,
        operation: &'static str,
    },

    /// Data whose size or shape does not fit what was declared.
    #[error("tensor '{tensor}': {detail}")]
    Shape { tensor: String, detail: String },

    /// A model architecture or tokenizer the converter does not handle.
    #[error("{}: cannot convert: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },

    /// Misuse of the writer API (duplicate names, tensors without data, ...).
    #[error("GGUF writer: {0}")]
    Writer(String),

    /// JSON serialisation failed (should not happen for the values we build).
    #[error("writing {file}: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
}

impl GgufError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        GgufError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
