//! Times `skinny_matmul` over the weight shapes of SmolLM2-135M (30 blocks and the tied output
//! projection) at 1, 4 and 8 rows, in float32 and bfloat16: `cargo run --release -p
//! swift-kernels --example decode_shapes`. With `--cached`, it instead repeats one 576 × 576
//! float32 (then bfloat16) matrix that stays in cache, for the kernel's arithmetic rate without memory traffic
//! (per CPU second, which a shared machine disturbs least; `SWIFT_KERNEL=avx2-vl|avx2|portable`
//! picks the kernel). A quick look at the kernel alone; the real figures come from
//! `scripts/bench_infer.sh`.

mod common;
use common::cpu_seconds;

use std::time::Instant;

use swift_kernels::{skinny_matmul, Weights};

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
    let f32s: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(n, k)| (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect())
        .collect();
    let bf16s: Vec<Vec<u16>> = f32s
        .iter()
        .map(|w| w.iter().map(|v| (v.to_bits() >> 16) as u16).collect())
        .collect();
    for bf16 in [false, true] {
        for m in [1usize, 4, 8] {
            let run = || {
                for (i, &(n, k)) in shapes.iter().enumerate() {
                    let x = vec![0.5f32; m * k];
                    let mut y = vec![0f32; m * n];
                    let w = if bf16 {
                        Weights::Bf16(&bf16s[i])
                    } else {
                        Weights::F32(&f32s[i])
                    };
                    skinny_matmul(&x, m, k, w, None, &mut y).expect("shapes are consistent");
                }
            };
            run();
            let start = Instant::now();
            let cpu0 = cpu_seconds();
            let reps = 20;
            for _ in 0..reps {
                run();
            }
            let step = start.elapsed().as_secs_f64() / reps as f64;
            let cpu = (cpu_seconds() - cpu0) / reps as f64;
            let bytes: usize = shapes
                .iter()
                .map(|&(n, k)| n * k * if bf16 { 2 } else { 4 })
                .sum();
            println!(
                "{} rows={m}: {:.1} ms per token step ({:.1} ms of CPU time), {:.1} GB/s of weights, {:.1} tokens/s",
                if bf16 { "bf16" } else { "f32 " },
                step * 1e3,
                cpu * 1e3,
                bytes as f64 / step / 1e9,
                m as f64 / step
            );
        }
    }
}

/// The kernel on one small weight matrix that stays in cache, repeated.
fn cached() {
    let (n, k) = (576usize, 576usize);
    let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let wb: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    for (name, weights) in [("f32", Weights::F32(&w)), ("bf16", Weights::Bf16(&wb))] {
        for m in [1usize, 4, 8] {
            let x = vec![0.5f32; m * k];
            let mut y = vec![0f32; m * n];
            let reps = 8000;
            let start = Instant::now();
            let cpu0 = cpu_seconds();
            for _ in 0..reps {
                skinny_matmul(&x, m, k, weights, None, &mut y).expect("consistent shapes");
            }
            let s = start.elapsed().as_secs_f64();
            let flops = (2 * n * k * m * reps) as f64;
            println!(
                "{name} rows={m}: {:.1} GFLOP/s, {:.1} µs per call, {:.1} GFLOP per CPU second",
                flops / s / 1e9,
                s / reps as f64 * 1e6,
                flops / (cpu_seconds() - cpu0) / 1e9
            );
        }
    }
}
