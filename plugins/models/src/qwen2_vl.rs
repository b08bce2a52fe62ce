//! Qwen2-VL (`Qwen2VLForConditionalGeneration`): a vision transformer over dynamic-resolution
//! patches, a patch merger, and the qwen2 decoder with multimodal rotary positions (M-RoPE).
//!
//! * Patch embedding: a Conv3d whose stride is its kernel (`temporal_patch_size × patch_size²`
//!   over `in_channels`), held as the linear slot `visual.patch_embed.proj` over the processor's
//!   flattened patches `[patches, c·t·p·p]`.
//! * 2-D vision rotary: each patch's (row, column) within its image, in the merger's 2×2 order,
//!   rotating the two halves of each head's first half by row and column frequencies.
//! * Blocks: LayerNorm → fused qkv → rotary → attention within each image (and frame) alone
//!   (`full_attention` over runs of `h·w` patches) → proj; LayerNorm → MLP (`hidden_act`).
//! * Merger (part `aligner`): LayerNorm, each `spatial_merge_size²` neighbouring patches
//!   concatenated, Linear → GELU → Linear to the language model's width.
//! * Language model: the shared [`Decoder`] with qkv bias (qwen2) and M-RoPE sections
//!   (`rope_scaling.mrope_section`); the host computes the `[3, batch, seq]` positions
//!   (`get_rope_index`) from the `<|image_pad|>` runs and the images' grids.
//!
//! Video is out of scope (issue 21): `<|video_pad|>` is not expanded.

use serde_json::Value;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::sdk::{Activation, Config, Error};
use tch::{Kind, Tensor};

use crate::decoder::{Decoder, Options};

pub struct Qwen2Vl;

impl ModelFamily for Qwen2Vl {
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Model>, String> {
        Ok(Box::new(Qwen2VlModel::from_config(config)?))
    }
}

struct Tower {
    embed: i64,
    depth: usize,
    heads: i64,
    mlp: i64,
    patch: i64,
    temporal: i64,
    channels: i64,
    merge: i64,
    act: Activation,
}

struct Qwen2VlModel {
    lm: Decoder,
    tower: Tower,
    image_token_id: i64,
}

const EPS: f64 = 1e-6;

