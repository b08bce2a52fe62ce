//! A block of weight rows against every activation row: the inner loop of
//! [`crate::skinny_matmul`], as an AVX2/FMA kernel (chosen at run time) and a portable loop.

use crate::Weights;

/// `out[r * m + j] = Σ_c x[j, c] · w[first + r, c]` for the `rows` weight rows from `first` and
/// the `m` rows of `x` (`[m, k]`).
pub(crate) type BlockKernel = fn(&[f32], usize, usize, Weights<'_>, usize, usize, &mut [f32]);

/// The fastest kernel this CPU runs (`SWIFT_KERNEL=avx512|avx2|portable` narrows the choice,
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
        if std::is_x86_feature_detected!("avx512f") {
            out.push(("avx512", avx512::block));
        }
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
    //! accumulator per activation row (up to 8, all in registers). Tiling several weight rows
    //! at once (fewer activation loads per multiply) measured slower here: decoding is bound by
    //! streaming the weights, and one row at a time streams them best.
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! 16 lanes, two weight rows at a time: each activation stretch loaded feeds two
    //! multiply-adds (up to 16 accumulators of the 32 registers), which halves the activation
    //! loads when several rows are decoded together. Single-thread arithmetic rate on a weight
    //! matrix held in cache (`--example decode_shapes -- --cached`, medians of 5 on this machine's AMD EPYC):
    //! 17.7 / 49.4 / 62.5 GFLOP per CPU second at 1 / 4 / 8 activation rows, against 14.3 /
    //! 37.9 / 46.7 for the AVX2 kernel and 17.7 / 38.6 / 46.2 for AVX-512 one row at a time.
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
        // SAFETY: `select` only returns this kernel when the CPU has AVX-512F; the slices are
        // long enough for every read and write (checked above).
        unsafe {
            let mut r = 0;
            while r < rows {
                let two = rows - r >= 2;
                let o = &mut out[r * m..];
                match w {
                    Weights::F32(w) => pair_f32(x, m, k, &w[(first + r) * k..], two, o),
                    Weights::Bf16(w) => pair_bf16(x, m, k, &w[(first + r) * k..], two, o),
                }
                r += if two { 2 } else { 1 };
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn pair_f32(x: &[f32], m: usize, k: usize, w: &[f32], two: bool, out: &mut [f32]) {
        let p = w.as_ptr();
        dispatch(
            x,
            m,
            k,
            two,
            out,
            |i| _mm512_loadu_ps(p.add(i)),
            |i| *p.add(i),
        )
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn pair_bf16(x: &[f32], m: usize, k: usize, w: &[u16], two: bool, out: &mut [f32]) {
        let p = w.as_ptr();
        dispatch(
            x,
            m,
            k,
            two,
            out,
            |i| {
                let h = _mm256_loadu_si256(p.add(i) as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            },
            |i| f32::from_bits((*p.add(i) as u32) << 16),
        )
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dispatch(
        x: &[f32],
        m: usize,
        k: usize,
        two: bool,
        out: &mut [f32],
        load: impl Fn(usize) -> __m512,
        scalar: impl Fn(usize) -> f32,
    ) {
        macro_rules! go {
            ($($n:literal)*) => {
                match (m, two) {
                    $(($n, true) => rows::<$n, true>(x, k, m, out, &load, &scalar),
                      ($n, false) => rows::<$n, false>(x, k, m, out, &load, &scalar),)*
                    _ => unreachable!("m is checked to be 1..=8"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8)
    }

    /// One or two weight rows (the second `k` further on) against the first `M` rows of `x`;
    /// results go to `out[j]` and `out[m + j]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const M: usize, const TWO: bool>(
        x: &[f32],
        k: usize,
        m: usize,
        out: &mut [f32],
        load: &impl Fn(usize) -> __m512,
        scalar: &impl Fn(usize) -> f32,
    ) {
        let mut a0 = [_mm512_setzero_ps(); M];
        let mut a1 = [_mm512_setzero_ps(); M];
        let xp = x.as_ptr();
        let mut i = 0;
        while i + 16 <= k {
            let w0 = load(i);
            let w1 = if TWO { load(k + i) } else { w0 };
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
            let mut t0 = _mm512_reduce_add_ps(a0[j]);
            let mut t1 = _mm512_reduce_add_ps(a1[j]);
            for c in i..k {
                let xv = *xp.add(j * k + c);
                t0 += scalar(c) * xv;
                if TWO {
                    t1 += scalar(k + c) * xv;
                }
            }
            out[j] = t0;
            if TWO {
                out[m + j] = t1;
            }
        }
    }
}
