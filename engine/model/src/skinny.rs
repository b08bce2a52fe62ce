//! The decoding fast paths. When a float slot on the CPU multiplies only a few activation rows
//! with autograd off (token-by-token generation), the product goes to
//! [`swift_kernels::skinny_matmul`], which reads the weights at close to memory speed, instead
//! of libtorch's general matrix multiply; a float32 decoding step's attention over the cache goes
//! to [`swift_kernels::decode_attention`] instead of libtorch's scaled-dot-product attention.
//! Everything else (prefill, training, other devices, quantized slots) keeps libtorch's path;
//! the two agree to float32 rounding.

use swift_kernels::{decode_attention, skinny_matmul, CacheView, DecodeShape, Weights, WIDE_ROWS};
use swift_plugin_tensors::sdk::{numel, shape};
use tch::{Device, Kind, Tensor};

/// `x · wᵀ + bias` through the skinny kernel, or `None` when the fast path does not apply (the
/// caller then uses libtorch).
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    // Only where no gradient can flow: the kernel is invisible to autograd.
    if x.device() != Device::Cpu
        || w.device() != Device::Cpu
        || x.requires_grad()
        || w.requires_grad()
        || bias.is_some_and(Tensor::requires_grad)
    {
        return None;
    }
    let wsize = shape(w);
    let xsize = shape(x);
    let (&[n, k], Some(&last)) = (wsize.as_slice(), xsize.last()) else {
        return None;
    };
    if last != k || k == 0 || !w.is_contiguous() {
        return None;
    }
    let rows = numel(x) / k as usize;
    let kind = w.kind();
    // bfloat16 too at every row count: at 8 rows the kernel decoded SmolLM2 at about 1.5x
    // the speed of libtorch's oneDNN path here.
    // More rows (up to swift_kernels::MANY_ROWS, where the CPU has tiles) in a mixed pass
    // ([`ManyRows`]).
    let worth_it = matches!(kind, Kind::Float | Kind::BFloat16)
        && (rows <= WIDE_ROWS
            || (MANY_ROWS_PASS.get() && swift_kernels::takes_rows(rows, kind == Kind::BFloat16)));
    // float32 activations over bfloat16 weights (`LoadedModel::float_activations`) too: the
    // kernel widens the weights and keeps the activations float32 either way.
    let mixed = kind == Kind::BFloat16 && x.kind() == Kind::Float;
    if !worth_it || rows == 0 || (x.kind() != kind && !mixed) {
        return None;
    }
    let bias = match bias {
        Some(b) => {
            Some(Vec::<f32>::try_from(b.f_to_kind(Kind::Float).ok()?.f_flatten(0, -1).ok()?).ok()?)
        }
        None => None,
    };
    // Converted or copied only when needed: each libtorch call costs about a microsecond, and a
    // decoding step makes hundreds of these products.
    let converted;
    let xf = if x.kind() == Kind::Float && x.is_contiguous() {
        x
    } else {
        converted = x.f_to_kind(Kind::Float).ok()?.f_contiguous().ok()?;
        &converted
    };
    let mut out_size = xsize;
    *out_size.last_mut()? = n;
    let out = Tensor::f_empty(out_size.as_slice(), (Kind::Float, Device::Cpu)).ok()?;
    let (n, k) = (n as usize, k as usize);
    // SAFETY: `xf` and `out` are contiguous float32 CPU tensors of `rows * k` and `rows * n`
    // elements that live until the end of this function; `w` is a contiguous CPU tensor of
    // `n * k` elements of the kind matched below. Nothing else writes them meanwhile.
    let ok = unsafe {
        let xs = std::slice::from_raw_parts(xf.data_ptr() as *const f32, rows * k);
        let ys = std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, rows * n);
        let weights = match kind {
            Kind::Float => Weights::F32(std::slice::from_raw_parts(
                w.data_ptr() as *const f32,
                n * k,
            )),
            _ => Weights::Bf16(std::slice::from_raw_parts(
                w.data_ptr() as *const u16,
                n * k,
            )),
        };
        skinny_matmul(xs, rows, k, weights, bias.as_deref(), ys).is_ok()
    };
    if !ok {
        return None;
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let k = swift_kernels::kernel_choice();
        tracing::info!("decoding kernel: {} ({})", k.kernel, k.why);
        tracing::info!(
            "weights read ahead while decoding: {}",
            swift_kernels::read_ahead_setting()
        );
    });
    static SAID_BF16: std::sync::Once = std::sync::Once::new();
    if kind == Kind::BFloat16 {
        SAID_BF16.call_once(|| {
            let k = swift_kernels::bf16_kernel_choice();
            tracing::info!("bfloat16 decoding kernel: {} ({})", k.kernel, k.why);
        });
    }
    if x.kind() == Kind::Float {
        Some(out)
    } else {
        out.f_to_kind(kind).ok()
    }
}

