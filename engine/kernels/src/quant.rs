//! Matrix products straight from packed 8-bit, 6-bit, 5-bit and 4-bit weight blocks (GGUF's
//! Q8_0, Q6_K, Q5_0, Q4_0, Q4_1 and Q4_K), for decoding: [`quant_matmul`] never expands a weight
//! to float.
//!
//! As llama.cpp does, the activation rows are quantized too, to 8 bits per block of 32 with one
//! float32 scale (`d = max|x| / 127`, `q = round(x / d)` ties to even, and for the layouts with an offset
//! the block's sum `d · Σq`); each block's product is then an exact integer dot product, scaled
//! once by `d_w · d_x` (and for Q4_1/Q4_K plus `m_w · d_x Σq_x`) and summed in float32. The
//! K-quants' super-blocks of 256 are read as eight groups of 32, each with its own scale (and
//! min), so they meet the same activation blocks. x86-64 CPUs take AVX-512 VNNI (`vpdpbusd`) or
//! AVX2 (`vpmaddubsw`) paths picked at run time (`quant_x86.rs`); others a portable loop. Weight
//! rows are split between the caller and the crate's worker pool, as in [`crate::skinny_matmul`].
//!
//! Block layouts (little-endian, as ggml's `block_q8_0`, `block_q4_0`, `block_q4_1`,
//! `block_q5_0`, `block_q4_K`, `block_q6_K`):
//! * Q8_0, 34 bytes: float16 `d`, 32 × int8 `q`; value `d · q`.
//! * Q4_0, 18 bytes: float16 `d`, 16 bytes of nibbles (element `i < 16` in the low nibble of
//!   byte `i`, element `16 + i` in its high nibble); value `d · (q − 8)`.
//! * Q4_1, 20 bytes: float16 `d`, float16 `m`, nibbles as Q4_0; value `d · q + m`.
//! * Q5_0, 22 bytes: float16 `d`, `qh` (u32: bit `i` is element `i`'s fifth bit), nibbles as
//!   Q4_0; value `d · (q − 16)`.
//! * Q4_K, 144 bytes per 256: float16 `d`, float16 `dmin`, 12 bytes of eight 6-bit scales and
//!   mins, 128 bytes of nibbles (bytes `32c..32c + 32` hold group `2c` in their low nibbles and
//!   group `2c + 1` in their high ones); value `d · sc_g · q − dmin · m_g`.
//! * Q6_K, 210 bytes per 256: `ql` (128 bytes of low nibbles), `qh` (64 bytes of 2-bit high
//!   parts), 16 × int8 scales (one per 16 elements), float16 `d`; value `d · sc · (q − 32)`.

use crate::{split_rows, ShapeError, MAX_ROWS};

/// Elements per block of the legacy layouts, and per activation block in every layout here.
pub const QK: usize = 32;

/// Elements per super-block of the K-quants (Q4_K, Q6_K).
pub const QK_K: usize = 256;

/// A packed block layout (named as ggml's types).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q4_K,
    Q6_K,
}

impl BlockType {
    /// Every layout the kernels read.
    pub const ALL: [BlockType; 6] = [
        BlockType::Q8_0,
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q4_K,
        BlockType::Q6_K,
    ];

    /// Bytes of one block of [`BlockType::block_elems`] elements.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q4_K => 144,
            BlockType::Q6_K => 210,
        }
    }

    /// Elements per block: [`QK`], or [`QK_K`] for the K-quants' super-blocks.
    pub const fn block_elems(self) -> usize {
        match self {
            BlockType::Q4_K | BlockType::Q6_K => QK_K,
            _ => QK,
        }
    }

    /// Bytes of one row of `k` elements (`k` a multiple of [`BlockType::block_elems`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / self.block_elems() * self.block_bytes()
    }

    pub const fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q6_K => "Q6_K",
        }
    }
}

/// A packed `[n, k]` weight matrix: `n` rows of `k / QK` blocks each, row after row, or, when
/// `interleaved`, in the layout [`crate::interleave`] writes (Q8_0, Q4_0, Q4_1: eight rows' blocks
/// side by side, `src/repack.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Blocks<'a> {
    pub ty: BlockType,
    pub data: &'a [u8],
    pub interleaved: bool,
}

