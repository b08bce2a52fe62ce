//! A streaming writer for `.safetensors` files holding `F32`, `I32` and `U8` tensors: the header (names, shapes,
//! byte ranges) is computed up front from the shapes alone, then each tensor's data is produced
//! and written one at a time, so a whole model never has to sit in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::atomic::write_atomic;
use crate::error::GgufError;

/// One tensor to be written: its name and shape (row-major, outermost first).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Bytes per element of the safetensors dtypes [`write_typed`] writes.
fn dtype_bytes(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" | "I32" => Some(4),
        "U8" => Some(1),
        _ => None,
    }
}

/// Write `entries` (each with its dtype: `F32`, `I32` or `U8`) to `path` (atomically).
/// `produce(i)` must return the little-endian bytes of tensor `i`; it is called in order. The
/// caller orders the entries so that each starts aligned to its element size (4-byte types
/// first).
pub(crate) fn write_typed<F>(
    path: &Path,
    entries: &[(Entry, &str)],
    metadata: &BTreeMap<String, String>,
    mut produce: F,
) -> Result<(), GgufError>
where
    F: FnMut(usize) -> Result<Vec<u8>, GgufError>,
{
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".to_owned(), json!(metadata));
    }
    let mut offset = 0usize;
    let mut sizes = Vec::with_capacity(entries.len());
    for (e, dtype) in entries {
        let elem = dtype_bytes(dtype).ok_or_else(|| {
            GgufError::Writer(format!("safetensors: dtype {dtype} is not written here"))
        })?;
        let end = offset + e.n_elements() * elem;
        sizes.push(end - offset);
        let prev = header.insert(
            e.name.clone(),
            json!({ "dtype": dtype, "shape": e.shape, "data_offsets": [offset, end] }),
        );
        if prev.is_some() {
            return Err(GgufError::Writer(format!(
                "safetensors: tensor name '{}' appears twice",
                e.name
            )));
        }
        offset = end;
    }
    let mut text =
        serde_json::to_string(&Value::Object(header)).map_err(|source| GgufError::Json {
            file: path.display().to_string(),
            source,
        })?;
    // Pad the header with spaces so the data starts 8-byte aligned, as safetensors does.
    while (8 + text.len()) % 8 != 0 {
        text.push(' ');
    }

    write_atomic(path, |w| {
        let io = |e| GgufError::io("writing", path, e);
        w.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(text.as_bytes()).map_err(io)?;
        for (i, (e, _)) in entries.iter().enumerate() {
            let bytes = produce(i)?;
            if bytes.len() != sizes[i] {
                return Err(GgufError::Shape {
                    tensor: e.name.clone(),
                    detail: format!(
                        "shape {:?} needs {} bytes, {} were produced",
                        e.shape,
                        sizes[i],
                        bytes.len()
                    ),
                });
            }
            w.write_all(&bytes).map_err(io)?;
        }
        Ok(())
    })
}
