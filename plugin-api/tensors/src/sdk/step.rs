//! A decoding step's RMS norm, residual add and gated product on raw buffers, rounding bit for
//! bit as the libtorch expressions they replace (so greedy tokens and quantized models' near-ties
//! stay where they were): a batch-1 step spends more time dispatching libtorch's small
//! operations (a float32 RMS norm is six of them plus the bfloat16 weight's widening) than
//! computing them.
//!
//! The norm's only reduction, the sum of squares, follows libtorch's CPU sum kernel
//! (`SumKernel.cpp`: `cascade_sum` → `vectorized_inner_sum` → `row_sum` → `multi_row_sum`):
//! `W`-lane vector accumulators over four vectors at a time, cascaded every 16 of those, the
//! scalar tail summed first and the lanes added to it in order; `W` is the vector width of the
//! kernels libtorch dispatched to on this machine (8 with AVX2, 16 with AVX-512). Which width
//! libtorch uses is found once per process by comparing both against libtorch's own `rms_norm`
//! on fixed inputs ([`torch_lanes`]); where neither matches bit for bit (another libtorch), the
//! norm stays libtorch's. Then `mean = sum / n`, `x · (1 / sqrt(mean + eps)) · w`, each rounded
//! to float32 as libtorch's `pow`, `mean` (sum, then divide), `add_`, `rsqrt` and `mul` do.
//!
//! Every function returns `None` where its fast path does not apply (another dtype or device,
//! autograd on, more rows than a decoding step); the caller then runs the libtorch expression.

use super::shape::{numel, shape};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use super::plain::{fill_new, values};

/// The most values (rows times width) a pass here takes: a decoding step's activations, within
/// libtorch's single-threaded reduction grain, so its sum is one chunk per row as emulated.
const MAX_VALUES: usize = 32_768;

/// The libtorch sum's vector width on this machine, or None where neither emulation matches.
fn torch_lanes() -> Option<usize> {
    static LANES: OnceLock<Option<usize>> = OnceLock::new();
    *LANES.get_or_init(|| {
        // Widths where 8- and 16-lane orders part (a full cascade of 16, leftover vectors, a
        // scalar tail) and values of mixed magnitude, so the orders round differently.
        let cases: Vec<(Vec<f32>, Vec<f32>)> = [576usize, 2100, 100, 64]
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                let mut s = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c as u64 + 1) | 1;
                let mut next = move || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 7.0
                };
                let x: Vec<f32> = (0..n).map(|i| next() * (1.0 + (i % 13) as f32)).collect();
                let w: Vec<f32> = (0..n).map(|_| next()).collect();
                (x, w)
            })
            .collect();
        let reference: Option<Vec<Vec<f32>>> = cases
            .iter()
            .map(|(x, w)| {
                let n = x.len() as i64;
                let (xt, wt) = (Tensor::from_slice(x), Tensor::from_slice(w));
                let y = xt.f_rms_norm([n], Some(&wt), 1e-5).ok()?;
                Vec::<f32>::try_from(y).ok()
            })
            .collect();
        let reference = reference?;
        [8usize, 16].into_iter().find(|&lanes| {
            cases.iter().zip(&reference).all(|((x, w), want)| {
                let mut got = vec![0f32; x.len()];
                norm_row(x, Weight::F32(w), 1e-5, lanes, &mut got);
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            })
        })
    })
}

