//! Times `quant_matmul` over the weight shapes of SmolLM2-135M (30 blocks and the tied output
//! projection) at 1, 4 and 8 rows, for every block layout (the K-quants' shapes as if every
//! width were whole super-blocks: 576 is rounded up to 768): `cargo run --release -p
//! swift-kernels --example quant_shapes` (`SWIFT_QKERNEL=vnni|avx2|portable` picks the kernel).
//! Q8_0, Q4_0 and Q4_1 run twice: rows one after the other, and interleaved as a loaded GGUF
//! slot holds them (`swift_kernels::interleave`).
//! A quick look at the kernel alone; the real figures come from `scripts/bench_decode.py`.

mod common;
use common::cpu_seconds;

use std::time::Instant;

use swift_kernels::{interleave, interleaves, quant_kernel_name, quant_matmul, BlockType, Blocks};

fn main() {
    if std::env::args().any(|a| a == "--cached") {
        return cached();
    }
    let (h, inter, kv, vocab) = (576usize, 1536usize, 192usize, 49152usize);
    let mut shapes = Vec::new();
    for _ in 0..30 {
        shapes.extend([
            (h, h),
            (kv, h),
            (kv, h),
            (h, h),
            (inter, h),
            (inter, h),
            (h, inter),
        ]);
    }
    shapes.push((vocab, h));
    println!("kernel: {}", quant_kernel_name());
    for (ty, interleaved) in layouts() {
        let shapes: Vec<(usize, usize)> = shapes
            .iter()
            .map(|&(n, k)| (n, k.next_multiple_of(ty.block_elems())))
            .collect();
        let packed: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&(n, k)| blocks(ty, n, k, interleaved))
            .collect();
        for m in [1usize, 4, 8] {
            let run = || {
                for (i, &(n, k)) in shapes.iter().enumerate() {
                    let x = vec![0.5f32; m * k];
                    let mut y = vec![0f32; m * n];
                    let w = Blocks {
                        ty,
                        data: &packed[i],
                        interleaved,
                    };
                    quant_matmul(&x, m, k, w, None, &mut y).expect("shapes are consistent");
                }
            };
            run();
            let start = Instant::now();
            let reps = 20;
            for _ in 0..reps {
                run();
            }
            let step = start.elapsed().as_secs_f64() / reps as f64;
            let bytes: usize = packed.iter().map(Vec::len).sum();
            println!(
                "{}{} rows={m}: {:.2} ms per token step, {:.1} GB/s of weights, {:.1} tokens/s",
                ty.name(),
                if interleaved { " interleaved" } else { "" },
                step * 1e3,
                bytes as f64 / step / 1e9,
                m as f64 / step
            );
        }
    }
}

/// One 576 × 576 matrix that stays in cache, repeated: nanoseconds of CPU time per block, the
/// kernel's arithmetic cost without memory traffic (CPU time: steadier on a shared machine).
fn cached() {
    let (n, k) = (576usize, 576usize);
    for (ty, interleaved) in layouts() {
        let k = k.next_multiple_of(ty.block_elems());
        let w = blocks(ty, n, k, interleaved);
        for m in [1usize, 4, 8] {
            let x = vec![0.5f32; m * k];
            let mut y = vec![0f32; m * n];
            let reps = 2000;
            let cpu0 = cpu_seconds();
            for _ in 0..reps {
                let w = Blocks {
                    ty,
                    data: &w,
                    interleaved,
                };
                quant_matmul(&x, m, k, w, None, &mut y).expect("consistent");
            }
            let cpu = cpu_seconds() - cpu0;
            let groups = (n * k / 32 * reps) as f64;
            println!(
                "{}{} rows={m}: {:.2} ns of CPU per group of 32 weights",
                ty.name(),
                if interleaved { " interleaved" } else { "" },
                cpu / groups * 1e9
            );
        }
    }
}

/// Every layout, and the interleaved one of those that have it.
fn layouts() -> Vec<(BlockType, bool)> {
    BlockType::ALL
        .into_iter()
        .flat_map(|ty| [(ty, false), (ty, true)])
        .filter(|&(ty, i)| !i || interleaves(ty))
        .collect()
}

/// `n` rows of `k` weights in `ty`: varied codes, every float16 scale 1/64 (0x2400).
fn blocks(ty: BlockType, n: usize, k: usize, interleaved: bool) -> Vec<u8> {
    let mut v: Vec<u8> = (0..ty.row_bytes(k) * n)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let scales: &[usize] = match ty {
        BlockType::Q4_1 | BlockType::Q4_K => &[0, 2],
        BlockType::Q6_K => &[208],
        _ => &[0],
    };
    for b in v.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            b[at] = 0x00;
            b[at + 1] = 0x24;
        }
    }
    if interleaved {
        interleave(ty, &mut v, k).expect("whole rows");
    }
    v
}
