//! The adapters' dropout on the CPU: the keep mask drawn here instead of by libtorch.
//!
//! libtorch draws a CPU dropout mask (`bernoulli_`) element by element from its Mersenne
//! Twister on one thread, except on Intel CPUs where it calls MKL; on the AMD EPYC machines the
//! LoRA SFT benchmark measured that draw at 7% of a training step's CPU time, on one thread
//! while the other waited (BENCHMARKS.md, "Where a LoRA SFT step goes"). Here one seed is taken
//! from libtorch's generator (so `manual_seed`, the trainer's per-step seeding and gradient
//! checkpointing's re-seeding govern the masks as before) and each element's 32 random bits
//! are SplitMix64 of the seed and its index: an element is kept when they are below
//! `round((1 − p) · 2³²)`, exact to 2⁻³² where libtorch's float draw is exact to 2⁻²⁴.
//!
//! [`dropped`] returns `x ⊙ keep` *without* the `1 / (1 − p)` rescaling, and that factor, so a
//! caller folds it into a later product (LoRA: into its scaling of the rank-wide product), and
//! the dropout costs one pass over `x` forward and one backward, holding a one-byte mask.

use swift_plugin_tensors::tch::{self, Device, Kind, Tensor};

/// SplitMix64's increment and finaliser.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the keep decisions of elements `0..out.len()`: element `2k` takes the low
/// 32 bits of draw `k`, element `2k + 1` the high ones.
fn fill_keep(out: &mut [u8], seed: u64, threshold: u64) {
    let mut pairs = out.chunks_exact_mut(2);
    let mut k = 0u64;
    for pair in &mut pairs {
        let z = mix(seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN)));
        pair[0] = u8::from((z & 0xFFFF_FFFF) < threshold);
        pair[1] = u8::from((z >> 32) < threshold);
        k += 1;
    }
    if let [last] = pairs.into_remainder() {
        let z = mix(seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN)));
        *last = u8::from((z & 0xFFFF_FFFF) < threshold);
    }
}

/// `x ⊙ keep` (each element kept with probability `1 − p`) and the factor `1 / (1 − p)` that
/// makes it torch's dropout; `x` itself and 1 when `p` is 0. On other devices than the CPU,
/// libtorch's dropout with the factor 1.
pub fn dropped(x: &Tensor, p: f64) -> Result<(Tensor, f64), tch::TchError> {
    if p <= 0.0 {
        return Ok((x.shallow_clone(), 1.0));
    }
    if p >= 1.0 {
        return Ok((x.f_zeros_like()?, 1.0));
    }
    if x.device() != Device::Cpu {
        return Ok((x.f_native_dropout(p, true)?.0, 1.0));
    }
    let seed = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])?;
    let keep = Tensor::f_empty(x.size().as_slice(), (Kind::Bool, Device::Cpu))?;
    let n = keep.numel();
    let threshold = ((1.0 - p) * 4_294_967_296.0).round() as u64;
    // SAFETY: `keep` is a fresh contiguous CPU tensor of `n` one-byte booleans, and only this
    // slice refers to its memory while it is filled with 0 and 1.
    let out = unsafe { std::slice::from_raw_parts_mut(keep.data_ptr() as *mut u8, n) };
    fill_keep(out, seed as u64, threshold);
    Ok((x.f_mul(&keep)?, 1.0 / (1.0 - p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_its_reference_values() {
        // SplitMix64 from state 0 (Vigna's splitmix64.c): the first outputs.
        assert_eq!(mix(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn keeps_the_asked_share_and_follows_the_seed() {
        tch::manual_seed(3);
        let x = Tensor::ones([1000, 101], (Kind::Float, Device::Cpu));
        let (y, f) = dropped(&x, 0.05).unwrap();
        assert!((f - 1.0 / 0.95).abs() < 1e-12);
        let v: Vec<f32> = y.view([-1]).try_into().unwrap();
        assert!(v.iter().all(|&e| e == 0.0 || e == 1.0));
        let kept = v.iter().filter(|&&e| e == 1.0).count() as f64 / v.len() as f64;
        // 101,000 draws: the standard deviation of the share is 0.0007.
        assert!((kept - 0.95).abs() < 0.004, "{kept}");
        tch::manual_seed(3);
        let (again, _) = dropped(&x, 0.05).unwrap();
        assert!(y.equal(&again), "the same seed draws the same mask");
        let (next, _) = dropped(&x, 0.05).unwrap();
        assert!(!y.equal(&next), "the generator moved on");
        // Gradient: the kept elements pass it, the dropped ones do not.
        let x = Tensor::ones([64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (y, _) = dropped(&x, 0.5).unwrap();
        y.sum(Kind::Float).backward();
        assert!(x.grad().equal(&y.detach()));
    }
}
