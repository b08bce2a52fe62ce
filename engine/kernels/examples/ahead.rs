//! Reading weights ahead between products (`src/ahead.rs`), off and on, in one process: a
//! SmolLM2-shaped decoding step's products (30 blocks of q/k/v and gate/up, each group one
//! `matmul_many` job, o and down one `quant_matmul` each; then a 49152-row Q8_0 output
//! projection, `quant_matmul_fine`), with the calling thread busy for `--gap` µs of serial work
//! before each product (what a step's norms, rotary embeddings and libtorch's operations take),
//! rounds alternating off and on. Prints the median wall time per step less the gaps, and the
//! process's CPU time per step: `cargo run --release -p swift-kernels --example ahead [-- --gap
//! 15 --type q4_0|q8_0|q4_1]`.

mod common;
use common::{blocks, cpu_seconds, flag_value};

use std::time::{Duration, Instant};

use swift_kernels::{
    matmul_many, quant_matmul, quant_matmul_fine, set_read_ahead, BlockType, Blocks, Product,
    ProductWeights,
};

const K: usize = 576;
const BLOCKS: usize = 30;
/// A block's products in order: q/k/v together, o, gate/up together, down (its input 1536 wide).
const PRODUCTS: [(&[usize], usize); 4] = [
    (&[576, 192, 192], K),
    (&[576], K),
    (&[1536, 1536], K),
    (&[576], 1536),
];
const VOCAB: usize = 49152;

fn main() {
    let gap = Duration::from_micros(
        flag_value("--gap")
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    );
    let ty = match flag_value("--type").as_deref() {
        None | Some("q4_0") => BlockType::Q4_0,
        Some("q8_0") => BlockType::Q8_0,
        Some("q4_1") => BlockType::Q4_1,
        Some(t) => panic!("--type takes q4_0, q8_0 or q4_1; got {t}"),
    };
    // Per block and product, per matrix: its interleaved blocks; then the output projection.
    let weights: Vec<Vec<Vec<u8>>> = (0..BLOCKS * PRODUCTS.len())
        .map(|p| {
            let (ns, k) = PRODUCTS[p % PRODUCTS.len()];
            ns.iter().map(|&n| blocks(ty, n, k, p)).collect()
        })
        .collect();
    let head = blocks(BlockType::Q8_0, VOCAB, K, 7);
    let x: Vec<f32> = (0..1536)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut ys: Vec<Vec<f32>> = vec![vec![0f32; 1536]; 3];
    let mut logits = vec![0f32; VOCAB];
    let busy = |d: Duration| {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    };
    let mut step = || {
        for (p, ws) in weights.iter().enumerate() {
            busy(gap);
            let (ns, k) = PRODUCTS[p % PRODUCTS.len()];
            let b = |i: usize| Blocks {
                ty,
                data: &ws[i],
                interleaved: true,
            };
            if ns.len() == 1 {
                quant_matmul(&x[..k], 1, k, b(0), None, &mut ys[0][..ns[0]])
            } else {
                let mut parts: Vec<Product<'_, '_>> = ys
                    .iter_mut()
                    .zip(ns)
                    .enumerate()
                    .map(|(i, (y, &n))| Product {
                        weights: ProductWeights::Blocks(b(i)),
                        bias: None,
                        y: &mut y[..n],
                    })
                    .collect();
                matmul_many(&x[..k], 1, k, &mut parts)
            }
            .expect("consistent shapes");
        }
        busy(gap);
        let head = Blocks {
            ty: BlockType::Q8_0,
            data: &head,
            interleaved: true,
        };
        quant_matmul_fine(&x[..K], 1, K, head, None, &mut logits).expect("consistent shapes");
    };
    let gaps = gap.as_secs_f64() * (weights.len() + 1) as f64;
    println!(
        "{} blocks + Q8_0 output projection, gap {} µs before each of {} products",
        ty.name(),
        gap.as_micros(),
        weights.len() + 1
    );
    let steps = 20;
    let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [0f64; 2]);
    for round in 0..16 {
        let on = round % 2 == 1;
        set_read_ahead(on);
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        for _ in 0..steps {
            step();
        }
        if round >= 2 {
            wall[on as usize].push(start.elapsed().as_secs_f64() / steps as f64 - gaps);
            cpu[on as usize] += (cpu_seconds() - cpu0) / steps as f64;
        }
    }
    for (i, label) in ["off", "on "].iter().enumerate() {
        wall[i].sort_by(f64::total_cmp);
        println!(
            "read ahead {label}: products {:7.1} µs per step (median of {}; gaps taken off), CPU {:7.1} µs per step",
            wall[i][wall[i].len() / 2] * 1e6,
            wall[i].len(),
            cpu[i] / wall[i].len() as f64 * 1e6
        );
    }
}
