//! The context a family's `forward` runs against, and the KV cache behind its `attention`.
//!
//! Batches are left-padded: a row's padding comes first and is masked out of every key set, and
//! each row's positions count only its real tokens, so a padded row computes exactly what it
//! would alone. Without padding the mask is dropped (decode steps) or replaced by SDPA's own
//! causal flag (first pass), which keeps the common case on the fast kernels.

use swift_plugin_tensors::model::{ModelContext, NormKind, SlotKind};
use swift_plugin_tensors::sdk;
use swift_plugin_tensors::sdk::shape;
use tch::{Device, Kind, Tensor};

use crate::{LoadedModel, ModelError};

/// Keys and values of every layer for a batch of rows, plus which cached positions are padding.
///
/// Each layer's keys and values are `[batch, kv_heads, capacity, head_dim]` buffers of which the
/// first `len` positions are filled: a decoding step writes its position in place and hands
/// attention a view of the filled part, instead of copying the whole cache into a new tensor.
/// The buffers grow [`GROW`] positions at a time.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[batch, len]`, true where the cached position holds a real token.
    key_valid: Option<Tensor>,
    /// Whether any row has padding (then every pass needs an explicit mask).
    padded: bool,
    /// Cached positions.
    len: i64,
    /// `[batch]`: the position the next real token of each row takes.
    next_pos: Tensor,
    /// `[batch]`: what multimodal rotary positions add to a row's text positions after its
    /// images (Qwen2-VL's `rope_deltas`; zero for text), `crate::vision`.
    pub(crate) rope_delta: Tensor,
    batch: i64,
}

/// Positions a layer's cache buffers grow by when a pass does not fit (one copy of the cache
/// per this many decoding steps).
const GROW: i64 = 64;

/// What one forward pass needs besides the ids: positions and the attention mask.
pub(crate) struct Step {
    pub positions: Tensor,
    /// `[batch, 1, seq, len]` booleans, or None (then `is_causal` says which kernel mode).
    mask: Option<Tensor>,
    is_causal: bool,
    key_valid: Tensor,
    /// `key_valid` on the host, for a decoding step (one new position) over padded rows on the
    /// CPU, where attention takes the fast path.
    key_valid_host: Option<Vec<bool>>,
    next_pos: Tensor,
    seq: i64,
    /// Training passes: `[batch, seq]` row ids (0: padding), when there is padding or packing.
    segments: Option<Tensor>,
    /// LongLoRA's shifted sparse attention for this training pass: `(group, length)`.
    pub sparse: Option<(i64, i64)>,
    /// A packed pass of one sequence: the lengths of its runs of one row each, in order, so
    /// attention runs causally on each run alone (what the block-diagonal mask asks, without
    /// computing the scores between rows).
    blocks: Option<Vec<i64>>,
    /// A no-grad pass of a bfloat16 model on the CPU whose activations run in float32
    /// ([`crate::LoadedModel::float_activations`]): the embedding's output is widened, so every
    /// later operation, the cache and attention's fast path are float32.
    pub float_activations: bool,
}

