//! The crate's error: each message names the image reference (or config file) and says what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("image {reference}: remote images are not fetched (this build works offline); download it and give its path, or inline it as a data:image/...;base64, URL")]
    Remote { reference: String },
    #[error("image {reference}: no such file ({path}); relative paths resolve against the dataset file's folder")]
    NotFound { reference: String, path: PathBuf },
    #[error("image {reference}: cannot read {path}: {source}")]
    Read {
        reference: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {reference}: invalid base64 ({message}); expected a path, data:image/...;base64,DATA or base64 bytes")]
    Base64 { reference: String, message: String },
    #[error("image {reference}: {message}")]
    Decode { reference: String, message: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("image of {width}x{height}: {message}")]
    Size {
        width: usize,
        height: usize,
        message: String,
    },
}
