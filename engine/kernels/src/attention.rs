//! Attention for one new position per row over a KV cache (a decoding step), float32.
//!
//! libtorch's scaled-dot-product attention spends most of a decoding step's attention time on
//! dispatch: dozens of tiny matrix products per layer, the grouped-query heads expanded, the
//! padding mask converted. The work itself is small (each query head reads its keys and values
//! once), so this loop does it directly from the cache buffers, one task per row and key-value
//! head (or part of its query heads, where there are too few for the threads), on the kernel's
//! threads. Softmax is taken in float32 after subtracting the row's
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
    if out.is_empty() {
        // No row, no head or heads of no values: nothing to compute.
        return Ok(());
    }
    let group = heads / kv_heads;
    let out = crate::SharedOut(out.as_mut_ptr(), out.len());
    // A task is some query heads of one key-value head (of one row), taken in one pass over
    // that head's keys and values, so each key and value row is loaded once per task rather
    // than once per query head. A group is split into `parts` tasks when there are too few
    // rows × key-value heads to keep the threads busy (SmolLM2's batch-1 step: 3 groups of 3
    // heads over 2 threads, tasks of 2 heads then of 1, the larger first so that both threads
    // end together). Each head's arithmetic is the same either way.
    let rows = batch * kv_heads;
    let threads = pool::pool().threads();
    let parts = if threads > 1 {
        (1..=group)
            .find(|&p| rows * p >= 2 * threads)
            .unwrap_or(group)
    } else {
        1
    };
    let per = group.div_ceil(parts);
    let parts = group.div_ceil(per);
    let heads_fn = group_fn();
    pool::pool().run(rows * parts, &|task| {
        let (part, row) = (task / rows, task % rows);
        let (b, g) = (row / kv_heads, row % kv_heads);
        let n = per.min(group - part * per);
        let first = (b * heads + g * group + part * per) * dim;
        // SAFETY: the task writes its n heads of row b, a stretch no other task writes; `out`
        // outlives `run`.
        let o = unsafe { out.stretch(first, n * dim) };
        let t = Task {
            q: &q[first..first + n * dim],
            heads: n,
            k: &k,
            v: &v,
            b,
            g,
            mask: valid.map(|m| &m[b * len..(b + 1) * len]),
            scale,
        };
        SCORES.with_borrow_mut(|scores| {
            scores.clear();
            scores.resize(n * len, 0.0);
            heads_fn(&t, scores, o);
        });
    });
    Ok(())
}

thread_local! {
    /// A task's scores (`heads × len`), kept between calls on each thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One task: `heads` query heads (`q`, `heads × dim`) of row `b` against key-value head `g`.
struct Task<'a> {
    q: &'a [f32],
    heads: usize,
    k: &'a CacheView<'a>,
    v: &'a CacheView<'a>,
    b: usize,
    g: usize,
    /// The row's valid positions (None: all).
    mask: Option<&'a [bool]>,
    scale: f32,
}

/// A task's heads into `out` (`heads × dim`), with scratch for `heads × len` scores.
type GroupFn = fn(&Task<'_>, &mut [f32], &mut [f32]);

/// [`group_heads`] compiled for the widest vectors this CPU has, picked once; [`each_head`]
/// elsewhere.
fn group_fn() -> GroupFn {
    static PICKED: std::sync::OnceLock<GroupFn> = std::sync::OnceLock::new();
    *PICKED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
            {
                return wide::avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return wide::avx2;
            }
        }
        each_head
    })
}

