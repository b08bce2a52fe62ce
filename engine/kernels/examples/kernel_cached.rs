//! The kernel on one small weight matrix that stays in cache, repeated: its arithmetic speed
//! without the memory traffic (`cargo run --release -p swift-kernels --example kernel_cached`).

use std::time::Instant;

use swift_kernels::{skinny_matmul, Weights};

fn main() {
    let (n, k) = (576usize, 576usize);
    let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect();
    for m in [1usize, 4, 8] {
        let x = vec![0.5f32; m * k];
        let mut y = vec![0f32; m * n];
        let reps = 8000;
        let start = Instant::now();
        let cpu0 = cpu_seconds();
        for _ in 0..reps {
            skinny_matmul(&x, m, k, Weights::F32(&w), None, &mut y).expect("consistent shapes");
        }
        let s = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "rows={m}: {:.1} GFLOP/s, {:.1} µs per call, {:.1} GFLOP per CPU second",
            (2 * n * k * m * reps) as f64 / s / 1e9,
            s / reps as f64 * 1e6,
            (2 * n * k * m * reps) as f64 / cpu / 1e9
        );
    }
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
