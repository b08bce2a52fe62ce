//! The interleaved layout of Q8_0, Q4_0 and Q4_1 weights (as llama.cpp repacks Q4_0 at load,
//! `ggml-cpu/repack.cpp`, `block_q4_0x8`): each group of [`GROUP`] (8) consecutive output rows
//! stores its blocks side by side, block column by block column, so that a 256-bit register holds
//! four consecutive codes of each of the eight rows, one row per 32-bit lane. One integer dot
//! product (`vpdpbusd`) against four activation codes broadcast to every lane then advances all
//! eight rows, each lane sums exactly one row's products, and a block's eight scales come in one
//! load ([`interleave`], in place: the weight keeps its size). The kernels read it when
//! [`crate::Blocks::interleaved`] is set.
//!
//! For rows `8g..8g + 8` and block column `b`, the `8 · block bytes` from `(g · nb + b) · 8 ·
//! block bytes` (`nb = k / 32`) hold:
//! * a header: the eight rows' float16 scales `d` (16 bytes), and for Q4_1 then their eight mins
//!   `m` (16 more);
//! * Q4_0, Q4_1: four stretches of 32 bytes; stretch `p` holds bytes `4p..4p + 4` of each row's
//!   16 bytes of nibbles, row `i` at `4i` (their low nibbles are elements `4p..4p + 4`, their high
//!   ones `16 + 4p..16 + 4p + 4`, as in the block);
//! * Q8_0: eight stretches of 32 bytes; stretch `p` holds codes `4p..4p + 4` of each row, row `i`
//!   at `4i`, each stored as `q + 128` (`q ^ 0x80`), unsigned, so a VNNI product takes it as it
//!   is and the `128 · Σq_x` it adds is taken off per block in integers (as Q4_0's `− 8`).
//!
//! The last `n mod 8` rows stay as they were, after the groups.

use crate::quant::BlockType;
use crate::ShapeError;

/// Rows interleaved together.
pub const GROUP: usize = 8;

/// Whether [`interleave`] repacks `ty` (Q8_0, Q4_0 and Q4_1).
pub const fn interleaves(ty: BlockType) -> bool {
    matches!(ty, BlockType::Q8_0 | BlockType::Q4_0 | BlockType::Q4_1)
}

/// Bytes of the header before the codes of an interleaved block column.
pub(crate) const fn header(ty: BlockType) -> usize {
    match ty {
        BlockType::Q4_1 => 4 * GROUP,
        _ => 2 * GROUP,
    }
}

/// Where row `i`'s codes of a block start in the block, and how many 4-byte pieces they make.
fn codes(ty: BlockType) -> (usize, usize) {
    match ty {
        BlockType::Q8_0 => (2, 8),
        BlockType::Q4_0 => (2, 4),
        _ => (4, 4),
    }
}

/// The byte `code ^ flip` of a stored code (Q8_0's codes are stored `q + 128`).
fn flip(ty: BlockType) -> u8 {
    if ty == BlockType::Q8_0 {
        0x80
    } else {
        0
    }
}

/// Row `i` of a group, block `b`, from the original row layout into the interleaved block
/// column `col`.
fn put(ty: BlockType, blk: &[u8], i: usize, col: &mut [u8]) {
    col[2 * i..2 * i + 2].copy_from_slice(&blk[..2]);
    if ty == BlockType::Q4_1 {
        col[2 * GROUP + 2 * i..2 * GROUP + 2 * i + 2].copy_from_slice(&blk[2..4]);
    }
    let (h, (at, pieces), f) = (header(ty), codes(ty), flip(ty));
    for p in 0..pieces {
        let to = h + 4 * (GROUP * p + i);
        for t in 0..4 {
            col[to + t] = blk[at + 4 * p + t] ^ f;
        }
    }
}

/// The inverse of [`put`]: row `i`'s block from the interleaved block column `col`.
fn take(ty: BlockType, col: &[u8], i: usize, blk: &mut [u8]) {
    blk[..2].copy_from_slice(&col[2 * i..2 * i + 2]);
    if ty == BlockType::Q4_1 {
        blk[2..4].copy_from_slice(&col[2 * GROUP + 2 * i..2 * GROUP + 2 * i + 2]);
    }
    let (h, (at, pieces), f) = (header(ty), codes(ty), flip(ty));
    for p in 0..pieces {
        let from = h + 4 * (GROUP * p + i);
        for t in 0..4 {
            blk[at + 4 * p + t] = col[from + t] ^ f;
        }
    }
}

