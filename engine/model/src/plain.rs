//! The host's side of a decoding step on raw buffers: the write of a step's keys and values
//! into the cache, one pass over the values instead of libtorch's small operations (two per
//! tensor plus the views attention read). `false` where the fast path does not apply (another
//! dtype or device, autograd on, more rows than a decoding step); the caller then runs
//! libtorch's. (The norm slots' one-pass RMS norm is the SDK's, `sdk::rms_norm_step`, which
//! rounds bit for bit as libtorch's; an earlier one here summed in float64 and moved a quantized
//! model's greedy near-ties, tests/gguf_decode.rs.)

use swift_plugin_tensors::sdk::{numel, shape};
use tch::{Device, Kind, Tensor};

/// Whether `t` is a float32 CPU tensor outside autograd.
fn plain_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && !t.requires_grad()
}

/// Writes a decoding step's `new` keys or values (`[batch, heads, 1, dim]`, float32) at position
/// `past` of the cache buffer `buf` (`[batch, heads, capacity, dim]`, any strides with
/// contiguous heads). False, writing nothing, where the buffer lacks the room or either tensor
/// is not of that form.
pub(crate) fn write_position(buf: &Tensor, past: i64, new: &Tensor) -> bool {
    let (bs, ns) = (shape(buf), shape(new));
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
        let src = std::slice::from_raw_parts(new.data_ptr() as *const f32, numel(new));
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
