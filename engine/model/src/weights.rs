//! Parameters from safetensors files: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped.
//!
//! On the CPU, a float32 tensor stored aligned in the file is used in place (no copy: the pages
//! are read on first touch and shared with the page cache); the mapping is private
//! (copy-on-write), so in-place updates never reach the file. Other tensors are copied once while
//! being converted to the requested dtype and device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::ModelError;

/// A memory-mapped safetensors file (kept alive as long as tensors borrow its bytes).
pub struct MappedFile {
    path: PathBuf,
    map: MmapMut,
}

impl MappedFile {
    /// Maps `path` privately (copy-on-write).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the mapping is private; other processes truncating the file while we run is
        // outside what any reader can guard against (as with every mmap-based loader).
        let map = unsafe { memmap2::MmapOptions::new().map_copy(&file) }
            .map_err(|e| ModelError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    /// Hands the pages of `[ptr, ptr + len)` back to the kernel if the range lies in this
    /// mapping (after a tensor borrowing them was replaced, e.g. by a quantized copy); a later
    /// read fetches them from the file again.
    pub fn release(&self, ptr: usize, len: usize) {
        let base = self.map.as_ptr() as usize;
        if ptr < base || ptr + len > base + self.map.len() || len == 0 {
            return;
        }
        // SAFETY: MADV_DONTNEED on a private mapping that is never written to only discards
        // pages that are re-read from the file on the next access.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, ptr - base, len)
        };
    }

    /// The tensors' descriptions and where the data area starts.
    fn metadata(&self) -> Result<(usize, Vec<(String, TensorInfo)>), ModelError> {
        let (n, meta) = SafeTensors::read_metadata(&self.map).map_err(|e| ModelError::Weights {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let infos = meta
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        Ok((8 + n, infos))
    }
}

/// The files of a checkpoint and which file holds which tensor.
pub struct Checkpoint {
    files: Vec<Arc<MappedFile>>,
    /// tensor name → (index into `files`, start of the file's data area, description).
    index: HashMap<String, (usize, usize, TensorInfo)>,
}

/// The safetensors files of a model folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`, or (for single-file folders under another name) the only
/// `*.safetensors` file.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Weights {
                path: index.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Weights {
                path: index.clone(),
                reason: "has no `weight_map` object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        let files: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for f in &files {
            if !f.is_file() {
                return Err(ModelError::MissingFile {
                    path: f.clone(),
                    what: "a shard named by model.safetensors.index.json",
                });
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found),
        _ => Err(ModelError::MissingFile {
            path: single,
            what: "the model weights (or model.safetensors.index.json)",
        }),
    }
}

impl Checkpoint {
    /// Maps every file and indexes the tensors they hold.
    pub fn open(files: &[PathBuf]) -> Result<Self, ModelError> {
        let mut mapped = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let m = MappedFile::open(f)?;
            let (start, infos) = m.metadata()?;
            for (name, info) in infos {
                index.insert(name, (i, start, info));
            }
            mapped.push(Arc::new(m));
        }
        Ok(Self {
            files: mapped,
            index,
        })
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// A stored tensor's shape, read from the header (nothing is loaded).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        let (_, _, info) = self.index.get(name)?;
        Some(info.shape.iter().map(|&d| d as i64).collect())
    }

