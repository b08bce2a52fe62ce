//! Linear slots that read one input, computed together in a decoding step: a decoder's q/k/v
//! projections (and its gate/up ones) each go to the kernel's pool as a job of their own, a
//! hand-off per product. When the family asks for the first slot of such a group, the host
//! computes every member in one pool job ([`swift_kernels::matmul_many`]) and keeps the
//! others' results; the family's next calls for them, with the very same input (compared bit
//! for bit), get those results instead of a product. The family's `forward` is unchanged (it
//! still asks for each slot), and every product's arithmetic is the one its own call would use
//! (same kernel, same tasks), so the outputs are identical.
//!
//! Groups are slots `P.q_proj`, `P.k_proj`, `P.v_proj` and `P.gate_proj`, `P.up_proj` of one
//! parent `P` (a Llama-style block's names). A group is computed together only where its own
//! calls would all take the kernels' path: a decoding step, CPU, no gradients, no hooks
//! (adapters), at most [`swift_kernels::WIDE_ROWS`] float32 rows (a continuous batch's step of
//! 16 rows saves three of a block's seven pool jobs), every member either a float32 or bfloat16
//! weight (the skinny kernel) or, at most [`swift_kernels::MAX_ROWS`] rows, a quantized slot
//! that hands its blocks out ([`crate::QuantizedLinear::decoding_blocks`]). Anything else takes
//! each slot's own path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use swift_plugin_tensors::sdk::{numel, shape, Shape};

use swift_kernels::{matmul_many, Product, ProductWeights, Weights, MAX_ROWS, WIDE_ROWS};
use tch::{Device, Kind, Tensor};

use crate::{in_decoding_step, SlotKind, SlotState};

/// The sibling groups: `P.NAME` for the names of each line, in the order families call them.
const GROUPS: [&[&str]; 2] = [&["q_proj", "k_proj", "v_proj"], &["gate_proj", "up_proj"]];

/// The members' results computed ahead, with the input they were computed from (its buffers
/// reused from group to group: a step allocates nothing here but the results).
#[derive(Default)]
struct Kept {
    input: Vec<u32>,
    size: Shape,
    outs: Vec<(Arc<str>, Tensor)>,
}

/// The groups of a model's slots and the results kept for the next calls.
#[derive(Default)]
pub(crate) struct Fused {
    /// The group each first member heads (its members, the first included).
    heads: OnceLock<HashMap<String, Vec<Arc<str>>>>,
    kept: Mutex<Kept>,
}

impl Fused {
    fn heads(&self, slots: &HashMap<String, SlotState>) -> &HashMap<String, Vec<Arc<str>>> {
        self.heads.get_or_init(|| {
            let mut heads = HashMap::new();
            for name in slots.keys() {
                for group in GROUPS {
                    let Some(parent) = name.strip_suffix(group[0]) else {
                        continue;
                    };
                    if !parent.ends_with('.') && !parent.is_empty() {
                        continue;
                    }
                    let members: Vec<Arc<str>> = group
                        .iter()
                        .map(|m| Arc::from(format!("{parent}{m}")))
                        .collect();
                    let all_linear = members
                        .iter()
                        .all(|m| slots.get(&**m).is_some_and(|s| s.kind == SlotKind::Linear));
                    if all_linear {
                        heads.insert(name.clone(), members);
                    }
                }
            }
            heads
        })
    }

    /// `slot`'s product over `x` when it was computed ahead with the same input (taken: a
    /// result serves one call).
    pub(crate) fn take(&self, slot: &str, x: &Tensor) -> Option<Tensor> {
        if !in_decoding_step() {
            return None;
        }
        let mut kept = self.kept.lock().ok()?;
        let at = kept.outs.iter().position(|(m, _)| **m == *slot)?;
        let (_, out) = kept.outs.swap_remove(at);
        (input_bits(x)? == kept.input.as_slice() && shape(x) == kept.size).then_some(out)
    }