/// libtorch's float32 sum of `x[i]²` over a contiguous row, in its kernel's order with `W`
/// lanes (see the module's doc).
fn sum_of_squares<const W: usize>(x: &[f32]) -> f32 {
    const ILP: usize = 4;
    // `multi_row_sum`'s cascade: max(4, ceil(log2(rows)) / 4) bits per level, so 16 rows of
    // vectors per level for any row shorter than 2^20 vectors (MAX_VALUES keeps it so).
    const LEVEL_POWER: usize = 4;
    const STEP: usize = 1 << LEVEL_POWER;
    let nvec = x.len() / W;
    let rows = nvec / ILP;
    let square = |v: usize| -> [f32; W] {
        let mut a = [0f32; W];
        for (l, a) in a.iter_mut().enumerate() {
            let e = x[v * W + l];
            *a = e * e;
        }
        a
    };
    fn add<const W: usize>(a: &mut [f32; W], b: &[f32; W]) {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
    let mut acc = [[[0f32; W]; ILP]; 4];
    let mut i = 0;
    while i + STEP <= rows {
        for _ in 0..STEP {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add(a, &square(i * ILP + k));
            }
            i += 1;
        }
        for j in 1..4 {
            let (lower, upper) = acc.split_at_mut(j);
            for (u, l) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                add(u, l);
                *l = [0.0; W];
            }
            if i & ((STEP - 1) << (j * LEVEL_POWER)) != 0 {
                break;
            }
        }
    }
    while i < rows {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add(a, &square(i * ILP + k));
        }
        i += 1;
    }
    let (first, levels) = acc.split_at_mut(1);
    for level in levels.iter() {
        for (a, u) in first[0].iter_mut().zip(level) {
            add(a, u);
        }
    }
    let mut partial = first[0];
    for v in rows * ILP..nvec {
        add(&mut partial[0], &square(v));
    }
    let (head, others) = partial.split_at_mut(1);
    for p in others.iter() {
        add(&mut head[0], p);
    }
    let mut total = 0f32;
    for e in &x[nvec * W..] {
        total += e * e;
    }
    for lane in partial[0] {
        total += lane;
    }
    total
}

/// A norm's weights as stored.
#[derive(Clone, Copy)]
enum Weight<'a> {
    F32(&'a [f32]),
    /// bfloat16 bit patterns, widened as read (exactly, as libtorch's `to(float)`).
    Bf16(&'a [u16]),
}

/// One row: `(x · (1 / sqrt(sum(x²) / n + eps))) · w` into `out`.
fn norm_row(x: &[f32], w: Weight<'_>, eps: f64, lanes: usize, out: &mut [f32]) {
    let sum = match lanes {
        16 => sum_of_squares::<16>(x),
        _ => sum_of_squares::<8>(x),
    };
    let mean = sum / x.len() as f32;
    let r = 1.0 / (mean + eps as f32).sqrt();
    match w {
        Weight::F32(w) => {
            for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
                *o = (x * r) * w;
            }
        }
        Weight::Bf16(w) => {
            for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
                *o = (x * r) * f32::from_bits(u32::from(*w) << 16);
            }
        }
    }
}

/// `rms_norm(x, weight, eps)` over the last dimension for float32 `x` and float32 or bfloat16
/// weights, bit for bit libtorch's; `None` where this path does not apply.
pub fn rms_norm_step(x: &Tensor, weight: &Tensor, eps: f64) -> Option<Tensor> {
    let size = shape(x);
    let n = *size.last()? as usize;
    let xs = values(x)?;
    // Below one vector libtorch's sum takes another loop; beyond a step's size, its threads.
    if n < 16 || xs.len() > MAX_VALUES || shape(weight) != [n as i64] {
        return None;
    }
    if weight.device() != Device::Cpu || weight.requires_grad() || !weight.is_contiguous() {
        return None;
    }
    let lanes = torch_lanes()?;
    // SAFETY: a contiguous CPU tensor of `n` values of the kind matched, which outlives this
    // call; nothing writes it meanwhile.
    let w = unsafe {
        match weight.kind() {
            Kind::Float => Weight::F32(std::slice::from_raw_parts(
                weight.data_ptr() as *const f32,
                n,
            )),
            Kind::BFloat16 => Weight::Bf16(std::slice::from_raw_parts(
                weight.data_ptr() as *const u16,
                n,
            )),
            _ => return None,
        }
    };
    fill_new(&size, |out| {
        for (o, x) in out.chunks_exact_mut(n).zip(xs.chunks_exact(n)) {
            norm_row(x, w, eps, lanes, o);
        }
    })
}

