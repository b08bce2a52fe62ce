//! The host side of vision in the model contract (issue 21; declarations in
//! `swift_plugin_api::vision`): a forward pass whose prompt holds images, the vision tower's
//! non-causal attention, and Qwen2-VL's multimodal rotary positions (`get_rope_index`).
//!
//! A pass with images: the family embeds the tokens (`Model::embed`), encodes the images
//! (`Model::encode_images`: tower and projector through the host's slots), the host writes the
//! features over the placeholder positions (`VisionDecl::image_token_id`, in order, checking
//! that the counts agree) and runs the blocks and the final norm. Positions: 1-D as for text, or
//! for `Positions::Mrope` `[3, batch, seq]` computed here from the ids and the images' grids;
//! each row's `rope_delta` (its next text position minus its token count) stays in the
//! [`KvCache`], and later passes over that cache (decoding steps) add it to their 1-D positions.

use swift_plugin_tensors::model::{ForwardPart, Positions, VisionDecl};
use swift_plugin_tensors::ModelHandleExt;
use tch::{Kind, Tensor};

use crate::{context, KvCache, LoadedModel, ModelError};

/// The images of one pass, for all its rows in order: what the image processor returned.
pub struct ImageBatch {
    /// The processor's pixel values (`[images, 3, h, w]` for CLIP; `[patches, c·t·p·p]` for
    /// Qwen2-VL).
    pub pixel_values: Tensor,
    /// `[images, 3]` int64: each image's patch grid `(t, h, w)`.
    pub grid_thw: Tensor,
}

impl ImageBatch {
    /// The grids as plain numbers.
    pub fn grids(&self) -> Result<Vec<[i64; 3]>, ModelError> {
        let g = self
            .grid_thw
            .f_to_kind(Kind::Int64)?
            .f_to_device(tch::Device::Cpu)?;
        let flat = Vec::<i64>::try_from(g.f_reshape([-1])?)?;
        if g.dim() != 2 || g.size()[1] != 3 {
            return Err(ModelError::Config(format!(
                "image grids have shape {:?}, expected [images, 3]",
                g.size()
            )));
        }
        Ok(flat.chunks(3).map(|c| [c[0], c[1], c[2]]).collect())
    }
}

/// Non-causal scaled dot-product attention over each run of `runs` positions alone (`runs`
/// empty: one run). `q`, `k`, `v` are `[batch, heads, seq, dim]`.
pub(crate) fn full_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    runs: &[i64],
    scale: Option<f64>,
) -> Result<Tensor, tch::TchError> {
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor| {
        Tensor::f_scaled_dot_product_attention(q, k, v, None::<&Tensor>, 0.0, false, scale, false)
    };
    if runs.len() <= 1 {
        return sdpa(q, k, v);
    }
    let (qs, ks, vs) = (
        q.f_split_with_sizes(runs, 2)?,
        k.f_split_with_sizes(runs, 2)?,
        v.f_split_with_sizes(runs, 2)?,
    );
    let mut outs = Vec::with_capacity(runs.len());
    for ((q, k), v) in qs.iter().zip(&ks).zip(&vs) {
        outs.push(sdpa(q, k, v)?);
    }
    Tensor::f_cat(&outs, 2)
}

