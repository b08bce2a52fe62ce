//! The batch-1 decoding step's small operations on raw buffers: a decoding step (one new token
//! per row, autograd off, float32 on the CPU) spends more time dispatching libtorch's small
//! operations (a rotary embedding is seven of them) than computing them. Here the rotary
//! embedding runs in one pass over the values with one output allocation, rounding exactly as
//! the libtorch expression it replaces (no fused multiply-adds). Anything that would round
//! differently stays libtorch's (a float64-summed RMS norm and a libm SiLU were tried and moved a
//! quantized model's greedy near-ties); the RMS norm, residual adds and gated product that do
//! round as libtorch's are in `step.rs`.
//!
//! Every function returns `None` where its fast path does not apply (another dtype or device,
//! autograd on, an unusual layout); the caller then runs the libtorch expression.

use super::shape::{numel, shape};
use tch::{Device, Kind, Tensor};

/// Rows (positions times batch) up to which a pass counts as a decoding step here.
const MAX_ROWS: i64 = 16;

/// `t`'s values when it is a contiguous float32 CPU tensor outside autograd.
pub(crate) fn values(t: &Tensor) -> Option<&[f32]> {
    if t.device() != Device::Cpu
        || t.kind() != Kind::Float
        || t.requires_grad()
        || !t.is_contiguous()
    {
        return None;
    }
    let n = numel(t);
    if n == 0 {
        return None;
    }
    // SAFETY: a contiguous float32 CPU tensor of `n` elements that outlives the borrow of `t`;
    // the decoding step writes none of its inputs while it reads them.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) })
}

/// A new contiguous float32 CPU tensor of `size`, filled by `fill` on its values.
pub(crate) fn fill_new(size: &[i64], fill: impl FnOnce(&mut [f32])) -> Option<Tensor> {
    let out = Tensor::f_empty(size, (Kind::Float, Device::Cpu)).ok()?;
    let n = numel(&out);
    // SAFETY: `out` was just allocated contiguous with `n` float32 values and is not shared yet.
    fill(unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n) });
    Some(out)
}

/// Rotary embedding of `x` (`[batch, heads, 1, head_dim]`) by `cos`/`sin` (`[batch, 1, 1,
/// dim]`) on the first `dim` dimensions of each head, the rest copied: `x·cos + rotate(x)·sin`,
/// `interleaved` choosing GPT-J's pairs over `rotate_half`'s.
pub(crate) fn rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    dim: usize,
    interleaved: bool,
) -> Option<Tensor> {
    let size = shape(x);
    let &[b, h, 1, d] = size.as_slice() else {
        return None;
    };
    let table = [b, 1, 1, dim as i64];
    if b > MAX_ROWS
        || dim as i64 > d
        || !dim.is_multiple_of(2)
        || shape(cos) != table
        || shape(sin) != table
    {
        return None;
    }
    let (xs, cs, ss) = (values(x)?, values(cos)?, values(sin)?);
    let (h, d) = (h as usize, d as usize);
    let half = dim / 2;
    fill_new(&size, |out| {
        for (head, (o, x)) in out.chunks_exact_mut(d).zip(xs.chunks_exact(d)).enumerate() {
            let row = head / h;
            let (c, s) = (&cs[row * dim..][..dim], &ss[row * dim..][..dim]);
            for (i, o) in o[..dim].iter_mut().enumerate() {
                let rotated = if interleaved {
                    if i.is_multiple_of(2) {
                        -x[i + 1]
                    } else {
                        x[i - 1]
                    }
                } else if i < half {
                    -x[i + half]
                } else {
                    x[i - half]
                };
                *o = x[i] * c[i] + rotated * s[i];
            }
            o[dim..].copy_from_slice(&x[dim..]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        assert_eq!(a.size(), b.size());
        let d = f64::try_from((a - b).abs().max()).unwrap();
        assert!(d <= tol, "differ by {d}");
    }

    #[test]
    fn rope_rounds_as_the_libtorch_expression() {
        let x = Tensor::randn([2, 3, 1, 8], (Kind::Float, Device::Cpu));
        let cos = Tensor::randn([2, 1, 1, 8], (Kind::Float, Device::Cpu));
        let sin = Tensor::randn([2, 1, 1, 8], (Kind::Float, Device::Cpu));
        // rotate_half on the first 6 dimensions, the last 2 passed through.
        let (c6, s6) = (cos.narrow(-1, 0, 6), sin.narrow(-1, 0, 6));
        let r = x.narrow(-1, 0, 6);
        let rot = Tensor::cat(&[-r.narrow(-1, 3, 3), r.narrow(-1, 0, 3)], -1);
        let want = Tensor::cat(&[&r * &c6 + rot * &s6, x.narrow(-1, 6, 2)], -1);
        let got = rope(&x, &c6.contiguous(), &s6.contiguous(), 6, false).unwrap();
        close(&got, &want, 0.0);
        // GPT-J's pairs: (x0, x1) -> (-x1, x0).
        let even = x.slice(-1, 0, None, 2);
        let odd = x.slice(-1, 1, None, 2);
        let rot = Tensor::stack(&[-odd, even], -1).flatten(-2, -1);
        let want = &x * &cos + rot * &sin;
        close(&rope(&x, &cos, &sin, 8, true).unwrap(), &want, 0.0);
    }

    #[test]
    fn other_inputs_take_the_libtorch_path() {
        let x = Tensor::randn([1, 2, 3, 4], (Kind::Float, Device::Cpu));
        let c = Tensor::randn([1, 1, 3, 4], (Kind::Float, Device::Cpu));
        assert!(
            rope(&x, &c, &c, 4, false).is_none(),
            "a prompt (3 positions)"
        );
    }
}