/// `a + b` for two float32 tensors of one shape (a residual connection), one pass into a new
/// tensor; `None` where this path does not apply.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let size = shape(a);
    if shape(b) != size || numel(a) > MAX_VALUES {
        return None;
    }
    let (av, bv) = (values(a)?, values(b)?);
    fill_new(&size, |out| {
        for ((o, a), b) in out.iter_mut().zip(av).zip(bv) {
            *o = a + b;
        }
    })
}

/// `y *= b` in place for `y`, a float32 tensor this caller alone holds (just computed), and `b`
/// of the same shape; false, changing nothing, where this path does not apply.
pub(crate) fn mul_into(y: &Tensor, b: &Tensor) -> bool {
    if shape(b) != shape(y) || numel(y) > MAX_VALUES {
        return false;
    }
    let (Some(yv), Some(bv)) = (values(y), values(b)) else {
        return false;
    };
    let (ptr, n) = (yv.as_ptr() as *mut f32, yv.len());
    // SAFETY: `y` is a contiguous float32 CPU tensor of `n` values that only the caller holds
    // (the caller's contract), so writing it through its data pointer aliases nothing else;
    // `b` is a different tensor (the caller's own `y` cannot be borrowed as `b` and be new).
    let ys = unsafe { std::slice::from_raw_parts_mut(ptr, n) };
    if std::ptr::eq(ys.as_ptr(), bv.as_ptr()) {
        return false;
    }
    for (y, b) in ys.iter_mut().zip(bv) {
        *y *= b;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        Vec::<f32>::try_from(t.flatten(0, -1))
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn the_norm_rounds_as_libtorch_bit_for_bit() {
        assert!(
            torch_lanes().is_some(),
            "neither sum order matched libtorch's"
        );
        for (rows, n) in [(1, 576), (1, 64), (3, 1536), (2, 100), (1, 5000), (4, 24)] {
            let x = Tensor::randn([rows, 1, n], (Kind::Float, Device::Cpu)) * 3.0;
            let w = Tensor::randn([n], (Kind::Float, Device::Cpu));
            let want = x.rms_norm([n], Some(&w), 1e-5);
            let got = rms_norm_step(&x, &w, 1e-5).unwrap();
            assert_eq!(bits(&got), bits(&want), "{rows} x {n}");
            // bfloat16 weights: libtorch's float32 norm with the weights widened.
            let wb = w.to_kind(Kind::BFloat16);
            let want = x.rms_norm([n], Some(&wb.to_kind(Kind::Float)), 1e-6);
            let got = rms_norm_step(&x, &wb, 1e-6).unwrap();
            assert_eq!(bits(&got), bits(&want), "bfloat16 weights, {rows} x {n}");
        }
    }

    #[test]
    fn add_and_mul_round_as_libtorch() {
        let a = Tensor::randn([1, 1, 576], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([1, 1, 576], (Kind::Float, Device::Cpu));
        assert_eq!(bits(&add(&a, &b).unwrap()), bits(&(&a + &b)));
        let want = &a * &b;
        let y = a.copy();
        assert!(mul_into(&y, &b));
        assert_eq!(bits(&y), bits(&want));
    }

    #[test]
    fn other_inputs_take_the_libtorch_path() {
        let w = Tensor::ones([8], (Kind::Float, Device::Cpu));
        let x = Tensor::ones([1, 8], (Kind::Float, Device::Cpu));
        assert!(
            rms_norm_step(&x, &w, 1e-5).is_none(),
            "under 16 values a row"
        );
        let x = Tensor::ones([1, 16], (Kind::Double, Device::Cpu));
        let w = Tensor::ones([16], (Kind::Float, Device::Cpu));
        assert!(rms_norm_step(&x, &w, 1e-5).is_none(), "float64");
        let x = Tensor::ones([300, 576], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([576], (Kind::Float, Device::Cpu));
        assert!(rms_norm_step(&x, &w, 1e-5).is_none(), "a prompt's rows");
    }
}
