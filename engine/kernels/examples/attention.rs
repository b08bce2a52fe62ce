//! The decoding attention alone (`decode_attention`), one thread (`taskset -c 0` keeps the pool's
//! worker off): SmolLM2's shape (9 query heads over 3 key-value heads of 64) against a cache of
//! `--len` positions (default 200), 30 calls per "step" (a step's layers, each its own cache),
//! CPU time per step, median of rounds: `cargo run --release -p swift-kernels --example
//! attention [-- --len 200] [--evict MB]`. With `--evict MB`, each layer's attention is preceded
//! by reading MB megabytes of a buffer of 30 × MB (a layer's weights in a decoding step: about
//! 3 for SmolLM2 in Q4_0), so the caches start cold as in a step, and the figure is the wall time
//! of the attention calls alone (timed one by one; run it under `taskset -c 0` on a quiet core).

mod common;
use common::{cpu_seconds, flag_value};

use swift_kernels::{decode_attention, CacheView, DecodeShape};

fn main() {
    let len: usize = flag_value("--len")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let evict_mb: usize = flag_value("--evict")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (heads, kv, dim, layers) = (9usize, 3usize, 64usize, 30usize);
    let per_layer = evict_mb * (1 << 20) / 8;
    let weights: Vec<u64> = (0..per_layer * layers).map(|i| i as u64).collect();
    let mut sink = 0u64;
    let vals = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 2654435761 + seed) % 1000) as f32 - 500.0) / 500.0)
            .collect()
    };
    let q = vals(heads * dim, 1);
    let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..layers)
        .map(|l| (vals(kv * len * dim, 2 + l), vals(kv * len * dim, 100 + l)))
        .collect();
    let mut out = vec![0f32; heads * dim];
    let shape = DecodeShape {
        batch: 1,
        heads,
        kv_heads: kv,
        dim,
        len,
    };
    fn view(data: &[f32], len: usize, dim: usize) -> CacheView<'_> {
        CacheView {
            data,
            batch_stride: data.len(),
            head_stride: len * dim,
            pos_stride: dim,
        }
    }
    let steps = if evict_mb > 0 {
        2000 / (1 + evict_mb)
    } else {
        2000
    };
    let mut per_step = Vec::new();
    for _ in 0..7 {
        let c0 = cpu_seconds();
        let mut calls = std::time::Duration::ZERO;
        for _ in 0..steps {
            for (l, (k, v)) in caches.iter().enumerate() {
                let w = &weights[l * per_layer..(l + 1) * per_layer];
                sink = sink.wrapping_add(w.iter().fold(0u64, |a, &x| a ^ x));
                let t0 = std::time::Instant::now();
                decode_attention(
                    &q,
                    view(k, len, dim),
                    view(v, len, dim),
                    None,
                    shape,
                    0.125,
                    &mut out,
                )
                .expect("consistent shapes");
                calls += t0.elapsed();
            }
        }
        per_step.push(if evict_mb > 0 {
            calls.as_secs_f64() / steps as f64
        } else {
            (cpu_seconds() - c0) / steps as f64
        });
    }
    per_step.sort_by(f64::total_cmp);
    println!(
        "{len} positions, 30 layers, {evict_mb} MB read before each: {:.1} µs {} per step \
         (median of 7; {:.1}..{:.1}), check {} {}",
        per_step[3] * 1e6,
        if evict_mb > 0 {
            "wall (the calls)"
        } else {
            "CPU"
        },
        per_step[0] * 1e6,
        per_step[6] * 1e6,
        out.iter().sum::<f32>(),
        sink % 10
    );
}