/// The portable build: each head on its own, [`one_head`], the reference that every variant
/// reproduces bit for bit.
fn each_head(t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
    let (dim, len) = (out.len() / t.heads, scores.len() / t.heads);
    for h in 0..t.heads {
        one_head(
            &t.q[h * dim..(h + 1) * dim],
            t.k,
            t.v,
            t.b,
            t.g,
            t.mask,
            t.scale,
            &mut scores[h * len..(h + 1) * len],
            &mut out[h * dim..(h + 1) * dim],
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{group_heads, Task};
    use std::arch::x86_64::*;

    /// [`group_heads`] with AVX-512 (F and VL: 32 vector registers, 512-bit outputs).
    pub(super) fn avx512(t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
        #[target_feature(enable = "avx2,avx512f,avx512vl")]
        unsafe fn run(t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
            group_heads::<64, _>(t, scores, out, |q, rows, stride, init, scale| {
                // SAFETY: this function runs only where the CPU has AVX2; `group_heads` passes
                // 8 rows within the cache.
                unsafe { scores8(q, rows, stride, init, scale) }
            })
        }
        // SAFETY: picked by `group_fn` only where the CPU has these features.
        unsafe { run(t, scores, out) }
    }

    /// [`group_heads`] with AVX2 (16 vector registers: 32 output elements per head at once).
    pub(super) fn avx2(t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
        #[target_feature(enable = "avx2")]
        unsafe fn run(t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
            group_heads::<32, _>(t, scores, out, |q, rows, stride, init, scale| {
                // SAFETY: this function runs only where the CPU has AVX2; `group_heads` passes
                // 8 rows within the cache.
                unsafe { scores8(q, rows, stride, init, scale) }
            })
        }
        // SAFETY: picked by `group_fn` only where the CPU has AVX2.
        unsafe { run(t, scores, out) }
    }

    /// Asks for the cache lines of `row` (into the L1 cache): a hint, which never faults and
    /// changes no value.
    #[inline(always)]
    pub(super) fn prefetch(row: &[f32]) {
        for line in row.chunks(16) {
            // SAFETY: a prefetch reads nothing architecturally and never faults (SSE, which
            // every x86-64 CPU has).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8) }
        }
    }

    /// The scores of 8 positions (key rows from `rows` on, `stride` values apart, each
    /// `q.len()` long, a multiple of 8) for
    /// query head `q`: per position [`super::dot`]'s eight lanes, each a sum from 0.0 in chunk
    /// order, then (the 8 × 8 lanes transposed, a position per lane) `init + l0 + … + l7`, plus
    /// `init` (the empty tail), times `scale`: `dot(q, k) * scale` bit for bit, 8 positions at
    /// once instead of a scalar sum per position.
    ///
    /// # Safety
    /// The CPU must have AVX2, and the 8 rows must hold `q.len()` values each.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scores8(
        q: &[f32],
        rows: *const f32,
        stride: usize,
        init: f32,
        scale: f32,
    ) -> [f32; 8] {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..q.len()).step_by(8) {
            let qc = _mm256_loadu_ps(q.as_ptr().add(c));
            for (p, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(rows.add(p * stride + c));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(qc, x));
            }
        }
        // Transposed: lane p of t[l] is lane l of position p.
        let t = crate::transpose8x8(acc);
        let init = _mm256_set1_ps(init);
        let mut sum = init;
        for l in t {
            sum = _mm256_add_ps(sum, l);
        }
        let s = _mm256_mul_ps(_mm256_add_ps(sum, init), _mm256_set1_ps(scale));
        let mut r = [0f32; 8];
        _mm256_storeu_ps(r.as_mut_ptr(), s);
        r
    }
}

