//! # swift-kernels: the matrix products and attention of decoding, at memory speed
//!
//! Generating one token multiplies a handful of activation rows (one per sequence in the batch)
//! by every weight matrix of the model. That product reads each weight once and does two flops
//! per weight and row, so it is bound by memory bandwidth, not arithmetic. libtorch hands it to
//! a general matrix-multiply routine that reaches about half of this machine's bandwidth with
//! float32 weights; this crate's kernel streams each weight row once, multiplies it with every
//! activation row while it is in registers, and splits the weight rows between threads.
//!
//! [`skinny_matmul`] computes `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])` for `m ≤ MAX_ROWS`, with
//! weights in float32 ([`Weights::F32`]) or bfloat16 ([`Weights::Bf16`], widened to float32 in
//! registers; activations and the accumulation stay float32). x86-64 machines with AVX2 and FMA
//! take a vector path (16-lane AVX-512 or 8-lane AVX2, whichever streamed faster when measured on
//! this machine: [`kernel_choice`], src/choice.rs); others a portable loop. The weight rows are
//! split between the caller and the kernel's own worker threads (src/pool.rs). The model crate decides
//! when to use it (CPU, no autograd, few rows) and falls back to libtorch otherwise.
//!
//! [`machine`](crate::cpu_pressure) says what the machine is for the engine's run-time choices
//! (CPU model, how busy its cores are, and so libtorch's thread count during training).
//!
//! [`quant_matmul`] is the same product with the weights packed in 8-, 6-, 5- or 4-bit blocks
//! (GGUF's Q8_0, Q6_K, Q5_0, Q4_0, Q4_1, Q4_K), multiplied as integers against 8-bit activations (src/quant.rs);
//! [`affine_matmul`] the same for swift-rs's own group-wise affine layout (unpacked codes).
//!
//! [`decode_attention`] is the other half of a decoding step: one new query position per row
//! against the KV cache, read in place from the cache's buffers (float32).

mod ahead;
mod attention;
mod choice;
mod dot;
mod dot_bf16;
mod machine;
mod multi;
mod pool;
mod quant;
#[cfg(target_arch = "x86_64")]
mod quant_x86;
mod repack;
#[cfg(test)]
mod testing;
mod tile;

pub use ahead::{read_ahead_setting, set_read_ahead};
pub use attention::{decode_attention, CacheView, DecodeShape};
pub use choice::{bf16_kernel_choice, kernel_choice, KernelChoice};
pub use machine::{
    cpu_model, cpu_pressure, release_freed_heap, training_threads, BUSY_PRESSURE, QUIET_PRESSURE,
};
pub use multi::{matmul_many, Product, ProductWeights};
pub use quant::{
    affine_matmul, dequantize_row, f16_to_f32, quant_kernel_name, quant_matmul, quant_matmul_fine,
    quant_matmul_refined, AffineCodes, BlockType, Blocks, QuantizedActs, QK, QK_K,
};
pub use repack::{deinterleave, interleave, interleaved_row, interleaves};

/// The most activation rows one block kernel takes (and the quantized products): beyond this,
/// the product is no longer bound by reading the weights.
pub const MAX_ROWS: usize = 8;

/// The most activation rows [`skinny_matmul`] takes: more than [`MAX_ROWS`] are walked in chunks
/// of at most `MAX_ROWS` over each task's block of weight rows while the block is in cache, so
/// the weights are still read from memory once. A decoding step of a continuous batch (16 rows
/// at 16 clients) otherwise went to libtorch's GEMM, which copies (packs) every weight matrix
/// before multiplying it: `mkl_blas_def_sgemm_scopy_right16_bdz` took 43 % of `swift deploy`'s
/// time at 16 clients, against 24 % for its multiply (BENCHMARKS.md, Deploy).
pub const WIDE_ROWS: usize = 4 * MAX_ROWS;

