//! A block of weight rows against every activation row: the inner loop of
//! [`crate::skinny_matmul`], as 16-lane AVX-512 and 8-lane AVX2/FMA kernels and a portable loop.
//! Which one runs is measured on the machine at hand (`crate::choice`), not assumed: the
//! 8-lane walk streamed faster on AMD Zen 4 (which splits 512-bit operations in two), while
//! CPUs with full-width AVX-512 units may stream faster with 16 lanes.

use crate::Weights;

/// `out[r * m + j] = Σ_c x[j, c] · w[first + r, c]` for the `rows` weight rows from `first` and
/// the `m` rows of `x` (`[m, k]`).
pub(crate) type BlockKernel = fn(&[f32], usize, usize, Weights<'_>, usize, usize, &mut [f32]);

/// The kernel [`crate::choice`] picked for this CPU.
pub(crate) fn select() -> BlockKernel {
    static KERNEL: std::sync::OnceLock<BlockKernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let name = crate::choice::kernel_choice().kernel.as_str();
        available()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(portable as BlockKernel, |(_, k)| k)
    })
}

/// Every kernel this CPU can run (the vector ones first).
pub(crate) fn available() -> Vec<(&'static str, BlockKernel)> {
    let mut out: Vec<(&'static str, BlockKernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
            {
                out.push(("avx512", avx512::block));
                out.push(("avx2-vl", avx2::block_vl));
            }
            out.push(("avx2", avx2::block));
        }
    }
    out.push(("portable", portable));
    out
}

/// The kernel for bfloat16 weights ([`crate::choice::bf16_kernel_choice`]): `avx512-bf16`
/// (src/dot_bf16.rs) where the CPU has it and it was not measured slower, else the float
/// kernel, which widens the weights.
pub(crate) fn select_bf16() -> BlockKernel {
    static KERNEL: std::sync::OnceLock<BlockKernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let name = crate::choice::bf16_kernel_choice().kernel.as_str();
        available_bf16()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or_else(select, |(_, k)| k)
    })
}

/// The kernels that multiply bfloat16 weights in bfloat16 on this CPU (not in [`available`]:
/// they round the activations, so they do not compute the float32 product the others do).
pub(crate) fn available_bf16() -> Vec<(&'static str, BlockKernel)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16") {
            return vec![("avx512-bf16", crate::dot_bf16::block)];
        }
    }
    Vec::new()
}

/// Panics unless every read and write of a [`BlockKernel`] call stays inside its slices (what
/// the vector kernels' unchecked loads rely on).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn check_bounds(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    first: usize,
    rows: usize,
    out: &[f32],
) {
    assert!(
        (1..=crate::MAX_ROWS).contains(&m)
            && x.len() >= m * k
            && out.len() >= rows * m
            && w.len() >= (first + rows) * k
    );
}

/// Plain Rust; the compiler vectorises what it can for the baseline target.
pub(crate) fn portable(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    for r in 0..rows {
        let row = first + r;
        for j in 0..m {
            let xs = &x[j * k..(j + 1) * k];
            out[r * m + j] = match w {
                Weights::F32(w) => w[row * k..(row + 1) * k]
                    .iter()
                    .zip(xs)
                    .map(|(a, b)| a * b)
                    .sum(),
                Weights::Bf16(w) => w[row * k..(row + 1) * k]
                    .iter()
                    .zip(xs)
                    .map(|(&a, b)| f32::from_bits((a as u32) << 16) * b)
                    .sum(),
            };
        }
    }
}

