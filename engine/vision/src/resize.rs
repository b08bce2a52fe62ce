//! Pillow's `Image.resize` on 8-bit RGB, bit for bit: `libImaging/Resample.c`'s separable passes
//! (horizontal first, over only the rows the vertical pass reads), the filter's support scaled by
//! the downscale factor, coefficients normalised to sum 1 then rounded to fixed point with
//! `PRECISION_BITS` (22), and each pass rounded and clipped to `u8`.

use crate::RgbImage;

/// Pillow's resampling filters (`Image.Resampling`), by their number in `preprocessor_config.json`'s
/// `resample`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Resampling.BILINEAR` (2).
    Bilinear,
    /// `Resampling.BICUBIC` (3).
    Bicubic,
}

impl Filter {
    /// The filter Pillow numbers `n`; `None` for the ones not implemented (NEAREST 0, LANCZOS 1,
    /// BOX 4, HAMMING 5) and unknown numbers.
    pub fn from_pil(n: i64) -> Option<Filter> {
        match n {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                // Keys' cubic with a = -0.5, as Resample.c's bicubic_filter.
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output coordinate's source window (`xmin`, count) and fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

/// Resample.c `precompute_coeffs` then `normalize_coeffs_8bpc`, for the box `[0, in_size)`.
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut kk = vec![0i32; out_size * ksize];
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, kk }
}

#[inline]
fn clip8(v: i32) -> u8 {
    let v = v >> PRECISION_BITS;
    v.clamp(0, 255) as u8
}

/// Resizes to `width` × `height` as Pillow's `Image.resize((width, height), filter)` does for an
/// RGB image (no `box`, no `reducing_gap`).
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    assert!(width > 0 && height > 0, "resize to an empty image");
    if width == img.width && height == img.height {
        return img.clone();
    }
    let need_h = width != img.width;
    let need_v = height != img.height;
    let horiz = coeffs(img.width, width, filter);
    let mut vert = coeffs(img.height, height, filter);
    // The source rows the vertical pass reads.
    let ybox_first = vert.bounds[0].0;
    let last = vert.bounds[height - 1];
    let ybox_last = last.0 + last.1;

    let mut cur: std::borrow::Cow<RgbImage> = std::borrow::Cow::Borrowed(img);
    if need_h {
        if need_v {
            for b in &mut vert.bounds {
                b.0 -= ybox_first;
            }
        }
        let rows = if need_v {
            ybox_last - ybox_first
        } else {
            img.height
        };
        let first = if need_v { ybox_first } else { 0 };
        let mut out = RgbImage::new(width, rows);
        for y in 0..rows {
            let src = &img.data[(y + first) * img.width * 3..(y + first + 1) * img.width * 3];
            let dst = &mut out.data[y * width * 3..(y + 1) * width * 3];
            for xx in 0..width {
                let (xmin, xmax) = horiz.bounds[xx];
                let k = &horiz.kk[xx * horiz.ksize..xx * horiz.ksize + xmax];
                for c in 0..3 {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        ss += src[(x + xmin) * 3 + c] as i32 * w;
                    }
                    dst[xx * 3 + c] = clip8(ss);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    if need_v {
        let src = cur.as_ref();
        let mut out = RgbImage::new(width, height);
        let stride = width * 3;
        for yy in 0..height {
            let (ymin, ymax) = vert.bounds[yy];
            let k = &vert.kk[yy * vert.ksize..yy * vert.ksize + ymax];
            let dst = &mut out.data[yy * stride..(yy + 1) * stride];
            for (xc, d) in dst.iter_mut().enumerate() {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    ss += src.data[(y + ymin) * stride + xc] as i32 * w;
                }
                *d = clip8(ss);
            }
        }
        return out;
    }
    cur.into_owned()
}

/// ms-swift's `rescale_image` (`--max_pixels`): an image of more than `max_pixels` pixels is
/// scaled down, keeping its aspect ratio, to `int(sqrt(max_pixels / ratio) * ratio)` ×
/// `int(sqrt(max_pixels / ratio))` with torchvision's `Resize` on a PIL image, which is Pillow's
/// BILINEAR; a smaller one is returned as is.
pub fn limit_pixels(img: &RgbImage, max_pixels: usize) -> RgbImage {
    if max_pixels == 0 || img.width * img.height <= max_pixels {
        return img.clone();
    }
    let ratio = img.width as f64 / img.height as f64;
    let height = (max_pixels as f64 / ratio).sqrt();
    let width = height * ratio;
    resize(
        img,
        (width as usize).max(1),
        (height as usize).max(1),
        Filter::Bilinear,
    )
}
