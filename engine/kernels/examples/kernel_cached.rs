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
        let reps = 4000;
        let start = Instant::now();
        for _ in 0..reps {
            skinny_matmul(&x, m, k, Weights::F32(&w), None, &mut y).expect("consistent shapes");
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "rows={m}: {:.1} GFLOP/s, {:.1} µs per call",
            (2 * n * k * m * reps) as f64 / s / 1e9,
            s / reps as f64 * 1e6
        );
    }
}