impl KvCache {
    pub(crate) fn new(layers: usize, batch: i64, device: Device) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
            key_valid: None,
            padded: false,
            len: 0,
            next_pos: Tensor::zeros([batch], (Kind::Int64, device)),
            rope_delta: Tensor::zeros([batch], (Kind::Int64, device)),
            batch,
        }
    }

    /// Positions cached so far (padding included).
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the rows at `rows` (indices into the current batch, in the new order): rows
    /// that finished generating stop costing compute.
    pub fn retain(&mut self, rows: &[i64]) -> Result<(), ModelError> {
        let index = Tensor::from_slice(rows).f_to_device(self.next_pos.device())?;
        for layer in self.layers.iter_mut() {
            if let Some((k, v)) = layer.take() {
                *layer = Some((k.f_index_select(0, &index)?, v.f_index_select(0, &index)?));
            }
        }
        if let Some(k) = &self.key_valid {
            let k = k.f_index_select(0, &index)?;
            self.padded = !bool::try_from(k.f_all()?)?;
            self.key_valid = Some(k);
        }
        self.next_pos = self.next_pos.f_index_select(0, &index)?;
        self.rope_delta = self.rope_delta.f_index_select(0, &index)?;
        self.batch = rows.len() as i64;
        Ok(())
    }

    /// A copy of the rows at `rows` (indices into this batch; one may repeat): a cached prefix
    /// shared by several continuations (`swift eval`'s few-shot examples) is computed once.
    pub fn copy_rows(&self, rows: &[i64]) -> Result<KvCache, ModelError> {
        let index = Tensor::from_slice(rows).f_to_device(self.next_pos.device())?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(match layer {
                Some((k, v)) => Some((k.f_index_select(0, &index)?, v.f_index_select(0, &index)?)),
                None => None,
            });
        }
        let key_valid = match &self.key_valid {
            Some(k) => Some(k.f_index_select(0, &index)?),
            None => None,
        };
        let padded = match &key_valid {
            Some(k) => !bool::try_from(k.f_all()?)?,
            None => false,
        };
        Ok(KvCache {
            layers,
            key_valid,
            padded,
            len: self.len,
            next_pos: self.next_pos.f_index_select(0, &index)?,
            rope_delta: self.rope_delta.f_index_select(0, &index)?,
            batch: rows.len() as i64,
        })
    }

    /// Appends the rows of `other` after this cache's rows (requests joining a running batch).
    /// The shorter of the two is left-padded to the longer's length with masked positions, so
    /// every row still attends to exactly its own tokens. A cache with no rows takes `other`.
    pub fn append(&mut self, other: KvCache) -> Result<(), ModelError> {
        if self.batch == 0 {
            *self = other;
            return Ok(());
        }
        if other.batch == 0 {
            return Ok(());
        }
        if self.layers.len() != other.layers.len() {
            return Err(ModelError::Config(format!(
                "appending a cache of {} layers to one of {}",
                other.layers.len(),
                self.layers.len()
            )));
        }
        let (Some(mine), Some(theirs)) = (&self.key_valid, &other.key_valid) else {
            return Err(ModelError::Config(
                "only caches that hold tokens can be joined".into(),
            ));
        };
        let len = self.len.max(other.len);
        let valid = Tensor::f_cat(
            &[
                pad_front(mine, 1, len - self.len)?,
                pad_front(theirs, 1, len - other.len)?,
            ],
            0,
        )?;
        for (a, b) in self.layers.iter_mut().zip(other.layers) {
            let (Some((ka, va)), Some((kb, vb))) = (a.take(), b) else {
                return Err(ModelError::Config(
                    "only caches that hold tokens can be joined".into(),
                ));
            };
            let (ka, va) = (ka.f_narrow(2, 0, self.len)?, va.f_narrow(2, 0, self.len)?);
            let (kb, vb) = (kb.f_narrow(2, 0, other.len)?, vb.f_narrow(2, 0, other.len)?);
            let k = Tensor::f_cat(
                &[
                    pad_front(&ka, 2, len - self.len)?,
                    pad_front(&kb, 2, len - other.len)?,
                ],
                0,
            )?;
            let v = Tensor::f_cat(
                &[
                    pad_front(&va, 2, len - self.len)?,
                    pad_front(&vb, 2, len - other.len)?,
                ],
                0,
            )?;
            *a = Some((k, v));
        }
        self.padded = !bool::try_from(valid.f_all()?)?;
        self.key_valid = Some(valid);
        self.next_pos = Tensor::f_cat(&[&self.next_pos, &other.next_pos], 0)?;
        self.rope_delta = Tensor::f_cat(&[&self.rope_delta, &other.rope_delta], 0)?;
        self.batch += other.batch;
        self.len = len;
        Ok(())
    }

    /// Drops leading cached positions that are padding in every row (left behind when the rows
    /// that needed them have left the batch), so later steps attend over fewer positions.
    pub fn trim_padding(&mut self) -> Result<(), ModelError> {
        let Some(valid) = &self.key_valid else {
            return Ok(());
        };
        if self.batch == 0 || self.len == 0 {
            return Ok(());
        }
        let used: Vec<bool> = Vec::<bool>::try_from(valid.f_any_dim(0, false)?)?;
        let first = used.iter().position(|&u| u).unwrap_or(used.len()) as i64;
        if first == 0 {
            return Ok(());
        }
        let keep = self.len - first;
        for layer in self.layers.iter_mut() {
            if let Some((k, v)) = layer.take() {
                // The view keeps the capacity after the filled part.
                let cap = shape(&k)[2] - first;
                *layer = Some((k.f_narrow(2, first, cap)?, v.f_narrow(2, first, cap)?));
            }
        }
        let valid = valid.f_narrow(1, first, keep)?;
        self.padded = !bool::try_from(valid.f_all()?)?;
        self.key_valid = Some(valid);
        self.len = keep;
        Ok(())
    }

    /// Rows in the cache.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    pub(crate) fn begin(
        &mut self,
        ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Step, ModelError> {
        let size = shape(ids);
        if size.len() != 2 || size[0] != self.batch {
            return Err(ModelError::Config(format!(
                "input ids have shape {size:?}, the cache holds {} rows",
                self.batch
            )));
        }
        let (b, t) = (size[0], size[1]);
        let device = ids.device();
        if mask.is_none() && !self.padded && device == Device::Cpu {
            return self.begin_unpadded(b, t);
        }
        let valid = match mask {
            Some(m) => m.f_to_kind(Kind::Bool)?,
            None => Tensor::ones([b, t], (Kind::Bool, device)),
        };
        let has_padding = mask.is_some() && !bool::try_from(valid.f_all()?)?;
        let padded = self.padded || has_padding;
        let cum = valid.f_to_kind(Kind::Int64)?.f_cumsum(1, Kind::Int64)?;
        let positions = (cum.f_sub_scalar(1)? + self.next_pos.f_unsqueeze(1)?).f_clamp_min(0)?;
        let next_pos = &self.next_pos + cum.f_select(1, t - 1)?;
        let key_valid = match &self.key_valid {
            Some(k) => Tensor::f_cat(&[k, &valid], 1)?,
            None => valid.shallow_clone(),
        };
        let past = self.len;
        let total = past + t;
        let (mask, is_causal) = if !padded {
            if t == 1 {
                (None, false)
            } else if past == 0 {
                (None, true)
            } else {
                (
                    Some(causal(past, t, device)?.f_view([1, 1, t, total])?),
                    false,
                )
            }
        } else {
            let causal = causal(past, t, device)?.f_view([1, 1, t, total])?;
            let keys = key_valid.f_view([b, 1, 1, total])?;
            // A padded query position attends at least to itself, so no row is fully masked.
            let q = Tensor::f_arange(t, (Kind::Int64, device))?
                .f_add_scalar(past)?
                .f_view([t, 1])?;
            let k = Tensor::f_arange(total, (Kind::Int64, device))?.f_view([1, total])?;
            let diag = k.f_eq_tensor(&q)?.f_view([1, 1, t, total])?;
            (
                Some(causal.f_logical_and(&keys)?.f_logical_or(&diag)?),
                false,
            )
        };
        self.padded = padded;
        // For one new position, the mask above is exactly `key_valid` (every cached key is
        // earlier, and the new token is real).
        let key_valid_host = if t == 1 && padded && device == Device::Cpu {
            Some(Vec::<bool>::try_from(key_valid.f_reshape([-1])?)?)
        } else {
            None
        };
        let segments = (past == 0 && has_padding)
            .then(|| valid.f_to_kind(Kind::Int64))
            .transpose()?;
        Ok(Step {
            positions,
            mask,
            is_causal,
            key_valid,
            key_valid_host,
            next_pos,
            seq: t,
            segments,
            sparse: None,
            blocks: None,
            float_activations: false,
        })
    }

    /// [`KvCache::begin`] without a mask over unpadded CPU rows (every decoding step of
    /// `swift infer`): the same step, its positions and next positions computed on the host
    /// instead of by ten libtorch operations (every token real: row `r`'s positions are
    /// `next_pos[r] + 0..t`).
    fn begin_unpadded(&mut self, b: i64, t: i64) -> Result<Step, ModelError> {
        let next: Vec<i64> = Vec::try_from(&self.next_pos)?;
        let positions: Vec<i64> = next
            .iter()
            .flat_map(|&p| (0..t).map(move |i| (p + i).max(0)))
            .collect();
        let next_pos: Vec<i64> = next.iter().map(|&p| p + t).collect();
        let valid = Tensor::f_ones([b, t], (Kind::Bool, Device::Cpu))?;
        let key_valid = match &self.key_valid {
            Some(k) => Tensor::f_cat(&[k, &valid], 1)?,
            None => valid,
        };
        let past = self.len;
        let (mask, is_causal) = match (t, past) {
            (1, _) => (None, false),
            (_, 0) => (None, true),
            _ => (
                Some(causal(past, t, Device::Cpu)?.f_view([1, 1, t, past + t])?),
                false,
            ),
        };
        Ok(Step {
            positions: Tensor::from_slice(&positions).f_view([b, t])?,
            mask,
            is_causal,
            key_valid,
            key_valid_host: None,
            next_pos: Tensor::from_slice(&next_pos),
            seq: t,
            segments: None,
            sparse: None,
            blocks: None,
            float_activations: false,
        })
    }

    pub(crate) fn finish(&mut self, step: &Step) {
        self.len += step.seq;
        self.key_valid = Some(step.key_valid.shallow_clone());
        self.next_pos = step.next_pos.shallow_clone();
    }
}

