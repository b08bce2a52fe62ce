//! LLaVA-1.5 (`LlavaForConditionalGeneration`, llava-1.5-hf's layout): a CLIP vision tower,
//! a two-layer MLP projector and a Llama-style language model (the shared [`Decoder`], under
//! `language_model.`). An image's features are the tower's hidden states after layer
//! `vision_feature_layer` (−2: the second-to-last), without the class position
//! (`vision_feature_select_strategy` `default`; `full` keeps it), projected to the language
//! model's width; they replace the `<image>` placeholders (`image_token_index`), one per patch.
//!
//! Every weight is a host slot: the patch embedding (a Conv2d whose stride is its kernel) is the
//! linear slot `…embeddings.patch_embedding` over flattened patches, the position table an
//! embedding slot, the class embedding a parameter, layer norms `norm` slots; the tower is part
//! `vit`, the projector `aligner`. The layers after the feature layer and the post-layernorm are
//! never read (declared ignorable).

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{Activation, Config, Error};
use tch::{Kind, Tensor};

use crate::decoder::{Decoder, Options};

pub struct Llava;

impl ModelFamily for Llava {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        Ok(Box::new(LlavaModel::from_config(config)?))
    }
}

const TOWER: &str = "vision_tower.vision_model";

/// CLIP's vision transformer, as far as the feature layer.
struct Clip {
    hidden: i64,
    intermediate: i64,
    heads: i64,
    patch: i64,
    image: i64,
    channels: i64,
    /// Layers run (the feature layer's index in the hidden-state list).
    layers: usize,
    /// Layers stored.
    stored_layers: usize,
    eps: f64,
    act: Activation,
    keep_class: bool,
}

struct LlavaModel {
    lm: Decoder,
    clip: Clip,
    projector_act: Activation,
    projector_bias: bool,
    image_token_id: i64,
}

