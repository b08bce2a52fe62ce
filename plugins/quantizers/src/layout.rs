//! GPTQ's and AutoAWQ's standard packed layouts: integer codes packed `32 / bits` to an int32
//! word, the lowest bits first.
//!
//! GPTQ ("v1", as GPTQModel / AutoGPTQ write `checkpoint_format: "gptq"`), for a `[out, in]`
//! weight with `ng` groups:
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `qweight` | I32 | `[in · bits / 32, out]` | codes packed along the input dimension: word `[r, o]` holds `q[o, r · 32/bits + k]` at bits `k · bits` |
//! | `qzeros` | I32 | `[ng, out · bits / 32]` | zero points minus one, packed along the output dimension: word `[g, j]` holds `z[j · 32/bits + k, g] − 1` |
//! | `scales` | F16 | `[ng, out]` | |
//! | `g_idx` | I32 | `[in]` | the group of each input column |
//!
//! `w[o, i] = (q[o, i] − z[o, g_idx[i]]) · scales[g_idx[i], o]`.
//!
//! AutoAWQ (GEMM, `version: "gemm"`), 4-bit only: `qweight` I32 `[in, out / 8]` and `qzeros`
//! I32 `[ng, out / 8]` packed along the output dimension in the order
//! `[0, 2, 4, 6, 1, 3, 5, 7]` (word `[i, j]` holds channel `j · 8 + ORDER[k]` at bits `4k`),
//! zero points stored as they are; `scales` F16 `[ng, out]`; `w[o, i] = (q − z) · s` of group
//! `i / group`.

use swift_plugin_tensors::tch::{Kind, Tensor};

use crate::{QuantError, Result};

