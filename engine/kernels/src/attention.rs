//! Attention for one new position per row over a KV cache (a decoding step), float32.
//!
//! libtorch's scaled-dot-product attention spends most of a decoding step's attention time on
//! dispatch: dozens of tiny matrix products per layer, the grouped-query heads expanded, the
//! padding mask converted. The work itself is small (each query head reads its keys and values
//! once), so this loop does it directly from the cache buffers, one task per row and key-value
//! head, on the kernel's threads. Softmax is taken in float32 after subtracting the row's
//! maximum, as libtorch does.

use crate::{pool, ShapeError};

/// A `[batch, kv_heads, len, dim]` cache view: `data` starts at element `[0, 0, 0, 0]`, the last
/// dimension is contiguous and the others step by the given strides (in elements).
#[derive(Clone, Copy, Debug)]
pub struct CacheView<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
    pub pos_stride: usize,
}

impl CacheView<'_> {
    /// The `dim` values at `[b, h, pos]`.
    #[inline(always)]
    fn at(&self, b: usize, h: usize, pos: usize, dim: usize) -> &[f32] {
        let start = b * self.batch_stride + h * self.head_stride + pos * self.pos_stride;
        &self.data[start..start + dim]
    }
}

/// The shape of one decoding step's attention.
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub batch: usize,
    /// Query heads; a multiple of `kv_heads` (grouped-query attention).
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
    /// Cached positions, the new one included.
    pub len: usize,
}

impl DecodeShape {
    /// How many values a cache view of this shape with these strides spans from its first
    /// element to its last (the length its `data` must have).
    pub fn span(&self, batch_stride: usize, head_stride: usize, pos_stride: usize) -> usize {
        if self.batch == 0 || self.kv_heads == 0 || self.len == 0 {
            return 0;
        }
        (self.batch - 1) * batch_stride
            + (self.kv_heads - 1) * head_stride
            + (self.len - 1) * pos_stride
            + self.dim
    }
}

/// `out[b, h] = softmax(scale · q[b, h] · K[b, g]ᵀ) · V[b, g]` with `g = h / (heads / kv_heads)`,
/// over the positions where `valid[b * len + pos]` holds (all when `valid` is None). `q` and
/// `out` are `[batch, heads, dim]`. A row with no valid position gets zeros.
pub fn decode_attention(
    q: &[f32],
    k: CacheView<'_>,
    v: CacheView<'_>,
    valid: Option<&[bool]>,
    shape: DecodeShape,
    scale: f32,
    out: &mut [f32],
) -> Result<(), ShapeError> {
    let DecodeShape {
        batch,
        heads,
        kv_heads,
        dim,
        len,
    } = shape;
    let reach = |c: &CacheView<'_>| shape.span(c.batch_stride, c.head_stride, c.pos_stride);
    if kv_heads == 0
        || heads % kv_heads != 0
        || q.len() != batch * heads * dim
        || out.len() != q.len()
        || valid.is_some_and(|m| m.len() != batch * len)
        || reach(&k) > k.data.len()
        || reach(&v) > v.data.len()
    {
        return Err(ShapeError(format!(
            "decode attention: inconsistent shapes {shape:?}, q {} values, out {}, keys {}, values {}",
            q.len(),
            out.len(),
            k.data.len(),
            v.data.len()
        )));
    }
    let group = heads / kv_heads;
    let out = crate::SharedOut(out.as_mut_ptr(), out.len());
    // One task per query head (not per key-value head): a batch-1 step of a model with few
    // key-value heads (SmolLM2: 3) otherwise splits unevenly between the threads. Each head's
    // arithmetic is the same either way.
    let head = head_fn();
    pool::pool().run(batch * heads, &|task| {
        let (b, h) = (task / heads, task % heads);
        let first = (b * heads + h) * dim;
        // SAFETY: task (b, h) writes head h of row b, a stretch no other task writes; `out`
        // outlives `run`.
        let o = unsafe { out.stretch(first, dim) };
        let mask = valid.map(|m| &m[b * len..(b + 1) * len]);
        let mut scores = vec![0f32; len];
        let qh = &q[first..first + dim];
        head(qh, &k, &v, b, h / group, mask, scale, &mut scores, o);
    });
    Ok(())
}

