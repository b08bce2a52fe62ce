//! Images and grounding in a row, before and after tokenization (ms-swift's `_pre_tokenize` and
//! its templates' `replace_tag`/`replace_ref`/`replace_bbox`).
//!
//! Before tokenization ([`prepare_row`]): the `i`-th `<ref-object>` tag of the messages becomes
//! the row's `objects.ref[i]` in the template's `ref_format`, the `i`-th `<bbox>` its
//! `objects.bbox[i]` in `bbox_format` (`{points}` is ms-swift's `(x1,y1),(x2,y2)`), with the
//! coordinates normalised as the template's `norm_bbox` says (`norm1000`, ms-swift's default:
//! `int(round(x / width * 1000))`, half to even as Python, `width` being the image's stored size,
//! or `width = 1` for `bbox_type: norm1` boxes; `none`: pixels of the stored image); then each
//! `<image>` becomes the template's `image` text (Qwen2-VL:
//! `<|vision_start|><|image_pad|><|vision_end|>`; LLaVA keeps `<image>`, a token of its own).
//! Tags beyond the objects' count stay as text, as in ms-swift.
//!
//! After tokenization ([`expand_images`]): the `i`-th occurrence of the model's placeholder token
//! is repeated to the number of positions image `i` takes (the processor's count), not trained;
//! a count of placeholders that differs from the images is an error.
//!
//! Template record options (`[template.options]`): `image`, `ref_format` (contains `{ref}`),
//! `bbox_format` (contains `{points}`), `norm_bbox` (`norm1000` | `none`). Defaults are ms-swift's
//! base template's: `<image>`, `{ref}`, `[{points}]`, `norm1000`.

use swift_plugin_api::{Objects, StandardRow};

use crate::encode::{Encoded, IGNORE_INDEX};
use crate::TemplateError;

/// How coordinates are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormBbox {
    /// On a 1000 × 1000 grid (Qwen2-VL, LLaVA; ms-swift's default).
    #[default]
    Norm1000,
    /// In pixels of the stored image.
    None,
}

/// A template's image and grounding conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionOptions {
    /// What `<image>` becomes in the text.
    pub image: String,
    /// `{ref}` is replaced by the object's description.
    pub ref_format: String,
    /// `{points}` is replaced by `(x1,y1),(x2,y2)`.
    pub bbox_format: String,
    pub norm_bbox: NormBbox,
}

impl Default for VisionOptions {
    fn default() -> Self {
        Self {
            image: "<image>".into(),
            ref_format: "{ref}".into(),
            bbox_format: "[{points}]".into(),
            norm_bbox: NormBbox::Norm1000,
        }
    }
}