/// `t` with `n` zero (false) entries put before the start of dimension `dim`.
fn pad_front(t: &Tensor, dim: i64, n: i64) -> Result<Tensor, tch::TchError> {
    if n == 0 {
        return Ok(t.shallow_clone());
    }
    let mut size = shape(t);
    size[dim as usize] = n;
    let zeros = Tensor::f_zeros(size.as_slice(), (t.kind(), t.device()))?;
    Tensor::f_cat(&[&zeros, t], dim)
}

/// `[seq, past + seq]` booleans: query i (at position past + i) sees keys 0..=past + i.
fn causal(past: i64, t: i64, device: Device) -> Result<Tensor, tch::TchError> {
    let q = Tensor::f_arange(t, (Kind::Int64, device))?
        .f_add_scalar(past)?
        .f_view([t, 1])?;
    let k = Tensor::f_arange(past + t, (Kind::Int64, device))?.f_view([1, past + t])?;
    k.f_le_tensor(&q)
}

impl KvCache {
    /// The step of a no-grad pass over several rows laid end to end in one sequence (`ids`,
    /// `[1, seq]`; `blocks`: their lengths, in order) after what this one-row cache holds: each
    /// row continues the cached tokens on its own (its positions restart after them) and attends
    /// to them and causally to its own tokens only, so it computes exactly what it would alone
    /// after the cached prefix (`swift eval`'s questions after a shared few-shot prefix). The
    /// pass is not kept: its caller does not [`KvCache::finish`] it, so the cache still holds
    /// the prefix alone afterwards (its buffers may have grown).
    pub(crate) fn begin_blocks(
        &mut self,
        ids: &Tensor,
        blocks: &[i64],
    ) -> Result<Step, ModelError> {
        let size = shape(ids);
        let t: i64 = blocks.iter().sum();
        if size.len() != 2 || size[0] != 1 || self.batch != 1 || size[1] != t {
            return Err(ModelError::Config(format!(
                "a pass of rows laid end to end takes ids [1, {t}] (the rows' lengths summed) over a one-row cache; got ids {size:?} over {} rows",
                self.batch
            )));
        }
        if self.padded || blocks.iter().any(|&n| n < 1) {
            return Err(ModelError::Config(
                "rows laid end to end need a cache without padding and rows of one token or more"
                    .into(),
            ));
        }
        let device = ids.device();
        let start = self.next_pos.f_int64_value(&[0])?;
        let positions: Vec<i64> = blocks.iter().flat_map(|&n| start..start + n).collect();
        let positions = Tensor::from_slice(&positions)
            .f_view([1, t])?
            .f_to_device(device)?;
        Ok(Step {
            positions,
            mask: None,
            is_causal: false,
            key_valid: Tensor::f_ones([1, self.len + t], (Kind::Bool, device))?,
            key_valid_host: None,
            next_pos: self.next_pos.shallow_clone(),
            seq: t,
            segments: None,
            sparse: None,
            blocks: Some(blocks.to_vec()),
            float_activations: false,
        })
    }

