//! The GGUF writer: [`GgufWriter`] collects metadata and tensors (given as bytes, as `f32` data
//! to encode, or declared now and supplied while writing) and writes a GGUF v3 file with every
//! tensor aligned to `general.alignment`, atomically.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::GgufError;
use crate::quant;
use crate::reader::{align_up, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::types::{GgmlType, MetadataValue};

struct PendingTensor {
    name: String,
    /// ggml order (innermost first).
    dims: Vec<u64>,
    ty: GgmlType,
    data: Option<Vec<u8>>,
}

impl PendingTensor {
    fn n_bytes(&self) -> u64 {
        let n: u64 = self.dims.iter().product();
        // Checked when the tensor was added.
        self.ty.bytes_for(n).unwrap_or(0)
    }
}

/// Builds a GGUF v3 file.
///
/// ```no_run
/// # use swift_gguf::{GgufWriter, GgmlType};
/// let mut w = GgufWriter::new();
/// w.set_metadata("general.architecture", "llama");
/// w.add_tensor_f32("token_embd.weight", &[4, 32], &vec![0.0; 128], GgmlType::Q8_0)?;
/// w.write("model.gguf")?;
/// # Ok::<(), swift_gguf::GgufError>(())
/// ```
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty writer with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Use another alignment (a power of two); it is recorded as `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u64) -> Result<(), GgufError> {
        if alignment == 0 || !alignment.is_power_of_two() || alignment > u32::MAX as u64 {
            return Err(GgufError::Writer(format!(
                "alignment must be a power of two that fits in u32, got {alignment}"
            )));
        }
        self.alignment = alignment;
        self.set_metadata("general.alignment", MetadataValue::U32(alignment as u32));
        Ok(())
    }

    /// Set metadata `key` (replacing an earlier value, keeping its position).
    pub fn set_metadata(&mut self, key: &str, value: impl Into<MetadataValue>) {
        let value = value.into();
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_owned(), value));
        }
    }

    fn push(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        data: Option<Vec<u8>>,
    ) -> Result<(), GgufError> {
        if shape.is_empty() {
            return Err(GgufError::Writer(format!(
                "tensor '{name}' has an empty shape"
            )));
        }
        if self.names.contains(name) {
            return Err(GgufError::Writer(format!(
                "tensor '{name}' was added twice"
            )));
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let fail = |detail: String| {
            Err(GgufError::Shape {
                tensor: name.to_owned(),
                detail,
            })
        };
        let row = dims[0];
        if row % ty.block_size() as u64 != 0 {
            return fail(format!(
                "rows of {row} elements cannot be stored as {ty}: the row length must be a multiple of {}",
                ty.block_size()
            ));
        }
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let Some(bytes) = n.and_then(|n| ty.bytes_for(n)) else {
            return fail(format!("shape {shape:?} is too large"));
        };
        if let Some(d) = &data {
            if d.len() as u64 != bytes {
                return fail(format!(
                    "shape {shape:?} as {ty} needs {bytes} bytes, got {}",
                    d.len()
                ));
            }
        }
        self.names.insert(name.to_owned());
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            dims,
            ty,
            data,
        });
        Ok(())
    }

    /// Add a tensor whose bytes are already encoded as `ty`. `shape` is in Hugging Face order.
    pub fn add_tensor_bytes(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<(), GgufError> {
        self.push(name, shape, ty, Some(bytes))
    }

    /// Add `f32` data (row-major, `shape` in Hugging Face order), encoded as `ty`
    /// (F32, F16, BF16, Q8_0, Q4_0 or Q4_1).
    pub fn add_tensor_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(GgufError::Shape {
                tensor: name.to_owned(),
                detail: format!(
                    "shape {shape:?} has {n} elements but {} values were given",
                    data.len()
                ),
            });
        }
        let row = shape.last().copied().unwrap_or(1);
        let bytes = quant::quantize(ty, data, row, name)?;
        self.push(name, shape, ty, Some(bytes))
    }

    /// Declare a tensor whose bytes are produced at write time by [`Self::write_with`], so that
    /// large models need not be held in memory.
    pub fn declare_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        self.push(name, shape, ty, None)
    }

    /// Write the file; every tensor must have been given its data.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        self.write_with(path, |name| {
            Err(GgufError::Writer(format!(
                "tensor '{name}' was declared but no data was supplied"
            )))
        })
    }

    /// Write the file, calling `provide(name)` for the encoded bytes of each declared tensor
    /// (in declaration order). The file appears at `path` only when complete.
    pub fn write_with<F>(&self, path: impl AsRef<Path>, mut provide: F) -> Result<(), GgufError>
    where
        F: FnMut(&str) -> Result<Vec<u8>, GgufError>,
    {
        let path = path.as_ref();
        write_atomic(path, |w| {
            let mut out = Counting { w, pos: 0, path };
            out.put(&GGUF_MAGIC)?;
            out.put(&3u32.to_le_bytes())?;
            out.put(&(self.tensors.len() as u64).to_le_bytes())?;
            out.put(&(self.metadata.len() as u64).to_le_bytes())?;
            let mut buf = Vec::new();
            for (key, value) in &self.metadata {
                put_string(&mut buf, key);
                buf.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
                put_value(&mut buf, key, value)?;
            }
            let mut offset = 0u64;
            for t in &self.tensors {
                put_string(&mut buf, &t.name);
                buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
                for d in &t.dims {
                    buf.extend_from_slice(&d.to_le_bytes());
                }
                buf.extend_from_slice(&t.ty.id().to_le_bytes());
                buf.extend_from_slice(&offset.to_le_bytes());
                offset = align_up(offset + t.n_bytes(), self.alignment);
            }
            out.put(&buf)?;
            out.pad(self.alignment)?;
            for t in &self.tensors {
                let supplied;
                let bytes: &[u8] = match &t.data {
                    Some(d) => d,
                    None => {
                        supplied = provide(&t.name)?;
                        if supplied.len() as u64 != t.n_bytes() {
                            return Err(GgufError::Shape {
                                tensor: t.name.clone(),
                                detail: format!(
                                    "declared as {} with dims {:?} ({} bytes) but {} bytes were supplied",
                                    t.ty,
                                    t.dims,
                                    t.n_bytes(),
                                    supplied.len()
                                ),
                            });
                        }
                        &supplied
                    }
                };
                out.put(bytes)?;
                out.pad(self.alignment)?;
            }
            Ok(())
        })
    }
}

/// A writer that counts bytes, for alignment padding.
struct Counting<'a, W: Write> {
    w: &'a mut W,
    pos: u64,
    path: &'a Path,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.w
            .write_all(bytes)
            .map_err(|e| GgufError::io("writing", self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, alignment: u64) -> Result<(), GgufError> {
        let n = (align_up(self.pos, alignment) - self.pos) as usize;
        self.put(&vec![0u8; n])
    }
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, key: &str, v: &MetadataValue) -> Result<(), GgufError> {
    match v {
        MetadataValue::U8(x) => buf.push(*x),
        MetadataValue::I8(x) => buf.push(*x as u8),
        MetadataValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => buf.push(u8::from(*x)),
        MetadataValue::String(s) => put_string(buf, s),
        MetadataValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Array(et, items) => {
            buf.extend_from_slice(&(*et as u32).to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.value_type() != *et {
                    return Err(GgufError::Writer(format!(
                        "metadata key '{key}' is declared as an array of {} but holds a {}",
                        et.name(),
                        item.type_description()
                    )));
                }
                put_value(buf, key, item)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::GgufFile;
    use crate::types::ValueType;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("swift-gguf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_metadata_and_tensors() {
        let dir = tmpdir("writer");
        let path = dir.join("rt.gguf");
        let mut w = GgufWriter::new();
        w.set_metadata("general.architecture", "llama");
        w.set_metadata("llama.block_count", 2u32);
        w.set_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32);
        w.set_metadata("general.flag", true);
        w.set_metadata("x.i8", MetadataValue::I8(-3));
        w.set_metadata("x.u16", MetadataValue::U16(65535));
        w.set_metadata("x.i16", MetadataValue::I16(-2));
        w.set_metadata("x.u64", 1u64 << 40);
        w.set_metadata("x.i64", MetadataValue::I64(-(1 << 40)));
        w.set_metadata("x.f64", MetadataValue::F64(0.125));
        w.set_metadata(
            "tokenizer.ggml.tokens",
            vec!["a".to_owned(), "▁b".to_owned(), String::new()],
        );
        w.set_metadata(
            "tokenizer.ggml.token_type",
            MetadataValue::Array(
                ValueType::I32,
                vec![MetadataValue::I32(1), MetadataValue::I32(3)],
            ),
        );
        w.set_metadata(
            "nested",
            MetadataValue::Array(
                ValueType::Array,
                vec![MetadataValue::Array(
                    ValueType::U8,
                    vec![MetadataValue::U8(7)],
                )],
            ),
        );
        w.set_alignment(64).unwrap();

        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        w.add_tensor_f32("a", &[2, 3], &a, GgmlType::F32).unwrap();
        let b: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
        w.add_tensor_f32("b", &[2, 32], &b, GgmlType::F16).unwrap();
        w.add_tensor_f32("c", &[2, 32], &b, GgmlType::Q8_0).unwrap();
        w.add_tensor_f32("d", &[64], &b, GgmlType::Q4_0).unwrap();
        w.declare_tensor("e", &[1, 5], GgmlType::F32).unwrap();
        w.write_with(&path, |name| {
            assert_eq!(name, "e");
            Ok([1f32, 2., 3., 4., 5.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect())
        })
        .unwrap();

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(f.require_u64("llama.block_count").unwrap(), 2);
        assert_eq!(
            f.require_f64("llama.attention.layer_norm_rms_epsilon")
                .unwrap(),
            1e-5
        );
        assert_eq!(f.get_bool("general.flag").unwrap(), Some(true));
        assert_eq!(f.get_i64("x.i8").unwrap(), Some(-3));
        assert_eq!(f.get_u64("x.u16").unwrap(), Some(65535));
        assert_eq!(f.get_i64("x.i16").unwrap(), Some(-2));
        assert_eq!(f.get_u64("x.u64").unwrap(), Some(1 << 40));
        assert_eq!(f.get_i64("x.i64").unwrap(), Some(-(1 << 40)));
        assert_eq!(f.get_f64("x.f64").unwrap(), Some(0.125));
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap(),
            vec!["a", "▁b", ""]
        );
        assert_eq!(
            f.get_i64_array("tokenizer.ggml.token_type")
                .unwrap()
                .unwrap(),
            vec![1, 3]
        );
        assert_eq!(
            f.metadata("nested").unwrap().as_array().unwrap()[0]
                .as_array()
                .unwrap()[0],
            MetadataValue::U8(7)
        );
        assert_eq!(f.get_u64("absent").unwrap(), None);
        let err = f
            .require_u64("general.architecture")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'general.architecture'") && err.contains("string"),
            "{err}"
        );

        assert_eq!(f.tensors().len(), 5);
        for t in f.tensors() {
            assert_eq!(t.offset % 64, 0, "{}", t.name);
        }
        let ta = f.tensor_f32("a").unwrap();
        assert_eq!(ta.shape, vec![2, 3]);
        assert_eq!(f.tensor_info("a").unwrap().dims, vec![3, 2]);
        assert_eq!(ta.data, a);
        assert_eq!(f.tensor_f32("b").unwrap().data, b); // exactly representable in f16
        let c = f.tensor_f32("c").unwrap();
        assert_eq!(c.shape, vec![2, 32]);
        assert!(c.data.iter().zip(&b).all(|(x, y)| (x - y).abs() < 0.02));
        let d = f.tensor_f32("d").unwrap();
        assert!(d.data.iter().zip(&b).all(|(x, y)| (x - y).abs() < 0.3));
        assert_eq!(f.tensor_f32("e").unwrap().data, vec![1., 2., 3., 4., 5.]);
        assert_eq!(f.parameter_count(), 6 + 64 + 64 + 64 + 5);
        let err = f.tensor_f32("nope").unwrap_err().to_string();
        assert!(
            err.contains("no tensor named 'nope'") && err.contains("rt.gguf"),
            "{err}"
        );
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = GgufWriter::new();
        assert!(w
            .add_tensor_f32("q", &[2, 16], &[0.0; 32], GgmlType::Q8_0)
            .is_err());
        w.add_tensor_f32("x", &[1], &[0.0], GgmlType::F32).unwrap();
        assert!(w.add_tensor_f32("x", &[1], &[0.0], GgmlType::F32).is_err());
        assert!(w.add_tensor_f32("y", &[2], &[0.0], GgmlType::F32).is_err());
        w.declare_tensor("z", &[4], GgmlType::F32).unwrap();
        let dir = tmpdir("writer-bad");
        let path = dir.join("bad.gguf");
        let err = w.write(&path).unwrap_err().to_string();
        assert!(err.contains("'z'"), "{err}");
        assert!(!path.exists(), "a failed write must not leave the file");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "temp file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reader_rejects_truncated_and_foreign_files() {
        let dir = tmpdir("reader-bad");
        let path = dir.join("t.gguf");
        let mut w = GgufWriter::new();
        w.set_metadata("general.architecture", "llama");
        w.add_tensor_f32("w", &[4, 32], &[1.0; 128], GgmlType::F32)
            .unwrap();
        w.write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = GgufFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("truncated"), "{err}");

        let mut bad = bytes.clone();
        bad[0..4].copy_from_slice(b"GGML");
        std::fs::write(&path, &bad).unwrap();
        assert!(GgufFile::open(&path)
            .unwrap_err()
            .to_string()
            .contains("not a GGUF file"));

        let mut v1 = bytes.clone();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&path, &v1).unwrap();
        assert!(GgufFile::open(&path)
            .unwrap_err()
            .to_string()
            .contains("version 1"));

        // Cut inside the metadata: the error says what was being read.
        std::fs::write(&path, &bytes[..40]).unwrap();
        let err = GgufFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");

        // A tensor type id nobody knows: metadata still readable, the tensor is not.
        let mut unk = bytes.clone();
        let needle: Vec<u8> = 1u64.to_le_bytes().into_iter().chain(*b"w").collect();
        let name_at = bytes
            .windows(9)
            .position(|s| s == needle.as_slice())
            .unwrap();
        // After the name: n_dims u32, 2 x u64 dims, then the type id.
        let type_at = name_at + 9 + 4 + 16;
        unk[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
        std::fs::write(&path, &unk).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let err = f.tensor_f32("w").unwrap_err().to_string();
        assert!(err.contains("unknown ggml type id 77"), "{err}");
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
