//! Dequantization of ggml tensor data to `f32`: the plain float types (F32, F16, BF16, F64),
//! the legacy block quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the K-quants (Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K, Q8_K). Each block decoder follows ggml's reference `dequantize_row_*`
//! (ggml-quants.c) exactly, including its element order inside a block.

use half::{bf16, f16};

use crate::error::GgufError;
use crate::types::{GgmlType, QK_K};

/// Whether [`dequantize`] supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | F64
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
    )
}

/// Dequantize `n_elements` values of type `ty` from `data`. `tensor` names the tensor in errors.
pub fn dequantize(
    ty: GgmlType,
    data: &[u8],
    n_elements: usize,
    tensor: &str,
) -> Result<Vec<f32>, GgufError> {
    let mut out = vec![0f32; n_elements];
    dequantize_into(ty, data, &mut out, tensor)?;
    Ok(out)
}

/// Dequantize `data` of type `ty` into `out` (whose length is the element count).
pub fn dequantize_into(
    ty: GgmlType,
    data: &[u8],
    out: &mut [f32],
    tensor: &str,
) -> Result<(), GgufError> {
    if !can_dequantize(ty) {
        return Err(GgufError::UnsupportedType {
            tensor: tensor.to_owned(),
            type_name: ty.name(),
            type_id: ty.id(),
            operation: "dequantization",
        });
    }
    let n = out.len();
    let bs = ty.block_size();
    if n % bs != 0 {
        return Err(GgufError::Shape {
            tensor: tensor.to_owned(),
            detail: format!("{n} elements is not a multiple of the {ty} block size {bs}"),
        });
    }
    let expected = n / bs * ty.type_size();
    if data.len() != expected {
        return Err(GgufError::Shape {
            tensor: tensor.to_owned(),
            detail: format!(
                "{n} elements of {ty} need {expected} bytes, got {}",
                data.len()
            ),
        });
    }
    let blocks = data
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(bs));
    match ty {
        GgmlType::F32 => {
            blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        GgmlType::BF16 => {
            blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
        }
        GgmlType::F64 => blocks.for_each(|(b, y)| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            y[0] = f64::from_le_bytes(a) as f32;
        }),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| block_q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| block_q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        GgmlType::Q2_K => blocks.for_each(|(b, y)| block_q2_k(b, y)),
        GgmlType::Q3_K => blocks.for_each(|(b, y)| block_q3_k(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| block_q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
        GgmlType::Q8_K => blocks.for_each(|(b, y)| block_q8_k(b, y)),
        // `can_dequantize` returned true, so this is unreachable; keep it an error anyway.
        other => {
            return Err(GgufError::UnsupportedType {
                tensor: tensor.to_owned(),
                type_name: other.name(),
                type_id: other.id(),
                operation: "dequantization",
            })
        }
    }
    Ok(())
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `{ f16 d; u8 qs[16] }`: x = (q - 8) * d; low nibbles are elements 0..16, high 16..32.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `{ f16 d; f16 m; u8 qs[16] }`: x = q * d + m.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// `{ f16 d; u8 qh[4]; u8 qs[16] }`: 5-bit values, the fifth bit from `qh`, x = (q - 16) * d.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((qs[j] & 0x0F) | xh0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
    }
}

/// `{ f16 d; f16 m; u8 qh[4]; u8 qs[16] }`: x = q * d + m with 5-bit q.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0x0F) | xh0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | xh1) as f32 * d + m;
    }
}

/// `{ f16 d; i8 qs[32] }`: x = q * d.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, v) in y.iter_mut().enumerate() {
        *v = (b[2 + j] as i8) as f32 * d;
    }
}

/// `{ u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }`: 2-bit values with 4-bit scales and mins.
fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let min = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for n in 0..QK_K / 128 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
            shift += 2;
        }
    }
}