impl<'a> Blocks<'a> {
    /// Rows one after the other (a GGUF file's layout).
    pub fn rows(ty: BlockType, data: &'a [u8]) -> Self {
        Self {
            ty,
            data,
            interleaved: false,
        }
    }
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

/// Activation rows quantized to 8 bits per block: `q` (`[m, k]`), per block `d`, `s = d · Σq`
/// and the integer `sum = Σq` (`[m, k / QK]`).
#[derive(Default)]
pub struct QuantizedActs {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub sum: Vec<i32>,
    /// The rows last quantized by [`QuantizedActs::quantize_once`] (`m · k` values).
    from: Vec<f32>,
}

impl QuantizedActs {
    /// [`QuantizedActs::quantize`], unless these are the very values quantized last time
    /// through here (bit for bit): a decoder's q/k/v projections, and its gate/up ones, read
    /// one input, which is then quantized once per input instead of once per slot.
    pub fn quantize_once(&mut self, x: &[f32], m: usize, k: usize) {
        let x = &x[..m * k];
        let same = self.from.len() == x.len()
            && self.q.len() == x.len()
            && self
                .from
                .iter()
                .zip(x)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            self.quantize(x, m, k);
            self.from.clear();
            self.from.extend_from_slice(x);
        }
    }

    /// `m` rows of `x` as `2m` quantized rows: rows `0..m` as [`QuantizedActs::quantize`], rows
    /// `m..2m` their rounding error `x − d · q`, quantized in turn (its scale is at most `d /
    /// 254`), so that the two rows' products summed carry about 16 bits of the activations.
    pub fn quantize_fine(&mut self, x: &[f32], m: usize, k: usize) {
        self.quantize(x, m, k);
        let mut both = Vec::with_capacity(2 * m * k);
        both.extend_from_slice(&x[..m * k]);
        both.extend(
            x[..m * k]
                .iter()
                .zip(&self.q)
                .enumerate()
                .map(|(i, (v, &q))| v - self.d[i / QK] * q as f32),
        );
        self.quantize(&both, 2 * m, k);
    }