/// Checks that `data` is whole rows of `k` values of `ty`; the row count.
fn rows(ty: BlockType, data: &[u8], k: usize) -> Result<usize, ShapeError> {
    let rb = ty.row_bytes(k);
    if !interleaves(ty) || k == 0 || !k.is_multiple_of(ty.block_elems()) {
        return Err(ShapeError(format!(
            "{} rows of width {k} are not interleaved (Q8_0, Q4_0 and Q4_1 rows of a non-zero multiple of 32 are)",
            ty.name()
        )));
    }
    if !data.len().is_multiple_of(rb) {
        return Err(ShapeError(format!(
            "{} bytes are not whole {} rows of {rb} bytes",
            data.len(),
            ty.name()
        )));
    }
    Ok(data.len() / rb)
}

/// Repacks `[n, k]` weights of `ty` (Q8_0, Q4_0 or Q4_1), row after row, into the interleaved
/// layout, in place.
pub fn interleave(ty: BlockType, data: &mut [u8], k: usize) -> Result<(), ShapeError> {
    let n = rows(ty, data, k)?;
    let (bb, nb) = (ty.block_bytes(), k / crate::QK);
    let span = GROUP * nb * bb;
    let mut rows4 = vec![0u8; span];
    for g in data[..n / GROUP * span].chunks_exact_mut(span) {
        rows4.copy_from_slice(g);
        for (b, col) in g.chunks_exact_mut(GROUP * bb).enumerate() {
            for i in 0..GROUP {
                let at = (i * nb + b) * bb;
                put(ty, &rows4[at..at + bb], i, col);
            }
        }
    }
    Ok(())
}

/// The inverse of [`interleave`], in place: the rows one after the other again.
pub fn deinterleave(ty: BlockType, data: &mut [u8], k: usize) -> Result<(), ShapeError> {
    let n = rows(ty, data, k)?;
    let (bb, nb) = (ty.block_bytes(), k / crate::QK);
    let span = GROUP * nb * bb;
    let mut cols = vec![0u8; span];
    for g in data[..n / GROUP * span].chunks_exact_mut(span) {
        cols.copy_from_slice(g);
        for (b, col) in cols.chunks_exact(GROUP * bb).enumerate() {
            for i in 0..GROUP {
                let at = (i * nb + b) * bb;
                take(ty, col, i, &mut g[at..at + bb]);
            }
        }
    }
    Ok(())
}

/// Row `r` of interleaved weights (`[n, k]`, `data.len()` whole rows) in the original row
/// layout, into `out` (one row's bytes).
pub fn interleaved_row(ty: BlockType, data: &[u8], k: usize, r: usize, out: &mut [u8]) {
    let (bb, nb, rb) = (ty.block_bytes(), k / crate::QK, ty.row_bytes(k));
    let n = data.len() / rb;
    let n4 = n / GROUP * GROUP;
    if r >= n4 {
        out[..rb].copy_from_slice(&data[r * rb..(r + 1) * rb]);
        return;
    }
    let (g, i) = (r / GROUP, r % GROUP);
    for (b, blk) in out[..rb].chunks_exact_mut(bb).enumerate() {
        let at = (g * nb + b) * GROUP * bb;
        take(ty, &data[at..at + GROUP * bb], i, blk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips_and_rows_read_back() {
        for ty in [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1] {
            for (n, k) in [
                (1usize, 32usize),
                (4, 64),
                (9, 96),
                (19, 576),
                (8, 64),
                (17, 32),
            ] {
                let rb = ty.row_bytes(k);
                let orig: Vec<u8> = (0..n * rb).map(|i| (i * 131 % 251) as u8).collect();
                let mut data = orig.clone();
                interleave(ty, &mut data, k).unwrap();
                if n >= GROUP {
                    assert_ne!(data, orig, "{ty:?} {n}x{k}");
                }
                let mut row = vec![0u8; rb];
                for r in 0..n {
                    interleaved_row(ty, &data, k, r, &mut row);
                    assert_eq!(row, orig[r * rb..(r + 1) * rb], "{ty:?} {n}x{k} row {r}");
                }
                deinterleave(ty, &mut data, k).unwrap();
                assert_eq!(data, orig, "{ty:?} {n}x{k}");
            }
        }
        let mut data = vec![0u8; 210];
        assert!(interleave(BlockType::Q6_K, &mut data, 256).is_err());
        let mut data = vec![0u8; 35];
        assert!(interleave(BlockType::Q8_0, &mut data, 32).is_err());
    }
}
