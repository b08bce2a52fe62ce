//! Vision in the model contract (issue 21): the declarations a vision-language family adds to
//! its [`crate::model::ModelLayout`]. Plain serde data, like the rest of the layout.
//!
//! A vision family builds its vision tower and projector from the same host-owned slots as its
//! decoder (the patch embedding is a `linear` slot over flattened patches, equal to a Conv2d or
//! Conv3d whose stride is its kernel; layer norms are `norm` slots; the projector's layers are
//! `linear` slots), so tuners, quantizers and gradient checkpointing reach them without family
//! code. What it adds:
//!
//! * a [`Part`] on every slot and parameter (`llm`, `vit`, `aligner`): what `--freeze_vit`,
//!   `--freeze_aligner`, `--freeze_llm`, `--vit_lr` and `--aligner_lr` select
//!   ([`crate::model::ModelLayout::part_of`]);
//! * a [`VisionDecl`]: the placeholder token whose positions image features fill, how many
//!   positions one image expands to ([`ImageTokens`]), and which positions the language model
//!   reads ([`Positions`]: 1-D, or Qwen2-VL's multimodal rotary positions, which the host
//!   computes as transformers' `get_rope_index` does, `engine/model/src/vision.rs`).
//!
//! The tensor side (`swift_plugin_tensors::model`): `Model::encode_images(ctx, pixel_values,
//! grid_thw)` runs the tower and projector and returns one row of language-model width per
//! placeholder position, in order; `ModelContext::full_attention` is the tower's non-causal
//! attention (no cache; optionally block-diagonal over runs of positions, one per image). The
//! host embeds the tokens (`Model::embed`), writes the image features over the placeholder
//! positions, and runs the blocks, so a vision family offers the per-block entry points.

use serde::{Deserialize, Serialize};

/// Which part of a vision-language model a slot or parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The language model (every slot of a text-only family).
    #[default]
    Llm,
    /// The vision tower (ms-swift's `vision_tower`).
    Vit,
    /// The projector between them (ms-swift's `aligner`).
    Aligner,
}

impl Part {
    /// The name flags and listings use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Vit => "vit",
            Self::Aligner => "aligner",
        }
    }
}

/// How many placeholder positions one image takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ImageTokens {
    /// Always `count` (LLaVA-1.5: the tower's patches, the class position dropped).
    Fixed { count: i64 },
    /// The image's patch grid `t × h × w` divided by `merge²` (Qwen2-VL's patch merger).
    Grid { merge: i64 },
}

impl ImageTokens {
    /// The positions an image with patch grid `[t, h, w]` takes.
    pub fn count(&self, grid: [i64; 3]) -> i64 {
        match *self {
            Self::Fixed { count } => count,
            Self::Grid { merge } => grid[0] * grid[1] * grid[2] / (merge * merge).max(1),
        }
    }
}

/// The positions the language model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Positions {
    /// One position per token, `[batch, seq]` (LLaVA).
    #[default]
    Linear,
    /// Qwen2-VL's multimodal rotary positions, `[3, batch, seq]` (temporal, height, width): text
    /// counts on all three; an image's placeholders take its merged grid's `(t, h, w)` offset by
    /// the text before it; text after an image continues from the largest position + 1.
    Mrope {
        /// The patch merger's side (`vision_config.spatial_merge_size`).
        spatial_merge_size: i64,
    },
}

/// What a vision-language family declares besides its slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionDecl {
    /// The token whose positions image features replace (`<image>`, `<|image_pad|>`).
    pub image_token: String,
    /// Its id in the tokenizer (`image_token_index`, `image_token_id`).
    pub image_token_id: i64,
    /// How many positions one image expands to.
    pub tokens: ImageTokens,
    /// Which positions the language model reads.
    #[serde(default)]
    pub positions: Positions,
    /// The image processor `preprocessor_config.json` should name (`CLIPImageProcessor`,
    /// `Qwen2VLImageProcessor`), checked by the processor that reads it.
    pub processor: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts() {
        assert_eq!(ImageTokens::Fixed { count: 576 }.count([1, 24, 24]), 576);
        assert_eq!(ImageTokens::Grid { merge: 2 }.count([1, 4, 8]), 8);
    }

    #[test]
    fn declarations_round_trip() {
        let d = VisionDecl {
            image_token: "<|image_pad|>".into(),
            image_token_id: 151655,
            tokens: ImageTokens::Grid { merge: 2 },
            positions: Positions::Mrope {
                spatial_merge_size: 2,
            },
            processor: "Qwen2VLImageProcessor".into(),
        };
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<VisionDecl>(&s).unwrap(), d);
        assert_eq!(serde_json::to_string(&Part::Vit).unwrap(), "\"vit\"");
    }
}
