//! `example-gpt2-vision`: how a third party adds a vision family. This plugin's GPT-2 reads
//! images through a small vision side built from the host's slots, so tuners, quantizers and the
//! freeze flags reach it as they reach a built-in family's tower:
//!
//! * `vision.patch_embed`: a linear slot over flattened `patch × patch` patches (the checkpoint
//!   stores the Conv2d kernel `[hidden, channels, patch, patch]`: `Slot::stored_as`), part `vit`;
//! * `vision.norm`: a LayerNorm slot, then one head of non-causal attention over each image's
//!   patches (the context's `full_attention`) with a residual, part `vit`;
//! * `projector`: a linear slot to GPT-2's width, part `aligner`.
//!
//! Each patch of an image is one `image_token_id` position (`ImageTokens::Fixed`); the host
//! writes the features over those positions of the first block's input (`Model::embed`'s
//! output: GPT-2's token plus position embeddings) and runs the blocks. config.json is GPT-2's
//! with `model_type` `example_gpt2_vision`, `image_token_id` and `vision` (`image_size`,
//! `patch_size`, `num_channels`, `hidden_size`); the processor is CLIP's.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{Config, Error};
use swift_plugin_tensors::tch::Tensor;

use crate::gpt2::{Gpt2, Gpt2Family};

pub struct Gpt2VisionFamily;

struct Gpt2Vision {
    lm: Gpt2,
    embd: i64,
    image: i64,
    patch: i64,
    channels: i64,
    hidden: i64,
    image_token_id: i64,
}

impl ModelFamily for Gpt2VisionFamily {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        let cfg = Config::model(config);
        let v = cfg
            .nested("vision")
            .ok_or_else(|| Error("config.json has no `vision`".into()))?;
        let (image, patch) = (v.i64("image_size")?, v.i64("patch_size")?);
        if image % patch != 0 {
            return Err(format!(
                "vision.image_size {image} is not a multiple of patch_size {patch}"
            ));
        }
        Ok(Box::new(Gpt2Vision {
            lm: Gpt2Family::build(config)?,
            embd: cfg.i64("n_embd")?,
            image,
            patch,
            channels: v.i64_or("num_channels", 3)?,
            hidden: v.i64("hidden_size")?,
            image_token_id: cfg.i64("image_token_id")?,
        }))
    }
}

impl Gpt2Vision {
    fn patches(&self) -> i64 {
        (self.image / self.patch) * (self.image / self.patch)
    }

    fn encode(&self, ctx: &mut dyn ModelContext, pixels: &Tensor) -> Result<Tensor, Error> {
        let (c, p, side) = (self.channels, self.patch, self.image / self.patch);
        let size = pixels.size();
        if size.len() != 4 || size[1..] != [c, self.image, self.image] {
            return Err(Error(format!(
                "pixel values have shape {size:?}; expected [images, {c}, {0}, {0}]",
                self.image
            )));
        }
        let n = size[0];
        // [n, c, side, p, side, p] → [n, side·side, c·p·p]: the Conv2d's receptive fields.
        let flat = pixels
            .f_view([n, c, side, p, side, p])?
            .f_permute([0, 2, 4, 1, 3, 5])?
            .f_reshape([n, side * side, c * p * p])?;
        let h = ctx.linear("vision.patch_embed", &flat)?;
        let x = ctx.norm("vision.norm", &h, NormKind::LayerNorm, 1e-5)?;
        let q = x.f_unsqueeze(1)?; // one head: [n, 1, patches, hidden]
        let a = ctx
            .full_attention(&q, &q, &q, &[], None)?
            .f_squeeze_dim(1)?;
        let h = h.f_add(&a)?;
        let out = ctx.linear("projector", &h)?;
        Ok(out.f_reshape([-1, self.embd])?)
    }
}

impl Model for Gpt2Vision {
    fn layout(&self) -> ModelLayout {
        let mut layout = self.lm.layout();
        let flat = self.channels * self.patch * self.patch;
        layout.slots.extend([
            Slot::linear("vision.patch_embed", self.hidden, flat, false, None)
                .stored_as(vec![self.hidden, self.channels, self.patch, self.patch])
                .with_part(Part::Vit),
            Slot::norm("vision.norm", self.hidden, true, None).with_part(Part::Vit),
            Slot::linear("projector", self.embd, self.hidden, true, None).with_part(Part::Aligner),
        ]);
        layout.vision = Some(VisionDecl {
            image_token: "<image>".into(),
            image_token_id: self.image_token_id,
            tokens: ImageTokens::Fixed {
                count: self.patches(),
            },
            positions: Positions::Linear,
            processor: "CLIPImageProcessor".into(),
        });
        layout
    }

    fn forward(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        self.lm.forward(ctx, input_ids, positions)
    }

    fn has_blocks(&self) -> bool {
        true
    }

    fn embed(
        &self,
        ctx: &mut dyn ModelContext,
        input_ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        self.lm.embed(ctx, input_ids, positions)
    }

    fn block(
        &self,
        ctx: &mut dyn ModelContext,
        index: usize,
        hidden: &Tensor,
        positions: &Tensor,
    ) -> Result<Tensor, String> {
        self.lm.block(ctx, index, hidden, positions)
    }

    fn final_norm(&self, ctx: &mut dyn ModelContext, hidden: &Tensor) -> Result<Tensor, String> {
        self.lm.final_norm(ctx, hidden)
    }

    fn encode_images(
        &self,
        ctx: &mut dyn ModelContext,
        pixel_values: &Tensor,
        _grid_thw: &Tensor,
    ) -> Result<Tensor, String> {
        self.encode(ctx, pixel_values).map_err(String::from)
    }
}

/// The family's record.
pub fn record() -> ModelFamilyRecord {
    ModelFamilyRecord {
        name: "example-gpt2-vision".into(),
        aliases: vec![],
        description: "the example GPT-2 reading images: patch embedding, one attention head, projector (a third party's vision family)".into(),
        architectures: vec!["ExampleGpt2VisionForCausalLM".into()],
        model_types: vec!["example_gpt2_vision".into()],
        default_template: Some("chatml".into()),
        alias_of: None,
    }
}
