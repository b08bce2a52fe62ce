//! Times `skinny_matmul` over the weight shapes of SmolLM2-135M (30 blocks and the tied output
//! projection) at 1, 4, 8, 16 and 32 rows (`--rows 1,16` picks), in float32 and bfloat16, with
//! the arithmetic rate (GFLOP/s) beside the weights' streaming rate: `cargo run --release -p
//! swift-kernels --example decode_shapes`. With `--cached`, it instead repeats one 576 × 576
//! float32 (then bfloat16) matrix that stays in cache, for the kernel's arithmetic rate without memory traffic
//! (per CPU second, which a shared machine disturbs least; `SWIFT_KERNEL=avx2-vl|avx2|portable`
//! picks the kernel). A quick look at the kernel alone; the real figures come from
//! `scripts/bench_infer.sh`.

mod common;
use common::{cpu_seconds, flag_value};

use std::time::Instant;

use swift_kernels::{skinny_matmul, Weights};

/// The row counts of `--rows A,B,…`, else 1, 4, 8, 16 and 32.
fn row_counts() -> Vec<usize> {
    flag_value("--rows")
        .map(|v| {
            v.split(',')
                .map(|r| r.parse().expect("--rows takes row counts such as 1,16,32"))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 4, 8, 16, 32])
}

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
    let only =
        |t: &str| std::env::args().any(|a| a == "--only") && !std::env::args().any(|a| a == t);
    for bf16 in [false, true] {
        if only(if bf16 { "bf16" } else { "f32" }) {
            continue;
        }
        for &m in &row_counts() {
            // Each product's fastest call over the repetitions, summed: a step's time without
            // the preemptions a shared machine adds (its memory traffic stays).
            let mut best = vec![f64::MAX; shapes.len()];
            let run = |best: &mut [f64]| {
                for (i, &(n, k)) in shapes.iter().enumerate() {
                    let x = vec![0.5f32; m * k];
                    let mut y = vec![0f32; m * n];
                    let w = if bf16 {
                        Weights::Bf16(&bf16s[i])
                    } else {
                        Weights::F32(&f32s[i])
                    };
                    let t = Instant::now();
                    skinny_matmul(&x, m, k, w, None, &mut y).expect("shapes are consistent");
                    best[i] = best[i].min(t.elapsed().as_secs_f64());
                }
            };
            run(&mut vec![0.0; shapes.len()]);
            let start = Instant::now();
            let cpu0 = cpu_seconds();
            let reps = 20;
            for _ in 0..reps {
                run(&mut best);
            }
            let step = start.elapsed().as_secs_f64() / reps as f64;
            let cpu = (cpu_seconds() - cpu0) / reps as f64;
            let bytes: usize = shapes
                .iter()
                .map(|&(n, k)| n * k * if bf16 { 2 } else { 4 })
                .sum();
            let flops: usize = shapes.iter().map(|&(n, k)| 2 * n * k * m).sum();
            println!(
                "{} rows={m}: {:.1} ms per token step ({:.1} ms of CPU time, {:.1} ms summing each product's best call), {:.1} GB/s of weights, {:.1} GFLOP/s, {:.1} tokens/s",
                if bf16 { "bf16" } else { "f32 " },
                step * 1e3,
                cpu * 1e3,
                best.iter().sum::<f64>() * 1e3,
                bytes as f64 / step / 1e9,
                flops as f64 / step / 1e9,
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
        for &m in &row_counts() {
            let x = vec![0.5f32; m * k];
            let mut y = vec![0f32; m * n];
            let reps = 64000 / m.max(8);
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
