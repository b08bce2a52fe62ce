//! The bridge from a quantized slot's forward to swift-kernels' integer products: a few
//! activation rows on the CPU, no autograd, go through the kernel in calls of at most
//! [`swift_kernels::MAX_ROWS`] rows, or [`swift_kernels::WIDE_ROWS`] for the fine product (their
//! activations quantized to 8 bits per block of 32); anything else is left to the slot's float
//! path.

use swift_kernels::{ShapeError, QK};
use swift_plugin_tensors::sdk::{numel, shape};
use tch::{Device, Kind, Tensor};

use crate::msg;

/// Products of at most this many activation rows run on the kernels (in calls of
/// [`swift_kernels::MAX_ROWS`], or of [`swift_kernels::WIDE_ROWS`] for `quant_matmul_fine`);
/// longer ones (a long prompt) decode the weight to float once and use libtorch's GEMM.
pub const KERNEL_ROWS: usize = 64;

/// `x · wᵀ (+ bias)` for a `[n, k]` weight through `product(x_rows, m, bias, y_rows)` (a
/// swift-kernels call on `m ≤ per_call` rows), or `None` when the kernels do not apply: `x` not on the CPU,
/// needing gradients, of a width other than `k` (or not whole blocks), or more than
/// [`KERNEL_ROWS`] rows.
pub(crate) fn product(
    x: &Tensor,
    n: usize,
    k: usize,
    bias: Option<&Tensor>,
    per_call: usize,
    product: impl Fn(&[f32], usize, Option<&[f32]>, &mut [f32]) -> Result<(), ShapeError>,
) -> Option<Result<Tensor, String>> {
    let rows = numel(x) / k.max(1);
    let applies = x.device() == Device::Cpu
        && !x.requires_grad()
        && k % QK == 0
        && shape(x).last() == Some(&(k as i64))
        && (1..=KERNEL_ROWS).contains(&rows);
    applies.then(|| run(x, n, k, rows, bias, per_call.max(1), product))
}

fn run(
    x: &Tensor,
    n: usize,
    k: usize,
    rows: usize,
    bias: Option<&Tensor>,
    per_call: usize,
    product: impl Fn(&[f32], usize, Option<&[f32]>, &mut [f32]) -> Result<(), ShapeError>,
) -> Result<Tensor, String> {
    // Converted or copied only when needed: each libtorch call costs about a microsecond, and a
    // decoding step makes a couple of hundred of these products (as `swift_model`'s float path).
    let converted;
    let xf = if x.kind() == Kind::Float && x.is_contiguous() {
        x
    } else {
        converted = x
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_contiguous())
            .map_err(msg)?;
        &converted
    };
    let bias = match bias {
        Some(b) => Some(
            Vec::<f32>::try_from(
                b.f_to_kind(Kind::Float)
                    .and_then(|b| b.f_flatten(0, -1))
                    .map_err(msg)?,
            )
            .map_err(msg)?,
        ),
        None => None,
    };
    let mut size = shape(x);
    if let Some(last) = size.last_mut() {
        *last = n as i64;
    }
    let y = Tensor::f_empty(size.as_slice(), (Kind::Float, Device::Cpu)).map_err(msg)?;
    // SAFETY: `xf` and `y` are contiguous float32 CPU tensors of `rows · k` and `rows · n`
    // values, alive until the end of this function and written by nothing else meanwhile.
    let (xs, ys) = unsafe {
        (
            std::slice::from_raw_parts(xf.data_ptr() as *const f32, rows * k),
            std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, rows * n),
        )
    };
    for (xc, yc) in xs.chunks(per_call * k).zip(ys.chunks_mut(per_call * n)) {
        product(xc, xc.len() / k, bias.as_deref(), yc).map_err(msg)?;
    }
    if x.kind() == Kind::Float {
        Ok(y)
    } else {
        y.f_to_kind(x.kind()).map_err(msg)
    }
}
