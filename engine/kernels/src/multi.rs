//! Several products of one activation in ONE pool job: a decoder's q/k/v projections (and its
//! gate/up ones) read the same input, and a batch-1 decoding step otherwise hands each to the
//! pool separately, a wake/claim/finish round trip (and the wait for its last task) per product.
//! [`matmul_many`] quantizes the activation once (where a weight is packed) and runs one task
//! list over the rows of every matrix: each matrix is cut into the very tasks
//! [`crate::split_rows`] would give it alone ([`crate::cut_rows`]), each task run by the same
//! block kernel with the same arguments, so every output is bit for bit that of the separate
//! call ([`crate::skinny_matmul`], [`crate::quant_matmul`]); only who computes it, and when, changes.

use crate::quant::{check_blocks, with_acts, Blocks, Packed};
use crate::{
    cut_rows, dot, float_chunk, float_task, pool, task_into, ShapeError, SharedOut, Weights,
    MAX_ROWS, WIDE_ROWS,
};

/// One matrix of a [`matmul_many`] call.
#[derive(Clone, Copy, Debug)]
pub enum ProductWeights<'a> {
    /// Float weights, as [`crate::skinny_matmul`] takes them.
    Float(Weights<'a>),
    /// Packed blocks, as [`crate::quant_matmul`] takes them (8-bit activations).
    Blocks(Blocks<'a>),
}

impl ProductWeights<'_> {
    /// The weight's row count at width `k` (whole rows only; [`matmul_many`] checks the rest).
    pub fn rows(&self, k: usize) -> usize {
        match self {
            ProductWeights::Float(w) => w.len() / k.max(1),
            ProductWeights::Blocks(b) => b.data.len() / b.ty.row_bytes(k).max(1),
        }
    }
}

/// One product of a [`matmul_many`] call: `y[m, n] = x · wᵀ (+ bias)`.
pub struct Product<'a, 'y> {
    pub weights: ProductWeights<'a>,
    pub bias: Option<&'a [f32]>,
    pub y: &'y mut [f32],
}