/// Attention of a decoding step (`q`: `[batch, heads, 1, dim]`) over the first `len` positions
/// of cache buffers `k`, `v` (`[batch, kv_heads, capacity, dim]`), `valid` (`[batch * len]`)
/// masking padding, or `None` when the fast path does not apply (not float32 on the CPU,
/// autograd on, more than one new position).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    len: i64,
    valid: Option<&[bool]>,
    scale: Option<f64>,
) -> Option<Tensor> {
    let all = [q, k, v];
    if all
        .iter()
        .any(|t| t.device() != Device::Cpu || t.kind() != Kind::Float || t.requires_grad())
    {
        return None;
    }
    let (&[batch, heads, 1, dim], &[kb, kv_heads, capacity, kd]) =
        (shape(q).as_slice(), shape(k).as_slice())
    else {
        return None;
    };
    if shape(v) != shape(k)
        || kb != batch
        || kd != dim
        || batch == 0
        || kv_heads == 0
        || len == 0
        || len > capacity
        || k.stride()[3] != 1
        || v.stride()[3] != 1
    {
        return None;
    }
    let q = q.f_contiguous().ok()?;
    let out = Tensor::f_empty([batch, heads, 1, dim], (Kind::Float, Device::Cpu)).ok()?;
    let shape = DecodeShape {
        batch: batch as usize,
        heads: heads as usize,
        kv_heads: kv_heads as usize,
        dim: dim as usize,
        len: len as usize,
    };
    let view = |t: &Tensor| -> CacheView<'_> {
        let st: Vec<usize> = t.stride().iter().map(|&s| s as usize).collect();
        let (b, h, p) = (st[0], st[1], st[2]);
        // SAFETY: a CPU float32 view whose elements all lie within `span` of its first one
        // (its strides and sizes above); the tensor lives until the end of this function and
        // nothing writes it meanwhile.
        let data =
            unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, shape.span(b, h, p)) };
        CacheView {
            data,
            batch_stride: b,
            head_stride: h,
            pos_stride: p,
        }
    };
    let scale = scale.unwrap_or(1.0 / (dim as f64).sqrt()) as f32;
    // SAFETY: `q` and `out` are contiguous float32 CPU tensors of `batch * heads * dim` values.
    let ok = unsafe {
        let n = (batch * heads * dim) as usize;
        let qs = std::slice::from_raw_parts(q.data_ptr() as *const f32, n);
        let os = std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n);
        decode_attention(qs, view(k), view(v), valid, shape, scale, os).is_ok()
    };
    ok.then_some(out)
}

thread_local! {
    static MANY_ROWS_PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the pass on this thread as a mixed pass run on the kernels (`LoadedModel::forward_mixed`
/// when [`LoadedModel::mixes_on_kernels`](crate::LoadedModel::mixes_on_kernels)) until dropped:
/// its products of up to `swift_kernels::MANY_ROWS` rows go to the kernels' tiles.
pub(crate) struct ManyRows(bool);

impl ManyRows {
    pub(crate) fn enter() -> Self {
        Self(MANY_ROWS_PASS.replace(true))
    }
}

impl Drop for ManyRows {
    fn drop(&mut self) {
        MANY_ROWS_PASS.set(self.0);
    }
}

/// Keeps libtorch on one intra-op thread while it lives, for a decoding step (a handful of rows
/// of one token each): that step's matrix products go to the kernel's own threads, and what is
/// left for libtorch (norms, rotary embeddings, attention over the cache) is too small to gain
/// from a second thread, whose OpenMP worker would otherwise spin on the core the kernel's
/// second thread needs. Other passes (prefill) keep libtorch's threads.
pub struct TorchThreads(Option<i32>);

impl TorchThreads {
    /// For a pass over `ids`: one thread when it is a decoding step, else no change.
    pub(crate) fn for_step(ids: &Tensor) -> Self {
        if matches!(shape(ids).as_slice(), &[b, 1] if b as usize <= WIDE_ROWS) {
            Self::one()
        } else {
            Self(None)
        }
    }

    /// One thread until dropped. Held over a whole decoding loop, it also spares each step's
    /// switch (libtorch rebuilds a thread pool whenever the count changes).
    pub fn one() -> Self {
        let before = tch::get_num_threads();
        if before <= 1 {
            return Self(None);
        }
        tch::set_num_threads(1);
        Self(Some(before))
    }
}

impl Drop for TorchThreads {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            tch::set_num_threads(n);
        }
    }
}
