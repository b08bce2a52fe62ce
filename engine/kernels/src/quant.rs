//! Matrix products straight from packed 8-bit and 4-bit weight blocks (GGUF's Q8_0, Q4_0, Q4_1),
//! for decoding: [`quant_matmul`] never expands a weight to float.
//!
//! As llama.cpp does, the activation rows are quantized too, to 8 bits per block of 32 with one
//! float32 scale (`d = max|x| / 127`, `q = round(x / d)`, and for Q4_1 weights the block's sum
//! `d · Σq`); each block's product is then an exact integer dot product, scaled once by
//! `d_w · d_x` (and for Q4_1 plus `m_w · d_x Σq_x`) and summed in float32. x86-64 CPUs take
//! AVX-512 VNNI (`vpdpbusd`) or AVX2 (`vpmaddubsw`) paths picked at run time (`quant_x86.rs`);
//! others a portable loop. Weight rows are split between the caller and the crate's worker
//! pool, as in [`crate::skinny_matmul`].
//!
//! Block layouts (little-endian, as ggml's `block_q8_0`, `block_q4_0`, `block_q4_1`):
//! * Q8_0, 34 bytes: float16 `d`, 32 × int8 `q`; value `d · q`.
//! * Q4_0, 18 bytes: float16 `d`, 16 bytes of nibbles (element `i < 16` in the low nibble of
//!   byte `i`, element `16 + i` in its high nibble); value `d · (q − 8)`.
//! * Q4_1, 20 bytes: float16 `d`, float16 `m`, nibbles as Q4_0; value `d · q + m`.

use crate::{split_rows, ShapeError, MAX_ROWS};

/// Elements per block, in every layout here.
pub const QK: usize = 32;

/// A packed block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    Q8_0,
    Q4_0,
    Q4_1,
}

impl BlockType {
    /// Bytes of one block of [`QK`] elements.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
        }
    }

    /// Bytes of one row of `k` elements (`k` a multiple of [`QK`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / QK * self.block_bytes()
    }

    pub const fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
        }
    }
}

/// A packed `[n, k]` weight matrix: `n` rows of `k / QK` blocks each, row after row.
#[derive(Clone, Copy, Debug)]
pub struct Blocks<'a> {
    pub ty: BlockType,
    pub data: &'a [u8],
}

/// A `[n, k]` weight in the group-wise affine layout of swift-rs's own quantized folders (`rtn`,
/// `hqq`, `gptq`, `awq`): one unsigned code per byte (`codes`, `[n, k]`), and per row and
/// group of `group` columns a `scale` and a `min` (`[n, k / group]`), `w = q · scale + min`.
/// `group` is a multiple of [`QK`]; `bits` ≤ 8.
#[derive(Clone, Copy, Debug)]
pub struct AffineCodes<'a> {
    pub codes: &'a [u8],
    pub scales: &'a [f32],
    pub mins: &'a [f32],
    pub group: usize,
    pub bits: u8,
}

/// The packed weights a kernel reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Packed<'a> {
    Blocks(Blocks<'a>),
    Affine(AffineCodes<'a>),
}

/// Activation rows quantized to 8 bits per block: `q` (`[m, k]`), per block `d` and `s = d · Σq`
/// (`[m, k / QK]`).
#[derive(Default)]
pub struct QuantizedActs {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes `m` rows of `x` (`[m, k]`, `k` a multiple of [`QK`]), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        let nb = k / QK;
        self.q.clear();
        self.q.resize(m * k, 0);
        self.d.clear();
        self.d.resize(m * nb, 0.0);
        self.s.clear();
        self.s.resize(m * nb, 0.0);
        for (b, (xs, qs)) in x[..m * k]
            .chunks_exact(QK)
            .zip(self.q.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(xs) {
                // `round` rounds halves away from zero, as llama.cpp's `roundf`.
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }
}

/// A float16 bit pattern as float32 (subnormals, infinities and NaN included).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 => (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        31 => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | bits)
}

#[inline(always)]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Decodes one packed row (`row.len()` a whole number of blocks) into `out`.
pub fn dequantize_row(ty: BlockType, row: &[u8], out: &mut [f32]) {
    for (blk, o) in row
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(QK))
    {
        let d = half_at(blk, 0);
        match ty {
            BlockType::Q8_0 => {
                for (o, &q) in o.iter_mut().zip(&blk[2..]) {
                    *o = d * q as i8 as f32;
                }
            }
            BlockType::Q4_0 | BlockType::Q4_1 => {
                let (m, qs) = match ty {
                    BlockType::Q4_1 => (half_at(blk, 2), &blk[4..20]),
                    _ => (-8.0 * d, &blk[2..18]),
                };
                for (i, &b) in qs.iter().enumerate() {
                    o[i] = d * (b & 15) as f32 + m;
                    o[i + 16] = d * (b >> 4) as f32 + m;
                }
            }
        }
    }
}