impl VisionOptions {
    /// Reads one template option this module owns; `Ok(false)` when `key` is not one of them.
    pub(crate) fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<bool, String> {
        let s = || {
            value
                .as_str()
                .map(String::from)
                .ok_or_else(|| "must be a string".to_string())
        };
        match key {
            "image" => self.image = s()?,
            "ref_format" => {
                let v = s()?;
                if !v.contains("{ref}") {
                    return Err("must contain {ref}".into());
                }
                self.ref_format = v;
            }
            "bbox_format" => {
                let v = s()?;
                if !v.contains("{points}") {
                    return Err("must contain {points}".into());
                }
                self.bbox_format = v;
            }
            "norm_bbox" => {
                self.norm_bbox = match s()?.as_str() {
                    "norm1000" => NormBbox::Norm1000,
                    "none" => NormBbox::None,
                    _ => return Err("must be \"norm1000\" or \"none\"".into()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A box's coordinates as the template writes them, for an image of `width` × `height`.
pub fn normalize_bbox(
    bbox: &[f64],
    bbox_type: Option<&str>,
    width: usize,
    height: usize,
    norm: NormBbox,
) -> Vec<i64> {
    let (w, h) = if bbox_type == Some("norm1") {
        (1.0, 1.0)
    } else {
        (width as f64, height as f64)
    };
    let (nw, nh) = match norm {
        NormBbox::Norm1000 => (1000.0, 1000.0),
        NormBbox::None => (width as f64, height as f64),
    };
    bbox.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (d, n) = if i % 2 == 0 { (w, nw) } else { (h, nh) };
            (v / d * n).round_ties_even() as i64
        })
        .collect()
}

/// ms-swift's `_get_bbox_str`: `(x1,y1),(x2,y2)`.
pub fn points(b: &[i64]) -> String {
    b.chunks(2)
        .map(|p| format!("({},{})", p[0], p.get(1).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Replaces grounding tags and `<image>` tags in every message (and rejected message) of a row;
/// `sizes` are the row's images' stored `(width, height)`.
pub fn prepare_row(
    row: &StandardRow,
    sizes: &[(usize, usize)],
    opts: &VisionOptions,
) -> Result<StandardRow, TemplateError> {
    let mut out = row.clone();
    let grounded = |messages: &mut Vec<swift_plugin_api::Message>| -> Result<(), TemplateError> {
        let (mut ref_i, mut box_i) = (0usize, 0usize);
        for m in messages.iter_mut() {
            let mut text = if let Some(o) = &row.objects {
                replace_objects(&m.content, o, sizes, opts, &mut ref_i, &mut box_i)?
            } else {
                m.content.clone()
            };
            if opts.image != "<image>" {
                text = text.replace("<image>", &opts.image);
            }
            m.content = text;
        }
        Ok(())
    };
    grounded(&mut out.messages)?;
    if let Some(r) = out.rejected_messages.as_mut() {
        grounded(r)?;
    }
    Ok(out)
}

fn replace_objects(
    text: &str,
    o: &Objects,
    sizes: &[(usize, usize)],
    opts: &VisionOptions,
    ref_i: &mut usize,
    box_i: &mut usize,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let r = rest.find("<ref-object>");
        let b = rest.find("<bbox>");
        let (at, is_ref) = match (r, b) {
            (Some(r), Some(b)) => (r.min(b), r < b),
            (Some(r), None) => (r, true),
            (None, Some(b)) => (b, false),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        if is_ref {
            rest = &rest[at + "<ref-object>".len()..];
            match o.refs.get(*ref_i) {
                Some(d) => out.push_str(&opts.ref_format.replace("{ref}", d)),
                None => out.push_str("<ref-object>"),
            }
            *ref_i += 1;
        } else {
            rest = &rest[at + "<bbox>".len()..];
            match o.bbox.get(*box_i) {
                Some(bbox) => {
                    let image = o.image_id.get(*box_i).copied().unwrap_or(0);
                    let Some(&(w, h)) = sizes.get(image) else {
                        return Err(TemplateError::Grounding(format!(
                            "bbox {} is on image {image} but the row has {} image(s)",
                            *box_i,
                            sizes.len()
                        )));
                    };
                    let b = normalize_bbox(bbox, o.bbox_type.as_deref(), w, h, opts.norm_bbox);
                    out.push_str(&opts.bbox_format.replace("{points}", &points(&b)));
                }
                None => out.push_str("<bbox>"),
            }
            *box_i += 1;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Repeats the `i`-th `image_token_id` of an encoded row `counts[i]` times (labels ignored, loss
/// scale 0).
pub fn expand_images(
    enc: &mut Encoded,
    image_token_id: u32,
    counts: &[usize],
) -> Result<(), TemplateError> {
    let found = enc
        .input_ids
        .iter()
        .filter(|&&t| t == image_token_id)
        .count();
    if found != counts.len() {
        return Err(TemplateError::Grounding(format!(
            "the encoded row has {found} image placeholder token(s) (id {image_token_id}) for {} image(s); \
             is the template the model's vision template?",
            counts.len()
        )));
    }
    if counts.iter().all(|&c| c == 1) {
        return Ok(());
    }
    let total = enc.input_ids.len() + counts.iter().sum::<usize>() - counts.len();
    let (mut ids, mut labels, mut ls) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut next = counts.iter();
    for i in 0..enc.input_ids.len() {
        let t = enc.input_ids[i];
        let n = if t == image_token_id {
            next.next().copied().unwrap_or(1)
        } else {
            1
        };
        for _ in 0..n {
            ids.push(t);
            labels.push(if t == image_token_id {
                IGNORE_INDEX
            } else {
                enc.labels[i]
            });
            ls.push(if t == image_token_id {
                0.0
            } else {
                enc.loss_scale[i]
            });
        }
    }
    enc.input_ids = ids;
    enc.labels = labels;
    enc.loss_scale = ls;
    Ok(())
}