/// [`one_head`] compiled for the widest vectors this CPU has, picked once: the same Rust
/// operations in the same order (Rust never fuses a multiply and an add, and every reduction
/// here is written out lane by lane), so each variant's result is the portable one bit for
/// bit; wider registers only take the eight lanes of `dot` and the head's output in fewer
/// instructions than the baseline's SSE2.
type HeadFn = fn(
    &[f32],
    &CacheView<'_>,
    &CacheView<'_>,
    usize,
    usize,
    Option<&[bool]>,
    f32,
    &mut [f32],
    &mut [f32],
);

fn head_fn() -> HeadFn {
    static PICKED: std::sync::OnceLock<HeadFn> = std::sync::OnceLock::new();
    *PICKED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return wide::avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return wide::avx2;
            }
        }
        one_head
    })
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{one_head, CacheView};

    /// A variant of [`one_head`] compiled with `$features` enabled, which [`super::head_fn`]
    /// picks only where the CPU has them.
    macro_rules! variant {
        ($(#[$doc:meta])* $name:ident, $features:literal) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub(super) fn $name(
                q: &[f32],
                k: &CacheView<'_>,
                v: &CacheView<'_>,
                b: usize,
                g: usize,
                mask: Option<&[bool]>,
                scale: f32,
                scores: &mut [f32],
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn run(
                    q: &[f32],
                    k: &CacheView<'_>,
                    v: &CacheView<'_>,
                    b: usize,
                    g: usize,
                    mask: Option<&[bool]>,
                    scale: f32,
                    scores: &mut [f32],
                    out: &mut [f32],
                ) {
                    one_head(q, k, v, b, g, mask, scale, scores, out)
                }
                // SAFETY: picked by `head_fn` only where the CPU has `$features`.
                unsafe { run(q, k, v, b, g, mask, scale, scores, out) }
            }
        };
    }

    variant!(
        /// [`one_head`] with AVX-512F (and AVX2) enabled.
        avx512,
        "avx2,avx512f"
    );
    variant!(
        /// [`one_head`] with AVX2 enabled.
        avx2,
        "avx2"
    );
}

