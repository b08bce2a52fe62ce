//! The Hugging Face image processors' slow (PIL) paths (`use_fast=False`), configured from a model
//! folder's `preprocessor_config.json`:
//!
//! * `CLIPImageProcessor` (LLaVA-1.5): convert to RGB, resize the shortest edge to
//!   `size.shortest_edge` (the long edge `int(short * long / short_in)`) or to `size.height` ×
//!   `size.width`, center crop to `crop_size` (zero-padded when smaller, as `center_crop`),
//!   rescale (`u8 as f64 * factor`, then `f32`), normalise (`(x - mean) / std` in `f32`);
//!   `[3, H, W]`. Its image expands to `(H / p) × (W / p)` positions, `p` being `config.json`'s
//!   `vision_config.patch_size`, plus one when `vision_feature_select_strategy` is `full` (the CLS
//!   position), as `LlavaProcessor` counts.
//! * `Qwen2VLImageProcessor`: `smart_resize` (height and width rounded, half to even as Python's
//!   `round`, to multiples of `patch_size × merge_size`, scaled into `[min_pixels, max_pixels]`),
//!   resize, rescale, normalise, the frame repeated to `temporal_patch_size`, and patches
//!   flattened in its order (`t, h/m, w/m, m, m` rows of `C, tp, p, p` values):
//!   `[grid_t·grid_h·grid_w, C·tp·p·p]` and `image_grid_thw`; it expands to
//!   `grid_t·grid_h·grid_w / merge_size²` positions. As transformers 4.57's constructor, the
//!   effective pixel bounds are `min_pixels`/`max_pixels` when the file gives them, else 56·56 and
//!   28·28·1280 (its `size` is checked for both keys, then not read).
//!
//! Resizing is Pillow's (`crate::resize`), on the `u8` image, as `transformers.image_transforms.resize`
//! does (it converts to PIL and back).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{resize, Filter, RgbImage, VisionError};

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, the defaults of both processors.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// One processed image.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessedImage {
    /// Row-major values of `shape`.
    pub pixel_values: Vec<f32>,
    /// CLIP: `[3, H, W]`; Qwen2-VL: `[patches, C·tp·p·p]`.
    pub shape: Vec<usize>,
    /// Qwen2-VL's `image_grid_thw` (patches, before merging); `None` for CLIP.
    pub grid_thw: Option<[usize; 3]>,
    /// How many placeholder positions the image's `<image>` expands to in the token sequence.
    pub num_image_tokens: usize,
}

/// The rescale and normalise steps both processors share.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// transformers' `rescale` (`float64` product cast to `float32`) then `normalize` (in `float32`).
    fn apply(&self, v: u8, c: usize) -> f32 {
        let x = if self.do_rescale {
            (v as f64 * self.rescale_factor) as f32
        } else {
            v as f32
        };
        if self.do_normalize {
            (x - self.mean[c]) / self.std[c]
        } else {
            x
        }
    }
}

/// How `CLIPImageProcessor` resizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClipSize {
    ShortestEdge(usize),
    Exact { height: usize, width: usize },
}

/// `CLIPImageProcessor`'s settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub resize: Option<ClipSize>,
    pub filter: Filter,
    /// `(height, width)`, when `do_center_crop`.
    pub crop: Option<(usize, usize)>,
    pub norm: Normalize,
    /// The vision tower's patch size (`config.json` `vision_config.patch_size`).
    pub patch_size: usize,
    /// Whether the CLS position is kept (`vision_feature_select_strategy: full`).
    pub keep_cls: bool,
}

/// `Qwen2VLImageProcessor`'s settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen2VlConfig {
    pub do_resize: bool,
    pub filter: Filter,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub norm: Normalize,
}

/// A model's image processor.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageProcessor {
    Clip(ClipConfig),
    Qwen2Vl(Qwen2VlConfig),
}

