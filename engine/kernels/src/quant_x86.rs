//! The x86-64 kernels of [`crate::quant`]: one block of 32 weights per 256-bit register against
//! the same block of every activation row. The integer product of a block is `vpdpbusd`
//! (AVX-512 VNNI, on 256-bit registers) or `vpmaddubsw` + `vpmaddwd` (AVX2); both multiply
//! unsigned by signed bytes, so a signed weight block (Q8_0, Q5_0) goes in as `|w|` against `x`
//! with `w`'s sign, as in llama.cpp. Q4_0's and Q4_1's unsigned nibbles go in as they are (as do
//! the unpacked codes of swift-rs's own affine layout, with a scale and a min per group instead
//! of per block), and an offset per block adds `m_w · d_x Σq_x` (Q4_0's `− 8` is taken off the
//! block's integer product instead: `− 8 Σq_x`, which saves the subtraction and the two sign
//! operations per block). For Q8_0, Q4_0 and Q4_1 each block's integer product is summed to one
//! number before it is scaled (`d_w · d_x` once per block, as llama.cpp's `vec_dot`), so that the
//! row walk and the interleaved one ([`walk8`], eight rows, one per 32-bit lane) give the same
//! products bit for bit. Block scales are converted from float16 with F16C.
//!
//! Q5_0 is Q4_0 with a fifth bit per element, spread from its 32-bit `qh` into bytes (as
//! llama.cpp's `bytes_from_bits_32`). The K-quants have their own walks over a super-block of
//! 256: Q4_K's eight groups of 32 are unsigned nibbles with a scale and a min each (as Q4_1);
//! Q6_K's four groups per 128 elements are 6-bit codes minus 32 (signed, as Q8_0), whose two
//! int8 scales per group multiply the lanes of the group's integer product (lanes 0–3 hold its
//! first 16 elements, 4–7 the next 16) before the float scaling.

use std::arch::x86_64::*;

use crate::quant::{
    check_bounds, portable, scale_min_k4, AffineCodes, BlockType, Blocks, Packed, QKernel,
    QuantizedActs, QK, QK_K,
};
use crate::repack::{interleaved_row, GROUP};

/// The kernels this CPU runs, fastest first.
pub(crate) fn available() -> Vec<(&'static str, QKernel)> {
    let mut out: Vec<(&'static str, QKernel)> = Vec::new();
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
        {
            out.push(("vnni", vnni));
        }
        out.push(("avx2", avx2));
    }
    out
}

fn vnni(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    check_bounds(a, m, k, w, first, rows, out);
    // SAFETY: listed by `available` only when the CPU has these features; the slices hold every
    // read and write (checked above).
    unsafe { vnni_inner(a, m, k, w, first, rows, out.as_mut_ptr()) }
}

