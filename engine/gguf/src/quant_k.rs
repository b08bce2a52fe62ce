//! Encoders for Q5_0 and the K-quants Q4_K and Q6_K, so swift-rs can write the layouts its
//! integer kernels read (tests, and `swift export --to_gguf` of those types).
//!
//! Q5_0 is bit-compatible with ggml's `quantize_row_q5_0_ref`. The K-quants write ggml's exact
//! block layouts (`block_q4_K`, `block_q6_K`, decoded by [`crate::dequant`] as ggml does) with a
//! plain choice of scales: per group the range (Q4_K: `(max − min) / 15` and `−min`; Q6_K:
//! the value of largest magnitude over −32), the group scales then quantized to 6 bits (Q4_K)
//! or int8 (Q6_K) against the super-block's float16 `d`. ggml's reference quantizers search
//! for the scales that minimise a weighted error (`make_qkx2_quants`, `make_qx_quants`), so
//! their bytes differ from these and their error is somewhat smaller; files made by
//! llama.cpp's `llama-quantize` read the same way.

use half::f16;

use crate::types::QK_K;

/// ggml's `nearest_int`: round half away from zero.
fn nearest(v: f32) -> i32 {
    v.round() as i32
}

/// Q5_0: per block of 32, `d = m / -16` where `m` is the value of largest magnitude,
/// `q = min(31, trunc(x / d + 16.5))`; the low four bits as Q4_0's nibbles, the fifth bit of
/// element `i` as bit `i` of `qh`.
pub fn quantize_q5_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 22);
    for x in data.chunks_exact(32) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let lo = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let hi = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            qs[j] = (lo & 15) | ((hi & 15) << 4);
            qh |= (((lo & 0x10) >> 4) as u32) << j;
            qh |= (((hi & 0x10) >> 4) as u32) << (j + 16);
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
    out
}

