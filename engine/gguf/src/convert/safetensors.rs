//! A streaming writer for `.safetensors` files holding `F32` tensors: the header (names, shapes,
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

/// Write `entries` as F32 tensors to `path` (atomically). `produce(i)` must return the
/// `entries[i].n_elements()` values of tensor `i`; it is called in order.
pub(crate) fn write_f32<F>(
    path: &Path,
    entries: &[Entry],
    metadata: &BTreeMap<String, String>,
    mut produce: F,
) -> Result<(), GgufError>
where
    F: FnMut(usize) -> Result<Vec<f32>, GgufError>,
{
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".to_owned(), json!(metadata));
    }
    let mut offset = 0usize;
    for e in entries {
        let end = offset + e.n_elements() * 4;
        let prev = header.insert(
            e.name.clone(),
            json!({ "dtype": "F32", "shape": e.shape, "data_offsets": [offset, end] }),
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
        let mut bytes = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let data = produce(i)?;
            if data.len() != e.n_elements() {
                return Err(GgufError::Shape {
                    tensor: e.name.clone(),
                    detail: format!(
                        "shape {:?} needs {} values, {} were produced",
                        e.shape,
                        e.n_elements(),
                        data.len()
                    ),
                });
            }
            bytes.clear();
            bytes.reserve(data.len() * 4);
            for v in &data {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&bytes).map_err(io)?;
        }
        Ok(())
    })
}
