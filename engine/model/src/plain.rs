//! The host's side of a decoding step on raw buffers: the RMS norm of a norm slot and the write
//! of a step's keys and values into the cache, each one pass over the values instead of
//! libtorch's small operations (a bfloat16 model's norm was three: widen the weights, norm,
//! and the cache write two per tensor plus the views attention read). `None` where the fast
//! path does not apply (another dtype or device, autograd on, more rows than a decoding
//! step); the caller then runs libtorch's.

use swift_kernels::WIDE_ROWS;
use tch::{Device, Kind, Tensor};

/// Whether `t` is a float32 CPU tensor outside autograd.
fn plain_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && !t.requires_grad()
}

/// `x / sqrt(mean(x²) + eps) · w (+ b)` over the last dimension of a decoding step's `x`
/// (float32, at most [`WIDE_ROWS`] rows), with float32 or bfloat16 weights `w` and float32 `b`.
/// The mean of squares sums in float64; each product rounds to float32 as libtorch's
/// `rms_norm` does.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f64) -> Option<Tensor> {
    let size = x.size();
    let &dim = size.last()?;
    if !plain_f32(x) || !x.is_contiguous() || dim == 0 || x.numel() > WIDE_ROWS * dim as usize {
        return None;
    }
    if w.device() != Device::Cpu || w.requires_grad() || !w.is_contiguous() || w.size() != [dim] {
        return None;
    }
    let bias = match b {
        Some(b) if plain_f32(b) && b.is_contiguous() && b.size() == [dim] => Some(b),
        Some(_) => return None,
        None => None,
    };
    let d = dim as usize;
    // SAFETY: contiguous CPU tensors of the sizes and kinds checked above, alive for this
    // function; the output is new and not shared.
    unsafe {
        let weight: Vec<f32> = match w.kind() {
            Kind::Float => std::slice::from_raw_parts(w.data_ptr() as *const f32, d).to_vec(),
            Kind::BFloat16 => std::slice::from_raw_parts(w.data_ptr() as *const u16, d)
                .iter()
                .map(|&h| f32::from_bits((h as u32) << 16))
                .collect(),
            _ => return None,
        };
        let bias = bias.map(|b| std::slice::from_raw_parts(b.data_ptr() as *const f32, d));
        let xs = std::slice::from_raw_parts(x.data_ptr() as *const f32, x.numel());
        let out = Tensor::f_empty(size.as_slice(), (Kind::Float, Device::Cpu)).ok()?;
        let ys = std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, x.numel());
        for (y, x) in ys.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
            let sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let r = (1.0 / (sq / d as f64 + eps).sqrt()) as f32;
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(&weight) {
                *y = (x * r) * w;
            }
            if let Some(b) = bias {
                for (y, &b) in y.iter_mut().zip(b) {
                    *y += b;
                }
            }
        }
        Some(out)
    }
}

/// Writes a decoding step's `new` keys or values (`[batch, heads, 1, dim]`, float32) at position
/// `past` of the cache buffer `buf` (`[batch, heads, capacity, dim]`, any strides with
/// contiguous heads). False, writing nothing, where the buffer lacks the room or either tensor
/// is not of that form.
pub(crate) fn write_position(buf: &Tensor, past: i64, new: &Tensor) -> bool {
    let (bs, ns) = (buf.size(), new.size());
    let (&[b, h, cap, d], &[nb, nh, 1, nd]) = (bs.as_slice(), ns.as_slice()) else {
        return false;
    };
    if (nb, nh, nd) != (b, h, d)
        || past >= cap
        || !plain_f32(buf)
        || !plain_f32(new)
        || !new.is_contiguous()
        || buf.stride()[3] != 1
    {
        return false;
    }
    let st = buf.stride();
    let (d, h) = (d as usize, h as usize);
    // SAFETY: `new` is contiguous with `b * h * d` values; each destination row lies within
    // `buf`'s view (position `past` < capacity, strides from libtorch), which nothing else reads
    // or writes during the step's attention call that owns it.
    unsafe {
        let src = std::slice::from_raw_parts(new.data_ptr() as *const f32, new.numel());
        let base = buf.data_ptr() as *mut f32;
        for (row, values) in src.chunks_exact(d).enumerate() {
            let (bi, hi) = ((row / h) as i64, (row % h) as i64);
            let at = bi * st[0] + hi * st[1] + past * st[2];
            std::ptr::copy_nonoverlapping(values.as_ptr(), base.offset(at as isize), d);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use swift_plugin_tensors::sdk;

    #[test]
    fn rms_norm_matches_the_sdk_within_rounding() {
        let x = Tensor::randn([1, 2, 24], (Kind::Float, Device::Cpu)) * 3.0;
        let w = Tensor::randn([24], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([24], (Kind::Float, Device::Cpu));
        let want = sdk::rms_norm(&x, Some(&w), Some(&b), 1e-5).unwrap();
        let got = rms_norm(&x, &w, Some(&b), 1e-5).unwrap();
        assert!(f64::try_from((&got - &want).abs().max()).unwrap() < 1e-5);
        // bfloat16 weights are widened exactly.
        let wb = w.to_kind(Kind::BFloat16);
        let want = sdk::rms_norm(&x, Some(&wb.to_kind(Kind::Float)), None, 1e-5).unwrap();
        let got = rms_norm(&x, &wb, None, 1e-5).unwrap();
        assert!(f64::try_from((&got - &want).abs().max()).unwrap() < 1e-5);
        // A prompt's rows and float64 take libtorch's path.
        let many = Tensor::randn([1, 64, 24], (Kind::Float, Device::Cpu));
        assert!(rms_norm(&many, &w, None, 1e-5).is_none());
        assert!(rms_norm(&x.to_kind(Kind::Double), &w, None, 1e-5).is_none());
    }

    #[test]
    fn write_position_fills_one_position_of_a_strided_buffer() {
        let big = Tensor::zeros([1, 2, 6, 3], (Kind::Float, Device::Cpu));
        // A view that starts one position in (what trimming padding leaves).
        let buf = big.narrow(2, 1, 5);
        let new = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([1, 2, 1, 3]);
        assert!(write_position(&buf, 2, &new));
        let want = Tensor::zeros([1, 2, 5, 3], (Kind::Float, Device::Cpu));
        want.narrow(2, 2, 1).copy_(&new);
        assert!(buf.equal(&want));
        assert!(!write_position(&buf, 5, &new), "no room");
    }
}