impl Qwen2VlModel {
    fn from_config(config: &Value) -> Result<Self, Error> {
        let cfg = Config::model(config);
        // transformers 4.57 nests the language model's keys in `text_config`; released
        // checkpoints keep them at the top.
        let mut text = config
            .get("text_config")
            .cloned()
            .unwrap_or_else(|| config.clone());
        let sections = text
            .pointer("/rope_scaling/mrope_section")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<i64>>())
            .ok_or_else(|| Error("config.json has no rope_scaling.mrope_section".into()))?;
        // The sections are M-RoPE's; the frequencies themselves are unscaled.
        if let Some(obj) = text.as_object_mut() {
            obj.remove("rope_scaling");
        }
        let opts = Options {
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
        };
        let lm = Decoder::from_config(&text, opts)?.with_mrope(sections)?;
        let v = cfg
            .nested("vision_config")
            .ok_or_else(|| Error("config.json has no `vision_config`".into()))?;
        let embed = v.i64("embed_dim")?;
        let heads = v.count("num_heads", 65_536)?;
        if embed % heads != 0 || (embed / heads) % 4 != 0 {
            return Err(Error(format!(
                "vision embed_dim {embed} over num_heads {heads} must give a head size divisible by 4"
            )));
        }
        let ratio = v.f64_or("mlp_ratio", 4.0)?;
        let tower = Tower {
            embed,
            depth: v.count("depth", 65_536)? as usize,
            heads,
            mlp: (embed as f64 * ratio) as i64,
            patch: v.i64("patch_size")?,
            temporal: v.i64_or("temporal_patch_size", 2)?,
            channels: v.i64_or("in_channels", 3)?,
            merge: v.i64_or("spatial_merge_size", 2)?,
            act: Activation::from_name(
                &v.str_opt("hidden_act")?
                    .unwrap_or_else(|| "quick_gelu".into()),
            )?,
        };
        let lm_hidden = lm.hidden_size();
        if let Some(h) = v.i64_opt("hidden_size")? {
            if h != lm_hidden {
                return Err(Error(format!(
                    "vision_config.hidden_size {h} differs from the language model's {lm_hidden}"
                )));
            }
        }
        Ok(Self {
            lm,
            tower,
            image_token_id: cfg
                .i64_opt("image_token_id")?
                .ok_or_else(|| Error("config.json has no `image_token_id`".into()))?,
        })
    }

    fn flat(&self) -> i64 {
        let t = &self.tower;
        t.channels * t.temporal * t.patch * t.patch
    }

    fn vision_slots(&self) -> Vec<Slot> {
        let t = &self.tower;
        let vit = |s: Slot| s.with_part(Part::Vit);
        let mut slots = vec![vit(Slot::linear(
            "visual.patch_embed.proj",
            t.embed,
            self.flat(),
            false,
            None,
        )
        .stored_as(vec![t.embed, t.channels, t.temporal, t.patch, t.patch]))];
        for i in 0..t.depth {
            let p = format!("visual.blocks.{i}");
            slots.push(vit(Slot::norm(format!("{p}.norm1"), t.embed, true, None)));
            slots.push(vit(Slot::linear(
                format!("{p}.attn.qkv"),
                3 * t.embed,
                t.embed,
                true,
                None,
            )));
            slots.push(vit(Slot::linear(
                format!("{p}.attn.proj"),
                t.embed,
                t.embed,
                true,
                None,
            )));
            slots.push(vit(Slot::norm(format!("{p}.norm2"), t.embed, true, None)));
            slots.push(vit(Slot::linear(
                format!("{p}.mlp.fc1"),
                t.mlp,
                t.embed,
                true,
                None,
            )));
            slots.push(vit(Slot::linear(
                format!("{p}.mlp.fc2"),
                t.embed,
                t.mlp,
                true,
                None,
            )));
        }
        let merged = t.embed * t.merge * t.merge;
        let aligner = |s: Slot| s.with_part(Part::Aligner);
        slots.push(aligner(Slot::norm(
            "visual.merger.ln_q",
            t.embed,
            true,
            None,
        )));
        slots.push(aligner(Slot::linear(
            "visual.merger.mlp.0",
            merged,
            merged,
            true,
            None,
        )));
        slots.push(aligner(Slot::linear(
            "visual.merger.mlp.2",
            self.lm.hidden_size(),
            merged,
            true,
            None,
        )));
        slots
    }

    /// Each patch's (row, column) in its image, in the processor's order (merge windows of
    /// `merge × merge` patches contiguous), for every frame.
    fn rotary_positions(&self, grids: &[[i64; 3]]) -> (Vec<i64>, Vec<i64>) {
        let m = self.tower.merge;
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                rows.push(bh * m + ih);
                                cols.push(bw * m + iw);
                            }
                        }
                    }
                }
            }
        }
        (rows, cols)
    }

    fn encode(
        &self,
        ctx: &mut dyn ModelContext,
        pixels: &Tensor,
        grid: &Tensor,
    ) -> Result<Tensor, Error> {
        let tw = &self.tower;
        let g = Vec::<i64>::try_from(grid.f_to_kind(Kind::Int64)?.f_reshape([-1])?)?;
        if g.len() % 3 != 0 || g.is_empty() {
            return Err(Error(format!("image grids {g:?} are not [images, 3]")));
        }
        let grids: Vec<[i64; 3]> = g.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        let total: i64 = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let size = pixels.size();
        if size != [total, self.flat()] {
            return Err(Error(format!(
                "pixel values have shape {size:?}; the grids {grids:?} need [{total}, {}]",
                self.flat()
            )));
        }
        if grids
            .iter()
            .any(|g| g[1] % tw.merge != 0 || g[2] % tw.merge != 0)
        {
            return Err(Error(format!(
                "image grids {grids:?} must be multiples of spatial_merge_size {}",
                tw.merge
            )));
        }
        let device = pixels.device();
        let mut h = ctx.linear("visual.patch_embed.proj", pixels)?;
        // 2-D rotary: a quarter of each head's size per axis, doubled over the two halves.
        let hd = tw.embed / tw.heads;
        let quarter = hd / 4;
        let inv = Tensor::f_arange(quarter, (Kind::Float, device))?
            .f_mul_scalar(2.0 / (hd / 2) as f64)?;
        let inv = Tensor::f_full([quarter], 10000.0, (Kind::Float, device))?
            .f_pow(&inv)?
            .f_reciprocal()?;
        let (rows, cols) = self.rotary_positions(&grids);
        let axis = |p: &[i64]| -> Result<Tensor, Error> {
            let p = Tensor::from_slice(p)
                .f_to_device(device)?
                .f_to_kind(Kind::Float)?;
            Ok(p.f_unsqueeze(1)?.f_mul(&inv.f_unsqueeze(0)?)?)
        };
        let freqs = Tensor::f_cat(&[axis(&rows)?, axis(&cols)?], 1)?; // [patches, hd/2]
        let emb = Tensor::f_cat(&[&freqs, &freqs], 1)?; // [patches, hd]
        let cos = emb.f_cos()?.f_view([1, 1, total, hd])?;
        let sin = emb.f_sin()?.f_view([1, 1, total, hd])?;
        let rotate = |x: &Tensor| -> Result<Tensor, Error> {
            let kind = x.kind();
            let x = x.f_to_kind(Kind::Float)?;
            let half = hd / 2;
            let r = Tensor::f_cat(
                &[
                    &x.f_narrow(-1, half, half)?.f_neg()?,
                    &x.f_narrow(-1, 0, half)?,
                ],
                -1,
            )?;
            Ok((x * &cos + r * &sin).f_to_kind(kind)?)
        };
        let runs: Vec<i64> = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t as usize))
            .collect();
        for i in 0..tw.depth {
            let p = format!("visual.blocks.{i}");
            let x = ctx.norm(&format!("{p}.norm1"), &h, NormKind::LayerNorm, EPS)?;
            let qkv = ctx
                .linear(&format!("{p}.attn.qkv"), &x)?
                .f_view([total, 3, tw.heads, hd])?
                .f_permute([1, 2, 0, 3])?; // [3, heads, patches, hd]
            let q = rotate(&qkv.f_select(0, 0)?.f_unsqueeze(0)?)?;
            let k = rotate(&qkv.f_select(0, 1)?.f_unsqueeze(0)?)?;
            let v = qkv.f_select(0, 2)?.f_unsqueeze(0)?;
            let a = ctx.full_attention(&q, &k, &v, &runs, None)?;
            let a = a
                .f_squeeze_dim(0)?
                .f_transpose(0, 1)?
                .f_reshape([total, tw.embed])?;
            h = h.f_add(&ctx.linear(&format!("{p}.attn.proj"), &a)?)?;
            let x = ctx.norm(&format!("{p}.norm2"), &h, NormKind::LayerNorm, EPS)?;
            let x = tw.act.apply(&ctx.linear(&format!("{p}.mlp.fc1"), &x)?)?;
            h = h.f_add(&ctx.linear(&format!("{p}.mlp.fc2"), &x)?)?;
        }
        let x = ctx.norm("visual.merger.ln_q", &h, NormKind::LayerNorm, EPS)?;
        let x = x.f_view([-1, tw.embed * tw.merge * tw.merge])?;
        let x = ctx.linear("visual.merger.mlp.0", &x)?.f_gelu("none")?;
        Ok(ctx.linear("visual.merger.mlp.2", &x)?)
    }
}

impl Model for Qwen2VlModel {
    fn layout(&self) -> ModelLayout {
        let mut layout = self.lm.layout();
        layout.slots.extend(self.vision_slots());
        layout.vision = Some(VisionDecl {
            image_token: "<|image_pad|>".into(),
            image_token_id: self.image_token_id,
            tokens: ImageTokens::Grid {
                merge: self.tower.merge,
            },
            positions: Positions::Mrope {
                spatial_merge_size: self.tower.merge,
            },
            processor: "Qwen2VLImageProcessor".into(),
        });
        // Qwen2VLForConditionalGeneration's _checkpoint_conversion_mapping (transformers 4.57):
        // PEFT names the slots by these modules.
        layout.module_names = vec![
            ModuleName::new("model", "model.language_model"),
            ModuleName::new("visual", "model.visual"),
        ];
        layout
    }

    crate::decoder::language_model_methods!();

    fn encode_images(
        &self,
        ctx: &mut dyn ModelContext,
        pixel_values: &Tensor,
        grid_thw: &Tensor,
    ) -> Result<Tensor, String> {
        self.encode(ctx, pixel_values, grid_thw)
            .map_err(String::from)
    }
}