fn avx2(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    // `vpmaddubsw` adds two u8 × i8 products in int16, which codes above 127 can overflow.
    if let Packed::Affine(AffineCodes { bits: 8, .. }) = w {
        return portable(a, m, k, w, first, rows, out);
    }
    check_bounds(a, m, k, w, first, rows, out);
    // SAFETY: as for `vnni`.
    unsafe { avx2_inner(a, m, k, w, first, rows, out.as_mut_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn vnni_inner(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    dispatch::<true>(a, m, k, w, first, rows, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_inner(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    dispatch::<false>(a, m, k, w, first, rows, out)
}

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
/// Unpacked codes with a scale and a min per group (swift-rs's affine layout).
const AFFINE: u8 = 3;
const Q5_0: u8 = 4;

/// Picks the instance for the row count and the layout.
#[inline(always)]
unsafe fn dispatch<const VNNI: bool>(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    macro_rules! go {
        ($($n:literal)*) => {
            match (m, w) {
                $(($n, Packed::Blocks(b)) if b.interleaved => match b.ty {
                    BlockType::Q8_0 => interleaved::<$n, Q8_0, VNNI>(a, k, b, first, rows, out),
                    BlockType::Q4_0 => interleaved::<$n, Q4_0, VNNI>(a, k, b, first, rows, out),
                    _ => interleaved::<$n, Q4_1, VNNI>(a, k, b, first, rows, out),
                },
                ($n, Packed::Blocks(b)) => match b.ty {
                    BlockType::Q8_0 => walk::<$n, Q8_0, VNNI>(a, k, w, first, rows, out),
                    BlockType::Q4_0 => walk::<$n, Q4_0, VNNI>(a, k, w, first, rows, out),
                    BlockType::Q4_1 => walk::<$n, Q4_1, VNNI>(a, k, w, first, rows, out),
                    BlockType::Q5_0 => walk::<$n, Q5_0, VNNI>(a, k, w, first, rows, out),
                    BlockType::Q4_K => walk_q4_k::<$n, VNNI>(a, k, b.data, first, rows, out),
                    BlockType::Q6_K => walk_q6_k::<$n, VNNI>(a, k, b.data, first, rows, out),
                },
                ($n, Packed::Affine(_)) => walk::<$n, AFFINE, VNNI>(a, k, w, first, rows, out),)*
                _ => unreachable!("m is checked to be 1..=8"),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8)
}

/// `Σ` over 4-byte groups of unsigned `u` times signed `s`, as 8 × int32.
#[inline(always)]
unsafe fn dot<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// The 32 nibbles of a Q4 block as bytes 0..=15, in element order (low nibbles first).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let qs = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(qs, _mm_set1_epi8(15));
    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(15));
    _mm256_set_m128i(hi, lo)
}

/// The 32 elements of a Q5_0 block at `p` as signed bytes `q − 16`: a nibble with its fifth
/// bit clear gets `0xF0` or-ed in (that is, minus 16 as an int8).
#[inline(always)]
unsafe fn q5_0_values(p: *const u8) -> __m256i {
    let qh = std::ptr::read_unaligned(p.add(2) as *const u32);
    // Byte `i` of the broadcast holds byte `i / 8` of `qh`; or-ing every bit but `i % 8` makes
    // it all ones exactly when bit `i` of `qh` is set.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let set = _mm256_cmpeq_epi8(
        _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)),
        _mm256_set1_epi64x(-1),
    );
    let high = _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8));
    _mm256_or_si256(nibbles(p.add(6)), high)
}

/// Bits `S..S + 2` of every byte of `qh`, moved to bits 4..6 (a Q6_K code's high part).
#[inline(always)]
unsafe fn high<const S: i32>(qh: __m256i) -> __m256i {
    let h = _mm256_and_si256(_mm256_srli_epi16::<S>(qh), _mm256_set1_epi8(3));
    _mm256_slli_epi16::<4>(h)
}

/// The float16 at `p` (F16C's conversion).
#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let h = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// The weight rows `first..first + rows` of layout `T` against `M` activation rows.
#[inline(always)]
unsafe fn walk<const M: usize, const T: u8, const VNNI: bool>(
    a: &QuantizedActs,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    let nb = k / QK;
    let bb = match T {
        Q8_0 => 34,
        Q4_0 => 18,
        Q5_0 => 22,
        _ => 20,
    };
    let (data, codes, scales, mins, group) = match w {
        Packed::Blocks(b) => (
            b.data.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            QK,
        ),
        Packed::Affine(af) => (
            std::ptr::null(),
            af.codes.as_ptr(),
            af.scales.as_ptr(),
            af.mins.as_ptr(),
            af.group,
        ),
    };
    let ng = k.div_ceil(group);
    let (xq, xd, xs, xsum) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.sum.as_ptr());
    // Q8_0, Q4_0 and Q4_1 (the layouts [`walk8`] also reads) sum each block's integer product
    // before scaling it, so that both walks give the same products bit for bit.
    let exact_total = T == Q8_0 || T == Q4_0 || T == Q4_1;
    for r in 0..rows {
        let row = first + r;
        let mut acc = [_mm256_setzero_ps(); M];
        let mut offset = [0f32; M];
        let mut exact = [0f32; M];
        for b in 0..nb {
            let (wv, dw, mw, signed) = if T == AFFINE {
                let p: *const u8 = codes.add(row * k + b * QK);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(512) as *const i8);
                let g = row * ng + b * QK / group;
                (
                    _mm256_loadu_si256(p as *const __m256i),
                    *scales.add(g),
                    *mins.add(g),
                    false,
                )
            } else {
                let blk: *const u8 = data.add((row * nb + b) * bb);
                // Ask for the block a few lines ahead (a prefetch never faults).
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(512) as *const i8);
                let dw = half(blk);
                match T {
                    Q8_0 => (
                        _mm256_loadu_si256(blk.add(2) as *const __m256i),
                        dw,
                        0.0,
                        true,
                    ),
                    // Unsigned nibbles (no sign trick); the `− 8` is an offset, taken off the
                    // block's integer product: `− 8 Σq_x`.
                    Q4_0 => (nibbles(blk.add(2)), dw, 0.0, false),
                    Q5_0 => (q5_0_values(blk), dw, 0.0, true),
                    _ => (nibbles(blk.add(4)), dw, half(blk.add(2)), false),
                }
            };
            let uw = if signed { _mm256_sign_epi8(wv, wv) } else { wv };
            for j in 0..M {
                let xv = _mm256_loadu_si256(xq.add(j * k + b * QK) as *const __m256i);
                let sx = if signed { _mm256_sign_epi8(xv, wv) } else { xv };
                if exact_total {
                    // The block's exact integer product, scaled once: as [`walk8`] does per
                    // lane, the same float32 operations.
                    let mut t = hsum_i32(dot::<VNNI>(uw, sx));
                    if T == Q4_0 {
                        t -= 8 * *xsum.add(j * nb + b);
                    }
                    exact[j] = fma1(dw * *xd.add(j * nb + b), t as f32, exact[j]);
                    if T == Q4_1 {
                        offset[j] = fma1(mw, *xs.add(j * nb + b), offset[j]);
                    }
                    continue;
                }
                let p = _mm256_cvtepi32_ps(dot::<VNNI>(uw, sx));
                let scale = _mm256_set1_ps(dw * *xd.add(j * nb + b));
                acc[j] = _mm256_fmadd_ps(scale, p, acc[j]);
                if !signed {
                    offset[j] += mw * *xs.add(j * nb + b);
                }
            }
        }
        for j in 0..M {
            *out.add(r * M + j) = if exact_total {
                exact[j] + offset[j]
            } else {
                hsum(acc[j]) + offset[j]
            };
        }
    }
}