/// Qwen2-VL's multimodal rotary positions of one row's real tokens (transformers'
/// `get_rope_index` for images): `[3][len]` (temporal, height, width) and the row's delta
/// (largest position + 1 − `len`). Each run of `image_token_id` takes the next grid of
/// `grids`, divided by `merge` on height and width; text positions continue from the largest
/// position before them + 1.
pub fn mrope_index(
    ids: &[i64],
    image_token_id: i64,
    grids: &mut impl Iterator<Item = [i64; 3]>,
    merge: i64,
) -> Result<([Vec<i64>; 3], i64), ModelError> {
    let mut pos: [Vec<i64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut next = 0i64;
    let mut i = 0usize;
    while i < ids.len() {
        if ids[i] != image_token_id {
            for p in pos.iter_mut() {
                p.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let [t, h, w] = grids.next().ok_or_else(|| {
            ModelError::Config("the prompt holds more image placeholders than images".into())
        })?;
        let (h, w) = (h / merge.max(1), w / merge.max(1));
        let n = (t * h * w) as usize;
        if ids.len() - i < n || ids[i..i + n].iter().any(|&x| x != image_token_id) {
            return Err(ModelError::Config(format!(
                "an image of grid {t}×{h}×{w} (merged) needs {n} placeholder positions in a row"
            )));
        }
        for ti in 0..t {
            for hi in 0..h {
                for wi in 0..w {
                    pos[0].push(next + ti);
                    pos[1].push(next + hi);
                    pos[2].push(next + wi);
                }
            }
        }
        next += t.max(h).max(w);
        i += n;
    }
    Ok((pos, next - ids.len() as i64))
}

impl LoadedModel {
    /// The layout's vision declarations, or an error naming the family's lack of them.
    pub fn vision(&self) -> Result<&VisionDecl, ModelError> {
        self.layout.vision.as_ref().ok_or_else(|| {
            ModelError::Config(
                "this model reads no images (its family declares no vision tower): give a vision-language model, or leave out the images".into(),
            )
        })
    }

    /// [`LoadedModel::forward`] over a prompt whose placeholders take `images` (all rows'
    /// images, in order); `None` is a text-only pass. Decoding steps after it are plain
    /// [`LoadedModel::forward`] calls on the same cache.
    pub fn forward_with_images(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor, ModelError> {
        let Some(images) = images else {
            return self.forward(ids, mask, cache);
        };
        let _guard = tch::no_grad_guard();
        let (ids, mask) = self.on_device(ids, mask)?;
        let mut step = cache.begin(&ids, mask.as_ref())?;
        let hidden = self.run_with_images(&ids, mask.as_ref(), cache, &mut step, images)?;
        cache.finish(&step);
        Ok(hidden)
    }

    /// [`LoadedModel::forward_train`] over rows holding images (autograd on).
    pub fn forward_train_with_images(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        images: Option<&ImageBatch>,
    ) -> Result<Tensor, ModelError> {
        let Some(images) = images else {
            return self.forward_train(ids, mask);
        };
        let batch = ids.size().first().copied().unwrap_or(1);
        let mut cache = self.new_cache(batch);
        let (ids, mask) = self.on_device(ids, mask)?;
        let mut step = cache.begin(&ids, mask.as_ref())?;
        step.sparse = self.sparse_now();
        self.run_with_images(&ids, mask.as_ref(), &mut cache, &mut step, images)
    }

    /// Positions of a pass over `cache` without images: a multimodal-rotary family adds each
    /// row's delta from its earlier images.
    pub(crate) fn shift_positions(
        &self,
        cache: &KvCache,
        step: &mut context::Step,
    ) -> Result<(), ModelError> {
        if let Some(VisionDecl {
            positions: Positions::Mrope { .. },
            ..
        }) = &self.layout.vision
        {
            step.positions = step
                .positions
                .f_add(&cache.rope_delta.f_unsqueeze(1)?.f_to_device(self.device)?)?;
        }
        Ok(())
    }

    fn run_with_images(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        step: &mut context::Step,
        images: &ImageBatch,
    ) -> Result<Tensor, ModelError> {
        let vision = self.vision()?.clone();
        if !self.model.has_blocks() {
            return Err(ModelError::Family(
                "a vision family must offer per-block entry points (Model::has_blocks)".into(),
            ));
        }
        if !cache.is_empty() {
            return Err(ModelError::Config(
                "images enter a sequence's first pass only (the cache already holds tokens)".into(),
            ));
        }
        let grids = images.grids()?;
        if let Positions::Mrope { spatial_merge_size } = vision.positions {
            let (positions, delta) =
                self.mrope_positions(ids, mask, &grids, vision.image_token_id, spatial_merge_size)?;
            step.positions = positions;
            cache.rope_delta = delta;
        }
        let positions = step.positions.shallow_clone();
        let mut ctx = context::HostContext {
            model: self,
            cache,
            step: &*step,
            attended: 0,
        };
        let fam = |e: String| ModelError::Family(e);
        let h = self
            .model
            .forward_part(&mut ctx, ForwardPart::Embed, ids, &positions)
            .map_err(fam)?;
        let pixels = images
            .pixel_values
            .f_to_device(self.device)?
            .f_to_kind(self.kind)?;
        let grid = images.grid_thw.f_to_kind(Kind::Int64)?;
        let features = self
            .model
            .forward_part(&mut ctx, ForwardPart::Images, &pixels, &grid)
            .map_err(fam)?;
        // Placeholders among the real tokens (left padding may hold any id).
        let mut place = ids.f_eq(vision.image_token_id)?;
        if let Some(m) = mask {
            place = place.f_logical_and(&m.f_to_kind(Kind::Bool)?)?;
        }
        let wanted = i64::try_from(place.f_sum(Kind::Int64)?)?;
        let got = features.size().first().copied().unwrap_or(0);
        if wanted != got {
            return Err(ModelError::Config(format!(
                "the prompt holds {wanted} `{}` positions but its {} images give {got} features: each image expands to the positions its family declares",
                vision.image_token,
                grids.len()
            )));
        }
        let mut h = h.f_masked_scatter(
            &place.f_unsqueeze(-1)?.f_expand_as(&h)?,
            &features.f_to_kind(h.kind())?,
        )?;
        for i in 0..self.layout.num_blocks {
            h = self
                .model
                .forward_part(&mut ctx, ForwardPart::Block(i), &h, &positions)
                .map_err(fam)?;
        }
        let out = self
            .model
            .forward_part(&mut ctx, ForwardPart::Final, &h, &positions)
            .map_err(fam)?;
        if ctx.attended != self.layout.num_blocks {
            return Err(ModelError::Family(format!(
                "forward called attention for {} layers, the layout declares {}",
                ctx.attended, self.layout.num_blocks
            )));
        }
        Ok(out)
    }

    /// `[3, batch, seq]` positions of a first pass and each row's delta: every row's real
    /// tokens (`mask`) through [`mrope_index`], the grids taken in row order; padding at 1, as
    /// transformers puts it.
    fn mrope_positions(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        grids: &[[i64; 3]],
        image_token_id: i64,
        merge: i64,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let cpu = tch::Device::Cpu;
        let all = Vec::<i64>::try_from(ids.f_to_device(cpu)?.f_reshape([-1])?)?;
        let valid: Vec<bool> = match mask {
            Some(m) => {
                Vec::<bool>::try_from(m.f_to_device(cpu)?.f_to_kind(Kind::Bool)?.f_reshape([-1])?)?
            }
            None => vec![true; all.len()],
        };
        let mut out = vec![1i64; (3 * b * t) as usize];
        let mut deltas = Vec::with_capacity(b as usize);
        let mut grids = grids.iter().copied();
        for r in 0..b as usize {
            let row = &all[r * t as usize..(r + 1) * t as usize];
            let keep: Vec<usize> = (0..t as usize)
                .filter(|&j| valid[r * t as usize + j])
                .collect();
            let real: Vec<i64> = keep.iter().map(|&j| row[j]).collect();
            let (pos, delta) = mrope_index(&real, image_token_id, &mut grids, merge)?;
            for (axis, p) in pos.iter().enumerate() {
                for (n, &j) in keep.iter().enumerate() {
                    out[axis * (b * t) as usize + r * t as usize + j] = p[n];
                }
            }
            deltas.push(delta);
        }
        if grids.next().is_some() {
            return Err(ModelError::Config(
                "more images than the prompt has image placeholders for".into(),
            ));
        }
        let positions = Tensor::from_slice(&out)
            .f_view([3, b, t])?
            .f_to_device(self.device)?;
        let deltas = Tensor::from_slice(&deltas).f_to_device(self.device)?;
        Ok((positions, deltas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrope_index_of_text_and_one_image() {
        // Two text tokens, an image of merged grid 1×2×2 (4 placeholders), one text token.
        let ids = [5, 6, 9, 9, 9, 9, 7];
        let (pos, delta) = mrope_index(&ids, 9, &mut [[1, 4, 4]].into_iter(), 2).unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 2, 2, 2, 4]);
        assert_eq!(pos[1], vec![0, 1, 2, 2, 3, 3, 4]);
        assert_eq!(pos[2], vec![0, 1, 2, 3, 2, 3, 4]);
        assert_eq!(delta, 5 - 7);
    }

    #[test]
    fn full_attention_runs_alone() {
        let q = Tensor::randn([1, 2, 5, 4], (Kind::Float, tch::Device::Cpu));
        let whole = full_attention(&q, &q, &q, &[2, 3], None).unwrap();
        let first = full_attention(
            &q.narrow(2, 0, 2),
            &q.narrow(2, 0, 2),
            &q.narrow(2, 0, 2),
            &[],
            None,
        )
        .unwrap();
        assert!(whole.narrow(2, 0, 2).allclose(&first, 1e-6, 1e-6, false));
    }
}
