//! The GGUF reader: [`GgufFile`] memory-maps a GGUF v2/v3 file, parses its header, metadata and
//! tensor infos (checking every length, offset and alignment against the file), and hands out
//! typed metadata, raw tensor bytes and dequantized `f32` tensors in Hugging Face shape order.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dequant;
use crate::error::GgufError;
use crate::types::{GgmlType, MetadataValue, ValueType};

/// `"GGUF"` read as a little-endian `u32`.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest number of dimensions accepted in a tensor info.
const MAX_DIMS: u32 = 8;
/// Deepest nesting of arrays accepted in metadata.
const MAX_ARRAY_DEPTH: u32 = 8;
/// Most items reserved ahead from a count in the header: a list grows past it only as its items
/// are actually read, so a count the file cannot back allocates little.
const MAX_RESERVE: u64 = 1 << 12;

/// A capacity to reserve for `count` items claimed by the header.
fn reserve(count: u64) -> usize {
    count.min(MAX_RESERVE) as usize
}

/// One tensor's entry in the GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (row length). See [`Self::shape`].
    pub dims: Vec<u64>,
    /// The raw ggml type id from the file.
    pub type_id: u32,
    /// The decoded type, `None` for ids this crate does not know.
    pub ggml_type: Option<GgmlType>,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Shape in Hugging Face / PyTorch order (outermost first): the reverse of [`Self::dims`].
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of bytes the data takes, when the type is known.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ggml_type.and_then(|t| t.bytes_for(self.n_elements()))
    }

    /// Name of the type, or `unknown(<id>)`.
    pub fn type_name(&self) -> String {
        match self.ggml_type {
            Some(t) => t.name().to_owned(),
            None => format!("unknown({})", self.type_id),
        }
    }
}