/// One query head against its key-value head: its scores `dot(q, k[pos]) · scale` and their
/// maximum; over the positions not masked, `exp(s − max)` and their sum in position order, and
/// `Σ p · v[pos]` per output element in position order from 0.0 (a product then a sum, never
/// fused), [`CHUNK`] elements at a time held in registers over all positions (not loaded and
/// stored back per position); times `1 / sum`. A head with no finite score (every position
/// masked) gets zeros. Inlined into each variant of [`head_fn`]; itself the portable build.
///
/// (The loop before skipped a score of `−∞` rather than a masked position: the same but for
/// infinite inputs, where a weight of 0 can only change the sign of a zero output.)
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn one_head(
    q: &[f32],
    k: &CacheView<'_>,
    v: &CacheView<'_>,
    b: usize,
    g: usize,
    mask: Option<&[bool]>,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let dim = q.len();
    let masked = |pos: usize| mask.is_some_and(|m| !m[pos]);
    let mut max = f32::NEG_INFINITY;
    for (pos, s) in scores.iter_mut().enumerate() {
        *s = if masked(pos) {
            f32::NEG_INFINITY
        } else {
            dot(q, k.at(b, g, pos, dim)) * scale
        };
        max = max.max(*s);
    }
    out.fill(0.0);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f32;
    for (pos, s) in scores.iter_mut().enumerate() {
        if !masked(pos) {
            *s = (*s - max).exp();
            sum += *s;
        }
    }
    for (c, oc) in out.chunks_mut(CHUNK).enumerate() {
        let at = c * CHUNK;
        if oc.len() == CHUNK {
            let mut acc = [0f32; CHUNK];
            for (pos, &p) in scores.iter().enumerate() {
                if masked(pos) {
                    continue;
                }
                let x: &[f32; CHUNK] = v.at(b, g, pos, dim)[at..at + CHUNK]
                    .try_into()
                    .expect("a whole chunk");
                for i in 0..CHUNK {
                    acc[i] += p * x[i];
                }
            }
            oc.copy_from_slice(&acc);
        } else {
            for (pos, &p) in scores.iter().enumerate() {
                if masked(pos) {
                    continue;
                }
                let x = &v.at(b, g, pos, dim)[at..at + oc.len()];
                for (o, x) in oc.iter_mut().zip(x) {
                    *o += p * x;
                }
            }
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Output elements of a head summed in registers at once: four 512-bit or eight 256-bit
/// registers (a head of 64 is one chunk, of 128 two).
const CHUNK: usize = 64;

/// A dot product in eight independent lanes (which the compiler keeps in one vector register).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift_values as values;

    /// The straightforward loop every head reproduces bit for bit: per position its score, then
    /// per position `exp(s − max)` added to the sum and `p · v` to each output element (the
    /// loop before the outputs were held in registers, whose greedy tokens are the reference).
    #[allow(clippy::too_many_arguments)]
    fn straight_head(
        q: &[f32],
        k: &CacheView<'_>,
        v: &CacheView<'_>,
        mask: Option<&[bool]>,
        scale: f32,
        len: usize,
        out: &mut [f32],
    ) {
        let dim = q.len();
        let scores: Vec<f32> = (0..len)
            .map(|pos| {
                if mask.is_none_or(|m| m[pos]) {
                    dot(q, k.at(0, 0, pos, dim)) * scale
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        out.fill(0.0);
        let mut sum = 0f32;
        for (pos, s) in scores.iter().enumerate() {
            if *s == f32::NEG_INFINITY {
                continue;
            }
            let p = (*s - max).exp();
            sum += p;
            for (o, x) in out.iter_mut().zip(v.at(0, 0, pos, dim)) {
                *o += p * x;
            }
        }
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    #[test]
    fn every_vector_width_gives_the_straight_loops_heads_bit_for_bit() {
        let mut variants: Vec<(&str, HeadFn)> = vec![("picked", head_fn()), ("portable", one_head)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                variants.push(("avx512", wide::avx512));
            }
            if std::is_x86_feature_detected!("avx2") {
                variants.push(("avx2", wide::avx2));
            }
        }
        // Head sizes with and without a tail past the eight lanes and past a register chunk of
        // 64; a padded row.
        for (dim, len, seed) in [
            (64usize, 301usize, 5u64),
            (20, 9, 6),
            (128, 40, 7),
            (80, 33, 8),
        ] {
            let kb = values(len * dim, seed + 10);
            let vb = values(len * dim, seed + 20);
            let view = |data| CacheView {
                data,
                batch_stride: len * dim,
                head_stride: len * dim,
                pos_stride: dim,
            };
            let (k, v) = (view(&kb[..]), view(&vb[..]));
            let mut mask = vec![true; len];
            mask[0] = false;
            let q = values(dim, seed);
            for m in [None, Some(&mask[..])] {
                let mut want = vec![0f32; dim];
                straight_head(&q, &k, &v, m, 0.125, len, &mut want);
                let mut scores = vec![0f32; len];
                for (name, f) in &variants {
                    let mut got = vec![1f32; dim];
                    f(&q, &k, &v, 0, 0, m, 0.125, &mut scores, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name}, dim {dim}, mask {}", m.is_some());
                }
            }
        }
    }

    #[test]
    fn a_row_with_every_position_masked_gets_zeros() {
        let (dim, len) = (64usize, 5usize);
        let kb = values(len * dim, 1);
        let vb = values(len * dim, 2);
        let q = values(3 * dim, 3);
        let view = |data| CacheView {
            data,
            batch_stride: len * dim,
            head_stride: len * dim,
            pos_stride: dim,
        };
        let mask = vec![false; len];
        let mut out = vec![1f32; 3 * dim];
        let shape = DecodeShape {
            batch: 1,
            heads: 3,
            kv_heads: 1,
            dim,
            len,
        };
        decode_attention(
            &q,
            view(&kb),
            view(&vb),
            Some(&mask),
            shape,
            0.125,
            &mut out,
        )
        .expect("consistent shapes");
        assert!(out.iter().all(|&o| o == 0.0));
    }

    #[test]
    fn matches_softmax_attention_in_float64_with_groups_padding_and_strides() {
        // Three rows of 6 heads over 2 of 20; one row of SmolLM2's 9 heads over 3 of 64.
        for (batch, heads, kv_heads, dim, len, cap) in [
            (3usize, 6usize, 2usize, 20usize, 7usize, 9usize),
            (1, 9, 3, 64, 11, 16),
        ] {
            let q = values(batch * heads * dim, 1);
            // Buffers with room for `cap` positions, of which the first `len` are used.
            let kb = values(batch * kv_heads * cap * dim, 2);
            let vb = values(batch * kv_heads * cap * dim, 3);
            fn view(data: &[f32], heads: usize, cap: usize, dim: usize) -> CacheView<'_> {
                CacheView {
                    data,
                    batch_stride: heads * cap * dim,
                    head_stride: cap * dim,
                    pos_stride: dim,
                }
            }
            // Row 1 (of three) has two padding positions in front; the others none.
            let mut valid = vec![true; batch * len];
            if batch > 1 {
                valid[len] = false;
                valid[len + 1] = false;
            }
            let scale = 0.3f32;
            let mut out = vec![0f32; q.len()];
            let shape = DecodeShape {
                batch,
                heads,
                kv_heads,
                dim,
                len,
            };
            decode_attention(
                &q,
                view(&kb, kv_heads, cap, dim),
                view(&vb, kv_heads, cap, dim),
                Some(&valid),
                shape,
                scale,
                &mut out,
            )
            .unwrap();
            for b in 0..batch {
                for h in 0..heads {
                    let g = h / (heads / kv_heads);
                    let at = |buf: &[f32], pos: usize, c: usize| {
                        buf[((b * kv_heads + g) * cap + pos) * dim + c] as f64
                    };
                    let qv = |c: usize| q[(b * heads + h) * dim + c] as f64;
                    let keep: Vec<usize> = (0..len).filter(|&p| valid[b * len + p]).collect();
                    let s: Vec<f64> = keep
                        .iter()
                        .map(|&p| {
                            (0..dim).map(|c| qv(c) * at(&kb, p, c)).sum::<f64>() * scale as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..dim {
                        let want: f64 = keep
                            .iter()
                            .zip(&e)
                            .map(|(&p, w)| w / z * at(&vb, p, c))
                            .sum();
                        let got = out[(b * heads + h) * dim + c] as f64;
                        assert!((got - want).abs() < 1e-5, "b{b} h{h} c{c}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_cache_too_short_for_the_shape_is_an_error() {
        let q = vec![0f32; 2 * 4];
        let kv = vec![0f32; 4 * 3];
        let view = CacheView {
            data: &kv,
            batch_stride: 12,
            head_stride: 12,
            pos_stride: 4,
        };
        let shape = DecodeShape {
            batch: 2,
            heads: 1,
            kv_heads: 1,
            dim: 4,
            len: 3,
        };
        let mut out = vec![0f32; 8];
        assert!(decode_attention(&q, view, view, None, shape, 1.0, &mut out).is_err());
    }
}