impl LlavaModel {
    fn from_config(config: &Value) -> Result<Self, Error> {
        let cfg = Config::model(config);
        let text = config
            .get("text_config")
            .ok_or_else(|| Error("config.json has no `text_config`".into()))?;
        let vision = cfg
            .nested("vision_config")
            .ok_or_else(|| Error("config.json has no `vision_config`".into()))?;
        let opts = Options {
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
        };
        let lm = Decoder::from_config(text, opts)?
            .with_names("language_model.model", "language_model.lm_head");
        let stored_layers = vision.count("num_hidden_layers", 1024)? as usize;
        let layer = cfg
            .get("vision_feature_layer")
            .cloned()
            .unwrap_or(Value::from(-2));
        let layer = layer.as_i64().ok_or_else(|| {
            Error(
                "vision_feature_layer must be one integer (a list of layers is not supported)"
                    .into(),
            )
        })?;
        // hidden_states has stored_layers + 1 entries (the embeddings first).
        let index = if layer < 0 {
            stored_layers as i64 + 1 + layer
        } else {
            layer
        };
        if !(0..=stored_layers as i64).contains(&index) {
            return Err(Error(format!(
                "vision_feature_layer {layer} is outside the tower's {stored_layers} layers"
            )));
        }
        let keep_class = match cfg.str_opt("vision_feature_select_strategy")?.as_deref() {
            None | Some("default") => false,
            Some("full") => true,
            Some(other) => {
                return Err(Error(format!(
                    "vision_feature_select_strategy `{other}` is not supported (default, full)"
                )))
            }
        };
        let hidden = vision.i64("hidden_size")?;
        let heads = vision.count("num_attention_heads", 65_536)?;
        if hidden % heads != 0 {
            return Err(Error(format!(
                "vision hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let clip = Clip {
            hidden,
            intermediate: vision.i64("intermediate_size")?,
            heads,
            patch: vision.i64("patch_size")?,
            image: vision.i64("image_size")?,
            channels: vision.i64_or("num_channels", 3)?,
            layers: index as usize,
            stored_layers,
            eps: vision.f64_or("layer_norm_eps", 1e-5)?,
            act: Activation::from_name(
                &vision
                    .str_opt("hidden_act")?
                    .unwrap_or_else(|| "quick_gelu".into()),
            )?,
            keep_class,
        };
        if clip.image % clip.patch != 0 {
            return Err(Error(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                clip.image, clip.patch
            )));
        }
        Ok(Self {
            lm,
            clip,
            projector_act: Activation::from_name(
                &cfg.str_opt("projector_hidden_act")?
                    .unwrap_or_else(|| "gelu".into()),
            )?,
            projector_bias: cfg.bool_or("multimodal_projector_bias", true)?,
            image_token_id: cfg
                .i64_opt("image_token_index")?
                .or(cfg.i64_opt("image_token_id")?)
                .ok_or_else(|| Error("config.json has no `image_token_index`".into()))?,
        })
    }

    fn patches(&self) -> i64 {
        let side = self.clip.image / self.clip.patch;
        side * side
    }

    fn vision_slots(&self) -> Vec<Slot> {
        let c = &self.clip;
        let vit = |s: Slot| s.with_part(Part::Vit);
        let e = format!("{TOWER}.embeddings");
        let flat = c.channels * c.patch * c.patch;
        let mut slots = vec![
            vit(
                Slot::linear(format!("{e}.patch_embedding"), c.hidden, flat, false, None)
                    .stored_as(vec![c.hidden, c.channels, c.patch, c.patch]),
            ),
            vit(Slot::embedding(
                format!("{e}.position_embedding"),
                self.patches() + 1,
                c.hidden,
            )),
            vit(Slot::norm(
                format!("{TOWER}.pre_layrnorm"),
                c.hidden,
                true,
                None,
            )),
        ];
        for i in 0..c.layers {
            let p = format!("{TOWER}.encoder.layers.{i}");
            slots.push(vit(Slot::norm(
                format!("{p}.layer_norm1"),
                c.hidden,
                true,
                None,
            )));
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                slots.push(vit(Slot::linear(
                    format!("{p}.self_attn.{proj}"),
                    c.hidden,
                    c.hidden,
                    true,
                    None,
                )));
            }
            slots.push(vit(Slot::norm(
                format!("{p}.layer_norm2"),
                c.hidden,
                true,
                None,
            )));
            slots.push(vit(Slot::linear(
                format!("{p}.mlp.fc1"),
                c.intermediate,
                c.hidden,
                true,
                None,
            )));
            slots.push(vit(Slot::linear(
                format!("{p}.mlp.fc2"),
                c.hidden,
                c.intermediate,
                true,
                None,
            )));
        }
        let lm = self.lm.hidden_size();
        let b = self.projector_bias;
        slots.push(
            Slot::linear("multi_modal_projector.linear_1", lm, c.hidden, b, None)
                .with_part(Part::Aligner),
        );
        slots.push(
            Slot::linear("multi_modal_projector.linear_2", lm, lm, b, None)
                .with_part(Part::Aligner),
        );
        slots
    }

    fn tower(&self, ctx: &mut dyn ModelContext, pixels: &Tensor) -> Result<Tensor, Error> {
        let c = &self.clip;
        let size = pixels.size();
        if size.len() != 4 || size[1] != c.channels || size[2] != c.image || size[3] != c.image {
            return Err(Error(format!(
                "pixel values have shape {size:?}; this tower takes [images, {}, {}, {}]",
                c.channels, c.image, c.image
            )));
        }
        let (n, side, p) = (size[0], c.image / c.patch, c.patch);
        // [n, c, side, p, side, p] → [n, side·side, c·p·p]: the Conv2d's receptive fields.
        let flat = pixels
            .f_view([n, c.channels, side, p, side, p])?
            .f_permute([0, 2, 4, 1, 3, 5])?
            .f_reshape([n, side * side, c.channels * p * p])?;
        let e = format!("{TOWER}.embeddings");
        let patches = ctx.linear(&format!("{e}.patch_embedding"), &flat)?;
        let class = ctx
            .param(&format!("{e}.class_embedding"))?
            .f_view([1, 1, c.hidden])?
            .f_expand([n, 1, c.hidden], false)?
            .f_to_kind(patches.kind())?;
        let ids = Tensor::f_arange(side * side + 1, (Kind::Int64, pixels.device()))?;
        let pos = ctx.embedding(&format!("{e}.position_embedding"), &ids)?;
        let mut h = Tensor::f_cat(&[&class, &patches], 1)?.f_add(&pos.f_unsqueeze(0)?)?;
        h = ctx.norm(
            &format!("{TOWER}.pre_layrnorm"),
            &h,
            NormKind::LayerNorm,
            c.eps,
        )?;
        let (t, heads, hd) = (side * side + 1, c.heads, c.hidden / c.heads);
        for i in 0..c.layers {
            let p = format!("{TOWER}.encoder.layers.{i}");
            let x = ctx.norm(&format!("{p}.layer_norm1"), &h, NormKind::LayerNorm, c.eps)?;
            let split = |y: Tensor| -> Result<Tensor, Error> {
                Ok(y.f_view([n, t, heads, hd])?.f_transpose(1, 2)?)
            };
            let q = split(ctx.linear(&format!("{p}.self_attn.q_proj"), &x)?)?;
            let k = split(ctx.linear(&format!("{p}.self_attn.k_proj"), &x)?)?;
            let v = split(ctx.linear(&format!("{p}.self_attn.v_proj"), &x)?)?;
            let a = ctx.full_attention(&q, &k, &v, &[], None)?;
            let a = a.f_transpose(1, 2)?.f_reshape([n, t, c.hidden])?;
            h = h.f_add(&ctx.linear(&format!("{p}.self_attn.out_proj"), &a)?)?;
            let x = ctx.norm(&format!("{p}.layer_norm2"), &h, NormKind::LayerNorm, c.eps)?;
            let x = c.act.apply(&ctx.linear(&format!("{p}.mlp.fc1"), &x)?)?;
            h = h.f_add(&ctx.linear(&format!("{p}.mlp.fc2"), &x)?)?;
        }
        if !c.keep_class {
            h = h.f_narrow(1, 1, t - 1)?;
        }
        let x = ctx.linear("multi_modal_projector.linear_1", &h)?;
        let x = self.projector_act.apply(&x)?;
        let x = ctx.linear("multi_modal_projector.linear_2", &x)?;
        let width = x.size()[2];
        Ok(x.f_reshape([-1, width])?)
    }
}

impl Model for LlavaModel {
    fn layout(&self) -> ModelLayout {
        let mut layout = self.lm.layout();
        layout.slots.extend(self.vision_slots());
        layout.params.push(
            ParamDecl::new(
                format!("{TOWER}.embeddings.class_embedding"),
                vec![self.clip.hidden],
            )
            .with_part(Part::Vit),
        );
        for i in self.clip.layers..self.clip.stored_layers {
            layout
                .ignorable
                .push(format!("{TOWER}.encoder.layers.{i}.*"));
        }
        layout.ignorable.push(format!("{TOWER}.post_layernorm.*"));
        layout
            .ignorable
            .push(format!("{TOWER}.embeddings.position_ids"));
        let count = self.patches() + i64::from(self.clip.keep_class);
        layout.vision = Some(VisionDecl {
            image_token: "<image>".into(),
            image_token_id: self.image_token_id,
            tokens: ImageTokens::Fixed { count },
            positions: Positions::Linear,
            processor: "CLIPImageProcessor".into(),
        });
        // LlavaForConditionalGeneration's _checkpoint_conversion_mapping (transformers 4.57):
        // PEFT names the slots by these modules.
        layout.module_names = vec![
            ModuleName::new("language_model.model", "model.language_model"),
            ModuleName::new("vision_tower", "model.vision_tower"),
            ModuleName::new("multi_modal_projector", "model.multi_modal_projector"),
            ModuleName::new("language_model.lm_head", "lm_head"),
        ];
        layout
    }

    crate::decoder::language_model_methods!();

    fn encode_images(
        &self,
        ctx: &mut dyn ModelContext,
        pixel_values: &Tensor,
        _grid_thw: &Tensor,
    ) -> Result<Tensor, String> {
        self.tower(ctx, pixel_values).map_err(String::from)
    }
}
