//! The trainer's error type and safetensors writing (checkpoints: LoRA adapters in the PEFT
//! layout, full models as `model.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

/// What can go wrong while training or saving.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] swift_model::ModelError),
    #[error(transparent)]
    RunDir(#[from] crate::run_dir::RunDirError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Step(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn dtype(kind: Kind) -> Result<Dtype, TrainError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        other => {
            return Err(TrainError::Config(format!(
                "cannot save a tensor of kind {other:?}"
            )))
        }
    })
}

/// Writes named tensors as one safetensors file (metadata `format: pt`, as transformers writes).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        bufs.push((name.clone(), dtype(t.kind())?, shape, bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Config(format!("{n}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        save_safetensors(&p, &[("w".into(), t.shallow_clone())]).unwrap();
        let ck = swift_model::weights::Checkpoint::open(&[p]).unwrap();
        let back = ck.load("w", Kind::Float, Device::Cpu).unwrap().tensor;
        assert!(back.equal(&t));
    }
}