    /// The step of a training pass over packed rows (several rows laid end to end in one
    /// sequence): `positions` (`[batch, seq]`) restart at 0 for every row and `seq_ids`
    /// (`[batch, seq]`) tell which row each token belongs to, so the mask is block-diagonal
    /// causal: a token sees the earlier tokens of its own row only. Padding shares one id and
    /// only attends to padding. The cache must be empty (training passes carry nothing over).
    pub(crate) fn begin_packed(
        &mut self,
        ids: &Tensor,
        positions: &Tensor,
        seq_ids: &Tensor,
    ) -> Result<Step, ModelError> {
        let size = shape(ids);
        if size.len() != 2 || size[0] != self.batch || self.len != 0 {
            return Err(ModelError::Config(format!(
                "a packed pass needs a fresh cache of {} rows; got input ids of shape {size:?} after {} cached positions",
                self.batch, self.len
            )));
        }
        if shape(positions) != size || shape(seq_ids) != size {
            return Err(ModelError::Config(format!(
                "packed input ids {size:?}, positions {:?} and sequence ids {:?} differ in shape",
                shape(positions),
                shape(seq_ids)
            )));
        }
        let (b, t) = (size[0], size[1]);
        let device = ids.device();
        let (mask, blocks) = if b == 1 {
            let row: Vec<i64> =
                Vec::<i64>::try_from(seq_ids.f_reshape([-1])?.f_to_kind(Kind::Int64)?)?;
            (None, Some(runs(&row)))
        } else {
            let same_row = seq_ids
                .f_unsqueeze(2)?
                .f_eq_tensor(&seq_ids.f_unsqueeze(1)?)?
                .f_view([b, 1, t, t])?;
            let mask = causal(0, t, device)?
                .f_view([1, 1, t, t])?
                .f_logical_and(&same_row)?;
            (Some(mask), None)
        };
        let next_pos = positions.f_select(1, t - 1)?.f_add_scalar(1)?;
        Ok(Step {
            positions: positions.f_to_kind(Kind::Int64)?,
            mask,
            is_causal: false,
            key_valid: Tensor::f_ones([b, t], (Kind::Bool, device))?,
            key_valid_host: None,
            next_pos,
            seq: t,
            segments: Some(seq_ids.f_to_kind(Kind::Int64)?),
            sparse: None,
            blocks,
            float_activations: false,
        })
    }
}