/// The horizontal sum of 8 float32 lanes, in the order every 8-lane walk (and tile,
/// src/tile.rs) uses, so that they agree bit for bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum8(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! 8 lanes of float32. A block of weight rows is walked as two halves side by side: weight
    //! row `r` of the first half and row `r` of the second are loaded together, each stretch of
    //! them multiplied with the same stretch of every activation row (accumulators in
    //! registers), so each activation load feeds two multiply-adds. Each half is one long
    //! sequential stream, which the hardware prefetcher follows; pairing adjacent rows instead
    //! restarts two short streams every two rows and was 1.5x slower from memory here.
    //!
    //! Measured with `--example decode_shapes` on this machine's AMD EPYC (Zen 4): in cache,
    //! 160 GFLOP/s at 8 activation rows against 105 for one weight row at a time; from memory,
    //! SmolLM2's weights at about 45 GB/s at 1 activation row (against 29-45) and equal or
    //! better at 4 and 8. 16-lane AVX-512 versions streamed slower there (20-22 GB/s), so the
    //! 16-lane walk (`avx512`) is picked only where it measures faster (`crate::choice`);
    //! software prefetching helps only with many activation rows (see [`PREFETCH_BYTES`]). Two
    //! weight rows against 8 activation rows need 16 accumulators: with AVX-512VL's 32 vector
    //! registers every row count pairs; with AVX2's 16, up to 4 rows.
    use std::arch::x86_64::*;

    use crate::Weights;

    /// The kernel for CPUs with AVX-512VL (32 vector registers).
    pub(super) fn block_vl(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: `select` returns this kernel only when the CPU has AVX2, FMA and AVX-512VL;
        // the slices are long enough for every read and write (checked above).
        unsafe { halves(x, m, k, w, first, rows, out, true, |a| walk_vl(a)) }
    }

    /// The kernel for CPUs with AVX2 and FMA only.
    pub(super) fn block(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: `select` returns this kernel only when the CPU has AVX2 and FMA; the slices
        // are long enough for every read and write (checked above).
        unsafe { halves(x, m, k, w, first, rows, out, m <= 4, |a| walk(a)) }
    }

    /// One weight row (or two, `second` elements apart) against the activation rows, results
    /// to `out[j]` (and `out[out_second + j]`).
    #[derive(Clone, Copy)]
    struct Walk<'a> {
        x: &'a [f32],
        m: usize,
        k: usize,
        w: Weights<'a>,
        /// Element index of the (first) weight row.
        row: usize,
        second: Option<usize>,
        out: *mut f32,
        out_second: usize,
    }

    /// Splits the block into two halves and walks them side by side (odd row last, alone), or
    /// without `pair`, walks its rows in order.
    #[allow(clippy::too_many_arguments)]
    unsafe fn halves(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
        pair: bool,
        walk: impl Fn(Walk<'_>),
    ) {
        let half = if pair { rows / 2 } else { 0 };
        let o = out.as_mut_ptr();
        // Pairs (r, half + r) for r < half, then the rows from 2 * half on alone.
        for r in 0..rows - half {
            let paired = r < half;
            let at = if paired { r } else { half + r };
            walk(Walk {
                x,
                m,
                k,
                w,
                row: (first + at) * k,
                second: paired.then_some(half * k),
                out: o.add(at * m),
                out_second: half * m,
            });
        }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    unsafe fn walk_vl(a: Walk<'_>) {
        dispatch::<8>(a)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn walk(a: Walk<'_>) {
        dispatch::<4>(a)
    }

    /// Picks the instance for the row count. Paired walks come only for `m <= PAIR_UP_TO`
    /// (the accumulators of two weight rows fit the registers); others are taken one by one.
    #[inline(always)]
    unsafe fn dispatch<const PAIR_UP_TO: usize>(a: Walk<'_>) {
        macro_rules! go {
            ($($n:literal)*) => {
                match (a.m, a.second) {
                    $(($n, Some(s)) if $n <= PAIR_UP_TO => rows::<$n, true>(a, s),
                      ($n, Some(s)) => {
                          rows::<$n, false>(a, 0);
                          let out = a.out.add(a.out_second);
                          rows::<$n, false>(Walk { row: a.row + s, out, ..a }, 0);
                      }
                      ($n, None) => rows::<$n, false>(a, 0),)*
                    _ => unreachable!("m is checked to be 1..=8"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8)
    }

    /// The inner loop for `M` activation rows and one or two (`TWO`) weight rows.
    #[inline(always)]
    unsafe fn rows<const M: usize, const TWO: bool>(a: Walk<'_>, second: usize) {
        match a.w {
            Weights::F32(w) => {
                let p = w.as_ptr().add(a.row);
                inner::<M, TWO, 1>(
                    a,
                    second,
                    |i| _mm256_loadu_ps(p.add(i)),
                    |i| *p.add(i),
                    |i| prefetch(p.wrapping_add(i).cast()),
                )
            }
            Weights::Bf16(w) => {
                let p = w.as_ptr().add(a.row);
                // Widening a bfloat16 weight costs two instructions before its multiply-add,
                // so one accumulator per row leaves a walk of one or two activation rows
                // waiting on the multiply-add's latency: four (two) independent ones per row
                // let it stream the weights instead.
                macro_rules! widened {
                    ($u:literal) => {
                        inner::<M, TWO, $u>(
                            a,
                            second,
                            |i| {
                                let h = _mm_loadu_si128(p.add(i) as *const __m128i);
                                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                            },
                            |i| f32::from_bits((*p.add(i) as u32) << 16),
                            |i| prefetch(p.wrapping_add(i).cast()),
                        )
                    };
                }
                match M {
                    1 => widened!(4),
                    2 => widened!(2),
                    _ => widened!(1),
                }
            }
        }
    }

    /// How far ahead of the weights being multiplied a walk of many activation rows asks for
    /// them. With more than 4 rows the walk spends long enough on each stretch that the memory
    /// reads fall behind the arithmetic instead of overlapping it; asking 2 KiB ahead took 7%
    /// (float32) and 17% (bfloat16) off the 8-row products here, and nothing at 1 to 4 rows.
    const PREFETCH_BYTES: usize = 2048;

    #[inline(always)]
    unsafe fn prefetch(at: *const i8) {
        // A prefetch never faults, so running past the end of the weights is harmless.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH_BYTES));
    }

    /// `U` independent accumulators per activation row and weight row (`M * U <= 8`), taking
    /// turns over stretches of 8 weights; summed at the end (`U = 1`: one running sum, the
    /// float32 walk's order).
    #[inline(always)]
    unsafe fn inner<const M: usize, const TWO: bool, const U: usize>(
        a: Walk<'_>,
        second: usize,
        load: impl Fn(usize) -> __m256,
        scalar: impl Fn(usize) -> f32,
        prefetch: impl Fn(usize),
    ) {
        let (k, xp) = (a.k, a.x.as_ptr());
        let mut a0 = [_mm256_setzero_ps(); 8];
        let mut a1 = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        // Stretches of 8 * U weights, then what is left 8 at a time on the first accumulators.
        // A macro, not a closure: a closure would not inherit the target features.
        macro_rules! step {
            ($i:expr, $u:expr) => {{
                let (i, u): (usize, usize) = ($i, $u);
                // Once per 64-byte line of float32 weights (twice for bfloat16).
                if M > 4 && i % 16 == 0 {
                    prefetch(i);
                    if TWO {
                        prefetch(second + i);
                    }
                }
                let w0 = load(i);
                let w1 = if TWO { load(second + i) } else { w0 };
                for j in 0..M {
                    let xv = _mm256_loadu_ps(xp.add(j * k + i));
                    a0[j * U + u] = _mm256_fmadd_ps(w0, xv, a0[j * U + u]);
                    if TWO {
                        a1[j * U + u] = _mm256_fmadd_ps(w1, xv, a1[j * U + u]);
                    }
                }
            }};
        }
        while i + 8 * U <= k {
            for u in 0..U {
                step!(i + 8 * u, u);
            }
            i += 8 * U;
        }
        while i + 8 <= k {
            step!(i, 0);
            i += 8;
        }
        for j in 0..M {
            let (mut s0, mut s1) = (a0[j * U], a1[j * U]);
            for u in 1..U {
                s0 = _mm256_add_ps(s0, a0[j * U + u]);
                s1 = _mm256_add_ps(s1, a1[j * U + u]);
            }
            let (mut t0, mut t1) = (super::hsum8(s0), super::hsum8(s1));
            for c in i..k {
                let xv = *xp.add(j * k + c);
                t0 += scalar(c) * xv;
                if TWO {
                    t1 += scalar(second + c) * xv;
                }
            }
            *a.out.add(j) = t0;
            if TWO {
                *a.out.add(a.out_second + j) = t1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! 16 lanes of float32, otherwise the AVX2 walk (see `avx2`): two halves of the block side
    //! by side, every row count paired (32 vector registers hold 2 × 8 accumulators), software
    //! prefetch for more than 4 activation rows.
    use std::arch::x86_64::*;

    use crate::Weights;

    pub(super) fn block(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: `available` lists this kernel only when the CPU has AVX-512F/VL, AVX2 and
        // FMA; the slices are long enough for every read and write (checked above).
        unsafe { halves(x, m, k, w, first, rows, out) }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    unsafe fn halves(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        let half = rows / 2;
        let o = out.as_mut_ptr();
        for r in 0..rows - half {
            let paired = r < half;
            let at = if paired { r } else { half + r };
            let row = (first + at) * k;
            let (second, out_second) = (paired.then_some(half * k), half * m);
            macro_rules! go {
                ($($n:literal)*) => {
                    match (m, second) {
                        $(($n, Some(s)) => walk::<$n, true>(x, k, w, row, s, o.add(at * m), out_second),
                          ($n, None) => walk::<$n, false>(x, k, w, row, 0, o.add(at * m), 0),)*
                        _ => unreachable!("m is checked to be 1..=8"),
                    }
                };
            }
            go!(1 2 3 4 5 6 7 8)
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn walk<const M: usize, const TWO: bool>(
        x: &[f32],
        k: usize,
        w: Weights<'_>,
        row: usize,
        second: usize,
        out: *mut f32,
        out_second: usize,
    ) {
        match w {
            Weights::F32(w) => {
                let p = w.as_ptr().add(row);
                inner::<M, TWO>(
                    x,
                    k,
                    second,
                    out,
                    out_second,
                    |i| _mm512_loadu_ps(p.add(i)),
                    |i| *p.add(i),
                    |i| prefetch(p.wrapping_add(i).cast()),
                )
            }
            Weights::Bf16(w) => {
                let p = w.as_ptr().add(row);
                inner::<M, TWO>(
                    x,
                    k,
                    second,
                    out,
                    out_second,
                    |i| {
                        let h = _mm256_loadu_si256(p.add(i) as *const __m256i);
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                    },
                    |i| f32::from_bits((*p.add(i) as u32) << 16),
                    |i| prefetch(p.wrapping_add(i).cast()),
                )
            }
        }
    }

    /// As the AVX2 walk's.
    const PREFETCH_BYTES: usize = 2048;

    #[inline(always)]
    unsafe fn prefetch(at: *const i8) {
        // A prefetch never faults, so running past the end of the weights is harmless.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH_BYTES));
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn inner<const M: usize, const TWO: bool>(
        x: &[f32],
        k: usize,
        second: usize,
        out: *mut f32,
        out_second: usize,
        load: impl Fn(usize) -> __m512,
        scalar: impl Fn(usize) -> f32,
        prefetch: impl Fn(usize),
    ) {
        let xp = x.as_ptr();
        let mut a0 = [_mm512_setzero_ps(); M];
        let mut a1 = [_mm512_setzero_ps(); M];
        let mut i = 0;
        while i + 16 <= k {
            if M > 4 {
                prefetch(i);
                if TWO {
                    prefetch(second + i);
                }
            }
            let w0 = load(i);
            let w1 = if TWO { load(second + i) } else { w0 };
            for j in 0..M {
                let xv = _mm512_loadu_ps(xp.add(j * k + i));
                a0[j] = _mm512_fmadd_ps(w0, xv, a0[j]);
                if TWO {
                    a1[j] = _mm512_fmadd_ps(w1, xv, a1[j]);
                }
            }
            i += 16;
        }
        for j in 0..M {
            let (mut t0, mut t1) = (_mm512_reduce_add_ps(a0[j]), _mm512_reduce_add_ps(a1[j]));
            for c in i..k {
                let xv = *xp.add(j * k + c);
                t0 += scalar(c) * xv;
                if TWO {
                    t1 += scalar(second + c) * xv;
                }
            }
            *out.add(j) = t0;
            if TWO {
                *out.add(out_second + j) = t1;
            }
        }
    }
}
