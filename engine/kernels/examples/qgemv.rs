//! The quantized matrix-vector product alone, one shape at a time: `quant_matmul` of one
//! activation row (batch-1 decoding) against each weight shape of SmolLM2-135M (576×576,
//! 192×576, 1536×576, 576×1536 and the 49152×576 output projection), interleaved Q8_0, Q4_0 and
//! Q4_1 as a loaded GGUF slot holds them, split over the kernel's threads as decoding does.
//!
//! Each shape is timed against copies of the weight that together exceed the caches (64 MB,
//! walked in turn, as a decoding step meets each weight once), so the figure is the product
//! streamed from memory; `--hot` reuses one copy (the arithmetic alone). Wall time per call,
//! the median of several rounds, in µs, ns per weight row and GB/s of weights:
//! `cargo run --release -p swift-kernels --example qgemv [-- --hot] [--rows M]`
//! (`SWIFT_QKERNEL=vnni|avx2|portable` picks the kernel).

mod common;
use common::{blocks, cpu_seconds, flag_value};

use std::time::Instant;

use swift_kernels::{quant_kernel_name, quant_matmul, BlockType, Blocks};

fn main() {
    let hot = std::env::args().any(|a| a == "--hot");
    let m: usize = flag_value("--rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let shapes = [
        (576usize, 576usize),
        (192, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ];
    println!(
        "kernel: {}, {} activation row(s), {}",
        quant_kernel_name(),
        m,
        if hot {
            "one copy (in cache)"
        } else {
            "64 MB of copies (from memory)"
        }
    );
    for ty in [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1] {
        for &(n, k) in &shapes {
            let bytes = ty.row_bytes(k) * n;
            let copies = if hot {
                1
            } else {
                (64usize << 20).div_ceil(bytes).max(2)
            };
            let packed: Vec<Vec<u8>> = (0..copies).map(|c| blocks(ty, n, k, c)).collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let mut y = vec![0f32; m * n];
            let calls = (copies * 4).max(1_000_000_000 / bytes.max(1)).min(100_000);
            let mut rounds = Vec::new();
            let cpu0 = cpu_seconds();
            for round in 0..7 {
                let start = Instant::now();
                for c in 0..calls {
                    let w = Blocks {
                        ty,
                        data: &packed[c % copies],
                        interleaved: true,
                    };
                    quant_matmul(&x, m, k, w, None, &mut y).expect("consistent shapes");
                }
                if round > 0 {
                    rounds.push(start.elapsed().as_secs_f64() / calls as f64);
                }
            }
            let cpu = (cpu_seconds() - cpu0) / (7 * calls) as f64;
            rounds.sort_by(f64::total_cmp);
            let t = rounds[rounds.len() / 2];
            println!(
                "{:4} {:5}x{:4}: {:8.2} µs per call, {:6.2} ns per row, {:6.1} GB/s; CPU {:6.2} ns per row",
                ty.name(),
                n,
                k,
                t * 1e6,
                t * 1e9 / n as f64,
                bytes as f64 / t / 1e9,
                cpu * 1e9 / n as f64
            );
        }
    }
}