struct Cfg<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Cfg<'_> {
    fn err(&self, message: impl Into<String>) -> VisionError {
        VisionError::Config {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool, VisionError> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(format!("`{key}` must be true or false, not {other}"))),
        }
    }
    fn uint(&self, key: &str, default: usize) -> Result<usize, VisionError> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => self.as_uint(key, v),
        }
    }
    fn as_uint(&self, key: &str, v: &Value) -> Result<usize, VisionError> {
        v.as_u64()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| self.err(format!("`{key}` must be a positive integer, not {v}")))
    }
    fn float(&self, key: &str, default: f64) -> Result<f64, VisionError> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` must be a number, not {v}"))),
        }
    }
    fn triple(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3], VisionError> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(0.0) as f32;
                Ok([x; 3])
            }
            Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                let f = |i: usize| a[i].as_f64().unwrap_or(0.0) as f32;
                Ok([f(0), f(1), f(2)])
            }
            Some(other) => Err(self.err(format!("`{key}` must be 3 numbers (RGB), not {other}"))),
        }
    }
    fn filter(&self) -> Result<Filter, VisionError> {
        let n = match self.v.get("resample") {
            None | Some(Value::Null) => 3,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.err(format!("`resample` must be an integer, not {v}")))?,
        };
        Filter::from_pil(n).ok_or_else(|| {
            self.err(format!(
                "`resample` {n} is not implemented (2 BILINEAR and 3 BICUBIC are)"
            ))
        })
    }
    fn norm(&self) -> Result<Normalize, VisionError> {
        Ok(Normalize {
            do_rescale: self.bool("do_rescale", true)?,
            rescale_factor: self.float("rescale_factor", 1.0 / 255.0)?,
            do_normalize: self.bool("do_normalize", true)?,
            mean: self.triple("image_mean", OPENAI_CLIP_MEAN)?,
            std: self.triple("image_std", OPENAI_CLIP_STD)?,
        })
    }
    /// `get_size_dict`: an integer, `{shortest_edge}` or `{height, width}`.
    fn size(&self, key: &str, v: &Value, square: bool) -> Result<ClipSize, VisionError> {
        if let Some(n) = v.as_u64() {
            let n = self.as_uint(key, &Value::from(n))?;
            return Ok(if square {
                ClipSize::Exact {
                    height: n,
                    width: n,
                }
            } else {
                ClipSize::ShortestEdge(n)
            });
        }
        if let Some(s) = v.get("shortest_edge") {
            return Ok(ClipSize::ShortestEdge(
                self.as_uint(&format!("{key}.shortest_edge"), s)?,
            ));
        }
        match (v.get("height"), v.get("width")) {
            (Some(h), Some(w)) => Ok(ClipSize::Exact {
                height: self.as_uint(&format!("{key}.height"), h)?,
                width: self.as_uint(&format!("{key}.width"), w)?,
            }),
            _ => Err(self.err(format!("`{key}` must be an integer, {{\"shortest_edge\"}} or {{\"height\", \"width\"}}, not {v}"))),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, VisionError> {
    let text = std::fs::read_to_string(path).map_err(|e| VisionError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read it: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| VisionError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

impl ImageProcessor {
    /// The processor a model folder's `preprocessor_config.json` describes (`image_processor_type`),
    /// with `config.json`'s vision settings where the token count needs them.
    pub fn from_model_dir(dir: &Path) -> Result<ImageProcessor, VisionError> {
        let pre = dir.join("preprocessor_config.json");
        let v = read_json(&pre)?;
        let config = dir.join("config.json");
        let model = if config.is_file() {
            Some(read_json(&config)?)
        } else {
            None
        };
        Self::from_json(&v, &pre, model.as_ref())
    }

    /// From `preprocessor_config.json`'s contents (`path` names it in errors) and `config.json`'s.
    pub fn from_json(
        v: &Value,
        path: &Path,
        model: Option<&Value>,
    ) -> Result<ImageProcessor, VisionError> {
        let c = Cfg { path, v };
        let kind = v
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match kind {
            "CLIPImageProcessor" => {
                let resize = if c.bool("do_resize", true)? {
                    let size = v.get("size").cloned().unwrap_or(serde_json::json!({"shortest_edge": 224}));
                    Some(c.size("size", &size, false)?)
                } else {
                    None
                };
                let crop = if c.bool("do_center_crop", true)? {
                    let size = v.get("crop_size").cloned().unwrap_or(serde_json::json!({"height": 224, "width": 224}));
                    match c.size("crop_size", &size, true)? {
                        ClipSize::Exact { height, width } => Some((height, width)),
                        ClipSize::ShortestEdge(_) => {
                            return Err(c.err("`crop_size` must be an integer or {\"height\", \"width\"}"))
                        }
                    }
                } else {
                    None
                };
                let vision = model.and_then(|m| m.get("vision_config"));
                let patch_size = match vision.and_then(|vc| vc.get("patch_size")) {
                    Some(p) => p.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                        c.err(format!("config.json's vision_config.patch_size must be a positive integer, not {p}"))
                    })? as usize,
                    None => {
                        return Err(c.err(
                            "a CLIP processor needs the model's config.json with vision_config.patch_size beside it (to count image positions)",
                        ))
                    }
                };
                let strategy = model
                    .and_then(|m| m.get("vision_feature_select_strategy"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let keep_cls = match strategy {
                    "default" => false,
                    "full" => true,
                    other => {
                        return Err(c.err(format!(
                            "config.json's vision_feature_select_strategy {other:?} is not one of default, full"
                        )))
                    }
                };
                Ok(ImageProcessor::Clip(ClipConfig {
                    resize,
                    filter: c.filter()?,
                    crop,
                    norm: c.norm()?,
                    patch_size,
                    keep_cls,
                }))
            }
            "Qwen2VLImageProcessor" => {
                if let Some(size) = v.get("size").filter(|s| !s.is_null()) {
                    if size.get("shortest_edge").is_none() || size.get("longest_edge").is_none() {
                        return Err(c.err("`size` must contain `shortest_edge` and `longest_edge`"));
                    }
                }
                let cfg = Qwen2VlConfig {
                    do_resize: c.bool("do_resize", true)?,
                    filter: c.filter()?,
                    min_pixels: c.uint("min_pixels", 56 * 56)?,
                    max_pixels: c.uint("max_pixels", 28 * 28 * 1280)?,
                    patch_size: c.uint("patch_size", 14)?,
                    temporal_patch_size: c.uint("temporal_patch_size", 2)?,
                    merge_size: c.uint("merge_size", 2)?,
                    norm: c.norm()?,
                };
                if cfg.min_pixels > cfg.max_pixels {
                    return Err(c.err(format!(
                        "min_pixels {} is above max_pixels {}",
                        cfg.min_pixels, cfg.max_pixels
                    )));
                }
                Ok(ImageProcessor::Qwen2Vl(cfg))
            }
            "" => Err(c.err("no `image_processor_type`: the model folder's image processor is unknown")),
            other => Err(c.err(format!(
                "image_processor_type {other:?} is not implemented (CLIPImageProcessor, Qwen2VLImageProcessor are)"
            ))),
        }
    }

    /// Overrides the largest image area (ms-swift's `MAX_PIXELS`, `--max_pixels`); only
    /// processors with a dynamic resolution take it.
    pub fn set_max_pixels(&mut self, max_pixels: usize) -> Result<(), String> {
        match self {
            ImageProcessor::Qwen2Vl(c) => {
                if max_pixels < c.min_pixels {
                    return Err(format!("max_pixels {max_pixels} is below the processor's min_pixels {}", c.min_pixels));
                }
                c.max_pixels = max_pixels;
                Ok(())
            }
            ImageProcessor::Clip(_) => Err(
                "max_pixels applies to dynamic-resolution processors (Qwen2-VL); this model's CLIP processor resizes to a fixed size".into(),
            ),
        }
    }

    /// ms-swift's `--max_pixels` / `MAX_PIXELS` on this processor: a dynamic-resolution one
    /// (Qwen2-VL) takes it as its own `max_pixels` (`None` returned); a fixed-size one (CLIP)
    /// keeps its size, and images are to be scaled down to at most `max_pixels` pixels before it
    /// ([`crate::limit_pixels`] with the `Some` returned).
    pub fn apply_max_pixels(&mut self, max_pixels: usize) -> Result<Option<usize>, String> {
        match self {
            ImageProcessor::Qwen2Vl(_) => self.set_max_pixels(max_pixels).map(|()| None),
            ImageProcessor::Clip(_) => Ok(Some(max_pixels)),
        }
    }

    /// The processor's name in `preprocessor_config.json`.
    pub fn name(&self) -> &'static str {
        match self {
            ImageProcessor::Clip(_) => "CLIPImageProcessor",
            ImageProcessor::Qwen2Vl(_) => "Qwen2VLImageProcessor",
        }
    }

    /// One image's pixel values and the positions it takes.
    pub fn process(&self, img: &RgbImage) -> Result<ProcessedImage, VisionError> {
        match self {
            ImageProcessor::Clip(c) => Ok(clip(c, img)),
            ImageProcessor::Qwen2Vl(c) => qwen2vl(c, img),
        }
    }
}

fn clip(c: &ClipConfig, img: &RgbImage) -> ProcessedImage {
    let mut cur = match &c.resize {
        Some(ClipSize::ShortestEdge(s)) => {
            // get_resize_output_image_size(default_to_square=False)
            let (short, long) = if img.width <= img.height {
                (img.width, img.height)
            } else {
                (img.height, img.width)
            };
            let new_long = (*s as f64 * long as f64 / short as f64) as usize;
            let (w, h) = if img.width <= img.height {
                (*s, new_long)
            } else {
                (new_long, *s)
            };
            resize(img, w, h, c.filter)
        }
        Some(ClipSize::Exact { height, width }) => resize(img, *width, *height, c.filter),
        None => img.clone(),
    };
    if let Some((ch, cw)) = c.crop {
        cur = center_crop(&cur, ch, cw);
    }
    let (h, w) = (cur.height, cur.width);
    let mut out = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                out[ch * h * w + y * w + x] = c.norm.apply(cur.data[(y * w + x) * 3 + ch], ch);
            }
        }
    }
    let tokens = (h / c.patch_size) * (w / c.patch_size) + usize::from(c.keep_cls);
    ProcessedImage {
        pixel_values: out,
        shape: vec![3, h, w],
        grid_thw: None,
        num_image_tokens: tokens,
    }
}

/// transformers' `center_crop`, zero padding an image smaller than the crop.
fn center_crop(img: &RgbImage, ch: usize, cw: usize) -> RgbImage {
    let (oh, ow) = (img.height as i64, img.width as i64);
    let (ch, cw) = (ch as i64, cw as i64);
    // Python's floor division.
    let top = (oh - ch).div_euclid(2);
    let left = (ow - cw).div_euclid(2);
    let (nh, nw) = (oh.max(ch), ow.max(cw));
    let top_pad = (nh - oh + 1) / 2;
    let left_pad = (nw - ow + 1) / 2;
    // The padded canvas holds the image at (top_pad, left_pad); the crop starts at top + top_pad.
    let (t0, l0) = ((top + top_pad).max(0), (left + left_pad).max(0));
    let (t1, l1) = ((top + top_pad + ch).min(nh), (left + left_pad + cw).min(nw));
    let (h, w) = ((t1 - t0) as usize, (l1 - l0) as usize);
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        let cy = y as i64 + t0 - top_pad;
        if cy < 0 || cy >= oh {
            continue;
        }
        for x in 0..w {
            let cx = x as i64 + l0 - left_pad;
            if cx < 0 || cx >= ow {
                continue;
            }
            let s = ((cy * ow + cx) * 3) as usize;
            let d = (y * w + x) * 3;
            out.data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    out
}

/// transformers' `smart_resize` for Qwen2-VL: `(height, width)`.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), VisionError> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(VisionError::Size {
            width,
            height,
            message: format!(
                "absolute aspect ratio must be at most 200, got {}",
                h.max(w) / h.min(w)
            ),
        });
    }
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    Ok((h_bar, w_bar))
}

fn qwen2vl(c: &Qwen2VlConfig, img: &RgbImage) -> Result<ProcessedImage, VisionError> {
    let factor = c.patch_size * c.merge_size;
    let cur = if c.do_resize {
        let (h, w) = smart_resize(img.height, img.width, factor, c.min_pixels, c.max_pixels)?;
        resize(img, w, h, c.filter)
    } else {
        img.clone()
    };
    let (h, w) = (cur.height, cur.width);
    if h % factor != 0 || w % factor != 0 {
        return Err(VisionError::Size {
            width: w,
            height: h,
            message: format!("without do_resize the image's sides must be multiples of patch_size × merge_size = {factor}"),
        });
    }
    let (p, m, tp) = (c.patch_size, c.merge_size, c.temporal_patch_size);
    let (gh, gw) = (h / p, w / p);
    // One frame, repeated to temporal_patch_size: grid_t = 1.
    let row_len = 3 * tp * p * p;
    let mut out = Vec::with_capacity(gh * gw * row_len);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (py, px) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for ch in 0..3 {
                        for _t in 0..tp {
                            for y in 0..p {
                                for x in 0..p {
                                    let v = cur.data[((py + y) * w + px + x) * 3 + ch];
                                    out.push(c.norm.apply(v, ch));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ProcessedImage {
        pixel_values: out,
        shape: vec![gh * gw, row_len],
        grid_thw: Some([1, gh, gw]),
        num_image_tokens: gh * gw / (m * m),
    })
}

/// Where a model folder's processor file would be (for messages).
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("preprocessor_config.json")
}