    /// When `slot` heads a group that can be computed together over `x`: its product, the
    /// other members' kept for their calls. `None` (nothing computed) otherwise.
    pub(crate) fn compute(
        &self,
        slots: &HashMap<String, SlotState>,
        slot: &str,
        x: &Tensor,
    ) -> Option<Tensor> {
        if !in_decoding_step() {
            return None;
        }
        let members = self.heads(slots).get(slot)?;
        let size = shape(x);
        let k = usize::try_from(*size.last()?).ok()?;
        let rows = size.iter().product::<i64>() as usize / k.max(1);
        if x.device() != Device::Cpu
            || x.kind() != Kind::Float
            || x.requires_grad()
            || !x.is_contiguous()
            || k == 0
            || !(1..=WIDE_ROWS).contains(&rows)
        {
            return None;
        }
        let states: Vec<&SlotState> = members
            .iter()
            .map(|m| slots.get(&**m))
            .collect::<Option<_>>()?;
        let mut weights = Vec::with_capacity(states.len());
        let mut biases = Vec::with_capacity(states.len());
        for s in &states {
            if !s.hooks.is_empty()
                || s.bias.as_ref().is_some_and(Tensor::requires_grad)
                || (s.quantized.is_some() && rows > MAX_ROWS)
            {
                return None;
            }
            let w = match &s.quantized {
                Some(q) => ProductWeights::Blocks(q.decoding_blocks()?),
                None => ProductWeights::Float(float_weights(&s.weight, k)?),
            };
            weights.push(w);
            biases.push(match &s.bias {
                Some(b) => Some(
                    Vec::<f32>::try_from(b.f_to_kind(Kind::Float).ok()?.f_flatten(0, -1).ok()?)
                        .ok()?,
                ),
                None => None,
            });
        }
        let mut outs = Vec::with_capacity(states.len());
        let mut out_size = size.clone();
        for w in &weights {
            *out_size.last_mut()? = w.rows(k) as i64;
            outs.push(Tensor::f_empty(out_size.as_slice(), (Kind::Float, Device::Cpu)).ok()?);
        }
        // SAFETY: `x` is a contiguous float32 CPU tensor of `rows · k` values and each output a
        // fresh contiguous float32 one of `rows · n` values; all live until the end of this
        // function and nothing else writes them meanwhile.
        let ok = unsafe {
            let xs = std::slice::from_raw_parts(x.data_ptr() as *const f32, rows * k);
            let mut parts: Vec<Product<'_, '_>> = weights
                .iter()
                .zip(&biases)
                .zip(&outs)
                .map(|((&w, b), y)| Product {
                    weights: w,
                    bias: b.as_deref(),
                    y: std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, rows * w.rows(k)),
                })
                .collect();
            matmul_many(xs, rows, k, &mut parts).is_ok()
        };
        if !ok {
            return None;
        }
        // SAFETY: as above: `x` is a contiguous float32 CPU tensor of `rows · k` values.
        let bits = unsafe { std::slice::from_raw_parts(x.data_ptr() as *const u32, rows * k) };
        let mut outs = outs.into_iter();
        let first = outs.next()?;
        if let Ok(mut kept) = self.kept.lock() {
            let kept = &mut *kept;
            kept.input.clear();
            kept.input.extend_from_slice(bits);
            kept.size = size;
            kept.outs.clear();
            kept.outs
                .extend(members[1..].iter().map(Arc::clone).zip(outs));
        }
        Some(first)
    }
}

/// A float32 or bfloat16 `[n, k]` weight the skinny kernel reads, as [`crate::skinny`] takes it.
fn float_weights(w: &Tensor, k: usize) -> Option<Weights<'_>> {
    let size = shape(w);
    let (&[n, wk], true) = (size.as_slice(), w.is_contiguous()) else {
        return None;
    };
    if w.device() != Device::Cpu || w.requires_grad() || wk as usize != k {
        return None;
    }
    let len = n as usize * k;
    // SAFETY: a contiguous CPU tensor of `n · k` elements of the kind matched, borrowed for the
    // lifetime of `w`, which nothing writes during a decoding step.
    unsafe {
        match w.kind() {
            Kind::Float => Some(Weights::F32(std::slice::from_raw_parts(
                w.data_ptr() as *const f32,
                len,
            ))),
            Kind::BFloat16 => Some(Weights::Bf16(std::slice::from_raw_parts(
                w.data_ptr() as *const u16,
                len,
            ))),
            _ => None,
        }
    }
}

/// `x`'s values as bits (float32 contiguous CPU only), borrowed for as long as `x`.
fn input_bits(x: &Tensor) -> Option<&[u32]> {
    if x.device() != Device::Cpu || x.kind() != Kind::Float || !x.is_contiguous() {
        return None;
    }
    // SAFETY: a contiguous float32 CPU tensor of `numel` values, alive (and, during a decoding
    // step, not written) for as long as the borrow of `x`.
    Some(unsafe { std::slice::from_raw_parts(x.data_ptr() as *const u32, numel(x)) })
}