/// AutoAWQ's packing order within a word.
pub const AWQ_ORDER: [i64; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Codes per int32 word.
fn per_word(bits: u8) -> Result<i64> {
    match bits {
        2 | 4 | 8 => Ok(32 / bits as i64),
        b => Err(QuantError::Config(format!(
            "the packed int32 layouts hold 2-, 4- or 8-bit codes, not {b}-bit"
        ))),
    }
}

/// Packs `[.., n]` codes along the last dimension into int32 words `[.., n / per_word]`,
/// `order[k]` of each run of `per_word` codes at bits `k · bits`.
fn pack_last(codes: &Tensor, bits: u8, order: &[i64]) -> Result<Tensor> {
    let pw = per_word(bits)?;
    let mut size = codes.size();
    let n = size.pop().unwrap_or(0);
    if n % pw != 0 {
        return Err(QuantError::Config(format!(
            "{n} values do not fill whole int32 words of {pw} {bits}-bit codes"
        )));
    }
    let mask = (1i64 << bits) - 1;
    let mut runs = size.clone();
    runs.extend([n / pw, pw]);
    let c = codes
        .f_to_kind(Kind::Int64)?
        .f_bitwise_and(mask)?
        .f_reshape(&runs)?;
    let mut word = Tensor::f_zeros_like(&c.f_select(-1, 0)?)?;
    for (k, &src) in order.iter().enumerate() {
        let part = c
            .f_select(-1, src)?
            .f_bitwise_left_shift_tensor_scalar(k as i64 * bits as i64)?;
        word = word.f_bitwise_or_tensor(&part)?;
    }
    // Words of 2^31 and above are the negative int32 with the same bits.
    let signed = word.f_sub(
        &word
            .f_ge(1i64 << 31)?
            .f_to_kind(Kind::Int64)?
            .f_mul_scalar(1i64 << 32)?,
    )?;
    Ok(signed.f_to_kind(Kind::Int)?)
}

/// Unpacks int32 words `[.., m]` into codes `[.., m · per_word]` (u8), undoing `order`.
fn unpack_last(words: &Tensor, bits: u8, order: &[i64]) -> Result<Tensor> {
    let pw = per_word(bits)?;
    let mask = (1i64 << bits) - 1;
    let w = words
        .f_to_kind(Kind::Int64)?
        .f_bitwise_and(0xFFFF_FFFFi64)?;
    // Code `dst` of a run sits in the field `k` with `order[k] == dst`.
    let parts = (0..pw)
        .map(|dst| {
            let k = order.iter().position(|&o| o == dst).ok_or_else(|| {
                QuantError::Config(format!("packing order {order:?} has no {dst}"))
            })?;
            Ok(
                w.f_bitwise_right_shift_tensor_scalar(k as i64 * bits as i64)?
                    .f_bitwise_and(mask)?,
            )
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let mut size = words.size();
    let m = size.pop().unwrap_or(0);
    size.push(m * pw);
    Ok(Tensor::f_stack(&parts, -1)?
        .f_reshape(&size)?
        .f_to_kind(Kind::Uint8)?)
}

fn natural(bits: u8) -> Result<Vec<i64>> {
    Ok((0..per_word(bits)?).collect())
}

/// GPTQ: u8 codes `[out, in]` → `qweight` `[in · bits/32, out]`.
pub fn gptq_pack_weight(q: &Tensor, bits: u8) -> Result<Tensor> {
    // Packed along the input dimension: words `[out, in · bits/32]`, stored transposed.
    let t = pack_last(&q.f_contiguous()?, bits, &natural(bits)?)?;
    Ok(t.f_transpose(0, 1)?.f_contiguous()?)
}

/// GPTQ: `qweight` `[in · bits/32, out]` → u8 codes `[out, in]`.
pub fn gptq_unpack_weight(qweight: &Tensor, bits: u8) -> Result<Tensor> {
    let codes = unpack_last(
        &qweight.f_transpose(0, 1)?.f_contiguous()?,
        bits,
        &natural(bits)?,
    )?;
    Ok(codes.f_contiguous()?)
}

/// GPTQ: integer zero points `[out, ng]` (f32, in `1..2^bits`) → `qzeros` `[ng, out · bits/32]`
/// (storing `z − 1`).
pub fn gptq_pack_zeros(zeros: &Tensor, bits: u8) -> Result<Tensor> {
    let z = zeros
        .f_transpose(0, 1)?
        .f_sub_scalar(1.0)?
        .f_to_kind(Kind::Int64)?;
    pack_last(&z.f_contiguous()?, bits, &natural(bits)?)
}

/// GPTQ: `qzeros` → zero points `[out, ng]` (f32), adding back the one.
pub fn gptq_unpack_zeros(qzeros: &Tensor, bits: u8) -> Result<Tensor> {
    let z = unpack_last(qzeros, bits, &natural(bits)?)?;
    Ok(z.f_to_kind(Kind::Float)?
        .f_add_scalar(1.0)?
        .f_transpose(0, 1)?
        .f_contiguous()?)
}

/// AWQ: u8 codes `[out, in]` → `qweight` `[in, out / 8]`.
pub fn awq_pack_weight(q: &Tensor) -> Result<Tensor> {
    pack_last(&q.f_transpose(0, 1)?.f_contiguous()?, 4, &AWQ_ORDER)
}

/// AWQ: `qweight` `[in, out / 8]` → u8 codes `[out, in]`.
pub fn awq_unpack_weight(qweight: &Tensor) -> Result<Tensor> {
    Ok(unpack_last(qweight, 4, &AWQ_ORDER)?
        .f_transpose(0, 1)?
        .f_contiguous()?)
}

/// AWQ: integer zero points `[out, ng]` (f32) → `qzeros` `[ng, out / 8]`.
pub fn awq_pack_zeros(zeros: &Tensor) -> Result<Tensor> {
    let z = zeros.f_transpose(0, 1)?.f_contiguous()?;
    pack_last(&z, 4, &AWQ_ORDER)
}

/// AWQ: `qzeros` → zero points `[out, ng]` (f32).
pub fn awq_unpack_zeros(qzeros: &Tensor) -> Result<Tensor> {
    Ok(unpack_last(qzeros, 4, &AWQ_ORDER)?
        .f_to_kind(Kind::Float)?
        .f_transpose(0, 1)?
        .f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gptq_words_hold_consecutive_input_columns_lowest_bits_first() {
        // One output row, 8 input columns 1..=8 (4-bit): one word 0x87654321.
        let q = Tensor::from_slice(&[1u8, 2, 3, 4, 5, 6, 7, 8]).view([1, 8]);
        let w = gptq_pack_weight(&q, 4).unwrap();
        assert_eq!(w.size(), [1, 1]);
        assert_eq!(
            Vec::<i32>::try_from(w.view(-1)).unwrap()[0] as u32,
            0x8765_4321
        );
        let back = gptq_unpack_weight(&w, 4).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(back.view(-1)).unwrap(),
            (1..=8).collect::<Vec<u8>>()
        );
        // A top nibble of 15 makes a negative int32 and survives.
        let q = Tensor::from_slice(&[15u8; 8]).view([1, 8]);
        let w = gptq_pack_weight(&q, 4).unwrap();
        assert_eq!(Vec::<i32>::try_from(w.view(-1)).unwrap()[0], -1);
        assert_eq!(
            Vec::<u8>::try_from(gptq_unpack_weight(&w, 4).unwrap().view(-1)).unwrap(),
            vec![15; 8]
        );
    }

    #[test]
    fn gptq_zeros_are_stored_minus_one_along_the_output_dimension() {
        // 8 output rows, one group, zeros 1..=8 → stored 0..=7: 0x76543210.
        let z = Tensor::from_slice(&[1.0f32, 2., 3., 4., 5., 6., 7., 8.]).view([8, 1]);
        let qz = gptq_pack_zeros(&z, 4).unwrap();
        assert_eq!(qz.size(), [1, 1]);
        assert_eq!(Vec::<i32>::try_from(qz.view(-1)).unwrap()[0], 0x7654_3210);
        let back = gptq_unpack_zeros(&qz, 4).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(back.view(-1)).unwrap(),
            vec![1., 2., 3., 4., 5., 6., 7., 8.]
        );
    }

    #[test]
    fn awq_words_interleave_output_channels_in_autoawq_order() {
        // One input column, output channels 0..8 with codes 0..8: the word holds channels
        // 0, 2, 4, 6, 1, 3, 5, 7 from the lowest nibble up.
        let q = Tensor::from_slice(&[0u8, 1, 2, 3, 4, 5, 6, 7]).view([8, 1]);
        let w = awq_pack_weight(&q).unwrap();
        assert_eq!(w.size(), [1, 1]);
        assert_eq!(
            Vec::<i32>::try_from(w.view(-1)).unwrap()[0] as u32,
            0x7531_6420
        );
        let back = awq_unpack_weight(&w).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(back.view(-1)).unwrap(),
            (0..8).collect::<Vec<u8>>()
        );
    }
}
