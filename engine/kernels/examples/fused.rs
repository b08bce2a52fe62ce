//! One decoding step's shared-input products, separately and together: per SmolLM2 block, q/k/v
//! (576, 192, 192 rows of 576) and gate/up (1536, 1536 rows of 576), as five pool jobs
//! (`quant_matmul` / `skinny_matmul` per matrix) against two (`matmul_many` per group), over 30
//! blocks' weights walked in turn (from memory, as a step meets them), rounds alternating A
//! (separate) and B (together). Prints the median wall time per step's 30 blocks and the CPU
//! time per step (both threads), for interleaved Q4_0 and Q8_0 and for float32:
//! `cargo run --release -p swift-kernels --example fused [-- --rows M]`.

mod common;
use common::{blocks, cpu_seconds, flag_value};

use std::time::Instant;

use swift_kernels::{
    matmul_many, quant_matmul, skinny_matmul, BlockType, Blocks, Product, ProductWeights, Weights,
};

const K: usize = 576;
const GROUPS: [&[usize]; 2] = [&[576, 192, 192], &[1536, 1536]];
const BLOCKS: usize = 30;

fn main() {
    let m: usize = flag_value("--rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let x: Vec<f32> = (0..m * K)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    println!("{m} activation row(s); A = one pool job per matrix, B = one per group; 30 blocks");
    for ty in [Some(BlockType::Q4_0), Some(BlockType::Q8_0), None] {
        // Per block and group, per matrix: its bytes (packed) or floats.
        let packed: Vec<Vec<Vec<u8>>> = (0..BLOCKS * 2)
            .map(|b| {
                GROUPS[b % 2]
                    .iter()
                    .map(|&n| ty.map_or_else(Vec::new, |t| blocks(t, n, K, b)))
                    .collect()
            })
            .collect();
        let floats: Vec<Vec<Vec<f32>>> = (0..BLOCKS * 2)
            .map(|b| {
                GROUPS[b % 2]
                    .iter()
                    .map(|&n| {
                        if ty.is_some() {
                            Vec::new()
                        } else {
                            (0..n * K).map(|i| ((i + b) % 17) as f32 / 17.0).collect()
                        }
                    })
                    .collect()
            })
            .collect();
        let weights = |b: usize, i: usize| match ty {
            Some(t) => ProductWeights::Blocks(Blocks {
                ty: t,
                data: &packed[b][i],
                interleaved: true,
            }),
            None => ProductWeights::Float(Weights::F32(&floats[b][i])),
        };
        let mut ys: Vec<Vec<f32>> = [576usize, 192, 192, 1536, 1536]
            .iter()
            .map(|&n| vec![0f32; m * n])
            .collect();
        let mut step = |together: bool| {
            for b in 0..BLOCKS * 2 {
                let (lo, hi) = if b % 2 == 0 { (0, 3) } else { (3, 5) };
                let outs = &mut ys[lo..hi];
                if together {
                    let mut parts: Vec<Product<'_, '_>> = outs
                        .iter_mut()
                        .enumerate()
                        .map(|(i, y)| Product {
                            weights: weights(b, i),
                            bias: None,
                            y,
                        })
                        .collect();
                    matmul_many(&x, m, K, &mut parts).expect("consistent shapes");
                } else {
                    for (i, y) in outs.iter_mut().enumerate() {
                        match weights(b, i) {
                            ProductWeights::Blocks(w) => quant_matmul(&x, m, K, w, None, y),
                            ProductWeights::Float(w) => skinny_matmul(&x, m, K, w, None, y),
                        }
                        .expect("consistent shapes");
                    }
                }
            }
        };
        let steps = if ty.is_some() { 200 } else { 40 };
        let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [0f64; 2]);
        for round in 0..14 {
            let together = round % 2 == 1;
            let (start, cpu0) = (Instant::now(), cpu_seconds());
            for _ in 0..steps {
                step(together);
            }
            if round >= 2 {
                wall[together as usize].push(start.elapsed().as_secs_f64() / steps as f64);
                cpu[together as usize] += (cpu_seconds() - cpu0) / steps as f64;
            }
        }
        let name = ty.map_or("F32", |t| t.name());
        for (i, label) in ["A separate", "B together"].iter().enumerate() {
            wall[i].sort_by(f64::total_cmp);
            println!(
                "{name:5} {label}: {:8.1} µs per step (median of {}), CPU {:8.1} µs per step",
                wall[i][wall[i].len() / 2] * 1e6,
                wall[i].len(),
                cpu[i] / wall[i].len() as f64 * 1e6
            );
        }
    }
}
