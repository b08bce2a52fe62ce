//! Images in `swift infer` and `swift deploy` prompts (issue 21): a row's image references read
//! by swift-vision (paths, relative to the dataset's folder for dataset rows; `data:` URLs;
//! base64; remote URLs refused, since nothing is fetched), processed by the model's image
//! processor (its `preprocessor_config.json`, which must be the one the family declares), and
//! the row encoded with each placeholder expanded to the positions its image takes
//! (swift-template's `encode_with_images`). A row with images but no `<image>` tag gets one per
//! image at the start of its first user message, as ms-swift's `_add_default_tags`.

use std::path::Path;

use swift_plugin_tensors::backend::ImageInput;
use swift_plugin_tensors::model::{ModelLayout, VisionDecl};
use swift_plugin_tensors::StandardRow;
use swift_template::Encoder;
use swift_vision::ImageProcessor;

/// A vision-language model's image side, as prompts need it.
pub struct PromptImages {
    processor: ImageProcessor,
    vision: VisionDecl,
    /// Scale images down to at most this many pixels first (`--max_pixels` before a
    /// fixed-size processor).
    prescale: Option<usize>,
}

/// One image read and processed: its size (width, height), the positions it takes, and what
/// the backend receives.
pub struct ProcessedImage {
    pub size: (usize, usize),
    pub positions: usize,
    pub input: ImageInput,
}

/// A prompt's token ids (placeholders expanded) and its processed images.
pub struct ImagePrompt {
    pub ids: Vec<i64>,
    pub images: Vec<ImageInput>,
}

impl PromptImages {
    /// The image side of the model in `dir` whose family declared `layout`, with images of at
    /// most `max_pixels` pixels (`--max_pixels`, resolved by the caller); `None` for a text-only
    /// family.
    pub fn for_model(
        dir: &Path,
        layout: &ModelLayout,
        max_pixels: Option<usize>,
    ) -> Result<Option<Self>, String> {
        let Some(vision) = layout.vision.clone() else {
            return Ok(None);
        };
        let mut processor =
            ImageProcessor::from_model_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if processor.name() != vision.processor {
            return Err(format!(
                "{}: preprocessor_config.json describes a {}, but this model family reads images with a {}",
                dir.display(),
                processor.name(),
                vision.processor
            ));
        }
        let prescale = match max_pixels {
            Some(n) => processor
                .apply_max_pixels(n)
                .map_err(|e| format!("--max_pixels: {e}"))?,
            None => None,
        };
        Ok(Some(Self {
            processor,
            vision,
            prescale,
        }))
    }

    /// Reads and processes the images `refs` (`base`: the folder relative paths start from),
    /// checking each one's positions against the family's declaration.
    pub fn process(
        &self,
        refs: &[String],
        base: Option<&Path>,
    ) -> Result<Vec<ProcessedImage>, String> {
        let mut out = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let shown: String = r.chars().take(60).collect();
            let img = swift_vision::load_image(r, base)
                .map_err(|e| format!("image {i} ({shown}): {e}"))?;
            let size = (img.width, img.height);
            let img = match self.prescale {
                Some(n) => swift_vision::limit_pixels(&img, n),
                None => img,
            };
            let p = self
                .processor
                .process(&img)
                .map_err(|e| format!("image {i} ({shown}): {e}"))?;
            let grid = p
                .grid_thw
                .map(|g| [g[0] as i64, g[1] as i64, g[2] as i64])
                .unwrap_or([1, 1, 1]);
            let declared = self.vision.tokens.count(grid);
            if declared != p.num_image_tokens as i64 {
                return Err(format!(
                    "image {i}: the processor gives {} positions but the model family declares {declared}; check preprocessor_config.json against config.json",
                    p.num_image_tokens
                ));
            }
            out.push(ProcessedImage {
                size,
                positions: p.num_image_tokens,
                input: ImageInput {
                    pixel_values: p.pixel_values,
                    shape: p.shape.iter().map(|&d| d as i64).collect(),
                    grid_thw: grid,
                },
            });
        }
        Ok(out)
    }

    /// Encodes `row` with its images (`base`: the folder relative paths start from).
    pub fn encode(
        &self,
        encoder: &Encoder,
        row: &StandardRow,
        base: Option<&Path>,
    ) -> Result<ImagePrompt, String> {
        let processed = self.process(&row.images, base)?;
        let sizes: Vec<(usize, usize)> = processed.iter().map(|p| p.size).collect();
        let counts: Vec<usize> = processed.iter().map(|p| p.positions).collect();
        let tagged = with_default_tags(row);
        let id = u32::try_from(self.vision.image_token_id)
            .map_err(|_| format!("image token id {} out of range", self.vision.image_token_id))?;
        let enc = encoder
            .encode_with_images(&tagged, &sizes, &counts, id)
            .map_err(|e| format!("encoding the prompt with its images: {e}"))?
            .ok_or_else(|| "the prompt could not be encoded".to_string())?;
        Ok(ImagePrompt {
            ids: enc.input_ids.iter().map(|&i| i as i64).collect(),
            images: processed.into_iter().map(|p| p.input).collect(),
        })
    }
}

/// `row` with one `<image>` tag per image before its first user message, when no message holds
/// one (ms-swift's `_add_default_tags`).
fn with_default_tags(row: &StandardRow) -> StandardRow {
    let mut out = row.clone();
    if row.images.is_empty() || row.messages.iter().any(|m| m.content.contains("<image>")) {
        return out;
    }
    if let Some(m) = out.messages.iter_mut().find(|m| m.role == "user") {
        m.content = format!("{}{}", "<image>".repeat(row.images.len()), m.content);
    }
    out
}