/// The most activation rows [`skinny_matmul`] takes where the CPU has register-blocked tiles
/// (src/tile.rs; [`takes_rows`]): a continuous batch's mixed pass, the running rows' next tokens
/// and a few joining prompts (about 76 rows at 16 clients), runs on the kernel's threads, each
/// row's products bit for bit what it gets alone, instead of libtorch's GEMM on OpenMP threads
/// that sleep and wake at every parallel region of the pass (BENCHMARKS.md, Deploy). Longer
/// passes (a prompt's prefill) stay with libtorch.
pub const MANY_ROWS: usize = 128;

/// Whether [`skinny_matmul`] takes `m` activation rows over float32 (`bf16` false) or bfloat16
/// weights: `1..=WIDE_ROWS` always, up to [`MANY_ROWS`] where this CPU has tiles for them.
pub fn takes_rows(m: usize, bf16: bool) -> bool {
    let w = if bf16 {
        Weights::Bf16(&[])
    } else {
        Weights::F32(&[])
    };
    (1..=WIDE_ROWS).contains(&m) || (m <= MANY_ROWS && tile::select(w).is_some())
}

/// A weight matrix `[n, k]`, row-major, in one of the layouts the kernel reads.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// bfloat16 bit patterns (the upper half of a float32).
    Bf16(&'a [u16]),
}

impl Weights<'_> {
    /// The weights' bytes (what [`ahead`] reads ahead).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: any initialised values may be viewed as bytes; same memory, same lifetime.
        unsafe {
            match self {
                Weights::F32(w) => std::slice::from_raw_parts(w.as_ptr().cast(), 4 * w.len()),
                Weights::Bf16(w) => std::slice::from_raw_parts(w.as_ptr().cast(), 2 * w.len()),
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::Bf16(w) => w.len(),
        }
    }
}

/// What a call with inconsistent shapes gets.
#[derive(Debug)]
pub struct ShapeError(pub String);

impl std::error::Error for ShapeError {}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