/// `t`'s heads in one pass over their key-value head, each head's values [`one_head`]'s bit for
/// bit: the scores 8 positions at a time for every head (`scores8`, a block's key rows read
/// from memory once and from the L1 cache for the other heads), the same maximum (a maximum is
/// exact; only the sign of a zero maximum may differ, which no `s − max` can tell), `exp` and
/// its sum in position order per head, then `Σ p · v[pos]` in position order from 0.0 for up to
/// three heads at once, `W` output elements per head held in registers, each value row loaded
/// once for them; times `1 / sum`. A dimension that is not a multiple of 8 goes head by head
/// ([`each_head`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn group_heads<const W: usize, S>(t: &Task<'_>, scores: &mut [f32], out: &mut [f32], scores8: S)
where
    S: Fn(&[f32], *const f32, usize, f32, f32) -> [f32; 8],
{
    let n = t.heads;
    let (dim, len) = (out.len() / n, scores.len() / n);
    if dim % 8 != 0 || dim == 0 {
        return each_head(t, scores, out);
    }
    let (k, v, b, g) = (t.k, t.v, t.b, t.g);
    let masked = |pos: usize| t.mask.is_some_and(|m| !m[pos]);
    // What `dot`'s sums start from (`Iterator::sum`'s empty value).
    let init: f32 = std::iter::empty::<f32>().sum();
    let whole = len - len % 8;
    for p0 in (0..whole).step_by(8) {
        // Rows p0..p0 + 8 (the last one's end checked: the rows between lie inside).
        let rows = k.at(b, g, p0, dim).as_ptr();
        let _ = k.at(b, g, p0 + 7, dim);
        // In a decoding step the cache comes cold from memory (a layer's weights were read
        // since): the key rows `AHEAD` positions on are asked for now (the value rows, read in
        // order later, gained nothing from it: BENCHMARKS.md, par).
        for pos in p0 + AHEAD..(p0 + AHEAD + 8).min(len) {
            wide::prefetch(k.at(b, g, pos, dim));
        }
        for h in 0..n {
            let s = scores8(
                &t.q[h * dim..(h + 1) * dim],
                rows,
                k.pos_stride,
                init,
                t.scale,
            );
            scores[h * len + p0..h * len + p0 + 8].copy_from_slice(&s);
        }
    }
    for pos in whole..len {
        let row = k.at(b, g, pos, dim);
        for h in 0..n {
            scores[h * len + pos] = dot(&t.q[h * dim..(h + 1) * dim], row) * t.scale;
        }
    }
    let mut live = [false; MAX_HEADS];
    let mut i = 0;
    while i < n {
        let m = (n - i).min(MAX_HEADS);
        for h in 0..m {
            let s = &mut scores[(i + h) * len..(i + h + 1) * len];
            if t.mask.is_some() {
                for (pos, s) in s.iter_mut().enumerate() {
                    if masked(pos) {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            let mut lanes = [f32::NEG_INFINITY; 8];
            let mut c = s.chunks_exact(8);
            for x in &mut c {
                for l in 0..8 {
                    lanes[l] = lanes[l].max(x[l]);
                }
            }
            let max = c
                .remainder()
                .iter()
                .chain(&lanes)
                .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            live[h] = max != f32::NEG_INFINITY;
            if live[h] {
                for (pos, s) in s.iter_mut().enumerate() {
                    if !masked(pos) {
                        *s = (*s - max).exp();
                    }
                }
            }
        }
        let o = &mut out[i * dim..(i + m) * dim];
        let s = &scores[i * len..(i + m) * len];
        let mut sums = [0f32; MAX_HEADS];
        match m {
            1 => sums[..1].copy_from_slice(&weigh::<1, W>(s, v, b, g, t.mask, o)),
            2 => sums[..2].copy_from_slice(&weigh::<2, W>(s, v, b, g, t.mask, o)),
            _ => sums.copy_from_slice(&weigh::<3, W>(s, v, b, g, t.mask, o)),
        }
        for h in 0..m {
            let o = &mut o[h * dim..(h + 1) * dim];
            if live[h] {
                let inv = 1.0 / sums[h];
                o.iter_mut().for_each(|o| *o *= inv);
            } else {
                o.fill(0.0);
            }
        }
        i += m;
    }
}

/// How many positions ahead [`group_heads`] asks for key rows (8 and 16 measured alike, 32
/// less well: BENCHMARKS.md, par).
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 16;

/// Heads whose outputs [`group_heads`] sums in one pass over the values.
#[cfg(target_arch = "x86_64")]
const MAX_HEADS: usize = 3;

/// `out[h] = Σ p[h][pos] · v[pos]` over the unmasked positions in position order, from 0.0, for
/// `H` heads (`p`: `H × len`, `out`: `H × dim`), `W` elements per head in registers at a time;
/// returns each head's `Σ p[h][pos]` in position order from 0.0 (the heads' sums side by side,
/// `H` chains of additions at once instead of one after the other).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn weigh<const H: usize, const W: usize>(
    p: &[f32],
    v: &CacheView<'_>,
    b: usize,
    g: usize,
    mask: Option<&[bool]>,
    out: &mut [f32],
) -> [f32; H] {
    let (dim, len) = (out.len() / H, p.len() / H);
    let masked = |pos: usize| mask.is_some_and(|m| !m[pos]);
    let mut sums = [0f32; H];
    for pos in 0..len {
        if !masked(pos) {
            for h in 0..H {
                sums[h] += p[h * len + pos];
            }
        }
    }
    let mut at = 0;
    while at < dim {
        let w = W.min(dim - at);
        if w == W {
            let mut acc = [[0f32; W]; H];
            for pos in 0..len {
                if masked(pos) {
                    continue;
                }
                let x: &[f32; W] = v.at(b, g, pos, dim)[at..at + W]
                    .try_into()
                    .expect("a whole chunk");
                for h in 0..H {
                    let ph = p[h * len + pos];
                    for i in 0..W {
                        acc[h][i] += ph * x[i];
                    }
                }
            }
            for h in 0..H {
                out[h * dim + at..h * dim + at + W].copy_from_slice(&acc[h]);
            }
        } else {
            for h in 0..H {
                let o = &mut out[h * dim + at..h * dim + at + w];
                o.fill(0.0);
                for pos in 0..len {
                    if masked(pos) {
                        continue;
                    }
                    let ph = p[h * len + pos];
                    for (o, x) in o.iter_mut().zip(&v.at(b, g, pos, dim)[at..at + w]) {
                        *o += ph * x;
                    }
                }
            }
        }
        at += w;
    }
    sums
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

    /// Every build this CPU can run (the picked one, the portable one, each vector width).
    fn variants() -> Vec<(&'static str, GroupFn)> {
        let mut variants: Vec<(&str, GroupFn)> =
            vec![("picked", group_fn()), ("portable", each_head)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
            {
                variants.push(("avx512", wide::avx512));
            }
            if std::is_x86_feature_detected!("avx2") {
                variants.push(("avx2", wide::avx2));
            }
        }
        variants
    }

    #[test]
    fn every_vector_width_and_grouping_gives_the_straight_loops_heads_bit_for_bit() {
        // Head sizes with and without a tail past the eight lanes and past a register chunk of
        // 32 or 64; lengths with and without a tail past 8 positions; 1 to 5 query heads in a
        // task (past the 3 summed in one pass); a padded row.
        for (dim, len, seed) in [
            (64usize, 301usize, 5u64),
            (20, 9, 6),
            (128, 40, 7),
            (80, 33, 8),
            (64, 5, 9),
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
            mask[len / 2] = false;
            for heads in 1..=5usize {
                let q = values(heads * dim, seed + heads as u64);
                for m in [None, Some(&mask[..])] {
                    let mut want = vec![0f32; heads * dim];
                    for (qh, o) in q.chunks_exact(dim).zip(want.chunks_exact_mut(dim)) {
                        straight_head(qh, &k, &v, m, 0.125, len, o);
                    }
                    let t = Task {
                        q: &q,
                        heads,
                        k: &k,
                        v: &v,
                        b: 0,
                        g: 0,
                        mask: m,
                        scale: 0.125,
                    };
                    for (name, f) in variants() {
                        let mut scores = vec![7f32; heads * len];
                        let mut got = vec![1f32; heads * dim];
                        f(&t, &mut scores, &mut got);
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{name}, dim {dim}, len {len}, {heads} heads, mask {}",
                            m.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn decode_attention_splits_groups_into_tasks_without_changing_a_bit() {
        // SmolLM2's step (9 heads over 3 of 64, tasks of 2 and 1 heads on two threads), one
        // key-value head (a group of 8 split further), and four rows (one task per group).
        for (batch, heads, kv_heads, dim, len) in [
            (1usize, 9usize, 3usize, 64usize, 203usize),
            (1, 8, 1, 64, 17),
            (4, 6, 2, 32, 12),
        ] {
            let q = values(batch * heads * dim, 1);
            let kb = values(batch * kv_heads * len * dim, 2);
            let vb = values(batch * kv_heads * len * dim, 3);
            let view = |data| CacheView {
                data,
                batch_stride: kv_heads * len * dim,
                head_stride: len * dim,
                pos_stride: dim,
            };
            let (k, v) = (view(&kb[..]), view(&vb[..]));
            let shape = DecodeShape {
                batch,
                heads,
                kv_heads,
                dim,
                len,
            };
            let mut got = vec![0f32; q.len()];
            decode_attention(&q, k, v, None, shape, 0.125, &mut got).expect("consistent shapes");
            for b in 0..batch {
                for h in 0..heads {
                    let g = h / (heads / kv_heads);
                    let at = (b * heads + h) * dim;
                    let off = (b * kv_heads + g) * len * dim;
                    let one = |data| CacheView {
                        data,
                        batch_stride: len * dim,
                        head_stride: len * dim,
                        pos_stride: dim,
                    };
                    let mut want = vec![0f32; dim];
                    straight_head(
                        &q[at..at + dim],
                        &one(&kb[off..off + len * dim]),
                        &one(&vb[off..off + len * dim]),
                        None,
                        0.125,
                        len,
                        &mut want,
                    );
                    let same = got[at..at + dim]
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "shape {shape:?}, row {b}, head {h}");
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
    fn empty_shapes_compute_nothing_and_no_position_gives_zeros() {
        let kv = vec![0.5f32; 64];
        let view = CacheView {
            data: &kv,
            batch_stride: 64,
            head_stride: 64,
            pos_stride: 8,
        };
        for (heads, dim, len) in [(0usize, 8usize, 4usize), (3, 0, 4), (3, 8, 0)] {
            let shape = DecodeShape {
                batch: 1,
                heads,
                kv_heads: 1,
                dim,
                len,
            };
            let q = vec![1f32; heads * dim];
            let mut out = vec![1f32; heads * dim];
            decode_attention(&q, view, view, None, shape, 1.0, &mut out).expect("consistent");
            assert!(out.iter().all(|&o| o == 0.0), "{shape:?}");
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
