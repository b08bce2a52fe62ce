//! Rows with images, for a vision-language model (issue 21): each image is loaded
//! (swift-vision: the row's paths are already absolute, data URLs and base64 read in place,
//! `http(s)` refused), processed by the model folder's image processor, and the row encoded with
//! its grounding and `<image>` tags in the template's conventions and each placeholder expanded
//! to the image's positions (`Encoder::encode_with_images`). The processed images travel with
//! the encoded row (`swift_train::RowImage`) to the model's `ImageBatch`.
//!
//! `--max_pixels` (else the `MAX_PIXELS` environment variable): the Qwen2-VL processor's
//! `max_pixels`; other processors get the image scaled down to at most that many pixels first
//! (ms-swift's `rescale_image`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use swift_plugin_tensors::model::{ImageTokens, ModelLayout};
use swift_plugin_tensors::StandardRow;
use swift_template::{Encoded, Encoder};
use swift_train::RowImage;
use swift_vision::ImageProcessor;

/// A row's images, loaded and processed.
pub struct RowImages {
    /// Each image's stored `(width, height)` (grounding boxes are normalised against it).
    pub sizes: Vec<(usize, usize)>,
    /// What the model reads.
    pub images: Vec<RowImage>,
    /// The positions each image's placeholder expands to.
    pub counts: Vec<usize>,
}

/// What turns a row's images into the model's inputs.
pub struct ImageEncoder {
    processor: ImageProcessor,
    /// Scale down before a fixed-size processor (`--max_pixels` on CLIP).
    limit: Option<usize>,
    image_token_id: u32,
    tokens: ImageTokens,
}

/// `--max_pixels`, else `MAX_PIXELS` from the environment (the flag wins).
pub fn max_pixels(flag: Option<usize>) -> Result<Option<usize>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var("MAX_PIXELS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| {
                anyhow!("the environment variable MAX_PIXELS={v:?} is not an integer >= 1")
            }),
        _ => Ok(None),
    }
}

impl ImageEncoder {
    /// The model's image encoder; `None` for a text-only model.
    pub fn for_model(
        model_dir: &Path,
        layout: &ModelLayout,
        max_pixels_flag: Option<usize>,
    ) -> Result<Option<Self>> {
        let Some(vision) = &layout.vision else {
            return Ok(None);
        };
        let mut processor = ImageProcessor::from_model_dir(model_dir)?;
        if processor.name() != vision.processor {
            bail!(
                "{}: the model's family reads images as {} prepares them, but the file names {}",
                model_dir.join("preprocessor_config.json").display(),
                vision.processor,
                processor.name()
            );
        }
        let limit = match max_pixels(max_pixels_flag)? {
            Some(n) => processor
                .apply_max_pixels(n)
                .map_err(|e| anyhow!("--max_pixels: {e}"))?,
            None => None,
        };
        let image_token_id = u32::try_from(vision.image_token_id).map_err(|_| {
            anyhow!(
                "the family's image token id {} is not a token id",
                vision.image_token_id
            )
        })?;
        Ok(Some(Self {
            processor,
            limit,
            image_token_id,
            tokens: vision.tokens,
        }))
    }

    /// Loads and processes a row's images.
    pub fn images(&self, row: &StandardRow) -> Result<RowImages> {
        let (mut sizes, mut out, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for reference in &row.images {
            let img = swift_vision::load_image(reference, None)?;
            sizes.push((img.width, img.height));
            let img = match self.limit {
                Some(n) => swift_vision::limit_pixels(&img, n),
                None => img,
            };
            let p = self.processor.process(&img)?;
            let grid = match p.grid_thw {
                Some([t, h, w]) => [t as i64, h as i64, w as i64],
                None => [1, p.shape[1] as i64, p.shape[2] as i64],
            };
            let n = match self.tokens {
                ImageTokens::Fixed { count } => count as usize,
                ImageTokens::Grid { .. } => self.tokens.count(grid) as usize,
            };
            if p.grid_thw.is_some() && n != p.num_image_tokens {
                bail!(
                    "the image processor gives {} positions for an image but the model {n}: preprocessor_config.json's merge_size and config.json disagree",
                    p.num_image_tokens
                );
            }
            counts.push(n);
            out.push(RowImage {
                pixel_values: Arc::new(p.pixel_values),
                shape: p.shape.iter().map(|&d| d as i64).collect(),
                grid_thw: grid,
            });
        }
        Ok(RowImages {
            sizes,
            images: out,
            counts,
        })
    }

    /// Encodes a row with its images; `None` when truncation deletes it.
    pub fn encode(
        &self,
        encoder: &Encoder,
        row: &StandardRow,
    ) -> Result<Option<(Encoded, Vec<RowImage>)>> {
        let RowImages {
            sizes,
            images,
            counts,
        } = self.images(row)?;
        let enc = encoder
            .encode_with_images(row, &sizes, &counts, self.image_token_id)
            .context("encoding the row with its images")?;
        Ok(enc.map(|e| (e, images)))
    }
}

/// A row with images for a model without a vision tower: refused.
pub fn refuse_images(row: &StandardRow, model_dir: &Path) -> Result<()> {
    if !row.images.is_empty() {
        bail!(
            "the row has {} image(s) but {} is a text-only model (its family declares no vision tower)",
            row.images.len(),
            model_dir.display()
        );
    }
    Ok(())
}

/// What does not work with images yet, refused by name: `--packing` (the packed batch would need
/// per-row image offsets and multimodal positions) and `--gradient_checkpointing` (the image
/// features enter before the checkpointed blocks, which the host's recomputation does not take).
pub fn refuse_with_images(
    rows: &[swift_train::EncodedRow],
    s: &swift_spec::TrainSpec,
) -> Result<()> {
    if rows.iter().all(|r| r.images.is_empty()) {
        return Ok(());
    }
    if s.trainer.packing {
        bail!("--packing does not apply to rows with images yet: drop it (each image row trains as its own padded row)");
    }
    if s.trainer.gradient_checkpointing {
        bail!("--gradient_checkpointing does not apply to rows with images yet: drop it");
    }
    Ok(())
}

/// The image side of a model that answers prompts (`swift infer`, `swift deploy`): its
/// processor with `--max_pixels` (else `MAX_PIXELS`) applied, or why the model takes no images
/// (a text-only family, which refuses `--max_pixels` by name).
pub fn prompt_images(
    bundle: &crate::bundle::ModelBundle,
    max_pixels_flag: Option<usize>,
    given: &swift_spec::GivenFlags,
) -> Result<std::result::Result<swift_serve::images::PromptImages, String>> {
    if bundle.model.layout().vision.is_none() {
        let why = format!(
            "the model family `{}` reads no images (it declares no vision tower)",
            bundle.family
        );
        given
            .refuse(&["max_pixels"], &format!("to this model: {why}"))
            .map_err(anyhow::Error::msg)?;
        return Ok(Err(why));
    }
    let limit = max_pixels(max_pixels_flag)?;
    let side =
        swift_serve::images::PromptImages::for_model(&bundle.dir, bundle.model.layout(), limit)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow!("the model declares a vision tower but no image side"))?;
    Ok(Ok(side))
}
