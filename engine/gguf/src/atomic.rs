//! Crash-safe file output: write to a temporary name next to the target, flush and sync, then
//! rename over the target, so an interrupted run never leaves a complete-looking file behind.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::GgufError;

/// Write `path` through `fill`, atomically (temp file + rename). On error the temp file is
/// removed and `path` is left as it was.
pub(crate) fn write_atomic<F>(path: &Path, fill: F) -> Result<(), GgufError>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<(), GgufError>,
{
    let tmp = temp_name(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| GgufError::io("creating", &tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush().map_err(|e| GgufError::io("writing", &tmp, e))?;
        let file = w
            .into_inner()
            .map_err(|e| GgufError::io("writing", &tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| GgufError::io("syncing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| GgufError::io("renaming into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write a JSON value (pretty-printed, trailing newline) atomically.
pub(crate) fn write_json_atomic(path: &Path, value: &serde_json::Value) -> Result<(), GgufError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut text = serde_json::to_string_pretty(value).map_err(|source| GgufError::Json {
        file: file_name,
        source,
    })?;
    text.push('\n');
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| GgufError::io("writing", path, e))
    })
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}
