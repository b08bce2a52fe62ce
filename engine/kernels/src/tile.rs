//! Register-blocked tiles for many activation rows: the products of [`FROM_ROWS`] (17) to
//! [`crate::WIDE_ROWS`] rows, where the walks of src/dot.rs run out of registers, and up to
//! [`crate::MANY_ROWS`] in a continuous batch's mixed pass.
//!
//! A walk of src/dot.rs holds one or two weight rows against up to 8 activation rows, so each
//! stretch of a weight row is loaded once per 8 activation rows and each activation load feeds at
//! most two multiply-adds; 16 rows took two such walks over every block of weights. Here a tile
//! holds [`WR`] (4) weight rows against up to `XR` activation rows, `4 × XR` vector accumulators
//! in registers (`XR` = 6 where AVX-512VL gives 32 vector registers, 3 with AVX2's 16): each
//! stretch loads `4 + XR` vectors for `4 × XR` multiply-adds, and the 4 weight rows (a few KiB)
//! stay in the first-level cache while every tile of activation rows passes over them, so the
//! weights are read from memory once per product whatever the row count.
//!
//! Summation order: each (weight row, activation row) pair has one accumulator of the lane width
//! running over the row in order, one horizontal sum at the end, then the tail past the last whole
//! vector term by term — the order of the walks of src/dot.rs for float32 weights (with the same
//! lane width). So a row's product does not depend on how many other rows share the batch or on
//! which tile it falls in: a row decoded in a batch gets bit for bit the float32 products it gets
//! alone with the same kernel, and batch composition cannot move a near-tie.
//!
//! Lane width follows the block kernel [`crate::choice`] measured for this CPU: 8 lanes (`avx2-vl`,
//! `avx2`) or 16 (`avx512`, whose 512-bit operations AMD Zen 4 splits in two); CPUs without AVX2
//! keep the portable walk in chunks (src/lib.rs).

use crate::Weights;

/// Same signature as [`crate::dot::BlockKernel`], for any number of activation rows.
pub(crate) type TileKernel = fn(&[f32], usize, usize, Weights<'_>, usize, usize, &mut [f32]);

/// Weight rows per tile.
const WR: usize = 4;

/// The fewest activation rows the tiles take. From memory (SmolLM2's weights, this machine's
/// AMD EPYC, loaded) they took 5-10 % less CPU time than two or more walks in chunks of 8 at
/// 24 and 32 rows, the same at 12, and up to 5 % more at 16 (two walks, the second over weights
/// still in cache), although in cache they multiply faster (90-94 GFLOP per CPU second against
/// 75-83 at 16 and 32 rows): at 16 rows or fewer the walks stay.
pub(crate) const FROM_ROWS: usize = 2 * crate::MAX_ROWS + 1;

/// The tile kernel of the block kernel named `kernel` (the lane width it walks with), if any.
pub(crate) fn for_kernel(kernel: &str) -> Option<TileKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let vl = avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl");
        return match kernel {
            "avx512" if vl => Some(x86::tiles_16 as TileKernel),
            "avx2-vl" if vl => Some(x86::tiles_vl as TileKernel),
            "avx2" if avx2 => Some(x86::tiles_avx2 as TileKernel),
            _ => None,
        };
    }
    #[allow(unreachable_code)]
    {
        let _ = kernel;
        None
    }
}

/// The tile kernel for float32 weights ([`crate::dot::select`]'s lane width) or for bfloat16
/// weights widened to float32 (when the bfloat16 choice is a widening kernel, not
/// `avx512-bf16`, which multiplies rounded activations).
pub(crate) fn select(w: Weights<'_>) -> Option<TileKernel> {
    static F32: std::sync::OnceLock<Option<TileKernel>> = std::sync::OnceLock::new();
    static BF16: std::sync::OnceLock<Option<TileKernel>> = std::sync::OnceLock::new();
    match w {
        Weights::F32(_) => *F32.get_or_init(|| for_kernel(&crate::choice::kernel_choice().kernel)),
        Weights::Bf16(_) => {
            *BF16.get_or_init(|| for_kernel(&crate::choice::bf16_kernel_choice().kernel))
        }
    }
}

/// Every tile kernel this CPU runs, with the block kernel whose order it keeps (for tests).
#[cfg(test)]
pub(crate) fn available() -> Vec<(&'static str, TileKernel)> {
    ["avx512", "avx2-vl", "avx2"]
        .into_iter()
        .filter_map(|n| for_kernel(n).map(|t| (n, t)))
        .collect()
}