    /// Quantizes `m` rows of `x` (`[m, k]`, `k` a multiple of [`QK`]), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        self.from.clear();
        let nb = k / QK;
        self.q.clear();
        self.q.resize(m * k, 0);
        self.d.clear();
        self.d.resize(m * nb, 0.0);
        self.s.clear();
        self.s.resize(m * nb, 0.0);
        self.sum.clear();
        self.sum.resize(m * nb, 0);
        for (b, (xs, qs)) in x[..m * k]
            .chunks_exact(QK)
            .zip(self.q.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            // Rounded to the nearest, ties to even, as llama.cpp's x86 `quantize_row_q8_0`
            // (`_mm256_round_ps`): adding and taking away 1.5 · 2²³ leaves no fraction bits for
            // values this small (|v| ≤ 127), and, unlike `f32::round` (a libm call without
            // SSE4.1), vectorizes.
            const MAGIC: f32 = 12_582_912.0;
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(xs) {
                *q = ((v * id + MAGIC) - MAGIC) as i8;
                sum += *q as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
            self.sum[b] = sum;
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

/// Scale and min number `j` (0..8) of a Q4_K super-block, 6 bits each, packed in 12 bytes (as
/// ggml's `get_scale_min_k4`).
#[inline(always)]
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

/// Group `b` (32 elements from `32 b`) of a packed row as integer codes with one scale and one
/// offset: element `i` is `dw · codes[i] + mw`. Q6_K's two scales per group are folded into its
/// codes (`sc · (q − 32)`, still exact integers), so its `dw` is the super-block's `d`.
#[inline(always)]
pub(crate) fn group(ty: BlockType, row: &[u8], b: usize, codes: &mut [i32; QK]) -> (f32, f32) {
    match ty {
        BlockType::Q8_0 => {
            let blk = &row[b * 34..(b + 1) * 34];
            for (c, &v) in codes.iter_mut().zip(&blk[2..]) {
                *c = v as i8 as i32;
            }
            (half_at(blk, 0), 0.0)
        }
        BlockType::Q4_0 | BlockType::Q4_1 => {
            let q4_1 = ty == BlockType::Q4_1;
            let bb = ty.block_bytes();
            let blk = &row[b * bb..(b + 1) * bb];
            let qs = if q4_1 { &blk[4..20] } else { &blk[2..18] };
            let shift = if q4_1 { 0 } else { 8 };
            for (i, &v) in qs.iter().enumerate() {
                codes[i] = (v & 15) as i32 - shift;
                codes[i + 16] = (v >> 4) as i32 - shift;
            }
            let mw = if q4_1 { half_at(blk, 2) } else { 0.0 };
            (half_at(blk, 0), mw)
        }
        BlockType::Q5_0 => {
            let blk = &row[b * 22..(b + 1) * 22];
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for (i, &v) in blk[6..22].iter().enumerate() {
                let h0 = ((qh >> i) & 1) as i32;
                let h1 = ((qh >> (i + 16)) & 1) as i32;
                codes[i] = ((v & 15) as i32 | h0 << 4) - 16;
                codes[i + 16] = ((v >> 4) as i32 | h1 << 4) - 16;
            }
            (half_at(blk, 0), 0.0)
        }
        BlockType::Q4_K => {
            let (sb, j) = (b / 8, b % 8);
            let blk = &row[sb * 144..(sb + 1) * 144];
            let (sc, mn) = scale_min_k4(j, &blk[4..16]);
            let chunk = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            for (c, &v) in codes.iter_mut().zip(chunk) {
                *c = if j % 2 == 0 { v & 15 } else { v >> 4 } as i32;
            }
            let (d, dmin) = (half_at(blk, 0), half_at(blk, 2));
            (d * sc as f32, -(dmin * mn as f32))
        }
        BlockType::Q6_K => {
            let (sb, g8) = (b / 8, b % 8);
            let (n, g) = (g8 / 4, g8 % 4);
            let blk = &row[sb * 210..(sb + 1) * 210];
            let ql = &blk[64 * n..64 * n + 64];
            let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
            let sc = &blk[192 + 8 * n..192 + 8 * n + 8];
            for (l, c) in codes.iter_mut().enumerate() {
                let q = match g {
                    0 => (ql[l] & 15) | ((qh[l] & 3) << 4),
                    1 => (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    2 => (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    _ => (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                };
                *c = sc[2 * g + l / 16] as i8 as i32 * (q as i32 - 32);
            }
            (half_at(blk, 208), 0.0)
        }
    }
}

/// Decodes one packed row (`row.len()` a whole number of blocks) into `out`.
pub fn dequantize_row(ty: BlockType, row: &[u8], out: &mut [f32]) {
    let mut codes = [0i32; QK];
    for (b, o) in out[..row.len() / ty.block_bytes() * ty.block_elems()]
        .chunks_exact_mut(QK)
        .enumerate()
    {
        let (dw, mw) = group(ty, row, b, &mut codes);
        for (o, &c) in o.iter_mut().zip(&codes) {
            *o = dw * c as f32 + mw;
        }
    }
}

/// `out[r * m + j] = Σ_c x[j, c] · w[first + r, c]` over the quantized activations, for the
/// `rows` weight rows from `first`.
pub(crate) type QKernel = fn(&QuantizedActs, usize, usize, Packed<'_>, usize, usize, &mut [f32]);

/// The fastest kernel this CPU runs (`SWIFT_QKERNEL=vnni|avx2|portable` narrows the choice).
pub(crate) fn select() -> (&'static str, QKernel) {
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
        Packed::Blocks(b) if b.interleaved => {
            // The groups' offsets follow from the whole matrix's row count.
            crate::repack::interleaves(b.ty)
                && b.data.len().is_multiple_of(b.ty.row_bytes(k))
                && b.data.len() >= end * b.ty.row_bytes(k)
        }
        Packed::Blocks(b) => {
            k.is_multiple_of(b.ty.block_elems()) && b.data.len() >= end * b.ty.row_bytes(k)
        }
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
            && a.sum.len() >= m * nb
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
    // Per weight row and group of 32: its values as integer codes, its scale and its offset
    // (the `min` that multiplies `d_x Σq_x`).
    let mut codes = [0i32; QK];
    // An interleaved row, read back into the row layout.
    let mut unpacked = Vec::new();
    for r in 0..rows {
        let row = first + r;
        if let Packed::Blocks(bl) = w {
            if bl.interleaved {
                unpacked.resize(bl.ty.row_bytes(k), 0);
                crate::repack::interleaved_row(bl.ty, bl.data, k, row, &mut unpacked);
            }
        }
        for j in 0..m {
            let mut acc = 0f32;
            for b in 0..nb {
                let xq = &a.q[j * k + b * QK..j * k + (b + 1) * QK];
                let (dx, sx) = (a.d[j * nb + b], a.s[j * nb + b]);
                let (dw, mw) = match w {
                    Packed::Blocks(bl) if bl.interleaved => group(bl.ty, &unpacked, b, &mut codes),
                    Packed::Blocks(bl) => {
                        let rb = bl.ty.row_bytes(k);
                        group(bl.ty, &bl.data[row * rb..(row + 1) * rb], b, &mut codes)
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
    /// [`quant_matmul_fine`]'s activations and its two rows' products.
    static FINE: std::cell::RefCell<Vec<QuantizedActs>> = std::cell::RefCell::default();
    /// A [`quant_matmul_fine`] task's coarse and error products.
    static TASK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
    let n = check_blocks(x, m, k, w, MAX_ROWS)?;
    run(x, m, k, n, Packed::Blocks(w), bias, y)
}

/// Checks `x` and `w` for the block products; the weight's row count.
pub(crate) fn check_blocks(
    x: &[f32],
    m: usize,
    k: usize,
    w: Blocks<'_>,
    most: usize,
) -> Result<usize, ShapeError> {
    check_rows(x, m, k, most)?;
    if !k.is_multiple_of(w.ty.block_elems()) {
        return Err(ShapeError(format!(
            "{} rows hold whole super-blocks of {} values; got a width of {k}",
            w.ty.name(),
            w.ty.block_elems()
        )));
    }
    if w.interleaved && !crate::repack::interleaves(w.ty) {
        return Err(ShapeError(format!(
            "{} weights are not interleaved (Q8_0, Q4_0 and Q4_1 are)",
            w.ty.name()
        )));
    }
    let rb = w.ty.row_bytes(k);
    if !w.data.len().is_multiple_of(rb) {
        return Err(ShapeError(format!(
            "w holds {} bytes, not a whole number of {} rows of {rb} bytes",
            w.data.len(),
            w.ty.name()
        )));
    }
    Ok(w.data.len() / rb)
}

/// [`quant_matmul`] with finer activations: each block is quantized to 8 bits and so is its
/// rounding error ([`QuantizedActs::quantize_fine`]), and the products of both are summed (the
/// weight is read once for the two), about 16 bits of the activations for about the cost of
/// two rows. For an output projection, whose logits decide greedy tokens: 8-bit activations
/// there move SmolLM2's logits enough to flip top-2 gaps above 0.1.
///
/// Takes up to [`crate::WIDE_ROWS`] rows (a prompt's pass): they are quantized in chunks of
/// `MAX_ROWS / 2` (each the kernel's `MAX_ROWS` rows with their errors), and each task's stretch
/// of weight rows meets every chunk while it is in cache, so the weight is streamed from memory
/// once per call, not once per chunk. The products are those of one call per chunk, bit for bit.
pub fn quant_matmul_fine(
    x: &[f32],
    m: usize,
    k: usize,
    w: Blocks<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    let n = check_blocks(x, m, k, w, crate::WIDE_ROWS)?;
    check_out(m, n, bias, y)?;
    let kernel = select().1;
    let half = MAX_ROWS / 2;
    FINE.with_borrow_mut(|chunks| {
        let nc = m.div_ceil(half);
        if chunks.len() < nc {
            chunks.resize_with(nc, QuantizedActs::default);
        }
        for (acts, xc) in chunks.iter_mut().zip(x.chunks(half * k)) {
            acts.quantize_fine(xc, xc.len() / k, k);
        }
        let chunks = &chunks[..nc];
        // The widest chunk's two rows per activation row (`2 · min(m, half)`): a task's buffer
        // holds what the kernel writes, not `MAX_ROWS` columns (a one-row product zeroed four
        // times its output's size per task, an output projection's 49,152 rows each step).
        let width = 2 * m.min(half);
        crate::pool::read_ahead_after_next(crate::ahead::after(&[w.data]));
        // Each task: its weight rows against every chunk, into `[rows, m]`.
        split_rows(n, m, y, &|first, rows, out| {
            // The kernel writes every value of its `[rows, 2 · mc]` output: a task buffer per
            // thread, kept (not a fresh zeroed one per task).
            TASK.with_borrow_mut(|both| {
                both.resize(rows * width, 0.0);
                for (c, acts) in chunks.iter().enumerate() {
                    let mc = acts.q.len() / k / 2;
                    let both = &mut both[..rows * 2 * mc];
                    kernel(acts, 2 * mc, k, Packed::Blocks(w), first, rows, both);
                    if m == 1 {
                        // One activation row (every decoding step's output projection): each
                        // row's coarse and error products side by side, summed in one pass.
                        for (o, p) in out.iter_mut().zip(both.chunks_exact(2)) {
                            *o = p[0] + p[1];
                        }
                        continue;
                    }
                    for r in 0..rows {
                        let (coarse, error) = (&both[r * 2 * mc..], &both[r * 2 * mc + mc..]);
                        for j in 0..mc {
                            out[r * m + c * half + j] = coarse[j] + error[j];
                        }
                    }
                }
            });
        });
    });
    add_bias(y, n, bias);
    Ok(())
}

/// [`quant_matmul`] whose largest outputs are recomputed finely: after the 8-bit product, the
/// `top` largest values of each output row are computed again as [`quant_matmul_fine`] does
/// (about 16-bit activations), the others kept. For an output projection at decoding: the
/// greedy token is the largest logit, and errors of 8-bit activations (a fraction of a logit,
/// mostly shared by all) cannot lift a token from beyond the `top` largest to the first place,
/// so the choice is the fine product's at a few rows' cost instead of the whole matrix's twice.
pub fn quant_matmul_refined(
    x: &[f32],
    m: usize,
    k: usize,
    w: Blocks<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
    top: usize,
) -> Result<(), ShapeError> {
    quant_matmul(x, m, k, w, bias, y)?;
    let n = y.len() / m;
    let top = top.min(n);
    if top == 0 {
        return Ok(());
    }
    let kernel = select().1;
    FINE.with_borrow_mut(|chunks| {
        if chunks.is_empty() {
            chunks.push(QuantizedActs::default());
        }
        let acts = &mut chunks[0];
        for (xj, yj) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
            acts.quantize_fine(xj, 1, k);
            for r in largest(yj, top) {
                let mut both = [0f32; 2];
                kernel(acts, 2, k, Packed::Blocks(w), r, 1, &mut both);
                yj[r] = both[0] + both[1] + bias.map_or(0.0, |b| b[r]);
            }
        }
    });
    Ok(())
}

/// The indices of the `top` largest values of `v` (`1 ≤ top ≤ v.len()`), in no order: one pass
/// that keeps the best so far, most values costing one comparison with the smallest of them.
fn largest(v: &[f32], top: usize) -> Vec<usize> {
    let mut best: Vec<(f32, usize)> = v[..top].iter().copied().zip(0..).collect();
    let smallest = |b: &[(f32, usize)]| {
        (0..b.len())
            .min_by(|&i, &j| b[i].0.total_cmp(&b[j].0))
            .unwrap_or(0)
    };
    let mut at = smallest(&best);
    for (i, &x) in v.iter().enumerate().skip(top) {
        if x > best[at].0 {
            best[at] = (x, i);
            at = smallest(&best);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
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
    check_rows(x, m, k, MAX_ROWS)
}

/// `x` is `m` rows (`1..=most`) of a non-zero width `k` that is a multiple of [`QK`].
fn check_rows(x: &[f32], m: usize, k: usize, most: usize) -> Result<(), ShapeError> {
    if m == 0 || m > most || k == 0 || !k.is_multiple_of(QK) || x.len() != m * k {
        return Err(ShapeError(format!(
            "the quantized products take 1..={most} rows of a non-zero width that is a multiple of {QK}; got {} values for {m} × {k}",
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
    check_out(m, n, bias, y)?;
    let kernel = select().1;
    let bytes = match w {
        Packed::Blocks(b) => b.data,
        Packed::Affine(a) => a.codes,
    };
    with_acts(x, m, k, |acts| {
        crate::pool::read_ahead_after_next(crate::ahead::after(&[bytes]));
        split_rows(n, m, y, &|first, rows, out| {
            kernel(acts, m, k, w, first, rows, out)
        });
    });
    add_bias(y, n, bias);
    Ok(())
}

/// `f` over `x` (`[m, k]`) quantized to 8 bits per block in this thread's buffers
/// ([`QuantizedActs::quantize_once`]: not again when these are the values quantized last).
pub(crate) fn with_acts<R>(
    x: &[f32],
    m: usize,
    k: usize,
    f: impl FnOnce(&QuantizedActs) -> R,
) -> R {
    ACTS.with_borrow_mut(|acts| {
        acts.quantize_once(x, m, k);
        f(acts)
    })
}

fn check_out(m: usize, n: usize, bias: Option<&[f32]>, y: &[f32]) -> Result<(), ShapeError> {
    if y.len() != m * n || bias.is_some_and(|b| b.len() != n) {
        return Err(ShapeError(format!(
            "y holds {} values for {m} × {n}; bias {:?} for {n}",
            y.len(),
            bias.map(<[f32]>::len)
        )));
    }
    Ok(())
}

fn add_bias(y: &mut [f32], n: usize, bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::lcg_values as values;
    use swift_gguf::quant::{quantize_q4_0, quantize_q4_1, quantize_q8_0};

    /// `n` rows of `k` weights packed as `ty`: the legacy types through swift-gguf's quantizers
    /// (ggml's reference ones) from `values`; the others (which swift-gguf does not quantize) as
    /// random bytes with float16 scales set to sizes as real files have, every bit pattern of the
    /// codes, scales and mins being a valid block.
    fn blocks(ty: BlockType, n: usize, k: usize, seed: u64) -> Vec<u8> {
        let w = values(n * k, seed);
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        let mut data: Vec<u8> = match ty {
            BlockType::Q8_0 => return quantize_q8_0(&w),
            BlockType::Q4_0 => return quantize_q4_0(&w),
            BlockType::Q4_1 => return quantize_q4_1(&w),
            _ => values(ty.row_bytes(k) * n, seed ^ 0x5eed)
                .iter()
                .map(|v| ((v + 1.0) * 127.99) as u8)
                .collect(),
        };
        for (i, blk) in data.chunks_exact_mut(ty.block_bytes()).enumerate() {
            let v = w[i % w.len()].abs();
            match ty {
                BlockType::Q5_0 => blk[0..2].copy_from_slice(&f16(0.002 + 0.01 * v)),
                BlockType::Q4_K => {
                    blk[0..2].copy_from_slice(&f16(0.0005 + 0.001 * v));
                    blk[2..4].copy_from_slice(&f16(0.0002 + 0.0005 * v));
                }
                BlockType::Q6_K => blk[208..210].copy_from_slice(&f16(0.0001 + 0.0002 * v)),
                _ => {}
            }
        }
        data
    }

    /// Widths each layout is tested at: ragged multiples of its block (one block, an odd count,
    /// SmolLM2's 576 and 1536).
    fn widths(ty: BlockType) -> &'static [usize] {
        match ty.block_elems() {
            QK => &[32, 64, 96, 576],
            _ => &[256, 768, 1536],
        }
    }

    /// The weights as swift-gguf's dequantizer (an independent decoder) reads them.
    fn unpack(ty: BlockType, data: &[u8], n: usize, k: usize) -> Vec<f64> {
        let t = match ty {
            BlockType::Q8_0 => swift_gguf::GgmlType::Q8_0,
            BlockType::Q4_0 => swift_gguf::GgmlType::Q4_0,
            BlockType::Q4_1 => swift_gguf::GgmlType::Q4_1,
            BlockType::Q5_0 => swift_gguf::GgmlType::Q5_0,
            BlockType::Q4_K => swift_gguf::GgmlType::Q4_K,
            BlockType::Q6_K => swift_gguf::GgmlType::Q6_K,
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

    const TYPES: [BlockType; 6] = BlockType::ALL;

    #[test]
    fn dequantize_row_matches_swift_gguf() {
        for ty in TYPES {
            let (n, k) = (3, widths(ty)[1]);
            let data = blocks(ty, n, k, 3);
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

    /// Every kernel on every layout, every row count, ragged widths and a ragged weight row count
    /// (19), against the dequantized weights (swift-gguf's decoder) times the *dequantized
    /// quantized activations* in float64: each group of 32 is an exact integer product, so the
    /// only difference is float32 rounding of the per-group scaling and the sum over groups,
    /// bounded by 1e-5 of Σ|x_c · w_c| (plus 1e-6) for every layout, K-quants included. Q8_0,
    /// Q4_0 and Q4_1 also interleaved (`src/repack.rs`), the same bound: their unsigned codes'
    /// offset per block is one more float32 term of the same size. Stretches of rows from an
    /// offset, as the pool's tasks get, start and end inside groups of eight and in the rows
    /// after the last group.
    #[test]
    fn every_kernel_matches_dequantize_then_matmul_in_float64() {
        for ty in TYPES {
            for interleaved in [false, true] {
                if interleaved && !crate::interleaves(ty) {
                    continue;
                }
                for (name, kernel) in available() {
                    for &k in widths(ty) {
                        let n = 19;
                        let mut data = blocks(ty, n, k, 7 + k as u64);
                        let wd = unpack(ty, &data, n, k);
                        if interleaved {
                            crate::interleave(ty, &mut data, k).unwrap();
                        }
                        let w = Blocks {
                            ty,
                            data: &data,
                            interleaved,
                        };
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
                            for (first, rows) in [(0, n), (5, 11), (2, 15), (13, 6)] {
                                let mut got = vec![f32::NAN; rows * m];
                                kernel(&acts, m, k, Packed::Blocks(w), first, rows, &mut got);
                                for r in first..first + rows {
                                    for j in 0..m {
                                        let mag: f64 = (0..k)
                                            .map(|c| (xd[j * k + c] * wd[r * k + c]).abs())
                                            .sum();
                                        let (a, b) =
                                            (got[(r - first) * m + j] as f64, want[j * n + r]);
                                        assert!(
                                            (a - b).abs() <= 1e-5 * mag + 1e-6,
                                            "{name} {ty:?} interleaved={interleaved} k={k} m={m} r={r} from {first}: {a} vs {b}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The interleaved layout changes where the bytes are, not the arithmetic: every kernel gives
    /// the row layout's products bit for bit (so greedy decoding and every figure measured on
    /// the row layout stay as they were), for every row count and stretches that start and end
    /// inside groups of eight.
    #[test]
    fn interleaved_weights_give_the_row_layouts_products_bit_for_bit() {
        for ty in [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1] {
            for (name, kernel) in available() {
                let (n, k) = (23, 576);
                let rows = blocks(ty, n, k, 17);
                let mut inter = rows.clone();
                crate::interleave(ty, &mut inter, k).unwrap();
                for m in 1..=MAX_ROWS {
                    let mut acts = QuantizedActs::default();
                    acts.quantize(&values(m * k, 40 + m as u64), m, k);
                    for (first, count) in [(0, n), (3, 18), (9, 14)] {
                        let run = |data: &[u8], interleaved| {
                            let w = Blocks {
                                ty,
                                data,
                                interleaved,
                            };
                            let mut y = vec![0f32; count * m];
                            kernel(&acts, m, k, Packed::Blocks(w), first, count, &mut y);
                            y.into_iter().map(f32::to_bits).collect::<Vec<_>>()
                        };
                        assert_eq!(
                            run(&inter, true),
                            run(&rows, false),
                            "{name} {ty:?} m={m} rows {first}+{count}"
                        );
                    }
                }
            }
        }
    }

    /// Quantizing the same rows again reuses the codes; other rows, or rows quantized through
    /// `quantize` in between, are quantized afresh.
    #[test]
    fn activations_are_quantized_once_per_input() {
        let (m, k) = (2, 64);
        let (x, y) = (values(m * k, 1), values(m * k, 2));
        let fresh = |v: &[f32]| {
            let mut a = QuantizedActs::default();
            a.quantize(v, m, k);
            (a.q, a.d, a.s)
        };
        let mut a = QuantizedActs::default();
        for v in [&x, &x, &y, &x] {
            a.quantize_once(v, m, k);
            assert_eq!((a.q.clone(), a.d.clone(), a.s.clone()), fresh(v));
        }
        a.quantize(&y, m, k);
        a.quantize_once(&x, m, k);
        assert_eq!((a.q.clone(), a.d.clone(), a.s.clone()), fresh(&x));
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
    /// [`quant_matmul_fine`]'s second step is at most `d_x / 254`, so its bound is `Σ_c |w_c| ·
    /// d_x / 508` (plus float32 rounding, `1e-6 Σ_c |w_c x_c|`); 8 rows go in two calls of 4.
    #[test]
    fn quant_matmul_matches_float_activations_within_the_activation_step() {
        for fine in [false, true] {
            for ty in TYPES {
                for m in [1usize, 2, 3, 8] {
                    let (n, k) = (301, if ty.block_elems() == QK { 128 } else { 512 });
                    let data = blocks(ty, n, k, 11);
                    let wd = unpack(ty, &data, n, k);
                    let x = values(m * k, 5 + m as u64);
                    let bias = values(n, 9);
                    let mut y = vec![0f32; m * n];
                    let w = Blocks::rows(ty, &data);
                    if fine {
                        quant_matmul_fine(&x, m, k, w, Some(&bias), &mut y).unwrap();
                    } else {
                        quant_matmul(&x, m, k, w, Some(&bias), &mut y).unwrap();
                    }
                    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                    let want = reference(&xd, m, k, &wd);
                    let step = if fine { 508.0 } else { 2.0 };
                    for j in 0..m {
                        for r in 0..n {
                            let mut bound = 1e-5;
                            for b in 0..k / QK {
                                let xs = &x[j * k + b * QK..j * k + (b + 1) * QK];
                                let dx = xs.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                                let ws = &wd[r * k + b * QK..r * k + (b + 1) * QK];
                                let wsum: f64 = ws.iter().map(|v| v.abs()).sum();
                                let mag: f64 =
                                    ws.iter().zip(xs).map(|(w, &x)| (w * x as f64).abs()).sum();
                                bound += wsum * dx / step * 1.0001 + 1e-6 * mag;
                            }
                            let (a, b) = (y[j * n + r] as f64, want[j * n + r] + bias[r] as f64);
                            assert!(
                                (a - b).abs() <= bound,
                                "fine={fine} {ty:?} m={m} r={r}: {a} vs {b} (bound {bound})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A prompt's rows in one wide call of `quant_matmul_fine` (each task's weight rows meet
    /// every chunk of four rows) give the products of one call per chunk, bit for bit, bias
    /// included; more than `WIDE_ROWS` rows are refused.
    #[test]
    fn wide_fine_products_are_those_of_one_call_per_chunk() {
        for ty in [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_K] {
            let (n, k) = (203, if ty.block_elems() == QK { 96 } else { 256 });
            let data = blocks(ty, n, k, 21);
            let mut inter = data.clone();
            let w = if crate::interleaves(ty) {
                crate::interleave(ty, &mut inter, k).unwrap();
                Blocks {
                    ty,
                    data: &inter,
                    interleaved: true,
                }
            } else {
                Blocks::rows(ty, &data)
            };
            let bias = values(n, 6);
            for m in [5usize, 9, 18, crate::WIDE_ROWS] {
                let x = values(m * k, 30 + m as u64);
                let mut wide = vec![0f32; m * n];
                quant_matmul_fine(&x, m, k, w, Some(&bias), &mut wide).unwrap();
                let mut chunked = Vec::new();
                for xc in x.chunks(4 * k) {
                    let mut yc = vec![0f32; xc.len() / k * n];
                    quant_matmul_fine(xc, xc.len() / k, k, w, Some(&bias), &mut yc).unwrap();
                    chunked.extend(yc);
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&wide), bits(&chunked), "{ty:?} m={m}");
            }
            let m = crate::WIDE_ROWS + 1;
            let mut y = vec![0f32; m * n];
            assert!(quant_matmul_fine(&values(m * k, 1), m, k, w, None, &mut y).is_err());
        }
    }

    /// One activation row (a decoding step's output projection) through `quant_matmul_fine`'s
    /// tasks equals every row recomputed alone (`quant_matmul_refined` with every row refined),
    /// bit for bit, interleaved or not.
    #[test]
    fn one_row_fine_products_are_each_rows_own() {
        for ty in [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1] {
            let (n, k) = (203, 96);
            let data = blocks(ty, n, k, 17);
            let mut inter = data.clone();
            crate::interleave(ty, &mut inter, k).unwrap();
            let x = values(k, 5);
            let bias = values(n, 8);
            let mut alone = vec![0f32; n];
            let rows = Blocks::rows(ty, &data);
            quant_matmul_refined(&x, 1, k, rows, Some(&bias), &mut alone, n).unwrap();
            for w in [
                rows,
                Blocks {
                    ty,
                    data: &inter,
                    interleaved: true,
                },
            ] {
                let mut fine = vec![0f32; n];
                quant_matmul_fine(&x, 1, k, w, Some(&bias), &mut fine).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fine),
                    bits(&alone),
                    "{ty:?} interleaved {}",
                    w.interleaved
                );
            }
        }
    }

    /// `quant_matmul_refined`: the `top` largest outputs of the 8-bit product (bias included)
    /// are `quant_matmul_fine`'s, bit for bit; the others the 8-bit product's.
    #[test]
    fn refined_products_are_fine_at_the_largest_outputs_only() {
        for ty in [BlockType::Q8_0, BlockType::Q4_1] {
            for m in [1usize, 3] {
                let (n, k, top) = (301, 128, 7);
                let data = blocks(ty, n, k, 13);
                let w = Blocks::rows(ty, &data);
                let x = values(m * k, 3 + m as u64);
                let bias = values(n, 4);
                let mut coarse = vec![0f32; m * n];
                let mut fine = vec![0f32; m * n];
                let mut refined = vec![0f32; m * n];
                quant_matmul(&x, m, k, w, Some(&bias), &mut coarse).unwrap();
                quant_matmul_fine(&x, m, k, w, Some(&bias), &mut fine).unwrap();
                quant_matmul_refined(&x, m, k, w, Some(&bias), &mut refined, top).unwrap();
                for j in 0..m {
                    let row = |v: &[f32]| v[j * n..(j + 1) * n].to_vec();
                    let mut order: Vec<usize> = (0..n).collect();
                    let c = row(&coarse);
                    order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
                    for (rank, &r) in order.iter().enumerate() {
                        let want = if rank < top { fine[j * n + r] } else { c[r] };
                        assert_eq!(refined[j * n + r], want, "{ty:?} m={m} row {r} rank {rank}");
                    }
                    assert_ne!(row(&fine), c, "the fine product differs somewhere");
                }
            }
        }
    }

    #[test]
    fn inconsistent_shapes_are_an_error_not_a_panic() {
        let data = vec![0u8; 2 * 34];
        let w = Blocks::rows(BlockType::Q8_0, &data);
        let mut y = vec![0f32; 2];
        assert!(quant_matmul(&[0.0; 33], 1, 33, w, None, &mut y).is_err());
        assert!(quant_matmul(&[0.0; 32], 1, 32, w, None, &mut y[..1]).is_err());
        assert!(quant_matmul(&[0.0; 32 * 9], 9, 32, w, None, &mut y).is_err());
        let short = Blocks::rows(BlockType::Q8_0, &data[..50]);
        assert!(quant_matmul(&[0.0; 32], 1, 32, short, None, &mut y).is_err());
        assert!(quant_matmul(&[0.0; 32], 1, 32, w, None, &mut y).is_ok());
        // A K-quant row is whole super-blocks of 256: a width of 576 is refused, not misread.
        let data = vec![0u8; 3 * 210];
        let w = Blocks::rows(BlockType::Q6_K, &data);
        let err = quant_matmul(&[0.0; 576], 1, 576, w, None, &mut y[..1]).unwrap_err();
        assert!(err.to_string().contains("super-blocks of 256"), "{err}");
        assert!(quant_matmul(&[0.0; 768], 1, 768, w, None, &mut y[..1]).is_ok());
    }
}
