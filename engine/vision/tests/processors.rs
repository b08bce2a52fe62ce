//! The image path against Pillow and the Hugging Face processors, recorded by
//! `tests/reference/vision_processors.py` in `tests/fixtures/vision/*/reference.safetensors`:
//! libjpeg-turbo's decoding is bit-exact with Pillow's on the mllm-demo JPEGs (sha256 of the RGB
//! pixels), and each processor's pixel values are within 1e-5 of the slow (PIL) processor's,
//! with the same shape, grid and number of image positions.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use swift_vision::{load_image, ImageProcessor, ProcessedImage};

// The repository's one place that knows what `make setup` installs (std only).
#[allow(dead_code)]
#[path = "../../../tests/common/setup.rs"]
mod setup;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn images() -> PathBuf {
    setup::asset("llamafactory/data/mllm_demo_data")
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (v, t.shape().to_vec())
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn jpeg_decoding_is_pillows() {
    let bytes = std::fs::read(fixtures().join("clip/reference.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("metadata");
    for n in 1..=3 {
        let img = load_image(&format!("{n}.jpg"), Some(&images())).unwrap();
        assert_eq!(
            format!("{}x{}", img.width, img.height),
            meta[&format!("{n}.size")]
        );
        let got = format!("{:x}", Sha256::digest(&img.data));
        assert_eq!(
            got,
            meta[&format!("{n}.decoded_sha256")],
            "{n}.jpg decodes as Pillow does"
        );
    }
}

fn check(folder: &str, want_tokens: &[usize]) {
    let dir = fixtures().join(folder);
    let proc = ImageProcessor::from_model_dir(&dir).unwrap();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for n in 1..=3 {
        let img = load_image(&format!("{n}.jpg"), Some(&images())).unwrap();
        let ProcessedImage {
            pixel_values,
            shape,
            grid_thw,
            num_image_tokens,
        } = proc.process(&img).unwrap();
        let (want, want_shape) = f32s(&st, &format!("{n}.pixel_values"));
        // HF batches: [1, 3, H, W] for CLIP, [patches, dim] for Qwen2-VL.
        let want_shape: Vec<usize> = if want_shape.len() == 4 {
            want_shape[1..].to_vec()
        } else {
            want_shape
        };
        assert_eq!(shape, want_shape, "{folder} {n}.jpg shape");
        let worst = pixel_values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{folder} {n}.jpg: largest difference {worst}"
        );
        if let Some(g) = grid_thw {
            let want = i64s(&st, &format!("{n}.image_grid_thw"));
            assert_eq!(
                g.iter().map(|x| *x as i64).collect::<Vec<_>>(),
                want,
                "{folder} {n}.jpg grid"
            );
        }
        assert_eq!(
            num_image_tokens,
            want_tokens[n - 1],
            "{folder} {n}.jpg image positions"
        );
    }
}

#[test]
fn clip_processor_matches_transformers() {
    // 56x56 crops of 14-pixel patches: 16 positions (CLS dropped, strategy `default`).
    check("clip", &[16, 16, 16]);
}

#[test]
fn qwen2vl_processor_matches_transformers() {
    // Grids from the reference (12, 12, 12 patches): a quarter each after the 2x2 merge.
    check("qwen2vl", &[3, 3, 3]);
    check("qwen2vl-bilinear", &[2, 2, 2]);
}

#[test]
fn max_pixels_scales_down_as_ms_swift() {
    let bytes = std::fs::read(fixtures().join("clip/reference.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("metadata");
    for n in 1..=3 {
        let img = load_image(&format!("{n}.jpg"), Some(&images())).unwrap();
        let small = swift_vision::limit_pixels(&img, 20000);
        assert!(small.width * small.height <= 20000);
        let got = format!("{:x}", Sha256::digest(&small.data));
        assert_eq!(got, meta[&format!("{n}.limit_20000_sha256")], "{n}.jpg");
        assert_eq!(
            swift_vision::limit_pixels(&img, 10_000_000),
            img,
            "a smaller image is kept"
        );
    }
}
