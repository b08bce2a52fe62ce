//! A block of weight rows against every activation row: the inner loop of
//! [`crate::skinny_matmul`], as an AVX2/FMA kernel (chosen at run time) and a portable loop.

use crate::Weights;

/// `out[r * m + j] = Σ_c x[j, c] · w[first + r, c]` for the `rows` weight rows from `first` and
/// the `m` rows of `x` (`[m, k]`).
pub(crate) type BlockKernel = fn(&[f32], usize, usize, Weights<'_>, usize, usize, &mut [f32]);

/// The fastest kernel this CPU runs (`SWIFT_KERNEL=avx2|portable` narrows the choice,
/// for comparing them).
pub(crate) fn select() -> BlockKernel {
    static CHOICE: std::sync::OnceLock<BlockKernel> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let wanted = std::env::var("SWIFT_KERNEL").unwrap_or_default();
        available()
            .into_iter()
            .find(|(name, _)| wanted.is_empty() || *name == wanted)
            .map_or(portable as BlockKernel, |(_, k)| k)
    })
}

/// Every kernel this CPU can run, fastest first.
pub(crate) fn available() -> Vec<(&'static str, BlockKernel)> {
    let mut out: Vec<(&'static str, BlockKernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            out.push(("avx2", avx2::block));
        }
    }
    out.push(("portable", portable));
    out
}

/// Panics unless every read and write of a [`BlockKernel`] call stays inside its slices (what
/// the vector kernels' unchecked loads rely on).
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! 8 lanes of float32. Each stretch of a weight row is loaded once and multiplied into one
    //! accumulator per activation row (up to 8, all in registers). Decoding is bound by
    //! streaming the weights, and one weight row at a time streams them best: on this machine's
    //! AMD EPYC (Zen 4), `--example decode_shapes` measured about 29 GB/s of float32 weights at
    //! one activation row, against 20-22 GB/s for 16-lane AVX-512 kernels (one or two weight
    //! rows at a time, aligned or not), 16-23 GB/s for this kernel taking two weight rows at a
    //! time, and no gain from software prefetching; so there is no AVX-512 kernel.
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
        // SAFETY: `select` only returns this kernel when the CPU has AVX2 and FMA; the slices
        // are long enough for every read and write (checked above).
        unsafe {
            for r in 0..rows {
                let o = &mut out[r * m..(r + 1) * m];
                match w {
                    Weights::F32(w) => row_f32(x, m, k, &w[(first + r) * k..], o),
                    Weights::Bf16(w) => row_bf16(x, m, k, &w[(first + r) * k..], o),
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_f32(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
        let p = w.as_ptr();
        dispatch(x, m, k, out, |i| _mm256_loadu_ps(p.add(i)), |i| *p.add(i))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_bf16(x: &[f32], m: usize, k: usize, w: &[u16], out: &mut [f32]) {
        let p = w.as_ptr();
        dispatch(
            x,
            m,
            k,
            out,
            |i| {
                let h = _mm_loadu_si128(p.add(i) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            },
            |i| f32::from_bits((*p.add(i) as u32) << 16),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dispatch(
        x: &[f32],
        m: usize,
        k: usize,
        out: &mut [f32],
        load: impl Fn(usize) -> __m256,
        scalar: impl Fn(usize) -> f32,
    ) {
        match m {
            1 => rows::<1>(x, k, out, load, scalar),
            2 => rows::<2>(x, k, out, load, scalar),
            3 => rows::<3>(x, k, out, load, scalar),
            4 => rows::<4>(x, k, out, load, scalar),
            5 => rows::<5>(x, k, out, load, scalar),
            6 => rows::<6>(x, k, out, load, scalar),
            7 => rows::<7>(x, k, out, load, scalar),
            _ => rows::<8>(x, k, out, load, scalar),
        }
    }

    /// One weight row (read through `load` / `scalar`) against the first `M` rows of `x`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const M: usize>(
        x: &[f32],
        k: usize,
        out: &mut [f32],
        load: impl Fn(usize) -> __m256,
        scalar: impl Fn(usize) -> f32,
    ) {
        let mut acc = [_mm256_setzero_ps(); M];
        let xp = x.as_ptr();
        let mut i = 0;
        while i + 8 <= k {
            let wv = load(i);
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(j * k + i)), *a);
            }
            i += 8;
        }
        for (j, a) in acc.iter().enumerate() {
            let s = _mm_add_ps(_mm256_castps256_ps128(*a), _mm256_extractf128_ps(*a, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let mut total = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
            for c in i..k {
                total += scalar(c) * *xp.add(j * k + c);
            }
            out[j] = total;
        }
    }
}