/// [`walk`] for Q4_K: per super-block, its eight 6-bit scales and mins, then four loads of 32
/// bytes, each two groups of 32 (low nibbles, high nibbles).
#[inline(always)]
unsafe fn walk_q4_k<const M: usize, const VNNI: bool>(
    a: &QuantizedActs,
    k: usize,
    data: &[u8],
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    let (nb, nsb) = (k / QK, k / QK_K);
    let rb = nsb * 144;
    let (xq, xd, xs) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
    let low = _mm256_set1_epi8(15);
    for r in 0..rows {
        let row = data.as_ptr().add((first + r) * rb);
        let mut acc = [_mm256_setzero_ps(); M];
        let mut offset = [0f32; M];
        for sb in 0..nsb {
            let blk = row.add(sb * 144);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(576) as *const i8);
            let (d, dmin) = (half(blk), half(blk.add(2)));
            let packed = std::slice::from_raw_parts(blk.add(4), 12);
            for c in 0..4 {
                let qs = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                let halves = [
                    _mm256_and_si256(qs, low),
                    _mm256_and_si256(_mm256_srli_epi16(qs, 4), low),
                ];
                for (h, wv) in halves.into_iter().enumerate() {
                    let g = 2 * c + h;
                    let (sc, mn) = scale_min_k4(g, packed);
                    let (dw, mw) = (d * sc as f32, dmin * mn as f32);
                    let b = sb * 8 + g;
                    for j in 0..M {
                        let xv = _mm256_loadu_si256(xq.add(j * k + b * QK) as *const __m256i);
                        let p = _mm256_cvtepi32_ps(dot::<VNNI>(wv, xv));
                        let scale = _mm256_set1_ps(dw * *xd.add(j * nb + b));
                        acc[j] = _mm256_fmadd_ps(scale, p, acc[j]);
                        offset[j] -= mw * *xs.add(j * nb + b);
                    }
                }
            }
        }
        for j in 0..M {
            *out.add(r * M + j) = hsum(acc[j]) + offset[j];
        }
    }
}