/// The lengths of the runs of equal values in `ids`, in order.
fn runs(ids: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    let mut prev = None;
    for &id in ids {
        match out.last_mut() {
            Some(n) if prev == Some(id) => *n += 1,
            _ => out.push(1),
        }
        prev = Some(id);
    }
    out
}

/// Causal attention over each run of `blocks` positions of a one-sequence pass alone: the
/// block-diagonal causal mask's result, at the cost of the blocks' scores only. Keys before the
/// pass's own (a cached prefix, [`KvCache::begin_blocks`]) are seen by every run.
fn blockwise_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    blocks: &[i64],
    scale: Option<f64>,
    gqa: bool,
) -> Result<Tensor, tch::TchError> {
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor| {
        Tensor::f_scaled_dot_product_attention(q, k, v, None::<&Tensor>, 0.0, true, scale, gqa)
    };
    let past = shape(k)[2] - shape(q)[2];
    if past > 0 {
        return blockwise_after_prefix(q, k, v, blocks, past, scale, gqa);
    }
    if blocks.len() <= 1 {
        return sdpa(q, k, v);
    }
    // split_with_sizes: its backward is one concatenation (a narrow per block would add a
    // zero-filled full-size gradient per block).
    let (qs, ks, vs) = (
        q.f_split_with_sizes(blocks, 2)?,
        k.f_split_with_sizes(blocks, 2)?,
        v.f_split_with_sizes(blocks, 2)?,
    );
    let outs = qs
        .iter()
        .zip(&ks)
        .zip(&vs)
        .map(|((q, k), v)| sdpa(q, k, v))
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::f_cat(&outs, 2)
}