/// A dequantized tensor: `f32` values in row-major order with the shape in Hugging Face order.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An open, memory-mapped GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Open and parse `path`. The file is memory-mapped; it must not be modified while open.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io("opening", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io("reading the size of", &path, e))?
            .len();
        if len < 24 {
            return Err(GgufError::Malformed {
                path,
                detail: format!("file is only {len} bytes long, too short for a GGUF header"),
            });
        }
        // SAFETY: the map is read-only; as with every memory-mapped reader, the caller must not
        // truncate or rewrite the file while this `GgufFile` is alive.
        let mmap =
            unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io("memory-mapping", &path, e))?;
        Self::parse(path, mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<GgufFile, GgufError> {
        let mut cur = Cursor {
            buf: &mmap[..],
            pos: 0,
            path: &path,
        };
        let magic: [u8; 4] = cur.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.clone(),
                found: magic,
            });
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            let hint = if version == 1 {
                "; version 1 files predate August 2023, convert the model again with a current llama.cpp"
            } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                "; this looks like a big-endian GGUF, which is not supported"
            } else {
                ""
            };
            return Err(GgufError::UnsupportedVersion {
                path: path.clone(),
                version,
                hint,
            });
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;

        // Each metadata entry takes at least 12 bytes and each tensor info at least 28, so
        // absurd counts are caught before anything is allocated for them.
        let remaining = cur.remaining() as u64;
        if n_kv > remaining / 12 || n_tensors > remaining / 28 {
            return Err(cur.malformed(format!(
                "header claims {n_kv} metadata entries and {n_tensors} tensors, more than fit in the file"
            )));
        }

        let mut metadata = Vec::with_capacity(reserve(n_kv));
        let mut metadata_index = HashMap::with_capacity(reserve(n_kv));
        for i in 0..n_kv {
            let key = cur.string(|| format!("key of metadata entry {i}"))?;
            let type_id = cur.u32("metadata value type")?;
            let vt = ValueType::from_id(type_id).ok_or_else(|| {
                cur.malformed(format!(
                    "metadata key '{key}' has unknown value type id {type_id}"
                ))
            })?;
            let value = cur.value(vt, &key, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(cur.malformed(format!("metadata key '{key}' appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                match v.as_u64() {
                    Some(a) if a > 0 && a.is_power_of_two() => a,
                    _ => {
                        return Err(cur.malformed(format!(
                            "general.alignment must be a positive power of two, found {v:?}"
                        )))
                    }
                }
            }
        };

        let mut tensors = Vec::with_capacity(reserve(n_tensors));
        let mut tensor_index = HashMap::with_capacity(reserve(n_tensors));
        for i in 0..n_tensors {
            let name = cur.string(|| format!("name of tensor {i}"))?;
            let n_dims = cur.u32("tensor dimension count")?;
            if n_dims > MAX_DIMS {
                return Err(cur.malformed(format!(
                    "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} supported)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cur.u64("tensor dimension")?);
            }
            let type_id = cur.u32("tensor type")?;
            let offset = cur.u64("tensor offset")?;
            let info = TensorInfo {
                name: name.clone(),
                ggml_type: GgmlType::from_id(type_id),
                dims,
                type_id,
                offset,
            };
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(cur.malformed(format!("tensor name '{name}' appears twice")));
            }
            tensors.push(info);
        }

        let data_offset = align_up(cur.pos as u64, alignment);
        let file_len = mmap.len() as u64;
        if data_offset > file_len && !tensors.is_empty() {
            return Err(cur.malformed(format!(
                "data section would start at byte {data_offset}, past the end of the file ({file_len} bytes)"
            )));
        }
        for t in &tensors {
            check_tensor_layout(t, alignment, data_offset, file_len)
                .map_err(|d| cur.malformed(d))?;
        }

        Ok(GgufFile {
            path,
            mmap,
            version,
            alignment,
            data_offset,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset at which the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value stored under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn type_error(&self, key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
        GgufError::MetadataType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            found: found.type_description(),
        }
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingMetadata {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    /// An unsigned integer value (any integer type); `Ok(None)` when absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "a non-negative integer", v)),
        }
    }

    /// A signed integer value (any integer type); `Ok(None)` when absent.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "an integer", v)),
        }
    }

    /// A float value (float or integer types); `Ok(None)` when absent.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "a number", v)),
        }
    }

    /// A boolean value; `Ok(None)` when absent.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "bool", v)),
        }
    }

    /// A string value; `Ok(None)` when absent.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "string", v)),
        }
    }

    /// An array of strings; `Ok(None)` when absent.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.type_error(key, "array of string", v))?;
        items
            .iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| self.type_error(key, "array of string", v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An array of integers (any integer element type); `Ok(None)` when absent.
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.type_error(key, "array of integers", v))?;
        items
            .iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| self.type_error(key, "array of integers", v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An array of numbers as `f64`; `Ok(None)` when absent.
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>, GgufError> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.type_error(key, "array of numbers", v))?;
        items
            .iter()
            .map(|x| match x {
                // Plain widening here: scores are compared, not printed.
                MetadataValue::F32(f) => Ok(*f as f64),
                other => other
                    .as_f64()
                    .ok_or_else(|| self.type_error(key, "array of numbers", v)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Like [`Self::get_u64`] but the key must be present.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_u64(key)?.ok_or_else(|| self.missing(key))
    }

    /// Like [`Self::get_f64`] but the key must be present.
    pub fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// Like [`Self::get_str`] but the key must be present.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// `general.architecture` (e.g. `llama`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.require_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Total number of elements over all tensors (the model's parameter count).
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }

    fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::NoSuchTensor {
                path: self.path.clone(),
                name: name.to_owned(),
            })
    }

    /// The raw (possibly quantized) bytes of tensor `name`.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.require_tensor(name)?;
        self.data_of(info)
    }

    /// The raw bytes of the tensor described by `info` (which must come from this file).
    pub fn data_of(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let n_bytes = info.n_bytes().ok_or(GgufError::UnknownType {
            tensor: info.name.clone(),
            type_id: info.type_id,
        })?;
        // Bounds were checked in `parse`; `get` keeps this panic-free regardless.
        let start = self.data_offset + info.offset;
        let end = start + n_bytes;
        self.mmap
            .get(start as usize..end as usize)
            .ok_or_else(|| GgufError::Malformed {
                path: self.path.clone(),
                detail: format!("data of tensor '{}' lies outside the file", info.name),
            })
    }

    /// Tensor `name` dequantized to `f32`, with its shape in Hugging Face order.
    pub fn tensor_f32(&self, name: &str) -> Result<F32Tensor, GgufError> {
        let info = self.require_tensor(name)?;
        self.f32_of(info)
    }

    /// The tensor described by `info` dequantized to `f32`.
    pub fn f32_of(&self, info: &TensorInfo) -> Result<F32Tensor, GgufError> {
        let bytes = self.data_of(info)?;
        let ty = info.ggml_type.ok_or(GgufError::UnknownType {
            tensor: info.name.clone(),
            type_id: info.type_id,
        })?;
        let data = dequant::dequantize(ty, bytes, info.n_elements() as usize, &info.name)?;
        Ok(F32Tensor {
            shape: info.shape(),
            data,
        })
    }
}