thread_local! {
    /// A task's `[rows, m]` results on the thread that ran it, before they go to their columns
    /// of `y` (kept between calls, so decoding does not allocate a buffer per task).
    static TASK_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`, everything row-major, `1 ≤ m ≤ MAX_ROWS`.
/// Weight rows are split between the calling thread and the kernel's workers.
pub fn skinny_matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ShapeError> {
    if !takes_rows(m, matches!(w, Weights::Bf16(_))) || k == 0 {
        return Err(ShapeError(format!(
            "skinny_matmul takes 1..={WIDE_ROWS} rows (up to {MANY_ROWS} where the CPU has tiles) of a non-empty width, got {m} × {k}"
        )));
    }
    if x.len() != m * k || !w.len().is_multiple_of(k) {
        return Err(ShapeError(format!(
            "x holds {} values for {m} × {k}; w holds {}, not a multiple of {k}",
            x.len(),
            w.len()
        )));
    }
    let n = w.len() / k;
    if y.len() != m * n || bias.is_some_and(|b| b.len() != n) {
        return Err(ShapeError(format!(
            "y holds {} values for {m} × {n}; bias {:?} for {n}",
            y.len(),
            bias.map(<[f32]>::len)
        )));
    }
    let kernel = match w {
        Weights::F32(_) => dot::select(),
        Weights::Bf16(_) => dot::select_bf16(),
    };
    matmul_with(kernel, x, m, k, w, y);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
    Ok(())
}

/// The product without bias through one block kernel, shapes already checked (`y` is `[m, n]`).
pub(crate) fn matmul_with(
    kernel: dot::BlockKernel,
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    y: &mut [f32],
) {
    let n = w.len() / k;
    pool::read_ahead_after_next(ahead::after(&[w.bytes()]));
    split_rows_in(n, m, float_chunk(w, m), y, &|first, rows, out| {
        float_task(kernel, x, m, k, w, first, rows, out)
    });
}

/// The tiles for `m` rows over `w`, where the CPU has them and `m` is past the walks.
fn tiles_for(w: Weights<'_>, m: usize) -> Option<tile::TileKernel> {
    tile::select(w).filter(|_| m >= tile::FROM_ROWS)
}

/// How [`float_task`] writes `m` activation rows (the `chunk` of [`split_rows_in`]): at once,
/// or in chunks of [`MAX_ROWS`] where neither one walk nor the tiles take them all.
pub(crate) fn float_chunk(w: Weights<'_>, m: usize) -> usize {
    if m <= MAX_ROWS || tiles_for(w, m).is_some() {
        m
    } else {
        MAX_ROWS
    }
}

/// One task of a float product: weight rows `first..first + rows` against the `m` rows of `x`,
/// into `out` as [`float_chunk`] says. Up to [`MAX_ROWS`] rows the block kernel walks them at
/// once; more take the register-blocked tiles (src/tile.rs) where the CPU has them, else the
/// block kernel walks the task's weight rows once per chunk of activation rows (after the first
/// chunk they are in cache). [`matmul_with`] and [`matmul_many`] both run their tasks here, so
/// a product's values do not depend on which of them computed it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn float_task(
    kernel: dot::BlockKernel,
    x: &[f32],
    m: usize,
    k: usize,
    w: Weights<'_>,
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    if m <= MAX_ROWS {
        return kernel(x, m, k, w, first, rows, out);
    }
    if let Some(tiles) = tiles_for(w, m) {
        return tiles(x, m, k, w, first, rows, out);
    }
    // The chunks take turns over stretches of at most CHUNKED_BYTES of the task's weight rows,
    // so the second chunk reads them from cache, not memory, however many rows the task has
    // (an output projection's task of 6,144 rows is 14 MB). Each row's values do not depend on
    // the stretch it is walked in.
    let row_bytes = k * if matches!(w, Weights::Bf16(_)) { 2 } else { 4 };
    let stretch = (CHUNKED_BYTES / row_bytes).max(1);
    for s0 in (0..rows).step_by(stretch) {
        let sr = stretch.min(rows - s0);
        for c0 in (0..m).step_by(MAX_ROWS) {
            let mc = MAX_ROWS.min(m - c0);
            let part = &mut out[c0 * rows + s0 * mc..c0 * rows + (s0 + sr) * mc];
            kernel(&x[c0 * k..(c0 + mc) * k], mc, k, w, first + s0, sr, part);
        }
    }
}

/// The most weight bytes the chunks of [`float_task`] walk in turn: well inside the L2 cache
/// of the CPUs measured (1 MiB a core on the AMD EPYC, 2 MiB on Sapphire Rapids).
const CHUNKED_BYTES: usize = 256 * 1024;

/// Splits the `n` weight rows of a product `y[m, n]` between the pool's threads: task `b`
/// calls `rows_into(first, rows, out)` for weight rows `first..first + rows`, writing them as
/// `[rows, m]` into `out`. Every block kernel (float and integer) runs through this splitter.
/// Tasks start at multiples of [`repack::GROUP`] rows, so that an interleaved weight's tasks
/// hold whole groups (a part of a group is read back row by row).
pub(crate) fn split_rows(
    n: usize,
    m: usize,
    y: &mut [f32],
    rows_into: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) {
    split_rows_in(n, m, m, y, rows_into)
}

/// [`split_rows`] for a task that writes its activation rows in chunks of `chunk`
/// ([`task_into`]).
pub(crate) fn split_rows_in(
    n: usize,
    m: usize,
    chunk: usize,
    y: &mut [f32],
    rows_into: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) {
    let tasks = cut_rows(n);
    let y = SharedOut(y.as_mut_ptr(), y.len());
    pool::pool().run(tasks.len(), &|t| {
        let (first, rows) = tasks[t];
        // SAFETY: `y` is `[m, n]` and outlives `run` (it returns only when every task is
        // done); tasks take disjoint columns.
        unsafe {
            task_into(y, n, m, chunk, first, rows, |out| {
                rows_into(first, rows, out)
            })
        };
    });
}

/// Runs one task of a product `y[m, n]` (weight rows `first..first + rows`): `rows_into` writes
/// `[rows, chunk]` for activation rows `0..chunk`, then `[rows, chunk]` for the next chunk, the
/// last one `[rows, m mod chunk]` where it is shorter (`chunk = m`: plain `[rows, m]`). With
/// one activation row that is `y`'s own stretch; with more, a buffer of the thread that runs the
/// task, which is then written to the task's columns of each row of `y` while it is still in
/// cache: no `[n, m]` buffer for the whole product, and no scatter of it on the calling thread
/// after the pool's job (6 % of the calling thread's samples at 16 rows).
///
/// # Safety
/// `y` must be a live `[m, n]` buffer and no other thread may touch its columns
/// `first..first + rows` meanwhile.
pub(crate) unsafe fn task_into(
    y: SharedOut,
    n: usize,
    m: usize,
    chunk: usize,
    first: usize,
    rows: usize,
    rows_into: impl FnOnce(&mut [f32]),
) {
    assert!(
        first + rows <= n && m * n <= y.len() && chunk > 0,
        "a task's columns lie outside the output"
    );
    if m == 1 {
        // One activation row: the kernel's `[rows, 1]` output is already `y`'s layout.
        return rows_into(y.stretch(first, rows));
    }
    TASK_OUT.with_borrow_mut(|t| {
        // Every kernel writes each value of its output, so a grown buffer's old values are
        // never read.
        if t.len() < rows * m {
            t.resize(rows * m, 0.0);
        }
        let t = &mut t[..rows * m];
        rows_into(t);
        for c0 in (0..m).step_by(chunk) {
            let mc = chunk.min(m - c0);
            let part = &t[c0 * rows..(c0 + mc) * rows];
            // Blocks of 8 weight rows × 8 activation rows in registers where the CPU has AVX
            // (eight stores of eight values instead of 64 of one), the rest value by value.
            let (r8, j8) = if transposes_in_registers() {
                (rows / 8 * 8, mc / 8 * 8)
            } else {
                (0, 0)
            };
            #[cfg(target_arch = "x86_64")]
            for r0 in (0..r8).step_by(8) {
                for j0 in (0..j8).step_by(8) {
                    let at = (c0 + j0) * n + first + r0;
                    // SAFETY: the CPU has AVX (checked); the block reads `part`'s rows
                    // `r0..r0 + 8`, columns `j0..j0 + 8` (inside: `r8 ≤ rows`, `j8 ≤ mc`) and
                    // writes `y`'s rows `c0 + j0..c0 + j0 + 8`, columns `first + r0..+ 8`:
                    // inside `y` (checked above) and this task's alone (the caller's promise).
                    unsafe { transpose8(part.as_ptr().add(r0 * mc + j0), mc, y.0.add(at), n) };
                }
            }
            for (r, vals) in part.chunks_exact(mc).enumerate() {
                let from = if r < r8 { j8 } else { 0 };
                for (j, v) in vals.iter().enumerate().skip(from) {
                    // SAFETY: row `c0 + j` of `y`, column `first + r`: inside `y` (checked
                    // above), and only this task writes it (the caller's promise).
                    unsafe { y.put((c0 + j) * n + first + r, *v) };
                }
            }
        }
    });
}

/// Whether [`task_into`] moves its results in 8 × 8 blocks ([`transpose8`]: AVX).
fn transposes_in_registers() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX.get_or_init(|| std::is_x86_feature_detected!("avx"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `dst[j · dst_stride + r] = src[r · src_stride + j]` for `r, j < 8`.
///
/// # Safety
/// The CPU must have AVX; the 8 × 8 values read and written must lie inside live buffers that
/// nothing else writes meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let rows: [__m256; 8] = std::array::from_fn(|r| _mm256_loadu_ps(src.add(r * src_stride)));
    for (j, v) in transpose8x8(rows).into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(j * dst_stride), v);
    }
}

/// An 8 × 8 block of floats transposed in registers: lane `r` of the result's vector `j` is lane
/// `j` of `a[r]` (pairs of rows interleaved, then quadruples, then the 128-bit halves
/// exchanged). The one transpose of [`task_into`]'s results and the decode attention's scores.
///
/// # Safety
/// The CPU must have AVX; call it from a function compiled with AVX (it is inlined there).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn transpose8x8(
    a: [std::arch::x86_64::__m256; 8],
) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let pair = |x, y| (_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
    let (t0, t1) = pair(a[0], a[1]);
    let (t2, t3) = pair(a[2], a[3]);
    let (t4, t5) = pair(a[4], a[5]);
    let (t6, t7) = pair(a[6], a[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// The tasks `(first row, rows)` that [`split_rows`] cuts `n` rows into (and [`matmul_many`]
/// each of its matrices), largest first: each task takes an equal share of what is left over
/// twice the threads (guided scheduling), in whole interleaved groups, at least [`MIN_ROWS`].
/// Tasks are claimed in this order, so the last ones are small, and a thread that runs out of
/// tasks waits for the other's last one (the caller's wait at the end of every job) a small
/// task's time rather than a large one's. Which task computes a row changes no result.
pub(crate) fn cut_rows(n: usize) -> Vec<(usize, usize)> {
    let share = 2 * pool::pool().threads();
    let mut tasks = Vec::new();
    let mut first = 0;
    while first < n {
        let left = n - first;
        let rows = left
            .div_ceil(share)
            .max(MIN_ROWS)
            .next_multiple_of(repack::GROUP)
            .min(left);
        tasks.push((first, rows));
        first += rows;
    }
    tasks
}

/// The fewest rows of a task (but the last, which takes what is left): a task's own cost (a
/// claim, the activations loaded) stays small next to its rows.
const MIN_ROWS: usize = 16;

/// An output buffer that tasks on several threads write disjoint stretches of.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32, pub(crate) usize);

// SAFETY: only used by this crate's tasks (`skinny_matmul`, `decode_attention`), each writing a
// stretch no other task touches.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The buffer's length.
    pub(crate) fn len(self) -> usize {
        self.1
    }

    /// Writes `v` at `at`.
    ///
    /// # Safety
    /// `at` must lie inside the buffer, which must be alive, and no other thread may read or
    /// write that value meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn put(self, at: usize, v: f32) {
        *self.0.add(at) = v;
    }

    /// `len` values from `start`.
    ///
    /// # Safety
    /// The stretch must lie inside the buffer, which must outlive the returned slice, and no
    /// other live slice may overlap it.
    pub(crate) unsafe fn stretch<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(
            start + len <= self.1,
            "a task's stretch lies outside the output"
        );
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::lcg_values as values;

    /// The product in float64, term by term.
    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let n = w.len() / k;
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for r in 0..n {
                let mut s = bias.map_or(0.0, |b| b[r] as f64);
                for c in 0..k {
                    s += x[i * k + c] as f64 * w[r * k + c] as f64;
                }
                y[i * n + r] = s as f32;
            }
        }
        y
    }

    fn to_bf16(v: &[f32]) -> Vec<u16> {
        // Truncation is enough here: the reference is computed from the same truncated values.
        v.iter().map(|x| (x.to_bits() >> 16) as u16).collect()
    }

    fn from_bf16(v: &[u16]) -> Vec<f32> {
        v.iter()
            .map(|&b| f32::from_bits((b as u32) << 16))
            .collect()
    }

    #[test]
    fn rows_are_cut_into_whole_groups_largest_first_covering_each_row_once() {
        let threads = pool::pool().threads();
        for n in [1usize, 7, 8, 16, 17, 192, 576, 1536, 49152] {
            let tasks = cut_rows(n);
            let mut next = 0;
            for (i, &(first, rows)) in tasks.iter().enumerate() {
                assert_eq!(first, next, "{n} rows: tasks in order, no gap");
                assert!(
                    rows > 0 && first % repack::GROUP == 0,
                    "{n} rows: {tasks:?}"
                );
                if let Some(&(_, before)) = tasks.get(i.wrapping_sub(1)) {
                    assert!(rows <= before, "{n} rows: largest first, {tasks:?}");
                }
                next += rows;
            }
            assert_eq!(next, n);
            // Guided: the first task is a share of the whole, the last ones small.
            let want = n
                .div_ceil(2 * threads)
                .max(MIN_ROWS)
                .next_multiple_of(repack::GROUP);
            assert_eq!(tasks[0].1, want.min(n));
            assert!(tasks
                .last()
                .is_some_and(|&(_, r)| r <= MIN_ROWS.max(repack::GROUP)));
        }
    }

    #[test]
    fn matches_the_reference_for_every_row_count_and_ragged_widths() {
        // Widths that are and are not multiples of the vector width, row counts 1..=8 and the
        // wide ones walked in chunks (a full and a ragged last chunk), a number of weight rows
        // that does not divide into the blocks evenly.
        for &k in &[1usize, 7, 16, 33, 576] {
            for m in (1..=MAX_ROWS).chain([9, 16, 19, WIDE_ROWS]) {
                let n = 37;
                let x = values(m * k, (k * 10 + m) as u64);
                let w = values(n * k, 99 + k as u64);
                let bias = values(n, 7);
                let mut y = vec![0f32; m * n];
                skinny_matmul(&x, m, k, Weights::F32(&w), Some(&bias), &mut y).unwrap();
                let want = reference(&x, m, k, &w, Some(&bias));
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "k={k} m={m}: {a} vs {b}"
                    );
                }
                // bfloat16 weights: the chosen bfloat16 kernel may round the activations to
                // bfloat16 (`avx512-bf16`), off by at most 2⁻⁸ of Σ|x·w|.
                let wb = to_bf16(&w);
                skinny_matmul(&x, m, k, Weights::Bf16(&wb), None, &mut y).unwrap();
                let wf = from_bf16(&wb);
                let want = reference(&x, m, k, &wf, None);
                let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
                let bound = reference(&abs(&x), m, k, &abs(&wf), None);
                for ((a, b), s) in y.iter().zip(&want).zip(&bound) {
                    assert!(
                        (a - b).abs() <= s / 256.0 + 1e-4 * (1.0 + b.abs()),
                        "bf16 k={k} m={m}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunked_rows_over_long_weight_rows_are_each_rows_own_product() {
        // Rows of 16 KiB: each task's weight rows are walked in stretches of CHUNKED_BYTES (a
        // full and a ragged last one), every chunk of activation rows over each stretch; each
        // output row must be that row's product alone (bit for bit) and the float64 one's.
        let (k, n) = (4096usize, 403);
        assert!(
            cut_rows(n)[0].1 * k * 4 > CHUNKED_BYTES,
            "the first task spans several stretches"
        );
        for m in [9usize, 16] {
            let x = values(m * k, 31 + m as u64);
            let w = values(n * k, 32);
            let mut y = vec![0f32; m * n];
            skinny_matmul(&x, m, k, Weights::F32(&w), None, &mut y).unwrap();
            let want = reference(&x, m, k, &w, None);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "m={m}: {a} vs {b}");
            }
            for j in 0..m {
                let mut alone = vec![0f32; n];
                skinny_matmul(
                    &x[j * k..(j + 1) * k],
                    1,
                    k,
                    Weights::F32(&w),
                    None,
                    &mut alone,
                )
                .unwrap();
                assert!(
                    y[j * n..(j + 1) * n]
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "row {j} of {m} differs from the row alone"
                );
            }
        }
    }

    #[test]
    fn every_kernel_this_cpu_runs_agrees_with_the_reference() {
        // `skinny_matmul` above runs only the fastest kernel; here each one, on ragged widths
        // (tails shorter than a vector) and every row count.
        for (name, kernel) in dot::available() {
            for &k in &[5usize, 8, 16, 50, 577] {
                for m in 1..=MAX_ROWS {
                    let n = 9;
                    let x = values(m * k, (m + k) as u64);
                    let w = values(n * k, 2);
                    let wb = to_bf16(&w);
                    let mut got = vec![0f32; m * n];
                    for (weights, plain) in [
                        (Weights::F32(&w), w.clone()),
                        (Weights::Bf16(&wb), from_bf16(&wb)),
                    ] {
                        kernel(&x, m, k, weights, 0, n, &mut got);
                        // The kernel's layout is `[n, m]`; the reference's `[m, n]`.
                        let want = reference(&x, m, k, &plain, None);
                        for r in 0..n {
                            for j in 0..m {
                                let (a, b) = (got[r * m + j], want[j * n + r]);
                                assert!(
                                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                    "{name} k={k} m={m}: {a} vs {b}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_bfloat16_kernels_agree_with_the_reference_of_rounded_activations() {
        // `avx512-bf16` multiplies bfloat16-rounded activations: against the float64 product
        // of those rounded values (and the weights), the only error left is float32
        // accumulation; against the unrounded activations it is bfloat16's rounding, bounded
        // by 2⁻⁸ of Σ|x·w| (each activation off by at most 2⁻⁹ of itself).
        for (name, kernel) in dot::available_bf16() {
            for &k in &[5usize, 32, 50, 576, 577] {
                for m in 1..=MAX_ROWS {
                    let n = 9;
                    let x = values(m * k, (3 * m + k) as u64);
                    let wb = to_bf16(&values(n * k, 4));
                    let w = from_bf16(&wb);
                    let xr = from_bf16(
                        &x.iter()
                            .map(|&v| dot_bf16::round_to_bf16(v))
                            .collect::<Vec<_>>(),
                    );
                    let mut got = vec![0f32; m * n];
                    kernel(&x, m, k, Weights::Bf16(&wb), 0, n, &mut got);
                    let want = reference(&xr, m, k, &w, None);
                    let exact = reference(&x, m, k, &w, None);
                    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                    let wabs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
                    let bound = reference(&abs, m, k, &wabs, None);
                    for r in 0..n {
                        for j in 0..m {
                            let (a, b) = (got[r * m + j], want[j * n + r]);
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{name} k={k} m={m}: {a} vs {b}"
                            );
                            let (e, s) = (exact[j * n + r], bound[j * n + r]);
                            assert!(
                                (a - e).abs() <= s / 256.0 + 1e-4,
                                "{name} k={k} m={m}: {a} vs unrounded {e} (Σ|x·w| = {s})"
                            );
                        }
                    }
                }
            }
        }
        // Through `skinny_matmul`, bfloat16 weights take the chosen bfloat16 kernel.
        let (m, k, n) = (2usize, 64usize, 40usize);
        let x = values(m * k, 11);
        let wb = to_bf16(&values(n * k, 12));
        let mut y = vec![0f32; m * n];
        skinny_matmul(&x, m, k, Weights::Bf16(&wb), None, &mut y).unwrap();
        let want = reference(&x, m, k, &from_bf16(&wb), None);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn callers_on_several_threads_at_once_all_get_their_own_product() {
        // One caller's job runs on the pool while the others run theirs alone; every result
        // must still be right, and the pool must take jobs again afterwards.
        let (m, k, n) = (3usize, 64usize, 301usize);
        let w = values(n * k, 5);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let w = &w;
                scope.spawn(move || {
                    for round in 0..50u64 {
                        let x = values(m * k, t * 1000 + round);
                        let mut y = vec![0f32; m * n];
                        skinny_matmul(&x, m, k, Weights::F32(w), None, &mut y).unwrap();
                        let want = reference(&x, m, k, w, None);
                        for (a, b) in y.iter().zip(&want) {
                            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn inconsistent_shapes_are_an_error_not_a_panic() {
        let mut y = vec![0f32; 4];
        let w = vec![0f32; 8];
        assert!(skinny_matmul(&[0.0; 4], 2, 2, Weights::F32(&w), None, &mut y[..3]).is_err());
        assert!(skinny_matmul(&[0.0; 3], 2, 2, Weights::F32(&w), None, &mut y).is_err());
        // Past WIDE_ROWS only where the CPU has tiles, and never past MANY_ROWS.
        for rows in [WIDE_ROWS + 1, MANY_ROWS, MANY_ROWS + 1] {
            let x = vec![0.0; rows * 2];
            let mut wide = vec![0f32; rows * 4];
            let taken = skinny_matmul(&x, rows, 2, Weights::F32(&w), None, &mut wide).is_ok();
            assert_eq!(taken, takes_rows(rows, false), "{rows} rows");
            assert_eq!(
                taken,
                rows <= MANY_ROWS && tile::select(Weights::F32(&w)).is_some(),
                "{rows} rows"
            );
        }
        assert!(skinny_matmul(&[0.0; 4], 2, 2, Weights::F32(&w), Some(&[0.0; 3]), &mut y).is_err());
        assert!(skinny_matmul(&[0.0; 4], 2, 2, Weights::F32(&w[..7]), None, &mut y).is_err());
    }
}