/// [`blockwise_attention`] after `past` cached positions: each run attends to all of them and
/// causally to itself (SDPA's own causal flag aligns to the top left when the keys outnumber the
/// queries, so the mask is explicit).
fn blockwise_after_prefix(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    blocks: &[i64],
    past: i64,
    scale: Option<f64>,
    gqa: bool,
) -> Result<Tensor, tch::TchError> {
    let own = shape(q)[2];
    let (kp, vp) = (k.f_narrow(2, 0, past)?, v.f_narrow(2, 0, past)?);
    let (qs, ks, vs) = (
        q.f_split_with_sizes(blocks, 2)?,
        k.f_narrow(2, past, own)?.f_split_with_sizes(blocks, 2)?,
        v.f_narrow(2, past, own)?.f_split_with_sizes(blocks, 2)?,
    );
    let mut outs = Vec::with_capacity(blocks.len());
    for (((q, k), v), &t) in qs.iter().zip(&ks).zip(&vs).zip(blocks) {
        let k = Tensor::f_cat(&[&kp, k], 2)?;
        let v = Tensor::f_cat(&[&vp, v], 2)?;
        let mask = causal(past, t, q.device())?.f_view([1, 1, t, past + t])?;
        outs.push(Tensor::f_scaled_dot_product_attention(
            q,
            &k,
            &v,
            Some(&mask),
            0.0,
            false,
            scale,
            gqa,
        )?);
    }
    Tensor::f_cat(&outs, 2)
}

/// The host's side of [`ModelContext`] for one forward pass.
pub(crate) struct HostContext<'a> {
    pub model: &'a LoadedModel,
    pub cache: &'a mut KvCache,
    pub step: &'a Step,
    /// How many layers called `attention` (checked against the layout afterwards).
    pub attended: usize,
}

/// A libtorch error as the model contract's `String` error.
pub(crate) fn te(e: tch::TchError) -> String {
    e.to_string()
}

