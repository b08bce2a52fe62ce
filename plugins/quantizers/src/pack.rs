//! Two 4-bit codes per byte along the last dimension: element `2j` in the low nibble, element
//! `2j+1` in the high nibble (an odd length is padded with a zero code).

use swift_plugin_tensors::tch::{Kind, TchError, Tensor};

/// Packs codes in `0..16` (any integer kind) `[.., n]` into bytes `[.., ceil(n/2)]`.
pub fn pack4(codes: &Tensor) -> Result<Tensor, TchError> {
    let mut c = codes.f_to_kind(Kind::Uint8)?;
    let n = *c.size().last().unwrap_or(&0);
    if n % 2 == 1 {
        let mut shape = c.size();
        *shape.last_mut().unwrap_or(&mut 0) = 1;
        let pad = Tensor::f_zeros(&shape, (Kind::Uint8, c.device()))?;
        c = Tensor::f_cat(&[&c, &pad], -1)?;
    }
    let lo = c.f_slice(-1, 0, None, 2)?;
    let hi = c.f_slice(-1, 1, None, 2)?;
    lo.f_bitwise_or_tensor(&hi.f_bitwise_left_shift_tensor_scalar(4)?)
}

/// Unpacks bytes `[.., m]` into `n ≤ 2m` codes `[.., n]` (u8).
pub fn unpack4(packed: &Tensor, n: i64) -> Result<Tensor, TchError> {
    let lo = packed.f_bitwise_and(15)?;
    let hi = packed.f_bitwise_right_shift_tensor_scalar(4)?;
    let both = Tensor::f_stack(&[lo, hi], -1)?;
    let mut shape = packed.size();
    let m = shape.pop().unwrap_or(0);
    shape.push(2 * m);
    let flat = both.f_reshape(&shape)?;
    flat.f_narrow(-1, 0, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_low_first_and_round_trip() {
        let codes = Tensor::from_slice(&[1u8, 2, 15, 0, 7]).view([1, 5]);
        let p = pack4(&codes).unwrap();
        // 1 | 2<<4 = 0x21, 15 | 0 = 0x0f, 7 | 0 (pad) = 0x07
        assert_eq!(
            Vec::<u8>::try_from(p.view(-1)).unwrap(),
            vec![0x21, 0x0f, 0x07]
        );
        let back = unpack4(&p, 5).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(back.view(-1)).unwrap(),
            vec![1, 2, 15, 0, 7]
        );
    }
}