/// `out[r * m + j] = Σ_c x[j, c] · w[first + r, c]` over the quantized activations, for the
/// `rows` weight rows from `first`.
pub(crate) type QKernel = fn(&QuantizedActs, usize, usize, Packed<'_>, usize, usize, &mut [f32]);

/// The fastest kernel this CPU runs (`SWIFT_QKERNEL=vnni|avx2|portable` narrows the choice).
fn select() -> (&'static str, QKernel) {
    static CHOICE: std::sync::OnceLock<(&'static str, QKernel)> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let wanted = std::env::var("SWIFT_QKERNEL").unwrap_or_default();
        available()
            .into_iter()
            .find(|(name, _)| wanted.is_empty() || *name == wanted)
            .unwrap_or(("portable", portable as QKernel))
    })
}

/// The name of the kernel [`quant_matmul`] uses on this CPU (for logs and benchmarks).
pub fn quant_kernel_name() -> &'static str {
    select().0
}

/// Every quantized kernel this CPU can run, fastest first.
pub(crate) fn available() -> Vec<(&'static str, QKernel)> {
    let mut out: Vec<(&'static str, QKernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    out.extend(crate::quant_x86::available());
    out.push(("portable", portable));
    out
}

/// Panics unless every read and write of a [`QKernel`] call stays inside its slices (what the
/// vector kernels' unchecked loads rely on).
pub(crate) fn check_bounds(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: &[f32],
) {
    let nb = k / QK;
    let end = first + rows;
    let weights_fit = match w {
        Packed::Blocks(b) => b.data.len() >= end * b.ty.row_bytes(k),
        Packed::Affine(a) => {
            a.group >= QK
                && a.group.is_multiple_of(QK)
                && a.codes.len() >= end * k
                && a.scales.len() >= end * k.div_ceil(a.group)
                && a.mins.len() >= end * k.div_ceil(a.group)
        }
    };
    assert!(
        (1..=MAX_ROWS).contains(&m)
            && k.is_multiple_of(QK)
            && a.q.len() >= m * k
            && a.d.len() >= m * nb
            && a.s.len() >= m * nb
            && out.len() >= rows * m
            && weights_fit
    );
}

/// Plain Rust.
pub(crate) fn portable(
    a: &QuantizedActs,
    m: usize,
    k: usize,
    w: Packed<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    check_bounds(a, m, k, w, first, rows, out);
    let nb = k / QK;
    // Per weight row and block: its 32 values as (unsigned codes or signed values), its scale
    // and its offset (the `min` that multiplies `d_x Σq_x`).
    let mut codes = [0i32; QK];
    for r in 0..rows {
        let row = first + r;
        for j in 0..m {
            let mut acc = 0f32;
            for b in 0..nb {
                let xq = &a.q[j * k + b * QK..j * k + (b + 1) * QK];
                let (dx, sx) = (a.d[j * nb + b], a.s[j * nb + b]);
                let (dw, mw) = match w {
                    Packed::Blocks(bl) => {
                        let bb = bl.ty.block_bytes();
                        let blk = &bl.data[(row * nb + b) * bb..(row * nb + b + 1) * bb];
                        match bl.ty {
                            BlockType::Q8_0 => {
                                for (c, &v) in codes.iter_mut().zip(&blk[2..]) {
                                    *c = v as i8 as i32;
                                }
                                (half_at(blk, 0), 0.0)
                            }
                            BlockType::Q4_0 | BlockType::Q4_1 => {
                                let q4_1 = bl.ty == BlockType::Q4_1;
                                let qs = if q4_1 { &blk[4..20] } else { &blk[2..18] };
                                let shift = if q4_1 { 0 } else { 8 };
                                for (i, &v) in qs.iter().enumerate() {
                                    codes[i] = (v & 15) as i32 - shift;
                                    codes[i + 16] = (v >> 4) as i32 - shift;
                                }
                                let mw = if q4_1 { half_at(blk, 2) } else { 0.0 };
                                (half_at(blk, 0), mw)
                            }
                        }
                    }
                    Packed::Affine(af) => {
                        for (c, &v) in codes.iter_mut().zip(&af.codes[row * k + b * QK..]) {
                            *c = v as i32;
                        }
                        let g = row * k.div_ceil(af.group) + b * QK / af.group;
                        (af.scales[g], af.mins[g])
                    }
                };
                let dot: i32 = codes.iter().zip(xq).map(|(&c, &x)| c * x as i32).sum();
                acc += dw * dx * dot as f32 + mw * sx;
            }
            out[r * m + j] = acc;
        }
    }
}

thread_local! {
    /// The quantized activations of the current call, kept between calls.
    static ACTS: std::cell::RefCell<QuantizedActs> = std::cell::RefCell::new(QuantizedActs::default());
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])` with `w` packed, `1 ≤ m ≤ MAX_ROWS`, `k` a
/// multiple of [`QK`]; the activations are quantized to 8 bits per block first (see the
/// module's docs). Weight rows are split between the calling thread and the kernel's workers.
pub fn quant_matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: Blocks<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    check_activations(x, m, k)?;
    let rb = w.ty.row_bytes(k);
    if !w.data.len().is_multiple_of(rb) {
        return Err(ShapeError(format!(
            "w holds {} bytes, not a whole number of {} rows of {rb} bytes",
            w.data.len(),
            w.ty.name()
        )));
    }
    run(x, m, k, w.data.len() / rb, Packed::Blocks(w), bias, y)
}

/// [`quant_matmul`] for a weight in the group-wise affine layout ([`AffineCodes`]).
pub fn affine_matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: AffineCodes<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    check_activations(x, m, k)?;
    let ok_group = w.group >= QK && w.group.is_multiple_of(QK) && w.bits <= 8;
    let n = w.codes.len() / k;
    let ng = k.div_ceil(w.group.max(1));
    if !ok_group
        || !w.codes.len().is_multiple_of(k)
        || w.scales.len() != n * ng
        || w.mins.len() != n * ng
    {
        return Err(ShapeError(format!(
            "affine weights: {} codes, {} scales, {} mins, group {}, {} bits for width {k} (the group must be a multiple of {QK}, at most 8 bits)",
            w.codes.len(),
            w.scales.len(),
            w.mins.len(),
            w.group,
            w.bits
        )));
    }
    run(x, m, k, n, Packed::Affine(w), bias, y)
}

fn check_activations(x: &[f32], m: usize, k: usize) -> Result<(), ShapeError> {
    if m == 0 || m > MAX_ROWS || k == 0 || !k.is_multiple_of(QK) || x.len() != m * k {
        return Err(ShapeError(format!(
            "the quantized products take 1..={MAX_ROWS} rows of a non-zero width that is a multiple of {QK}; got {} values for {m} × {k}",
            x.len()
        )));
    }
    Ok(())
}

/// Quantizes the activations and splits the `n` weight rows between the pool's threads.
fn run(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: Packed<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    if y.len() != m * n || bias.is_some_and(|b| b.len() != n) {
        return Err(ShapeError(format!(
            "y holds {} values for {m} × {n}; bias {:?} for {n}",
            y.len(),
            bias.map(<[f32]>::len)
        )));
    }
    let kernel = select().1;
    ACTS.with_borrow_mut(|acts| {
        acts.quantize(x, m, k);
        let acts = &*acts;
        split_rows(n, m, y, &|first, rows, out| {
            kernel(acts, m, k, w, first, rows, out)
        });
    });
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use swift_gguf::quant::{quantize_q4_0, quantize_q4_1, quantize_q8_0};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn pack(ty: BlockType, w: &[f32]) -> Vec<u8> {
        match ty {
            BlockType::Q8_0 => quantize_q8_0(w),
            BlockType::Q4_0 => quantize_q4_0(w),
            BlockType::Q4_1 => quantize_q4_1(w),
        }
    }

    /// The weights as swift-gguf's dequantizer (an independent decoder) reads them.
    fn unpack(ty: BlockType, data: &[u8], n: usize, k: usize) -> Vec<f64> {
        let t = match ty {
            BlockType::Q8_0 => swift_gguf::GgmlType::Q8_0,
            BlockType::Q4_0 => swift_gguf::GgmlType::Q4_0,
            BlockType::Q4_1 => swift_gguf::GgmlType::Q4_1,
        };
        swift_gguf::dequant::dequantize(t, data, n * k, "w")
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// `[m, n]` products in float64 of the dequantized weights with `x` as given.
    fn reference(x: &[f64], m: usize, k: usize, w: &[f64]) -> Vec<f64> {
        let n = w.len() / k;
        let mut y = vec![0f64; m * n];
        for j in 0..m {
            for r in 0..n {
                y[j * n + r] = (0..k).map(|c| x[j * k + c] * w[r * k + c]).sum();
            }
        }
        y
    }

    const TYPES: [BlockType; 3] = [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1];

    #[test]
    fn dequantize_row_matches_swift_gguf() {
        let (n, k) = (3, 96);
        let w = values(n * k, 3);
        for ty in TYPES {
            let data = pack(ty, &w);
            let want = unpack(ty, &data, n, k);
            let mut got = vec![0f32; n * k];
            for (row, out) in data
                .chunks_exact(ty.row_bytes(k))
                .zip(got.chunks_exact_mut(k))
            {
                dequantize_row(ty, row, out);
            }
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(*a as f64, *b, "{ty:?}");
            }
        }
    }

    #[test]
    fn f16_conversion_matches_the_half_crate() {
        for h in (0..=u16::MAX).step_by(7) {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            assert!(got == want || (got.is_nan() && want.is_nan()), "{h:#x}");
        }
    }

    /// Every kernel on every row count and ragged row counts (tasks of uneven size), against the
    /// dequantized weights times the *dequantized quantized activations* in float64: each block
    /// is an exact integer product, so the only difference is float32 rounding of the per-block
    /// scaling and the sum over blocks, bounded by 1e-5 of Σ|x_c · w_c| (plus 1e-6).
    #[test]
    fn every_kernel_matches_dequantize_then_matmul_in_float64() {
        for ty in TYPES {
            for (name, kernel) in available() {
                for &k in &[32usize, 64, 96, 576] {
                    let n = 19;
                    let w = values(n * k, 7 + k as u64);
                    let data = pack(ty, &w);
                    let wd = unpack(ty, &data, n, k);
                    for m in 1..=MAX_ROWS {
                        let x = values(m * k, (m * 31 + k) as u64);
                        let mut acts = QuantizedActs::default();
                        acts.quantize(&x, m, k);
                        let xd: Vec<f64> = acts
                            .q
                            .iter()
                            .enumerate()
                            .map(|(i, &q)| q as f64 * acts.d[i / QK] as f64)
                            .collect();
                        let want = reference(&xd, m, k, &wd);
                        let mut got = vec![0f32; n * m];
                        kernel(
                            &acts,
                            m,
                            k,
                            Packed::Blocks(Blocks { ty, data: &data }),
                            0,
                            n,
                            &mut got,
                        );
                        for r in 0..n {
                            for j in 0..m {
                                let mag: f64 =
                                    (0..k).map(|c| (xd[j * k + c] * wd[r * k + c]).abs()).sum();
                                let (a, b) = (got[r * m + j] as f64, want[j * n + r]);
                                assert!(
                                    (a - b).abs() <= 1e-5 * mag + 1e-6,
                                    "{name} {ty:?} k={k} m={m} r={r}: {a} vs {b}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The same for the affine layout (4 and 8 bits, groups of 32 and 64, a last group shorter
    /// than the others): exact integer blocks, same bound.
    #[test]
    fn every_kernel_matches_the_affine_layout_in_float64() {
        for (name, kernel) in available() {
            for &(k, group) in &[(64usize, 32usize), (96, 64), (576, 64)] {
                for bits in [4u8, 8] {
                    let n = 13;
                    let ng = k.div_ceil(group);
                    let codes: Vec<u8> = values(n * k, 3 + k as u64)
                        .iter()
                        .map(|v| ((v + 1.0) / 2.0 * ((1u32 << bits) - 1) as f32).round() as u8)
                        .collect();
                    let scales: Vec<f32> =
                        values(n * ng, 4).iter().map(|v| v.abs() * 0.01).collect();
                    let mins: Vec<f32> = values(n * ng, 5).iter().map(|v| v * 0.1).collect();
                    let wd: Vec<f64> = (0..n * k)
                        .map(|i| {
                            let g = i / k * ng + (i % k) / group;
                            codes[i] as f64 * scales[g] as f64 + mins[g] as f64
                        })
                        .collect();
                    let w = AffineCodes {
                        codes: &codes,
                        scales: &scales,
                        mins: &mins,
                        group,
                        bits,
                    };
                    for m in 1..=MAX_ROWS {
                        let x = values(m * k, (m + k) as u64);
                        let mut acts = QuantizedActs::default();
                        acts.quantize(&x, m, k);
                        let xd: Vec<f64> = acts
                            .q
                            .iter()
                            .enumerate()
                            .map(|(i, &q)| q as f64 * acts.d[i / QK] as f64)
                            .collect();
                        let want = reference(&xd, m, k, &wd);
                        let mut got = vec![0f32; n * m];
                        kernel(&acts, m, k, Packed::Affine(w), 0, n, &mut got);
                        for r in 0..n {
                            for j in 0..m {
                                let mag: f64 =
                                    (0..k).map(|c| (xd[j * k + c] * wd[r * k + c]).abs()).sum();
                                let (a, b) = (got[r * m + j] as f64, want[j * n + r]);
                                assert!(
                                    (a - b).abs() <= 1e-5 * mag + 1e-6,
                                    "{name} affine {bits}-bit k={k} group={group} m={m} r={r}: {a} vs {b}"
                                );
                            }
                        }
                    }
                    // Through the public entry point too (pool, layout).
                    let x = values(3 * k, 1);
                    let mut y = vec![0f32; 3 * n];
                    affine_matmul(&x, 3, k, w, None, &mut y).unwrap();
                    assert!(y.iter().all(|v| v.is_finite()));
                }
            }
        }
    }

    /// The whole product (quantized activations, pool, bias, layout) against float64 on the
    /// *unquantized* activations: the 8-bit activations cost at most half a step per element,
    /// `Σ_c |w_c| · d_x / 2` per output, which bounds the difference (plus float32 rounding).
    #[test]
    fn quant_matmul_matches_float_activations_within_the_activation_step() {
        for ty in TYPES {
            for m in [1usize, 2, 3, 8] {
                let (n, k) = (301, 128);
                let w = values(n * k, 11);
                let data = pack(ty, &w);
                let wd = unpack(ty, &data, n, k);
                let x = values(m * k, 5 + m as u64);
                let bias = values(n, 9);
                let mut y = vec![0f32; m * n];
                quant_matmul(&x, m, k, Blocks { ty, data: &data }, Some(&bias), &mut y).unwrap();
                let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let want = reference(&xd, m, k, &wd);
                for j in 0..m {
                    for r in 0..n {
                        let mut bound = 1e-5;
                        for b in 0..k / QK {
                            let xs = &x[j * k + b * QK..j * k + (b + 1) * QK];
                            let dx = xs.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                            let ws: f64 = wd[r * k + b * QK..r * k + (b + 1) * QK]
                                .iter()
                                .map(|v| v.abs())
                                .sum();
                            bound += ws * dx / 2.0 * 1.0001;
                        }
                        let (a, b) = (y[j * n + r] as f64, want[j * n + r] + bias[r] as f64);
                        assert!(
                            (a - b).abs() <= bound,
                            "{ty:?} m={m} r={r}: {a} vs {b} (bound {bound})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn inconsistent_shapes_are_an_error_not_a_panic() {
        let data = vec![0u8; 2 * 34];
        let w = Blocks {
            ty: BlockType::Q8_0,
            data: &data,
        };
        let mut y = vec![0f32; 2];
        assert!(quant_matmul(&[0.0; 33], 1, 33, w, None, &mut y).is_err());
        assert!(quant_matmul(&[0.0; 32], 1, 32, w, None, &mut y[..1]).is_err());
        assert!(quant_matmul(&[0.0; 32 * 9], 9, 32, w, None, &mut y).is_err());
        let short = Blocks {
            ty: BlockType::Q8_0,
            data: &data[..50],
        };
        assert!(quant_matmul(&[0.0; 32], 1, 32, short, None, &mut y).is_err());
        assert!(quant_matmul(&[0.0; 32], 1, 32, w, None, &mut y).is_ok());
    }
}