/// `{ u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }`: 3-bit values (2 low bits in `qs`,
/// the high bit in `hmask`, set meaning "no -4"), 6-bit signed scales packed in 12 bytes.
fn block_q3_k(b: &[u8], y: &mut [f32]) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let hm = &b[0..32];
    let d_all = f16_at(b, 108);
    let s = &b[96..108];
    let mut aux = [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        0,
    ];
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut scales = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, byte) in w.to_le_bytes().iter().enumerate() {
            scales[4 * i + k] = *byte as i8;
        }
    }
    let mut out = 0;
    let mut is = 0;
    let mut m: u8 = 1;
    for n in 0..QK_K / 128 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let idx = l + 16 * half;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let sub = if hm[idx] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            shift += 2;
            m = m.wrapping_shl(1);
        }
    }
}

/// Scale and min number `j` (0..8) of a Q4_K/Q5_K super-block, 6 bits each, packed in 12 bytes.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: x = d * sc * q - dmin * m, 4-bit q;
/// each 32 bytes of `qs` hold 64 elements, low nibbles first.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (c, chunk) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            y[l] = d1 * (chunk[l] & 0x0F) as f32 - m1;
            y[l + 32] = d2 * (chunk[l] >> 4) as f32 - m2;
        }
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }`: like Q4_K with a fifth bit.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    let mut u1: u8 = 1;
    let mut u2: u8 = 2;
    for (c, chunk) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((chunk[l] & 0x0F) + h1) as f32 - m1;
            y[l + 32] = d2 * ((chunk[l] >> 4) + h2) as f32 - m2;
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
    }
}

/// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: 6-bit values minus 32, 8-bit scales.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..QK_K / 128 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// `{ f32 d; i8 qs[256]; i16 bsums[16] }`: x = q * d.
fn block_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (j, v) in y.iter_mut().enumerate() {
        *v = (b[4 + j] as i8) as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1; byte j holds low nibble j % 16 and high nibble 15 - j % 16.
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        b.extend_from_slice(&f16b(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let y = dequantize(GgmlType::Q4_1, &b, 32, "t").unwrap();
        // Element j (j < 16) = j * 0.5 - 1; element 16 + j = (15 - j) * 0.5 - 1.
        assert_eq!(y[0], -1.0);
        assert_eq!(y[1], -0.5);
        assert_eq!(y[2], 0.0);
        assert_eq!(y[15], 6.5);
        assert_eq!(y[16], 6.5);
        assert_eq!(y[31], -1.0);
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.5 - 1.0);
            assert_eq!(y[16 + j], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 2; byte 0 = 0x0F (low 15 -> +14, high 0 -> -16), byte 1 = 0x88 (both 8 -> 0).
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(2.0));
        b.push(0x0F);
        b.push(0x88);
        b.extend_from_slice(&[0x80; 14]); // low 0 (-16), high 8 (0)
        let y = dequantize(GgmlType::Q4_0, &b, 32, "t").unwrap();
        assert_eq!(y[0], 14.0);
        assert_eq!(y[16], -16.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[17], 0.0);
        assert_eq!(y[2], -16.0);
        assert_eq!(y[18], 0.0);
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.25));
        for j in 0..32i32 {
            b.push((j - 16) as i8 as u8);
        }
        let y = dequantize(GgmlType::Q8_0, &b, 32, "t").unwrap();
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 0.25);
        }
    }

    #[test]
    fn q5_0_and_q5_1_high_bits() {
        // qh bit j is the fifth bit of element j; set bits 0 and 16 only.
        let qh: u32 = 1 | (1 << 16);
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(1.0));
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend_from_slice(&[0x21; 16]); // low nibble 1, high nibble 2
        let y = dequantize(GgmlType::Q5_0, &b, 32, "t").unwrap();
        assert_eq!(y[0], (1 + 16 - 16) as f32);
        assert_eq!(y[1], (1 - 16) as f32);
        assert_eq!(y[16], (2 + 16 - 16) as f32);
        assert_eq!(y[17], (2 - 16) as f32);

        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        b.extend_from_slice(&f16b(3.0));
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend_from_slice(&[0x21; 16]);
        let y = dequantize(GgmlType::Q5_1, &b, 32, "t").unwrap();
        assert_eq!(y[0], 17.0 * 0.5 + 3.0);
        assert_eq!(y[1], 1.0 * 0.5 + 3.0);
        assert_eq!(y[16], 18.0 * 0.5 + 3.0);
        assert_eq!(y[17], 2.0 * 0.5 + 3.0);
    }

    #[test]
    fn plain_types() {
        let y = dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], 2, "t").unwrap();
        assert_eq!(y, vec![1.0, -2.0]);
        let y = dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x40, 0xC0], 2, "t").unwrap();
        assert_eq!(y, vec![1.0, -3.0]);
        let y = dequantize(GgmlType::F32, &1.5f32.to_le_bytes(), 1, "t").unwrap();
        assert_eq!(y, vec![1.5]);
    }

    #[test]
    fn q4_k_block_by_hand() {
        // d = 1, dmin = 0.5; sub-block scales/mins: j<4 use bytes j and j+4 (6 bits);
        // j>=4 combine nibbles of byte j+4 with the top 2 bits of bytes j-4 and j.
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&f16b(1.0));
        b[2..4].copy_from_slice(&f16b(0.5));
        let sc = &mut b[4..16];
        sc[0] = 3; // scale 0 = 3
        sc[4] = 2; // min 0 = 2
        sc[1] = 5; // scale 1 = 5
        sc[5] = 1; // min 1 = 1
                   // scale 4 = (sc[8] & 0xF) | ((sc[0] >> 6) << 4); set sc[0] top bits -> +16
        sc[0] |= 0b0100_0000; // scale 0 stays 3 (& 63), scale 4 gets +16
        sc[8] = 0x72; // scale 4 low nibble 2, min 4 low nibble 7
        let qs = &mut b[16..144];
        qs[0] = 0xA7; // element 0: 7, element 32: 10
        qs[64] = 0x01; // chunk 2 (sub-blocks 4 and 5): element 128: 1, element 160: 0
        let y = dequantize(GgmlType::Q4_K, &b, 256, "t").unwrap();
        assert_eq!(y[0], 1.0 * 3.0 * 7.0 - 0.5 * 2.0);
        assert_eq!(y[1], -0.5 * 2.0);
        assert_eq!(y[32], 1.0 * 5.0 * 10.0 - 0.5 * 1.0);
        // scale 4 = 2 | 16 = 18, min 4 = 7 | ((sc[4] >> 6) << 4) = 7.
        assert_eq!(y[128], 18.0 * 1.0 - 0.5 * 7.0);
        assert_eq!(y[129], -0.5 * 7.0);
    }

    #[test]
    fn q6_k_block_by_hand() {
        let mut b = vec![0u8; 210];
        b[208..210].copy_from_slice(&f16b(0.5));
        b[192] = 2; // scale 0 (elements 0..16)
        b[194] = 0xFF; // scale 2 = -1 (elements 32..48)
        b[0] = 0x05; // ql: element 0 low nibble 5, element 64 high nibble 0
        b[128] = 0b0000_0011; // qh: element 0 gets high bits 3 -> 5 | 48 = 53
        b[32] = 0x01; // element 32 low nibble 1, qh bits (2..4) = 0 -> 1
        let y = dequantize(GgmlType::Q6_K, &b, 256, "t").unwrap();
        assert_eq!(y[0], 0.5 * 2.0 * (53 - 32) as f32);
        assert_eq!(y[1], 0.5 * 2.0 * -32.0);
        assert_eq!(y[32], -0.5 * (1 - 32) as f32);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let err = dequantize(GgmlType::Q4_1, &[0u8; 19], 32, "blk.0.attn_q.weight").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("blk.0.attn_q.weight") && msg.contains("20 bytes"),
            "{msg}"
        );
        let err = dequantize(GgmlType::Q8_0, &[0u8; 34], 31, "x").unwrap_err();
        assert!(err.to_string().contains("block size 32"), "{err}");
        let err = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], 256, "y").unwrap_err();
        assert!(err.to_string().contains("IQ2_XXS (id 16)"), "{err}");
    }
}
