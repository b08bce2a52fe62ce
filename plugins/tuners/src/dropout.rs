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
//! the dropout costs one pass over `x` forward and one backward. The mask is drawn as 0 and 1 in
//! `x`'s own dtype: a boolean mask was cast to `x`'s dtype by libtorch (a temporary copy) in the
//! product forward and again in its backward, 3x the time of the product with a float mask
//! (BENCHMARKS.md, "Issue 23: the LoRA dropout mask in the input's dtype"); the mask kept for
//! the backward is 4 bytes an element in float32 instead of 1.

use swift_plugin_tensors::tch::{self, Device, Kind, Tensor};

/// SplitMix64's increment and finaliser.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the keep decisions of elements `0..out.len()` (`one` kept, `zero` dropped):
/// element `2k` takes the low 32 bits of draw `k`, element `2k + 1` the high ones.
#[inline(always)]
fn fill_keep_with<T: Copy>(out: &mut [T], seed: u64, threshold: u64, one: T, zero: T) {
    let pick = |bits: u64| if bits < threshold { one } else { zero };
    let mut pairs = out.chunks_exact_mut(2);
    let mut k = 0u64;
    for pair in &mut pairs {
        let z = mix(seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN)));
        pair[0] = pick(z & 0xFFFF_FFFF);
        pair[1] = pick(z >> 32);
        k += 1;
    }
    if let [last] = pairs.into_remainder() {
        let z = mix(seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN)));
        *last = pick(z & 0xFFFF_FFFF);
    }
}

/// [`fill_keep_with`] compiled for AVX-512 (its 64-bit lane multiplies vectorize SplitMix64);
/// the same integer arithmetic, so the same mask, as the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
unsafe fn fill_keep_avx512<T: Copy>(out: &mut [T], seed: u64, threshold: u64, one: T, zero: T) {
    fill_keep_with(out, seed, threshold, one, zero)
}

/// [`fill_keep_with`] on the widest build the CPU runs, chosen at run time.
fn fill_keep<T: Copy>(out: &mut [T], seed: u64, threshold: u64, one: T, zero: T) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bw")
    {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { fill_keep_avx512(out, seed, threshold, one, zero) };
    }
    fill_keep_with(out, seed, threshold, one, zero)
}

/// A fresh contiguous CPU tensor of `x`'s shape and `kind`, its `n` elements of type `T`
/// filled by `fill`.
///
/// # Safety
/// `T` must have the size of one element of `kind` and accept any bit pattern `fill` writes.
unsafe fn mask_of<T>(
    x: &Tensor,
    kind: Kind,
    fill: impl FnOnce(&mut [T]),
) -> Result<Tensor, tch::TchError> {
    let keep = Tensor::f_empty(x.size().as_slice(), (kind, Device::Cpu))?;
    let n = keep.numel();
    // SAFETY: `keep` is a fresh contiguous CPU tensor of `n` elements of `kind`, each of type
    // `T`'s size (the caller's promise), and only this slice refers to its memory while it is
    // filled.
    let out = unsafe { std::slice::from_raw_parts_mut(keep.data_ptr() as *mut T, n) };
    fill(out);
    Ok(keep)
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
    dropped_with_seed(x, p, seed as u64)
}

/// [`dropped`] on the CPU for `0 < p < 1` with the mask of `seed`.
fn dropped_with_seed(x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, f64), tch::TchError> {
    let threshold = ((1.0 - p) * 4_294_967_296.0).round() as u64;
    // SAFETY: each arm pairs a kind with its element type (f32, f64, 16-bit bit patterns of
    // 1.0 and 0.0, one-byte booleans of 0 and 1).
    let keep = unsafe {
        match x.kind() {
            Kind::Float => mask_of(x, Kind::Float, |o| {
                fill_keep(o, seed, threshold, 1f32, 0f32)
            })?,
            Kind::Double => mask_of(x, Kind::Double, |o| {
                fill_keep(o, seed, threshold, 1f64, 0f64)
            })?,
            // 1.0 in bfloat16 and in IEEE half, as bits.
            Kind::BFloat16 => mask_of(x, Kind::BFloat16, |o| {
                fill_keep(o, seed, threshold, 0x3F80u16, 0)
            })?,
            Kind::Half => mask_of(x, Kind::Half, |o| {
                fill_keep(o, seed, threshold, 0x3C00u16, 0)
            })?,
            // Other dtypes: booleans, cast once to `x`'s dtype.
            k => {
                mask_of(x, Kind::Bool, |o| fill_keep(o, seed, threshold, 1u8, 0u8))?.f_to_kind(k)?
            }
        }
    };
    Ok((x.f_mul(&keep)?, 1.0 / (1.0 - p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_its_reference_values() {
        let _rng = crate::tests::global_rng();
        // SplitMix64 from state 0 (Vigna's splitmix64.c): the first outputs.
        assert_eq!(mix(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn every_dtype_and_build_draws_the_same_mask() {
        let _rng = crate::tests::global_rng();
        // The portable build's one-byte decisions, against the dispatched (AVX-512 where the
        // CPU has it) build in each element type, odd length for the remainder.
        let (seed, threshold) = (
            0x1234_5678_9ABC_DEF0u64,
            ((0.9f64) * 4_294_967_296.0) as u64,
        );
        let mut bytes = vec![0u8; 1001];
        fill_keep_with(&mut bytes, seed, threshold, 1, 0);
        let mut floats = vec![0f32; 1001];
        fill_keep(&mut floats, seed, threshold, 1.0, 0.0);
        let mut halves = vec![0u16; 1001];
        fill_keep(&mut halves, seed, threshold, 0x3F80, 0);
        for i in 0..bytes.len() {
            assert_eq!(f32::from(bytes[i]), floats[i], "element {i}");
            assert_eq!(u16::from(bytes[i]) * 0x3F80, halves[i], "element {i}");
        }
        // The first decision by hand: the low 32 bits of SplitMix64's first output.
        let z = mix(seed.wrapping_add(GOLDEN));
        assert_eq!(bytes[0], u8::from((z & 0xFFFF_FFFF) < threshold));
        assert_eq!(bytes[1], u8::from((z >> 32) < threshold));
        // The tensors in each dtype: the same zeros.
        let x = Tensor::ones([33, 17], (Kind::Float, Device::Cpu));
        let (f, _) = dropped_with_seed(&x, 0.3, 5).unwrap();
        for kind in [Kind::BFloat16, Kind::Half, Kind::Double, Kind::Int] {
            let (y, _) = dropped_with_seed(&x.to_kind(kind), 0.3, 5).unwrap();
            assert_eq!(y.kind(), kind);
            assert!(y.to_kind(Kind::Float).equal(&f), "{kind:?}");
        }
    }

    #[test]
    fn keeps_the_asked_share_and_follows_the_seed() {
        let _rng = crate::tests::global_rng();
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
