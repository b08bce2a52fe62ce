//! bfloat16 weights multiplied in bfloat16: the AVX-512 BF16 block kernel (`avx512-bf16`).
//!
//! The widening kernels of src/dot.rs turn every bfloat16 weight into a float32 (a zero-extend
//! and a shift per 8 or 16 weights) before a float32 multiply-add. `vdpbf16ps` instead takes 32
//! bfloat16 weights and 32 bfloat16 activations and adds their 16 pair products to 16 float32
//! accumulators in one instruction, as llama.cpp's BF16 path does: the activation rows are
//! rounded to bfloat16 once per call (round to nearest even), the weights are read as stored,
//! and the sums stay float32. So the result is the product of bfloat16-rounded activations, not
//! of the float32 ones the widening kernels multiply: a relative difference of about 2⁻⁹ per
//! activation, averaging out over a row (the tests bound it).
//!
//! Picked only on CPUs with AVX-512 BF16 (`avx512bf16`, e.g. AMD Zen 4, Intel Sapphire Rapids)
//! and only for bfloat16 weights; which of it and the widening kernel runs is measured
//! (`crate::choice::bf16_kernel_choice`). The block walk is the one of src/dot.rs: the block's
//! two halves side by side, so each activation load feeds two weight rows.

use crate::Weights;

/// Rounds float32 to bfloat16, to nearest even (NaN stays a quiet NaN).
pub(crate) fn round_to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

thread_local! {
    /// The activation rows rounded to bfloat16, reused between calls.
    static ROUNDED: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `avx512-bf16` block kernel: for bfloat16 weights `vdpbf16ps`, for float32 weights the
/// widening-free float32 walk of `fallback` (this kernel is only ever asked for bfloat16).
#[cfg(target_arch = "x86_64")]
pub(crate) fn block(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    let Weights::Bf16(wb) = w else {
        return crate::dot::select()(x, m, k, w, first, rows, out);
    };
    crate::dot::check_bounds(x, m, k, w, first, rows, out);
    ROUNDED.with_borrow_mut(|xb| {
        xb.clear();
        xb.extend(x[..m * k].iter().map(|&v| round_to_bf16(v)));
        // SAFETY: `available` lists this kernel only where the CPU has AVX-512F and AVX-512
        // BF16; every read and write lies inside the slices (checked above, `xb` is `m * k`).
        unsafe { x86::halves(xb, m, k, wb, first, rows, out) }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn halves(
        x: &[u16],
        m: usize,
        k: usize,
        w: &[u16],
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
            let (second, out_second) = (half * k, half * m);
            macro_rules! go {
                ($($n:literal)*) => {
                    match (m, paired) {
                        $(($n, true) => walk::<$n, true, { unroll($n) }>(x, k, w, row, second, o.add(at * m), out_second),
                          ($n, false) => walk::<$n, false, { unroll($n) }>(x, k, w, row, 0, o.add(at * m), 0),)*
                        _ => unreachable!("m is checked to be 1..=8"),
                    }
                };
            }
            go!(1 2 3 4 5 6 7 8)
        }
    }

    #[inline(always)]
    unsafe fn load(p: *const u16) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
    }

    #[inline(always)]
    fn widen(b: u16) -> f32 {
        f32::from_bits((b as u32) << 16)
    }

    /// Independent accumulators per activation row and weight row: with one or two activation
    /// rows a single running sum would leave the walk waiting on `vdpbf16ps`'s latency.
    const fn unroll(m: usize) -> usize {
        match m {
            1 => 4,
            2 => 2,
            _ => 1,
        }
    }

    /// `M` activation rows against one or two (`TWO`, `second` elements apart) weight rows,
    /// `U` accumulators each taking turns over stretches of 32 weights.
    #[inline(always)]
    unsafe fn walk<const M: usize, const TWO: bool, const U: usize>(
        x: &[u16],
        k: usize,
        w: &[u16],
        row: usize,
        second: usize,
        out: *mut f32,
        out_second: usize,
    ) {
        let (xp, wp) = (x.as_ptr(), w.as_ptr().add(row));
        let mut a0 = [_mm512_setzero_ps(); 8];
        let mut a1 = [_mm512_setzero_ps(); 8];
        let mut i = 0;
        // A macro, not a closure: a closure would not inherit the target features.
        macro_rules! step {
            ($i:expr, $u:expr) => {{
                let (i, u): (usize, usize) = ($i, $u);
                let w0 = load(wp.add(i));
                let w1 = if TWO { load(wp.add(second + i)) } else { w0 };
                for j in 0..M {
                    let xv = load(xp.add(j * k + i));
                    a0[j * U + u] = _mm512_dpbf16_ps(a0[j * U + u], w0, xv);
                    if TWO {
                        a1[j * U + u] = _mm512_dpbf16_ps(a1[j * U + u], w1, xv);
                    }
                }
            }};
        }
        while i + 32 * U <= k {
            for u in 0..U {
                step!(i + 32 * u, u);
            }
            i += 32 * U;
        }
        while i + 32 <= k {
            step!(i, 0);
            i += 32;
        }
        for j in 0..M {
            let (mut s0, mut s1) = (a0[j * U], a1[j * U]);
            for u in 1..U {
                s0 = _mm512_add_ps(s0, a0[j * U + u]);
                s1 = _mm512_add_ps(s1, a1[j * U + u]);
            }
            let (mut t0, mut t1) = (_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1));
            for c in i..k {
                let xv = widen(*xp.add(j * k + c));
                t0 += widen(*wp.add(c)) * xv;
                if TWO {
                    t1 += widen(*wp.add(second + c)) * xv;
                }
            }
            *out.add(j) = t0;
            if TWO {
                *out.add(out_second + j) = t1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even() {
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even one (1).
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up to the even one.
        assert_eq!(round_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0 + 1e-6), 0x3f81);
        assert_eq!(round_to_bf16(-2.0), 0xc000);
        assert!(f32::from_bits((round_to_bf16(f32::NAN) as u32) << 16).is_nan());
    }
}
