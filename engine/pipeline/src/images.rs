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
use swift_plugin_tensors::model::ModelLayout;
use swift_plugin_tensors::StandardRow;
use swift_serve::images::PromptImages;
use swift_template::{Encoded, Encoder};
use swift_train::RowImage;

/// A row's images, loaded and processed.
pub struct RowImages {
    /// Each image's stored `(width, height)` (grounding boxes are normalised against it).
    pub sizes: Vec<(usize, usize)>,
    /// What the model reads.
    pub images: Vec<RowImage>,
    /// The positions each image's placeholder expands to.
    pub counts: Vec<usize>,
}

/// What turns a row's images into the model's inputs: the prompt side's loader and processor
/// (`swift_serve::images::PromptImages`, one way to read and process images for training and
/// answering), with the training row's image type.
pub struct ImageEncoder {
    side: PromptImages,
    image_token_id: u32,
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
        let image_token_id = u32::try_from(vision.image_token_id).map_err(|_| {
            anyhow!(
                "the family's image token id {} is not a token id",
                vision.image_token_id
            )
        })?;
        let side = PromptImages::for_model(model_dir, layout, max_pixels(max_pixels_flag)?)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow!("the model declares a vision tower but no image side"))?;
        Ok(Some(Self {
            side,
            image_token_id,
        }))
    }

    /// Loads and processes a row's images (its paths are already absolute).
    pub fn images(&self, row: &StandardRow) -> Result<RowImages> {
        let processed = self
            .side
            .process(&row.images, None)
            .map_err(anyhow::Error::msg)?;
        let (mut sizes, mut images, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for p in processed {
            sizes.push(p.size);
            counts.push(p.positions);
            images.push(RowImage {
                pixel_values: Arc::new(p.input.pixel_values),
                shape: p.input.shape,
                grid_thw: p.input.grid_thw,
            });
        }
        Ok(RowImages {
            sizes,
            images,
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
