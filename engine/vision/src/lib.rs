//! # swift-vision: images in
//!
//! Everything between an image reference in a dataset row (or a request) and the pixel values a
//! vision tower reads, with no tensors and no model code:
//!
//! * [`load`]: a reference → bytes → an RGB image. A reference is a file path (relative paths
//!   resolve against a base folder: the dataset file's, as ms-swift does), a `data:image/...;base64,`
//!   URL, or bare base64; `http(s)://` is refused (this build is offline), naming the reference.
//!   JPEG is decoded by libjpeg-turbo (built from source by `turbojpeg`), as Pillow's wheels do:
//!   islow IDCT and fancy upsampling, so pixels are bit-exact with `PIL.Image.open(...).convert("RGB")`
//!   (the pure-Rust decoders differ by up to 4 levels on the mllm-demo JPEGs). PNG through `png`
//!   (lossless, so any correct decoder is exact); grey and alpha are converted as Pillow's
//!   `convert("RGB")` does (alpha dropped, grey copied). EXIF orientation is not applied: neither
//!   ms-swift's `load_image` nor the Hugging Face processors transpose.
//! * [`resize`]: Pillow's `Image.resize` with BILINEAR/BICUBIC on 8-bit RGB, bit for bit.
//! * [`processor`]: the Hugging Face image processors' slow (PIL) paths, configured from a model
//!   folder's `preprocessor_config.json`: `CLIPImageProcessor` (LLaVA-1.5) and
//!   `Qwen2VLImageProcessor` (Qwen2-VL), each giving pixel values, their shape, the Qwen2-VL grid
//!   and the number of `<image>` positions the image expands to.
//!
//! ```no_run
//! # fn main() -> Result<(), swift_vision::VisionError> {
//! let proc = swift_vision::ImageProcessor::from_model_dir("my-llava".as_ref())?;
//! let img = swift_vision::load_image("images/1.jpg", Some("data".as_ref()))?;
//! let out = proc.process(&img)?;
//! println!("{:?} {} image tokens", out.shape, out.num_image_tokens);
//! # Ok(()) }
//! ```

mod error;
pub mod load;
pub mod processor;
pub mod resize;

pub use error::VisionError;
pub use load::{decode_image, load_image, read_image_bytes};
pub use processor::{ClipConfig, ImageProcessor, ProcessedImage, Qwen2VlConfig};
pub use resize::{limit_pixels, resize, Filter};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B` (Pillow's `RGB` mode as
/// `numpy.asarray` shows it: `[height, width, 3]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> RgbImage {
        RgbImage {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }
}