pub(crate) fn align_up(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment) * alignment
}

fn check_tensor_layout(
    t: &TensorInfo,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<(), String> {
    let mut n: u64 = 1;
    for &d in &t.dims {
        n = n.checked_mul(d).ok_or_else(|| {
            format!(
                "tensor '{}' has dimensions {:?} whose product overflows",
                t.name, t.dims
            )
        })?;
    }
    if t.offset % alignment != 0 {
        return Err(format!(
            "tensor '{}' starts at data offset {}, which is not a multiple of the alignment {alignment}",
            t.name, t.offset
        ));
    }
    let Some(ty) = t.ggml_type else {
        // Unknown type: the size cannot be checked; reading it reports the type id.
        return Ok(());
    };
    let row = t.dims.first().copied().unwrap_or(1);
    if row % ty.block_size() as u64 != 0 {
        return Err(format!(
            "tensor '{}' of type {ty} has rows of {row} elements, not a multiple of the block size {}",
            t.name,
            ty.block_size()
        ));
    }
    let n_bytes = ty
        .bytes_for(n)
        .ok_or_else(|| format!("tensor '{}' has an impossible size", t.name))?;
    let end = data_offset
        .checked_add(t.offset)
        .and_then(|s| s.checked_add(n_bytes))
        .ok_or_else(|| format!("tensor '{}' has an offset that overflows", t.name))?;
    if end > file_len {
        return Err(format!(
            "tensor '{}' ({ty}, {n} elements, {n_bytes} bytes at data offset {}) ends at byte {end}, past the end of the file ({file_len} bytes); the file is probably truncated",
            t.name, t.offset
        ));
    }
    Ok(())
}

/// A bounds-checked little-endian reader over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn malformed(&self, detail: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() as u64 {
            return Err(self.malformed(format!(
                "file ends at byte {} while reading {} ({n} bytes needed at byte {})",
                self.buf.len(),
                what(),
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, &|| what.to_owned())?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = u64::from_le_bytes(self.array("string length")?);
        let bytes = self.take(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.malformed(format!("{} is not valid UTF-8: {e}", what()))),
        }
    }

    fn value(&mut self, vt: ValueType, key: &str, depth: u32) -> Result<MetadataValue, GgufError> {
        let what = "metadata value";
        Ok(match vt {
            ValueType::U8 => MetadataValue::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => MetadataValue::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                b => {
                    return Err(self.malformed(format!(
                        "metadata key '{key}' holds bool byte {b}, expected 0 or 1"
                    )))
                }
            },
            ValueType::String => {
                MetadataValue::String(self.string(|| format!("value of metadata key '{key}'"))?)
            }
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(format!(
                        "metadata key '{key}' nests arrays deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let type_id = self.u32("array element type")?;
                let et = ValueType::from_id(type_id).ok_or_else(|| {
                    self.malformed(format!(
                        "metadata key '{key}' is an array of unknown value type id {type_id}"
                    ))
                })?;
                let len = self.u64("array length")?;
                let min_size: u64 = match et {
                    ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
                    ValueType::U16 | ValueType::I16 => 2,
                    ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
                    ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
                    ValueType::Array => 12,
                };
                if len > self.remaining() as u64 / min_size {
                    return Err(self.malformed(format!(
                        "metadata key '{key}' claims an array of {len} elements, more than fit in the rest of the file"
                    )));
                }
                let mut items = Vec::with_capacity(reserve(len));
                for _ in 0..len {
                    items.push(self.value(et, key, depth + 1)?);
                }
                MetadataValue::Array(et, items)
            }
        })
    }
}
