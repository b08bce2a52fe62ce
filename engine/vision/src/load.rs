//! An image reference → bytes → [`RgbImage`], as ms-swift's `load_image` reads them
//! (`swift/template/vision_utils.py`: `load_file` then `Image.open(...).convert("RGB")`).
//!
//! A reference is tried, in order: `http://`/`https://` (refused: offline); `data:...;base64,DATA`;
//! an existing file (absolute, or relative to `base`, then to the working folder); bare base64
//! (ms-swift's `_check_path`: a string that is not a file but decodes). Anything else is a missing
//! file, reported with the path looked at.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::{RgbImage, VisionError};

/// ms-swift's `MAX_PATH_HEURISTIC`: a longer string is never taken for a path.
const MAX_PATH_LEN: usize = 2000;

/// Reads and decodes the image `reference` names; relative paths resolve against `base` (the
/// dataset file's folder) when given.
pub fn load_image(reference: &str, base: Option<&Path>) -> Result<RgbImage, VisionError> {
    let bytes = read_image_bytes(reference, base)?;
    decode_image(&bytes, reference)
}

/// The bytes of the image `reference` names (see the module doc for the order tried).
pub fn read_image_bytes(reference: &str, base: Option<&Path>) -> Result<Vec<u8>, VisionError> {
    let r = reference.trim();
    let shown = short(r);
    if r.starts_with("http://") || r.starts_with("https://") {
        return Err(VisionError::Remote { reference: shown });
    }
    if let Some(rest) = r.strip_prefix("data:") {
        let Some((_, data)) = rest.split_once(";base64,") else {
            return Err(VisionError::Base64 {
                reference: shown,
                message: "a data URL must read data:MIME;base64,DATA".into(),
            });
        };
        return b64(data).map_err(|message| VisionError::Base64 {
            reference: shown,
            message,
        });
    }
    let mut looked = None;
    if r.len() <= MAX_PATH_LEN {
        let p = Path::new(r);
        let candidates: Vec<PathBuf> = match base {
            Some(b) if p.is_relative() => vec![b.join(p), p.to_path_buf()],
            _ => vec![p.to_path_buf()],
        };
        for c in &candidates {
            if c.is_file() {
                return std::fs::read(c).map_err(|source| VisionError::Read {
                    reference: shown.clone(),
                    path: c.clone(),
                    source,
                });
            }
        }
        looked = candidates.into_iter().next();
    }
    match b64(r) {
        Ok(bytes) => Ok(bytes),
        Err(message) => match looked {
            Some(path) => Err(VisionError::NotFound {
                reference: shown,
                path,
            }),
            None => Err(VisionError::Base64 {
                reference: shown,
                message,
            }),
        },
    }
}

fn b64(data: &str) -> Result<Vec<u8>, String> {
    let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| e.to_string())
}

/// A reference as errors show it: long base64 cut to its start.
fn short(r: &str) -> String {
    if r.len() > 80 {
        let cut: String = r.chars().take(60).collect();
        format!("{cut}... ({} characters)", r.len())
    } else {
        r.to_string()
    }
}

/// Decodes JPEG or PNG bytes into RGB as Pillow's `Image.open(...).convert("RGB")`; `reference`
/// names the image in errors.
pub fn decode_image(bytes: &[u8], reference: &str) -> Result<RgbImage, VisionError> {
    let err = |message: String| VisionError::Decode {
        reference: short(reference),
        message,
    };
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes).map_err(err)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes).map_err(err)
    } else {
        Err(err(
            "not a JPEG or PNG file (other formats are not read; convert it to PNG)".into(),
        ))
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let header = turbojpeg::read_header(bytes).map_err(|e| format!("bad JPEG: {e}"))?;
    if matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    ) {
        return Err(
            "CMYK JPEGs are not read (Pillow inverts Adobe CMYK its own way); convert it to RGB"
                .into(),
        );
    }
    // Default flags: the accurate (islow) IDCT and fancy upsampling, as Pillow.
    let img: turbojpeg::Image<Vec<u8>> = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB)
        .map_err(|e| format!("bad JPEG: {e}"))?;
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity(w * h * 3);
    for row in img.pixels.chunks(img.pitch).take(h) {
        data.extend_from_slice(&row[..w * 3]);
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut dec = png::Decoder::new(bytes);
    let info = dec
        .read_header_info()
        .map_err(|e| format!("bad PNG: {e}"))?;
    if info.bit_depth == png::BitDepth::Sixteen
        && matches!(
            info.color_type,
            png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha
        )
    {
        return Err("16-bit grey PNGs are not read (Pillow reads them as 32-bit integers); save it as 8-bit".into());
    }
    // Palette and low bit depths expanded to 8 bits, 16-bit samples cut to their high byte
    // (Pillow's `RGB;16B` unpacker does the same).
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| format!("bad PNG: {e}"))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("bad PNG: {e}"))?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("bad PNG: palette not expanded".into()),
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for row in buf.chunks(frame.line_size).take(h) {
        for px in row[..w * channels].chunks(channels) {
            match channels {
                1 | 2 => data.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => data.extend_from_slice(&px[..3]),
            }
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}