/// Panics unless every read and write of a tile call stays inside its slices.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn check_bounds(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    first: usize,
    rows: usize,
    out: &[f32],
) {
    assert!(
        m >= 1
            && k >= 1
            && x.len() >= m * k
            && out.len() >= rows * m
            && w.len() >= (first + rows) * k
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::WR;
    use crate::Weights;

    /// A vector of float32 lanes and what a tile does with it. Every method is inlined into a
    /// function with the target features it needs.
    trait Lanes: Copy {
        const N: usize;
        unsafe fn zero() -> Self;
        unsafe fn load(p: *const f32) -> Self;
        /// `N` bfloat16 values widened to float32.
        unsafe fn load_bf16(p: *const u16) -> Self;
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
        /// The horizontal sum, in the order of the block kernel of this width.
        unsafe fn hsum(self) -> f32;
    }

    #[derive(Clone, Copy)]
    struct L8(__m256);

    impl Lanes for L8 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            L8(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            L8(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> Self {
            let h = _mm_loadu_si128(p as *const __m128i);
            L8(_mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(h),
                16,
            )))
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            L8(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            crate::dot::hsum8(self.0)
        }
    }

    #[derive(Clone, Copy)]
    struct L16(__m512);

    impl Lanes for L16 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            L16(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            L16(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> Self {
            let h = _mm256_loadu_si256(p as *const __m256i);
            L16(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                _mm512_cvtepu16_epi32(h),
            )))
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            L16(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
    }

    /// 16 lanes, 4 × 6 tiles (32 vector registers).
    pub(super) fn tiles_16(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: `for_kernel` returns this kernel only where the CPU has AVX2, FMA and
        // AVX-512F/VL; every read and write lies inside the slices (checked above).
        unsafe { run_16(x, m, k, w, first, rows, out) }
    }

    /// 8 lanes, 4 × 6 tiles (AVX-512VL's 32 vector registers).
    pub(super) fn tiles_vl(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: as `tiles_16`.
        unsafe { run_vl(x, m, k, w, first, rows, out) }
    }

    /// 8 lanes, 4 × 3 tiles (AVX2's 16 vector registers).
    pub(super) fn tiles_avx2(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        super::check_bounds(x, m, k, w, first, rows, out);
        // SAFETY: `for_kernel` returns this kernel only where the CPU has AVX2 and FMA; every
        // read and write lies inside the slices (checked above).
        unsafe { run_avx2(x, m, k, w, first, rows, out) }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    unsafe fn run_16(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        walk::<L16, 6>(x, m, k, w, first, rows, out)
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    unsafe fn run_vl(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        walk::<L8, 6>(x, m, k, w, first, rows, out)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        walk::<L8, 3>(x, m, k, w, first, rows, out)
    }

    /// Groups of [`WR`] weight rows (the last group's missing rows repeat its last row, computed
    /// and not stored), each against every tile of up to `XR` activation rows in turn. While a
    /// group is multiplied, its tiles ask for the next group's weights, each tile for its share of
    /// them, one cache line per step, so the memory reads overlap the arithmetic instead of
    /// waiting on it (asking two groups ahead, all in the first tile, or not at all measured
    /// slower here; without it 16 rows took 25% longer from memory).
    #[inline(always)]
    unsafe fn walk<L: Lanes, const XR: usize>(
        x: &[f32],
        m: usize,
        k: usize,
        w: Weights<'_>,
        first: usize,
        rows: usize,
        out: &mut [f32],
    ) {
        let (xp, o) = (x.as_ptr(), out.as_mut_ptr());
        let tiles = m.div_ceil(XR);
        // Each tile's share of the next groups' weights, in elements.
        let share = (WR * k).div_ceil(tiles);
        let mut r0 = 0;
        while r0 < rows {
            let wr = WR.min(rows - r0);
            let mut at = [0usize; WR];
            for (i, a) in at.iter_mut().enumerate() {
                *a = (first + r0 + i.min(wr - 1)) * k;
            }
            let ahead = (first + r0 + WR) * k;
            let mut j0 = 0;
            let mut jt = 0;
            while j0 < m {
                let xr = XR.min(m - j0);
                let (xt, ot) = (xp.add(j0 * k), o.add(r0 * m + j0));
                let pf = (ahead + jt * share, ahead + (jt + 1) * share);
                macro_rules! go {
                    ($($n:literal)*) => {
                        match xr {
                            $($n => tile::<L, $n>(xt, k, w, at, wr, ot, m, pf),)*
                            _ => unreachable!("a tile holds 1..=6 activation rows"),
                        }
                    };
                }
                go!(1 2 3 4 5 6);
                j0 += xr;
                jt += 1;
            }
            r0 += wr;
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<L: Lanes, const N: usize>(
        x: *const f32,
        k: usize,
        w: Weights<'_>,
        at: [usize; WR],
        wr: usize,
        out: *mut f32,
        m: usize,
        pf: (usize, usize),
    ) {
        // A prefetch never faults, so asking past the end of the weights is harmless.
        match w {
            Weights::F32(w) => {
                let p = w.as_ptr();
                inner::<L, N, 16>(
                    x,
                    k,
                    at,
                    wr,
                    out,
                    m,
                    pf,
                    |i| L::load(p.add(i)),
                    |i| *p.add(i),
                    |i| _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i).cast()),
                )
            }
            Weights::Bf16(w) => {
                let p = w.as_ptr();
                inner::<L, N, 32>(
                    x,
                    k,
                    at,
                    wr,
                    out,
                    m,
                    pf,
                    |i| L::load_bf16(p.add(i)),
                    |i| f32::from_bits((*p.add(i) as u32) << 16),
                    |i| _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i).cast()),
                )
            }
        }
    }

    /// One tile: `WR` weight rows (element offsets `at`) against `N` activation rows from `x`,
    /// results to `out[r * m + j]` for the first `wr` weight rows; asks for the weights
    /// `pf.0..pf.1` a cache line (`LINE` elements) per step.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn inner<L: Lanes, const N: usize, const LINE: usize>(
        x: *const f32,
        k: usize,
        at: [usize; WR],
        wr: usize,
        out: *mut f32,
        m: usize,
        pf: (usize, usize),
        load: impl Fn(usize) -> L,
        scalar: impl Fn(usize) -> f32,
        prefetch: impl Fn(usize),
    ) {
        let mut acc = [[L::zero(); N]; WR];
        let (mut next, end) = pf;
        let mut i = 0;
        while i + L::N <= k {
            if next < end {
                prefetch(next);
                next += LINE;
            }
            let mut xv = [L::zero(); N];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = L::load(x.add(j * k + i));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = load(at[r] + i);
                for (a, v) in row.iter_mut().zip(&xv) {
                    *a = L::fmadd(wv, *v, *a);
                }
            }
            i += L::N;
        }
        for (r, row) in acc.iter().enumerate().take(wr) {
            for (j, a) in row.iter().enumerate() {
                let mut t = a.hsum();
                for c in i..k {
                    t += scalar(at[r] + c) * *x.add(j * k + c);
                }
                *out.add(r * m + j) = t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift_values as values;

    #[test]
    fn every_tile_agrees_with_float64_and_bit_for_bit_with_its_walk_row_by_row() {
        // Ragged widths (tails shorter than 8 and 16 lanes), every row count up to 32 (tiles of
        // 6 and 3 with every remainder), weight rows not a multiple of 4 and a block starting
        // past the first row.
        let blocks = crate::dot::available();
        for (name, tiles) in available() {
            let walk = blocks.iter().find(|(n, _)| *n == name).expect("a walk").1;
            for &k in &[3usize, 8, 17, 40, 577] {
                let n = 11;
                let (first, rows) = (2, 9);
                let w = values(n * k, k as u64);
                let wb: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
                let wide: Vec<f32> = wb
                    .iter()
                    .map(|&b| f32::from_bits((b as u32) << 16))
                    .collect();
                for m in 1..=crate::WIDE_ROWS {
                    let x = values(m * k, (m * 1000 + k) as u64);
                    for (weights, plain) in [(Weights::F32(&w), &w), (Weights::Bf16(&wb), &wide)] {
                        let mut got = vec![0f32; rows * m];
                        tiles(&x, m, k, weights, first, rows, &mut got);
                        let mut alone = vec![0f32; rows];
                        for j in 0..m {
                            for r in 0..rows {
                                let want: f64 = (0..k)
                                    .map(|c| {
                                        x[j * k + c] as f64 * plain[(first + r) * k + c] as f64
                                    })
                                    .sum();
                                let a = got[r * m + j];
                                assert!(
                                    (a as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{name} k={k} m={m}: {a} vs {want}"
                                );
                            }
                            // The same activation row alone through the walk (one row for float32
                            // weights; for bfloat16, where walks of one or two rows keep several
                            // sums, as three rows): the same bits.
                            let extra = if matches!(weights, Weights::F32(_)) {
                                0
                            } else {
                                2
                            };
                            let xs = x[j * k..(j + 1) * k].repeat(1 + extra);
                            let mut out = vec![0f32; rows * (1 + extra)];
                            walk(&xs, 1 + extra, k, weights, first, rows, &mut out);
                            for (r, a) in alone.iter_mut().enumerate() {
                                *a = out[r * (1 + extra)];
                            }
                            for r in 0..rows {
                                assert_eq!(
                                    got[r * m + j].to_bits(),
                                    alone[r].to_bits(),
                                    "{name} k={k} m={m} row {j} weight row {r}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_of_a_wide_float32_product_is_the_row_alone_bit_for_bit() {
        // What decoding relies on: a sequence's logits do not depend on which other sequences
        // share its batch (the float32 weights of the model's products).
        let (n, k) = (37, 576);
        let w = values(n * k, 5);
        for m in [9usize, 16, 23, crate::WIDE_ROWS, 76, crate::MANY_ROWS] {
            let x = values(m * k, m as u64);
            if !crate::takes_rows(m, false) {
                // Without tiles the product beyond WIDE_ROWS is refused (libtorch's then).
                let mut y = vec![0f32; m * n];
                assert!(crate::skinny_matmul(&x, m, k, Weights::F32(&w), None, &mut y).is_err());
                continue;
            }
            let mut y = vec![0f32; m * n];
            crate::skinny_matmul(&x, m, k, Weights::F32(&w), None, &mut y).unwrap();
            for j in 0..m {
                let mut alone = vec![0f32; n];
                crate::skinny_matmul(
                    &x[j * k..(j + 1) * k],
                    1,
                    k,
                    Weights::F32(&w),
                    None,
                    &mut alone,
                )
                .unwrap();
                let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y[j * n..(j + 1) * n]), bits(&alone), "m={m} row {j}");
            }
        }
    }
}