/// [`walk`] for Q6_K: per half super-block of 128, 64 bytes of low nibbles and 32 of high
/// bits make four groups of 32 signed codes (`q − 32`), each with two int8 scales.
#[inline(always)]
unsafe fn walk_q6_k<const M: usize, const VNNI: bool>(
    a: &QuantizedActs,
    k: usize,
    data: &[u8],
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    let (nb, nsb) = (k / QK, k / QK_K);
    let rb = nsb * 210;
    let xq = a.q.as_ptr();
    let xd = a.d.as_ptr();
    let low = _mm256_set1_epi8(15);
    for r in 0..rows {
        let row = data.as_ptr().add((first + r) * rb);
        let mut acc = [_mm256_setzero_ps(); M];
        for sb in 0..nsb {
            let blk = row.add(sb * 210);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(630) as *const i8);
            let d = half(blk.add(208));
            for n in 0..2 {
                let ql0 = _mm256_loadu_si256(blk.add(64 * n) as *const __m256i);
                let ql1 = _mm256_loadu_si256(blk.add(64 * n + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
                let codes = [
                    _mm256_or_si256(_mm256_and_si256(ql0, low), high::<0>(qh)),
                    _mm256_or_si256(_mm256_and_si256(ql1, low), high::<2>(qh)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                        high::<4>(qh),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                        high::<6>(qh),
                    ),
                ];
                let sc = blk.add(192 + 8 * n) as *const i8;
                for (g, q) in codes.into_iter().enumerate() {
                    let wv = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                    let uw = _mm256_sign_epi8(wv, wv);
                    let scales = _mm256_set_m128(
                        _mm_set1_ps(*sc.add(2 * g + 1) as f32),
                        _mm_set1_ps(*sc.add(2 * g) as f32),
                    );
                    let b = sb * 8 + 4 * n + g;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_si256(xq.add(j * k + b * QK) as *const __m256i);
                        let p = _mm256_cvtepi32_ps(dot::<VNNI>(uw, _mm256_sign_epi8(xv, wv)));
                        let scale = _mm256_set1_ps(d * *xd.add(j * nb + b));
                        *acc = _mm256_fmadd_ps(scale, _mm256_mul_ps(p, scales), *acc);
                    }
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            *out.add(r * M + j) = hsum(*acc);
        }
    }
}

/// Interleaved Q8_0/Q4_0/Q4_1 (`src/repack.rs`): whole groups of eight rows take [`walk8`]; a
/// row of a group the task holds only part of, or of the rows after the last group, is read back
/// into the row layout and takes [`walk`].
#[inline(always)]
unsafe fn interleaved<const M: usize, const T: u8, const VNNI: bool>(
    a: &QuantizedActs,
    k: usize,
    b: Blocks<'_>,
    first: usize,
    rows: usize,
    out: *mut f32,
) {
    let rb = b.ty.row_bytes(k);
    let n8 = b.data.len() / rb / GROUP * GROUP;
    let end = first + rows;
    let mut one = Vec::new();
    let mut r = first;
    while r < end {
        let whole = end.min(n8) / GROUP * GROUP;
        if r.is_multiple_of(GROUP) && r < whole {
            walk8::<M, T, VNNI>(
                a,
                k,
                b.data,
                r / GROUP,
                (whole - r) / GROUP,
                out.add((r - first) * M),
            );
            r = whole;
        } else {
            one.resize(rb, 0);
            interleaved_row(b.ty, b.data, k, r, &mut one);
            let row = Packed::Blocks(Blocks::rows(b.ty, &one));
            walk::<M, T, VNNI>(a, k, row, 0, 1, out.add((r - first) * M));
            r += 1;
        }
    }
}

/// Groups `g0..g0 + groups` of eight interleaved rows against `M` activation rows, one row per
/// 32-bit lane (llama.cpp's `gemv_q4_0_8x8` idea): per block column, eight registers of codes
/// (four codes of each row) against four activation codes broadcast to every lane, so each lane
/// ends the block holding its row's exact integer product; then one conversion and one
/// multiply-add by the eight rows' `d_w · d_x` per block, and no horizontal sum at all.
///
/// Bit for bit [`walk`]'s result on these layouts: both take each block's exact integer product
/// (Q4_0's `− 8` and Q8_0's stored `+ 128` are taken off in integers, `8 Σq_x` and `128 Σq_x`),
/// multiply-add it into a float32 sum by `d_w · d_x` in block order, and add Q4_1's offsets
/// (`m_w · d_x Σq_x`, summed the same way) at the end. AVX2 takes Q8_0's codes back to signed and
/// uses the sign trick, as [`walk`].
#[inline(always)]
unsafe fn walk8<const M: usize, const T: u8, const VNNI: bool>(
    a: &QuantizedActs,
    k: usize,
    data: &[u8],
    g0: usize,
    groups: usize,
    out: *mut f32,
) {
    let nb = k / QK;
    let col = GROUP
        * match T {
            Q8_0 => 34,
            Q4_0 => 18,
            _ => 20,
        };
    let hdr = if T == Q4_1 { 4 * GROUP } else { 2 * GROUP };
    let signed = T == Q8_0 && !VNNI;
    let (xq, xd, xs, xsum) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.sum.as_ptr());
    let low = _mm256_set1_epi8(15);
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    // What a block's integer product takes off per `Σq_x`: Q4_0's `− 8`, Q8_0's stored `+ 128`.
    let bias = match T {
        Q4_0 => 8,
        Q8_0 if VNNI => 128,
        _ => 0,
    };
    for g in 0..groups {
        let base = data.as_ptr().add((g0 + g) * nb * col);
        let mut acc = [_mm256_setzero_ps(); M];
        let mut off = [_mm256_setzero_ps(); M];
        for b in 0..nb {
            let p = base.add(b * col);
            // No prefetch: the hardware's stream prefetcher keeps up with this walk, and asking
            // for columns 512 or 1024 bytes ahead made it slower from memory (`qgemv` example).
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let mw = if T == Q4_1 {
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * GROUP) as *const __m128i))
            } else {
                _mm256_setzero_ps()
            };
            let ld = |at: usize| _mm256_loadu_si256(p.add(at) as *const __m256i);
            let mut w = [_mm256_setzero_si256(); 8];
            if T == Q8_0 {
                for (i, w) in w.iter_mut().enumerate() {
                    *w = ld(hdr + 32 * i);
                }
            } else {
                for i in 0..4 {
                    let v = ld(hdr + 32 * i);
                    w[i] = _mm256_and_si256(v, low);
                    w[i + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                }
            }
            // (`array::map` is not inlined into a function with target features.)
            let mut sw = w;
            if signed {
                for i in 0..8 {
                    sw[i] = _mm256_xor_si256(w[i], flip);
                    w[i] = _mm256_sign_epi8(sw[i], sw[i]);
                }
            }
            for j in 0..M {
                let x = xq.add(j * k + b * QK) as *const i32;
                let xi = |i: usize| {
                    let v = _mm256_set1_epi32(std::ptr::read_unaligned(x.add(i)));
                    if signed {
                        _mm256_sign_epi8(v, sw[i])
                    } else {
                        v
                    }
                };
                let mut i0 = dot::<VNNI>(w[0], xi(0));
                let mut i1 = dot::<VNNI>(w[1], xi(1));
                for i in (2..8).step_by(2) {
                    i0 = dot_add::<VNNI>(i0, w[i], xi(i));
                    i1 = dot_add::<VNNI>(i1, w[i + 1], xi(i + 1));
                }
                let mut t = _mm256_add_epi32(i0, i1);
                if bias != 0 {
                    t = _mm256_sub_epi32(t, _mm256_set1_epi32(bias * *xsum.add(j * nb + b)));
                }
                let sc = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.add(j * nb + b)));
                acc[j] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(t), acc[j]);
                if T == Q4_1 {
                    off[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*xs.add(j * nb + b)), off[j]);
                }
            }
        }
        let o = out.add(GROUP * g * M);
        for j in 0..M {
            let v = _mm256_add_ps(acc[j], off[j]);
            if M == 1 {
                _mm256_storeu_ps(o, v);
            } else {
                let mut t = [0f32; GROUP];
                _mm256_storeu_ps(t.as_mut_ptr(), v);
                for (i, t) in t.into_iter().enumerate() {
                    *o.add(i * M + j) = t;
                }
            }
        }
    }
}

/// `acc + Σ` over 4-byte groups of unsigned `u` times signed `s`, as 8 × int32.
#[inline(always)]
unsafe fn dot_add<const VNNI: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(acc, u, s)
    } else {
        _mm256_add_epi32(acc, dot::<VNNI>(u, s))
    }
}

/// The sum of the eight int32 lanes.
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)))
}

/// `a · b + c`, fused (as `_mm256_fmadd_ps` per lane).
#[inline(always)]
unsafe fn fma1(a: f32, b: f32, c: f32) -> f32 {
    _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}
