//! `scripts/check_nccl.sh`: on a CUDA host, a one-rank NCCL communicator (NCCL opened at run
//! time, `swift_dist::nccl`) and one data-parallel step of a small MLP on device 0: forward,
//! backward, the gradients all-reduced through NCCL as one flattened bucket (with one rank the
//! sum is the gradient itself, which is checked), an SGD update; prints each part's time.
//! Elsewhere prints "no CUDA device" and exits 0.

use std::time::Instant;

use swift_dist::nccl::{self, Nccl};
use tch::{Device, Kind, Tensor};

fn main() {
    if let Err(e) = run() {
        eprintln!("check_nccl: {e}");
        std::process::exit(1);
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    if !nccl::driver_present() {
        println!("no CUDA device (no NVIDIA driver on this machine)");
        return Ok(());
    }
    let t = Instant::now();
    nccl::load_torch_cuda()?;
    let n = tch::Cuda::device_count();
    if n == 0 {
        println!("no CUDA device (the driver is present but CUDA sees no device)");
        return Ok(());
    }
    println!(
        "CUDA: {n} device(s); libtorch_cuda.so opened in {:.1} ms",
        ms(t)
    );
    let device = Device::Cuda(0);
    let t = Instant::now();
    let lib = Nccl::open()?;
    let v = lib.version()?;
    println!(
        "NCCL {}.{}.{} opened in {:.1} ms",
        v / 10000,
        v / 100 % 100,
        v % 100,
        ms(t)
    );
    let t = Instant::now();
    let comm = lib.communicator(lib.unique_id()?, 0, 1)?;
    println!("one-rank communicator on cuda:0 in {:.1} ms", ms(t));

    // A small MLP: 1024 → 4096 → 1024, batch 64.
    tch::manual_seed(0);
    let opts = (Kind::Float, device);
    let w1 = (Tensor::randn([4096, 1024], opts) * 0.02).set_requires_grad(true);
    let w2 = (Tensor::randn([1024, 4096], opts) * 0.02).set_requires_grad(true);
    let x = Tensor::randn([64, 1024], opts);
    let y = Tensor::randn([64, 1024], opts);
    for step in 1..=3 {
        let t0 = Instant::now();
        let loss = x
            .matmul(&w1.tr())
            .relu()
            .matmul(&w2.tr())
            .mse_loss(&y, tch::Reduction::Mean);
        loss.backward();
        tch::Cuda::synchronize(0);
        let t_fb = ms(t0);
        let grads = [w1.grad(), w2.grad()];
        let flat = Tensor::cat(&[grads[0].reshape([-1]), grads[1].reshape([-1])], 0);
        let before = flat.copy();
        let t1 = Instant::now();
        comm.all_reduce_sum(&flat)?;
        tch::Cuda::synchronize(0);
        let t_ar = ms(t1);
        let diff = (&flat - &before).abs().max().double_value(&[]);
        if diff != 0.0 {
            return Err(
                format!("a one-rank all-reduce changed the gradients by up to {diff}").into(),
            );
        }
        let t2 = Instant::now();
        {
            let _guard = tch::no_grad_guard();
            let n1 = w1.numel() as i64;
            let g1 = flat.narrow(0, 0, n1).view([4096, 1024]);
            let g2 = flat
                .narrow(0, n1, flat.numel() as i64 - n1)
                .view([1024, 4096]);
            let _ = w1.shallow_clone().f_sub_(&(g1 * 1e-3))?;
            let _ = w2.shallow_clone().f_sub_(&(g2 * 1e-3))?;
        }
        let (mut a, mut b) = (w1.shallow_clone(), w2.shallow_clone());
        a.zero_grad();
        b.zero_grad();
        tch::Cuda::synchronize(0);
        println!(
            "step {step}: loss {:.5}; forward+backward {t_fb:.2} ms, NCCL all-reduce of {:.1} MiB {t_ar:.2} ms, update {:.2} ms",
            loss.double_value(&[]),
            flat.numel() as f64 * 4.0 / 1048576.0,
            ms(t2)
        );
    }
    println!("NCCL: ok");
    Ok(())
}
