//! Encoding `f32` data into ggml tensor types for the writer: F32, F16, BF16 and the reference
//! (non-imatrix) quantizers for Q8_0, Q4_0 and Q4_1, bit-compatible with ggml's
//! `quantize_row_*_ref`; Q5_0, Q4_K and Q6_K come from [`crate::quant_k`].

use half::{bf16, f16};

use crate::error::GgufError;
use crate::types::GgmlType;

/// Whether [`quantize`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q4_K
            | GgmlType::Q6_K
    )
}

/// Encode `data` (row-major, rows of `row_len` elements) as `ty`. Quantized types need
/// `row_len` to be a multiple of the block size (32), since blocks never span rows.
pub fn quantize(
    ty: GgmlType,
    data: &[f32],
    row_len: usize,
    tensor: &str,
) -> Result<Vec<u8>, GgufError> {
    if !can_quantize(ty) {
        return Err(GgufError::UnsupportedType {
            tensor: tensor.to_owned(),
            type_name: ty.name(),
            type_id: ty.id(),
            operation: "quantization",
        });
    }
    let bs = ty.block_size();
    if ty.is_quantized() && (row_len == 0 || row_len % bs != 0) {
        return Err(GgufError::Shape {
            tensor: tensor.to_owned(),
            detail: format!("rows of {row_len} elements cannot be stored as {ty}: the row length must be a multiple of {bs}"),
        });
    }
    if data.len() % bs != 0 {
        return Err(GgufError::Shape {
            tensor: tensor.to_owned(),
            detail: format!(
                "{} elements is not a multiple of the {ty} block size {bs}",
                data.len()
            ),
        });
    }
    Ok(match ty {
        GgmlType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => data
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => data
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(data),
        GgmlType::Q4_0 => quantize_q4_0(data),
        GgmlType::Q5_0 => crate::quant_k::quantize_q5_0(data),
        GgmlType::Q4_K => crate::quant_k::quantize_q4_k(data),
        GgmlType::Q6_K => crate::quant_k::quantize_q6_k(data),
        _ => quantize_q4_1(data),
    })
}

/// Q8_0: per block of 32, `d = max|x| / 127`, `q = round(x / d)`. `data.len()` must be a
/// multiple of 32 (a shorter tail is dropped).
pub fn quantize_q8_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 34);
    for x in data.chunks_exact(32) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// Q4_0: per block of 32, `d = m / -8` where `m` is the value of largest magnitude,
/// `q = min(15, trunc(x / d + 8.5))`; low nibbles hold elements 0..16, high nibbles 16..32.
pub fn quantize_q4_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 18);
    for x in data.chunks_exact(32) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let lo = ((x[j] * id + 8.5) as i8).clamp(0, 15) as u8;
            let hi = ((x[j + 16] * id + 8.5) as i8).clamp(0, 15) as u8;
            out.push(lo | (hi << 4));
        }
    }
    out
}

/// Q4_1: per block of 32, `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - m) / d + 0.5))`.
pub fn quantize_q4_1(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 20);
    for x in data.chunks_exact(32) {
        let min = x.iter().fold(f32::MAX, |a, &v| a.min(v));
        let max = x.iter().fold(-f32::MAX, |a, &v| a.max(v));
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let lo = (((x[j] - min) * id + 0.5) as i8).clamp(0, 15) as u8;
            let hi = (((x[j + 16] - min) * id + 0.5) as i8).clamp(0, 15) as u8;
            out.push(lo | (hi << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn q8_0_round_trip_error_is_small() {
        let x = ramp(256);
        let q = quantize(GgmlType::Q8_0, &x, 64, "t").unwrap();
        assert_eq!(q.len(), 8 * 34);
        let y = dequantize(GgmlType::Q8_0, &q, 256, "t").unwrap();
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(
            max_err(&x, &y) <= amax / 127.0 * 0.51 + 1e-3,
            "{}",
            max_err(&x, &y)
        );
    }

    #[test]
    fn q4_0_known_block() {
        // Largest magnitude is -8 at element 3, so d = 1 and q = x + 8 exactly.
        let mut x = [0f32; 32];
        for (j, v) in x.iter_mut().enumerate() {
            *v = (j % 16) as f32 - 8.0;
        }
        x[3] = -8.0;
        x[0] = 7.0;
        let q = quantize_q4_0(&x);
        assert_eq!(&q[0..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(q[2], 0x0F); // x[0] = 7 -> 15 (low nibble), x[16] = -8 -> 0 (high nibble)
        let y = dequantize(GgmlType::Q4_0, &q, 32, "t").unwrap();
        assert_eq!(y.as_slice(), x.as_slice());
    }

    #[test]
    fn q4_1_round_trip_error_is_small() {
        let x = ramp(64);
        let q = quantize(GgmlType::Q4_1, &x, 64, "t").unwrap();
        let y = dequantize(GgmlType::Q4_1, &q, 64, "t").unwrap();
        let range = 100.0 / 17.0;
        assert!(
            max_err(&x, &y) <= range / 15.0 * 0.51 + 1e-2,
            "{}",
            max_err(&x, &y)
        );
    }

    #[test]
    fn quantized_rows_must_be_whole_blocks() {
        let err = quantize(GgmlType::Q8_0, &[0.0; 48], 48, "w").unwrap_err();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
        let err = quantize(GgmlType::Q4_K, &[0.0; 512], 128, "w").unwrap_err();
        assert!(err.to_string().contains("multiple of 256"), "{err}");
        let err = quantize(GgmlType::Q2_K, &[0.0; 256], 256, "w").unwrap_err();
        assert!(err.to_string().contains("Q2_K (id 10)"), "{err}");
    }
}