/// Q4_K: per super-block of 256, eight groups of 32 with `w ≈ d·sc·q − dmin·m` (`q` 4 bits,
/// `sc` and `m` 6 bits). `data.len()` must be a multiple of 256 (a shorter tail is dropped).
pub fn quantize_q4_k(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / QK_K * 144);
    for x in data.chunks_exact(QK_K) {
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        for (g, xs) in x.chunks_exact(32).enumerate() {
            let min = xs.iter().fold(0f32, |a, &v| a.min(v));
            let max = xs.iter().fold(min, |a, &v| a.max(v));
            scales[g] = (max - min) / 15.0;
            mins[g] = -min;
        }
        let max_scale = scales.iter().fold(0f32, |a, &v| a.max(v));
        let max_min = mins.iter().fold(0f32, |a, &v| a.max(v));
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut packed = [0u8; 12];
        for g in 0..8 {
            let ls = nearest(inv_scale * scales[g]).clamp(0, 63) as u8;
            let lm = nearest(inv_min * mins[g]).clamp(0, 63) as u8;
            if g < 4 {
                packed[g] = ls;
                packed[g + 4] = lm;
            } else {
                packed[g + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                packed[g - 4] |= (ls >> 4) << 6;
                packed[g] |= (lm >> 4) << 6;
            }
        }
        let d = f16::from_f32(max_scale / 63.0);
        let dmin = f16::from_f32(max_min / 63.0);
        let mut codes = [0u8; QK_K];
        for (g, xs) in x.chunks_exact(32).enumerate() {
            let (sc, m) = crate::dequant::scale_min_k4(g, &packed);
            let dg = d.to_f32() * sc as f32;
            if dg == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * m as f32;
            for (c, &v) in codes[32 * g..32 * g + 32].iter_mut().zip(xs) {
                *c = nearest((v + dm) / dg).clamp(0, 15) as u8;
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&packed);
        for c in codes.chunks_exact(64) {
            out.extend((0..32).map(|l| c[l] | (c[l + 32] << 4)));
        }
    }
    out
}

/// Q6_K: per super-block of 256, sixteen groups of 16 with `w ≈ d·sc·(q − 32)` (`q` 6 bits,
/// `sc` int8). `data.len()` must be a multiple of 256 (a shorter tail is dropped).
pub fn quantize_q6_k(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / QK_K * 210);
    for x in data.chunks_exact(QK_K) {
        let mut scales = [0f32; 16];
        for (g, xs) in x.chunks_exact(16).enumerate() {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xs {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            scales[g] = max / -32.0;
        }
        let (mut amax, mut max_scale) = (0f32, 0f32);
        for &s in &scales {
            if amax < s.abs() {
                amax = s.abs();
                max_scale = s;
            }
        }
        let mut sc = [0i8; 16];
        let mut codes = [32u8; QK_K];
        let d = if amax > 0.0 {
            let iscale = -128.0 / max_scale;
            for (s, &v) in sc.iter_mut().zip(&scales) {
                *s = nearest(iscale * v).clamp(-128, 127) as i8;
            }
            f16::from_f32(1.0 / iscale)
        } else {
            f16::from_f32(0.0)
        };
        for (g, xs) in x.chunks_exact(16).enumerate() {
            let dg = d.to_f32() * sc[g] as f32;
            if dg == 0.0 {
                continue;
            }
            for (c, &v) in codes[16 * g..16 * g + 16].iter_mut().zip(xs) {
                *c = (nearest(v / dg).clamp(-32, 31) + 32) as u8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let (l0, h0, c) = (64 * half, 32 * half, &codes[128 * half..128 * half + 128]);
            for l in 0..32 {
                ql[l0 + l] = (c[l] & 0xF) | ((c[l + 64] & 0xF) << 4);
                ql[l0 + l + 32] = (c[l + 32] & 0xF) | ((c[l + 96] & 0xF) << 4);
                qh[h0 + l] = (c[l] >> 4)
                    | ((c[l + 32] >> 4) << 2)
                    | ((c[l + 64] >> 4) << 4)
                    | ((c[l + 96] >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;
    use crate::types::GgmlType;

    fn wave(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37).sin() * 1.5 + ((i * 13 % 7) as f32 - 3.0) * 0.1)
            .collect()
    }

    /// Every element decodes back within half a step of its group's quantized scale, plus what
    /// rounding the scales and mins costs at the far end of the range (Q4_K: 15 codes times half
    /// a step of `d`, half a step of `dmin`; Q6_K: 32 codes times half a step of `d`, and one
    /// step where the value of largest magnitude's opposite reaches +32, clamped to 31).
    #[test]
    fn k_quants_and_q5_0_round_trip_within_their_step() {
        let x = wave(3 * QK_K);
        let y = dequantize(GgmlType::Q5_0, &quantize_q5_0(&x), x.len(), "t").unwrap();
        for (xs, ys) in x.chunks(32).zip(y.chunks(32)) {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = xs
                .iter()
                .zip(ys)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            // Half a step, or a whole one where the opposite of the largest value reaches +16,
            // clamped to 15 (as in ggml).
            assert!(err <= amax / 16.0 + 1e-3, "Q5_0 {err} (amax {amax})");
        }
        let half_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let q = quantize_q4_k(&x);
        assert_eq!(q.len(), 3 * 144);
        let y = dequantize(GgmlType::Q4_K, &q, x.len(), "t").unwrap();
        for (sb, blk) in q.chunks(144).enumerate() {
            let (d, dmin) = (half_at(blk, 0), half_at(blk, 2));
            for g in 0..8 {
                let (sc, _) = crate::dequant::scale_min_k4(g, &blk[4..16]);
                let at = sb * QK_K + 32 * g;
                let err = (at..at + 32).fold(0f32, |a, i| a.max((x[i] - y[i]).abs()));
                let bound = 0.5 * d * sc as f32 + 7.5 * d + 0.5 * dmin + 1e-4;
                assert!(err <= bound, "Q4_K group {sb}/{g}: {err} > {bound}");
            }
        }
        let q = quantize_q6_k(&x);
        assert_eq!(q.len(), 3 * 210);
        let y = dequantize(GgmlType::Q6_K, &q, x.len(), "t").unwrap();
        for (sb, blk) in q.chunks(210).enumerate() {
            let d = half_at(blk, 208);
            for g in 0..16 {
                let sc = blk[192 + g] as i8 as f32;
                let at = sb * QK_K + 16 * g;
                let err = (at..at + 16).fold(0f32, |a, i| a.max((x[i] - y[i]).abs()));
                let bound = (d * sc).abs() + 16.0 * d.abs() + 1e-4;
                assert!(err <= bound, "Q6_K group {sb}/{g}: {err} > {bound}");
            }
        }
    }

    #[test]
    fn q5_0_known_block() {
        // Largest magnitude -16 at element 0: d = 1, q = x + 16 exactly, fifth bits where x ≥ 0.
        let x: Vec<f32> = (0..32).map(|j| (j as f32) - 16.0).collect();
        let q = quantize_q5_0(&x);
        assert_eq!(&q[0..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(u32::from_le_bytes([q[2], q[3], q[4], q[5]]), 0xFFFF_0000);
        let y = dequantize(GgmlType::Q5_0, &q, 32, "t").unwrap();
        assert_eq!(y, x);
    }

    #[test]
    fn zero_super_blocks_stay_zero() {
        let x = vec![0f32; QK_K];
        for (ty, q) in [
            (GgmlType::Q4_K, quantize_q4_k(&x)),
            (GgmlType::Q6_K, quantize_q6_k(&x)),
        ] {
            assert_eq!(dequantize(ty, &q, QK_K, "t").unwrap(), x, "{ty}");
        }
    }
}