    /// A stored tensor's dtype, read from the header (None when absent or of a dtype this
    /// loader does not read).
    pub fn stored_kind(&self, name: &str) -> Option<Kind> {
        let (_, _, info) = self.index.get(name)?;
        Some(match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::U8 => Kind::Uint8,
            Dtype::I8 => Kind::Int8,
            Dtype::BOOL => Kind::Bool,
            _ => return None,
        })
    }

    /// Loads one tensor as `kind` on `device`. The result may borrow the mapping: the caller
    /// keeps the [`Checkpoint`] (or the `Arc<MappedFile>` in [`Loaded::keep`]) alive.
    pub fn load(&self, name: &str, kind: Kind, device: Device) -> Result<Loaded, ModelError> {
        let (fi, start, info) =
            self.index
                .get(name)
                .ok_or_else(|| ModelError::MissingParameter {
                    name: name.to_string(),
                    available: close_names(name, self.names()),
                })?;
        let file = &self.files[*fi];
        let (a, b) = (start + info.data_offsets.0, start + info.data_offsets.1);
        if a > b || b > file.map.len() {
            return Err(ModelError::Weights {
                path: file.path.clone(),
                reason: format!("tensor `{name}` lies outside the file"),
            });
        }
        let data = &file.map[a..b];
        // A header's dimensions are untrusted: each must fit an i64 and so must their product
        // (a zero-element tensor passes safetensors' own size check whatever its other sizes).
        let shape: Option<Vec<i64>> = info.shape.iter().map(|&d| i64::try_from(d).ok()).collect();
        let shape = shape
            .filter(|s| s.iter().try_fold(1i64, |n, &d| n.checked_mul(d)).is_some())
            .ok_or_else(|| ModelError::Weights {
                path: file.path.clone(),
                reason: format!(
                    "tensor `{name}` has shape {:?}, too large to load",
                    info.shape
                ),
            })?;
        let src_kind = match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::U8 => Kind::Uint8,
            Dtype::I8 => Kind::Int8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(ModelError::Weights {
                    path: file.path.clone(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}, which this loader does not read"
                    ),
                })
            }
        };
        let elem = src_kind.elt_size_in_bytes();
        let numel: i64 = shape.iter().product();
        if numel.checked_mul(elem as i64) != Some(data.len() as i64) {
            return Err(ModelError::Weights {
                path: file.path.clone(),
                reason: format!(
                    "tensor `{name}` holds {} bytes for shape {shape:?}",
                    data.len()
                ),
            });
        }
        let aligned = (data.as_ptr() as usize) % elem.max(1) == 0;
        let in_place = aligned
            && src_kind == kind
            && device == Device::Cpu
            && numel > 0
            && std::env::var_os("SWIFT_RS_NO_MMAP").is_none();
        if in_place {
            let strides = contiguous_strides(&shape);
            // SAFETY: `data` lives in the private mapping held by `file`, which the returned
            // `Loaded` keeps alive; shape and strides describe exactly `data.len()` bytes.
            let t =
                unsafe { Tensor::f_from_blob(data.as_ptr(), &shape, &strides, kind, Device::Cpu) }
                    .map_err(|e| ModelError::Torch(e.to_string()))?;
            return Ok(Loaded {
                tensor: t,
                keep: Some(file.clone()),
            });
        }
        let t = Tensor::f_from_data_size(data, &shape, src_kind)
            .map_err(|e| ModelError::Torch(e.to_string()))?;
        let t = t
            .f_to_device(device)
            .and_then(|t| t.f_to_kind(kind))
            .map_err(|e| ModelError::Torch(e.to_string()))?;
        // The bytes were copied: let the kernel drop the mapped pages, so converting a model
        // (float32 → bfloat16, or onto a GPU) does not keep both copies resident. The mapping is
        // never written to, so a page read again later holds the same bytes.
        // SAFETY: MADV_DONTNEED on a private, unmodified file mapping only discards pages that
        // are re-read from the file on the next access; no reference into them is invalidated.
        let _ = unsafe {
            file.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a)
        };
        Ok(Loaded {
            tensor: t,
            keep: None,
        })
    }
}

/// A loaded tensor and, when it borrows the mapping, the file that must outlive it.
pub struct Loaded {
    pub tensor: Tensor,
    pub keep: Option<Arc<MappedFile>>,
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Up to three names from `names` that share the longest suffix with `name` (for messages).
fn close_names<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let tail = name.rsplit('.').take(2).collect::<Vec<_>>();
    let mut v: Vec<String> = names
        .filter(|n| {
            let t = n.rsplit('.').take(2).collect::<Vec<_>>();
            t == tail
        })
        .map(String::from)
        .collect();
    v.sort();
    v.truncate(3);
    v
}