impl ModelContext for HostContext<'_> {
    fn linear(&mut self, slot: &str, x: &Tensor) -> Result<Tensor, String> {
        self.model.apply_linear(slot, x)
    }

    fn embedding(&mut self, slot: &str, ids: &Tensor) -> Result<Tensor, String> {
        let s = self
            .model
            .slots
            .get(slot)
            .ok_or_else(|| format!("no slot `{slot}` is declared"))?;
        if s.kind != SlotKind::Embedding {
            return Err(format!("slot `{slot}` is not an embedding slot"));
        }
        let mut y = match &s.quantized {
            Some(q) => q.embedding(ids)?,
            None => Tensor::f_embedding(&s.weight, ids, -1, false, false).map_err(te)?,
        };
        if self.step.float_activations && y.kind() == Kind::BFloat16 {
            y = y.f_to_kind(Kind::Float).map_err(te)?;
        }
        // Hooks on an embedding slot receive the ids (a saved module's copy of the table).
        for h in &s.hooks {
            y = h.forward(ids, y)?;
        }
        Ok(y)
    }

    fn norm(&mut self, slot: &str, x: &Tensor, kind: NormKind, eps: f64) -> Result<Tensor, String> {
        let s = self
            .model
            .slots
            .get(slot)
            .ok_or_else(|| format!("no slot `{slot}` is declared"))?;
        if s.kind != SlotKind::Norm {
            return Err(format!("slot `{slot}` is not a norm slot"));
        }
        // A hook may swap the weights (a norm trained whole, switched off).
        let (w, b) = s
            .hooks
            .iter()
            .rev()
            .find_map(|h| h.norm_weights())
            .unwrap_or((&s.weight, s.bias.as_ref()));
        // A decoding step's RMS norm: one pass on raw buffers, bfloat16 weights widened as read
        // (bit for bit libtorch's norm below).
        if let (NormKind::RmsNorm, None) = (kind, b) {
            if let Some(y) = sdk::rms_norm_step(x, w, eps) {
                return Ok(y);
            }
        }
        // float32 activations over bfloat16 norm weights: the weights widened (a few hundred
        // values), so the norm is libtorch's one fused float32 operation.
        let widened;
        let (w, b) = if x.kind() == Kind::Float && w.kind() == Kind::BFloat16 {
            widened = (
                w.f_to_kind(Kind::Float).map_err(te)?,
                b.map(|b| b.f_to_kind(Kind::Float))
                    .transpose()
                    .map_err(te)?,
            );
            (&widened.0, widened.1.as_ref())
        } else {
            (w, b)
        };
        // The SDK's arithmetic, which a family's own norms use too.
        let y = match kind {
            NormKind::RmsNorm => sdk::rms_norm(x, Some(w), b, eps),
            NormKind::LayerNorm => sdk::layer_norm(x, Some(w), b, eps),
        };
        y.map_err(String::from)
    }

    fn param(&mut self, name: &str) -> Result<Tensor, String> {
        self.model
            .params
            .get(name)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| format!("parameter `{name}` was not declared in the layout"))
    }

    fn attention(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: Option<f64>,
    ) -> Result<Tensor, String> {
        let past = self.cache.len;
        let slot = self.cache.layers.get_mut(layer).ok_or_else(|| {
            format!(
                "attention for layer {layer}, but the layout declares {} blocks",
                self.model.layout.num_blocks
            )
        })?;
        let decoding = self.step.seq == 1
            && self.step.sparse.is_none()
            && (self.step.mask.is_none() || self.step.key_valid_host.is_some());
        // A decoding step over a cache buffer with room: the new position written in place and
        // attention reading the buffer's first `past + 1` positions, no libtorch operation.
        if decoding {
            if let Some((bk, bv)) = slot.as_ref() {
                if crate::plain::write_position(bk, past, k)
                    && crate::plain::write_position(bv, past, v)
                {
                    let valid = self.step.key_valid_host.as_deref();
                    if let Some(out) = crate::skinny::attention(q, bk, bv, past + 1, valid, scale) {
                        self.attended += 1;
                        return Ok(out);
                    }
                }
            }
        }
        let (k, v) = match slot.take() {
            Some((bk, bv)) => {
                let (bk, bv) = (
                    grow(bk, past, k).map_err(te)?,
                    grow(bv, past, v).map_err(te)?,
                );
                let views = (
                    bk.f_narrow(2, 0, past + shape(k)[2]).map_err(te)?,
                    bv.f_narrow(2, 0, past + shape(v)[2]).map_err(te)?,
                );
                *slot = Some((bk, bv));
                views
            }
            // The first pass keeps its keys and values as they are (no copy; a training pass
            // never has a second one).
            None => {
                *slot = Some((k.shallow_clone(), v.shallow_clone()));
                (k.shallow_clone(), v.shallow_clone())
            }
        };
        if let Some((group, length)) = self.step.sparse {
            let out = crate::sparse::shifted_sparse_attention(
                q,
                &k,
                &v,
                self.step.segments.as_ref(),
                group,
                length,
                scale,
            )?;
            self.attended += 1;
            return Ok(out);
        }
        if decoding {
            let valid = self.step.key_valid_host.as_deref();
            let len = shape(&k)[2];
            if let Some(out) = crate::skinny::attention(q, &k, &v, len, valid, scale) {
                self.attended += 1;
                return Ok(out);
            }
        }
        let gqa = shape(q).get(1) != shape(&k).get(1);
        if let Some(blocks) = &self.step.blocks {
            let out = blockwise_attention(q, &k, &v, blocks, scale, gqa).map_err(te)?;
            self.attended += 1;
            return Ok(out);
        }
        let out = Tensor::f_scaled_dot_product_attention(
            q,
            &k,
            &v,
            self.step.mask.as_ref(),
            0.0,
            self.step.is_causal,
            scale,
            gqa,
        )
        .map_err(te)?;
        self.attended += 1;
        Ok(out)
    }

    fn full_attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        runs: &[i64],
        scale: Option<f64>,
    ) -> Result<Tensor, String> {
        crate::vision::full_attention(q, k, v, runs, scale).map_err(te)
    }
}

/// Writes `new` (`[batch, heads, seq, dim]`) after the `past` filled positions of a layer's
/// cache buffer, first moving the buffer to a larger one when it lacks the room.
fn grow(buf: Tensor, past: i64, new: &Tensor) -> Result<Tensor, tch::TchError> {
    let t = shape(new)[2];
    let mut size = shape(&buf);
    let buf = if past + t > size[2] {
        size[2] = (past + t + GROW - 1) / GROW * GROW;
        let bigger = Tensor::f_empty(size.as_slice(), (buf.kind(), buf.device()))?;
        bigger
            .f_narrow(2, 0, past)?
            .f_copy_(&buf.f_narrow(2, 0, past)?)?;
        bigger
    } else {
        buf
    };
    buf.f_narrow(2, past, t)?.f_copy_(new)?;
    Ok(buf)
}
