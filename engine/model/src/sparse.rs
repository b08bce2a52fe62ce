//! LongLoRA's shifted sparse attention (S²-Attn, Chen et al. 2023, §3.2 and Algorithm 1), the
//! host's implementation of the tuner contract's `AttentionMode::ShiftedSparse`, used only by
//! training passes (`LoadedModel::forward_train`, the packed and block-by-block ones) while the
//! adapter that asked for it is training and switched on; every inference pass attends fully.
//!
//! The sequence, padded at the end to `length` (ms-swift pads every LongLoRA batch to
//! `--max_length`, so the group is the same for every batch), is cut into groups of `group`
//! tokens; each head attends causally within its group only. Half of the heads (ms-swift's
//! `num_heads // 2` onwards: the last ⌈H/2⌉) first have their queries, keys and values rolled
//! `group / 2` positions towards the start, so their groups straddle the others' boundaries,
//! and their outputs are rolled back. As in the paper's pseudocode and ms-swift, the roll wraps:
//! in the shifted heads the first `group / 2` tokens land at the end of the last group.
//! Grouped-query keys and values are repeated to every query head first (ms-swift's
//! `repeat_kv` before the shift: with an odd number of heads a key head can serve both halves).
//!
//! Beyond the paper (which has no padding): positions past the batch's length, and padding or
//! another packed row (`segments`: equal ids share a row, 0 is padding), are masked out of every
//! key set; a query always sees itself, so no row is fully masked.

use tch::{Kind, Tensor};

/// The shifted sparse attention of `q` (`[batch, heads, seq, dim]`) over `k`, `v` (`[batch,
/// kv_heads, seq, dim]`), with groups of `group` tokens over the sequence padded to `length`
/// (a multiple of `group`, at least `seq`). `segments` (`[batch, seq]`, integer): which row each
/// position belongs to, 0 for padding; `None`: every position is a real token of one row.
pub fn shifted_sparse_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    group: i64,
    length: i64,
    scale: Option<f64>,
) -> Result<Tensor, String> {
    let te = |e: tch::TchError| format!("shifted sparse attention: {e}");
    let s = q.size();
    if s.len() != 4 || k.size().len() != 4 {
        return Err(format!(
            "shifted sparse attention takes [batch, heads, seq, dim] queries, got {s:?}"
        ));
    }
    let (b, h, t) = (s[0], s[1], s[2]);
    if group < 1 || length % group != 0 {
        return Err(format!(
            "shifted sparse attention: a length of {length} is not a whole number of groups of {group}"
        ));
    }
    if t > length {
        return Err(format!(
            "a training sequence of {t} tokens is longer than the {length} (--max_length) that LongLoRA's groups of {group} were sized for"
        ));
    }
    let kvh = k.size()[1];
    if kvh < 1 || h % kvh != 0 {
        return Err(format!(
            "shifted sparse attention: {h} query heads cannot share {kvh} key heads"
        ));
    }
    let f = || -> Result<Tensor, tch::TchError> {
        let (k, v) = if kvh == h {
            (k.shallow_clone(), v.shallow_clone())
        } else {
            (
                k.f_repeat_interleave_self_int(h / kvh, 1, None)?,
                v.f_repeat_interleave_self_int(h / kvh, 1, None)?,
            )
        };
        let pad = length - t;
        let seq_pad = |x: &Tensor| x.f_constant_pad_nd([0, 0, 0, pad]);
        let (q, k, v) = (seq_pad(q)?, seq_pad(&k)?, seq_pad(&v)?);
        // Segments over the padded length (padding is segment 0); none when nothing is masked.
        let segments = match segments {
            Some(sg) => Some(sg.f_to_kind(Kind::Int64)?.f_constant_pad_nd([0, pad])?),
            None if pad > 0 => Some(
                Tensor::f_ones([b, t], (Kind::Int64, q.device()))?.f_constant_pad_nd([0, pad])?,
            ),
            None => None,
        };
        let half = h / 2;
        let shift = group / 2;
        let mut outs = Vec::new();
        if half > 0 {
            outs.push(grouped(
                &q.f_narrow(1, 0, half)?,
                &k.f_narrow(1, 0, half)?,
                &v.f_narrow(1, 0, half)?,
                segments.as_ref(),
                group,
                scale,
            )?);
        }
        let roll = |x: &Tensor, by: i64| -> Result<Tensor, tch::TchError> {
            x.f_narrow(1, half, h - half)?.f_roll([by], [2])
        };
        let rolled_segments = match &segments {
            Some(sg) => Some(sg.f_roll([-shift], [1])?),
            None => None,
        };
        let shifted = grouped(
            &roll(&q, -shift)?,
            &roll(&k, -shift)?,
            &roll(&v, -shift)?,
            rolled_segments.as_ref(),
            group,
            scale,
        )?;
        outs.push(shifted.f_roll([shift], [2])?);
        Tensor::f_cat(&outs, 1)?.f_narrow(2, 0, t)
    };
    f().map_err(te)
}

/// Causal attention within consecutive groups of `group` positions (`[batch, heads, length,
/// dim]` in, the same out), a key masked unless it shares the query's segment and is not
/// padding (segment 0), a query always seeing itself.
fn grouped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    group: i64,
    scale: Option<f64>,
) -> Result<Tensor, tch::TchError> {
    let s = q.size();
    let (b, h, l, d) = (s[0], s[1], s[2], s[3]);
    let n = l / group;
    let five = |x: &Tensor| x.f_reshape([b, h, n, group, d]);
    let mask = match segments {
        Some(sg) => {
            let dev = q.device();
            let s5 = sg.f_reshape([b, 1, n, group])?;
            let same = s5.f_unsqueeze(-1)?.f_eq_tensor(&s5.f_unsqueeze(-2)?)?;
            let key_real = s5.f_ne(0)?.f_unsqueeze(-2)?;
            let causal = Tensor::f_ones([group, group], (Kind::Bool, dev))?.f_tril(0)?;
            let diag = Tensor::f_eye(group, (Kind::Bool, dev))?;
            Some(
                same.f_logical_and(&key_real)?
                    .f_logical_and(&causal)?
                    .f_logical_or(&diag)?,
            )
        }
        None => None,
    };
    let out = Tensor::f_scaled_dot_product_attention(
        &five(q)?,
        &five(k)?,
        &five(v)?,
        mask.as_ref(),
        0.0,
        mask.is_none(),
        scale,
        false,
    )?;
    out.f_reshape([b, h, l, d])
}

/// The group size LongLoRA uses for `length` tokens (`int(length · ratio)`, as ms-swift and the
/// LongLoRA code compute it), refusing a ratio outside (0, 1] or a length the groups do not
/// divide, as they do.
pub fn group_size(length: i64, ratio: f64) -> Result<i64, String> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(format!("--group_size_ratio must be in (0, 1], got {ratio}"));
    }
    let group = (length as f64 * ratio) as i64;
    if group < 1 || length % group != 0 {
        return Err(format!(
            "--max_length {length} is not a whole number of LongLoRA groups of int({length} × --group_size_ratio {ratio}) = {group} tokens (every batch is padded to --max_length, as ms-swift does): pick a --max_length that the group divides"
        ));
    }
    Ok(group)
}