/// Every product of `parts` over the same `x` (`[m, k]`: `1 ≤ m ≤ WIDE_ROWS` over float weights,
/// a decoding step of a continuous batch; at most `MAX_ROWS` where a weight is packed), in one pool job;
/// each output equals that of its own [`crate::skinny_matmul`] / [`crate::quant_matmul`] call
/// bit for bit. Shapes are all checked before anything is computed.
pub fn matmul_many(
    x: &[f32],
    m: usize,
    k: usize,
    parts: &mut [Product<'_, '_>],
) -> Result<(), ShapeError> {
    if m == 0 || m > WIDE_ROWS || k == 0 || x.len() != m * k {
        return Err(ShapeError(format!(
            "matmul_many takes 1..={WIDE_ROWS} rows of a non-empty width; got {} values for {m} × {k}",
            x.len()
        )));
    }
    // Per part: its weight row count.
    let mut ns = Vec::with_capacity(parts.len());
    for p in parts.iter() {
        let n = match p.weights {
            ProductWeights::Float(w) if w.len().is_multiple_of(k) => w.len() / k,
            ProductWeights::Float(w) => {
                return Err(ShapeError(format!(
                    "w holds {} values, not a multiple of {k}",
                    w.len()
                )))
            }
            ProductWeights::Blocks(w) => check_blocks(x, m, k, w, MAX_ROWS)?,
        };
        if p.y.len() != m * n || p.bias.is_some_and(|b| b.len() != n) {
            return Err(ShapeError(format!(
                "y holds {} values for {m} × {n}; bias {:?} for {n}",
                p.y.len(),
                p.bias.map(<[f32]>::len)
            )));
        }
        ns.push(n);
    }
    // The tasks: (part, first row, rows), each part cut as `split_rows` cuts it alone, the
    // largest of all parts first (so that the job ends on small tasks, as `cut_rows` says).
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (i, &n) in ns.iter().enumerate() {
        tasks.extend(
            cut_rows(n)
                .into_iter()
                .map(|(first, rows)| (i, first, rows)),
        );
    }
    tasks.sort_by_key(|&(_, _, rows)| std::cmp::Reverse(rows));
    // Each task writes its results to its columns of its part's `y` (`crate::task_into`).
    let outs: Vec<SharedOut> = parts
        .iter_mut()
        .map(|p| SharedOut(p.y.as_mut_ptr(), p.y.len()))
        .collect();
    let weights: Vec<ProductWeights<'_>> = parts.iter().map(|p| p.weights).collect();
    let (f32_kernel, bf16_kernel) = (dot::select(), dot::select_bf16());
    let qkernel = crate::quant::select().1;
    let any_packed = weights
        .iter()
        .any(|w| matches!(w, ProductWeights::Blocks(_)));
    let bytes: Vec<&[u8]> = weights
        .iter()
        .map(|w| match w {
            ProductWeights::Float(f) => f.bytes(),
            ProductWeights::Blocks(b) => b.data,
        })
        .collect();
    let job = |acts: Option<&crate::QuantizedActs>| {
        pool::read_ahead_after_next(crate::ahead::after(&bytes));
        pool::pool().run(tasks.len(), &|t| {
            let (i, first, rows) = tasks[t];
            let w = weights[i];
            let chunk = match w {
                ProductWeights::Float(f) => float_chunk(f, m),
                ProductWeights::Blocks(_) => m,
            };
            let into = |out: &mut [f32]| match (w, acts) {
                (ProductWeights::Float(w @ Weights::F32(_)), _) => {
                    float_task(f32_kernel, x, m, k, w, first, rows, out)
                }
                (ProductWeights::Float(w @ Weights::Bf16(_)), _) => {
                    float_task(bf16_kernel, x, m, k, w, first, rows, out)
                }
                (ProductWeights::Blocks(w), Some(a)) => {
                    qkernel(a, m, k, Packed::Blocks(w), first, rows, out)
                }
                (ProductWeights::Blocks(_), None) => {
                    unreachable!("activations are quantized whenever a weight is packed")
                }
            };
            // SAFETY: tasks write disjoint columns `first..first + rows` of their part's `y`
            // (`[m, n]`), which outlives `run` (it returns only when every task is done).
            unsafe { task_into(outs[i], ns[i], m, chunk, first, rows, into) };
        });
    };
    if any_packed {
        with_acts(x, m, k, |a| job(Some(a)));
    } else {
        job(None);
    }
    for (p, &n) in parts.iter_mut().zip(&ns) {
        if let Some(b) = p.bias {
            for row in p.y.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift_values as values;
    use crate::{interleave, quant_matmul, skinny_matmul, BlockType, QK};

    /// Q8_0 blocks of `n` rows of width `k` (scale then 32 codes per block), from `seed`.
    fn q8_rows(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let codes = values(n * k, seed);
        let mut out = Vec::new();
        for (b, c) in codes.chunks_exact(QK).enumerate() {
            // float16 scales between about 0.004 and 0.03.
            let scale = 0x1C00u16 + (b as u16 * 37) % 0x0800;
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(c.iter().map(|v| (v * 127.0) as i8 as u8));
        }
        out
    }

    #[test]
    fn many_products_equal_their_separate_calls_bit_for_bit() {
        let k = 3 * QK;
        // Row counts that split into several tasks, a ragged last task and a single one.
        let sizes = [200usize, 72, 40];
        // Past MAX_ROWS (a continuous batch's decoding step): float parts only, walked in
        // chunks (9, 16) or on the tiles (17, WIDE_ROWS) where the CPU has them.
        for m in [1usize, 3, MAX_ROWS, 9, 16, 17, WIDE_ROWS] {
            let x = values(m * k, 7 + m as u64);
            let floats: Vec<Vec<f32>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| values(n * k, 100 + i as u64))
                .collect();
            let bf16: Vec<u16> = floats[1]
                .iter()
                .map(|v| (v.to_bits() >> 16) as u16)
                .collect();
            let mut q8: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| q8_rows(n, k, 200 + i as u64))
                .collect();
            for q in &mut q8[1..] {
                interleave(BlockType::Q8_0, q, k).expect("whole groups of eight rows");
            }
            let blocks = |i: usize| Blocks {
                ty: BlockType::Q8_0,
                data: &q8[i],
                interleaved: i > 0,
            };
            let bias = values(sizes[0], 9);
            let weights = [
                ProductWeights::Float(Weights::F32(&floats[0])),
                ProductWeights::Float(Weights::Bf16(&bf16)),
                ProductWeights::Blocks(blocks(0)),
                ProductWeights::Blocks(blocks(1)),
                ProductWeights::Blocks(blocks(2)),
            ];
            let parts_now = if m <= MAX_ROWS { 5 } else { 2 };
            let weights = &weights[..parts_now];
            let rows = &[sizes[0], sizes[1], sizes[0], sizes[1], sizes[2]][..parts_now];
            // Separately.
            let mut want: Vec<Vec<f32>> = rows.iter().map(|&n| vec![0f32; m * n]).collect();
            for (i, w) in weights.iter().enumerate() {
                let b = (rows[i] == sizes[0]).then_some(&bias[..]);
                match *w {
                    ProductWeights::Float(f) => skinny_matmul(&x, m, k, f, b, &mut want[i]),
                    ProductWeights::Blocks(q) => quant_matmul(&x, m, k, q, b, &mut want[i]),
                }
                .expect("shapes fit");
            }
            // Together.
            let mut got: Vec<Vec<f32>> = rows.iter().map(|&n| vec![0f32; m * n]).collect();
            let mut parts: Vec<Product<'_, '_>> = weights
                .iter()
                .zip(got.iter_mut())
                .zip(rows.iter().copied())
                .map(|((&w, y), n)| Product {
                    weights: w,
                    bias: (n == sizes[0]).then_some(&bias[..]),
                    y,
                })
                .collect();
            matmul_many(&x, m, k, &mut parts).expect("shapes fit");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "part {i} at {m} rows differs"
                );
            }
            // And each row of a float32 part is the product of that row alone (one walk; a
            // bfloat16 walk of one row may sum in another order).
            for (i, w) in weights.iter().enumerate() {
                let (ProductWeights::Float(f @ Weights::F32(_)), n) = (*w, rows[i]) else {
                    continue;
                };
                let b = (n == sizes[0]).then_some(&bias[..]);
                for j in 0..m {
                    let mut alone = vec![0f32; n];
                    skinny_matmul(&x[j * k..(j + 1) * k], 1, k, f, b, &mut alone)
                        .expect("shapes fit");
                    assert!(
                        got[i][j * n..(j + 1) * n]
                            .iter()
                            .zip(&alone)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "part {i}, row {j} of {m} differs from the row alone"
                    );
                }
            }
        }
    }

    #[test]
    fn packed_parts_past_max_rows_are_refused() {
        let k = QK;
        let m = MAX_ROWS + 1;
        let x = values(m * k, 1);
        let q = q8_rows(8, k, 2);
        let mut y = vec![7f32; m * 8];
        let mut parts = [Product {
            weights: ProductWeights::Blocks(Blocks {
                ty: BlockType::Q8_0,
                data: &q,
                interleaved: false,
            }),
            bias: None,
            y: &mut y,
        }];
        matmul_many(&x, m, k, &mut parts).expect_err("packed weights take MAX_ROWS rows");
        assert!(y.iter().all(|&v| v == 7.0), "nothing written");
    }

    #[test]
    fn a_misshapen_part_is_refused_before_anything_is_computed() {
        let k = QK;
        let x = values(k, 1);
        let w = values(4 * k, 2);
        let mut ok = vec![7f32; 4];
        let mut short = vec![7f32; 3];
        let mut parts = [
            Product {
                weights: ProductWeights::Float(Weights::F32(&w)),
                bias: None,
                y: &mut ok,
            },
            Product {
                weights: ProductWeights::Float(Weights::F32(&w)),
                bias: None,
                y: &mut short,
            },
        ];
        let e = matmul_many(&x, 1, k, &mut parts).expect_err("3 outputs for 4 rows");
        assert!(e.0.contains("y holds 3 values"), "{e}");
        assert!(ok.iter().all(|&v| v == 7.0), "nothing written");
    }
}
