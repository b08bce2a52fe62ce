//! Mixed passes: the running rows' next tokens and the joining rows' whole prompts in one
//! forward pass (what vLLM and llama.cpp's server call chunked prefill), so that requests joining
//! a busy batch cost no pass of their own over the weights.
//!
//! The family sees one packed sequence (`[1, rows + prompt tokens]`, each token at its own
//! position): every linear layer multiplies all of them at once. Attention is the only part that
//! tells rows apart ([`MixedContext`]): the running rows' queries attend over the batch's cache
//! as in a decoding step, and the joining rows' as a left-padded prefill of their own cache, so
//! each row's attention computes exactly what it computes in the two separate passes; the
//! caller appends the joining rows' cache afterwards ([`KvCache::append`]).

use swift_plugin_tensors::model::{ModelContext, NormKind};
use swift_plugin_tensors::ModelHandleExt;
use tch::Tensor;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::context::{te, HostContext};
use crate::skinny::{ManyRows, TorchThreads};
use crate::{KvCache, LoadedModel, ModelError};

/// Whether [`LoadedModel::mixes_on_kernels`] may say yes (on unless switched off).
static ON_KERNELS: AtomicBool = AtomicBool::new(true);

/// Lets mixed passes run on the kernels (the default) or keeps them on libtorch: for measuring
/// one against the other in one process (engine/serve/examples/mixed_step.rs).
pub fn set_mixed_on_kernels(on: bool) {
    ON_KERNELS.store(on, Ordering::Relaxed);
}

impl LoadedModel {
    /// Whether [`LoadedModel::forward_mixed`] applies: a text model whose slots are all plain
    /// (no quantized base weights, whose integer kernels serve decoding steps only, and no hooks
    /// such as per-row adapters, which select by batch row).
    pub fn can_mix(&self) -> bool {
        self.layout.vision.is_none()
            && self
                .slots
                .values()
                .all(|s| s.quantized.is_none() && s.hooks.is_empty())
    }

    /// Whether a mixed pass of `rows` packed rows (running rows plus every joining prompt's
    /// tokens) runs its products on the decoding kernels (`swift_kernels::MANY_ROWS` rows at most,
    /// on a CPU with the kernels' tiles) with libtorch kept on one thread, like a decoding step;
    /// else on libtorch's threads. A float32 CPU model only: bfloat16 keeps libtorch's mixed pass
    /// (its prompts' products there round the activations to bfloat16; not measured on the
    /// kernels). At 16 clients the mixed passes of about 76 rows took libtorch's OpenMP worker
    /// through about a thousand sleeps and wakes each (`OMP_WAIT_POLICY=PASSIVE`); on the kernels
    /// each row's products are also bit for bit what a decoding step gives it (BENCHMARKS.md,
    /// Deploy).
    pub fn mixes_on_kernels(&self, rows: usize) -> bool {
        ON_KERNELS.load(Ordering::Relaxed)
            && self.kind == tch::Kind::Float
            && self.decodes_on_kernels()
            && swift_kernels::takes_rows(rows, false)
    }

    /// One pass over `last` (the next token of each of `cache`'s rows, in order) and `prompts`
    /// (whole prompts of new rows, which `fresh`, an empty cache of `prompts.len()` rows, takes).
    /// Returns the final hidden states `[last.len() + prompts.len(), hidden]`: each running
    /// row's, then each prompt's last token's. Equal, to float rounding of the products, to
    /// [`LoadedModel::forward`] over `last` on `cache` and over the left-padded prompts on
    /// `fresh`.
    pub fn forward_mixed(
        &self,
        last: &[i64],
        cache: &mut KvCache,
        prompts: &[&[i64]],
        fresh: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        if !self.can_mix() {
            return Err(ModelError::Config(
                "a mixed pass needs a text model with plain slots (use forward)".into(),
            ));
        }
        if last.is_empty() || prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
            return Err(ModelError::Config(
                "a mixed pass needs running rows and non-empty prompts".into(),
            ));
        }
        if cache.batch() != last.len() as i64
            || fresh.batch() != prompts.len() as i64
            || !fresh.is_empty()
        {
            return Err(ModelError::Config(format!(
                "a mixed pass of {} running rows and {} prompts got caches of {} rows and {} rows ({} cached positions)",
                last.len(),
                prompts.len(),
                cache.batch(),
                fresh.batch(),
                fresh.len()
            )));
        }
        let _guard = tch::no_grad_guard();
        let rows = last.len() + prompts.iter().map(|p| p.len()).sum::<usize>();
        let on_kernels = self.mixes_on_kernels(rows);
        let _threads = on_kernels.then(TorchThreads::one);
        let _many = on_kernels.then(ManyRows::enter);
        let device = self.device;
        let float_activations = self.float_activations();
        let n = last.len() as i64;
        // The running rows' step: one new position each, over the batch's cache.
        let decode_ids = Tensor::from_slice(last)
            .f_view([n, 1])?
            .f_to_device(device)?;
        let mut decode_step = cache.begin(&decode_ids, None)?;
        decode_step.float_activations = float_activations;
        // The joining rows' step: a left-padded prefill of their own cache.
        let (join_ids, join_mask) = left_padded(prompts);
        let (b, longest) = (prompts.len() as i64, join_ids.size()[1]);
        // Where each prompt token sits in the padded batch (row-major), in packed order.
        let at: Vec<i64> = prompts
            .iter()
            .enumerate()
            .flat_map(|(r, p)| {
                (longest - p.len() as i64..longest).map(move |c| r as i64 * longest + c)
            })
            .collect();
        let join_ids = join_ids.f_to_device(device)?;
        let join_mask = join_mask.map(|m| m.f_to_device(device)).transpose()?;
        let mut join_step = fresh.begin(&join_ids, join_mask.as_ref())?;
        join_step.float_activations = float_activations;
        let at = Tensor::from_slice(&at).f_to_device(device)?;
        // The packed sequence: running rows' tokens, then every prompt's.
        let mut packed: Vec<i64> = last.to_vec();
        for p in prompts {
            packed.extend_from_slice(p);
        }
        let total = packed.len() as i64;
        let ids = Tensor::from_slice(&packed)
            .f_view([1, total])?
            .f_to_device(device)?;
        let positions = Tensor::f_cat(
            &[
                decode_step.positions.f_reshape([-1])?,
                join_step
                    .positions
                    .f_reshape([-1])?
                    .f_index_select(0, &at)?,
            ],
            0,
        )?
        .f_view([1, total])?;
        let mut ctx = MixedContext {
            decode: HostContext {
                model: self,
                cache,
                step: &decode_step,
                attended: 0,
            },
            join: HostContext {
                model: self,
                cache: fresh,
                step: &join_step,
                attended: 0,
            },
            running: n,
            rows: b,
            longest,
            at: &at,
        };
        let hidden = self
            .model
            .forward(&mut ctx, &ids, &positions)
            .map_err(ModelError::Family)?;
        let attended = ctx.decode.attended.min(ctx.join.attended);
        if attended != self.layout.num_blocks || ctx.decode.attended != ctx.join.attended {
            return Err(ModelError::Family(format!(
                "forward called attention for {attended} layers, the layout declares {}",
                self.layout.num_blocks
            )));
        }
        cache.finish(&decode_step);
        fresh.finish(&join_step);
        // Each running row's token, then each prompt's last.
        let mut pick: Vec<i64> = (0..n).collect();
        let mut end = n;
        for p in prompts {
            end += p.len() as i64;
            pick.push(end - 1);
        }
        let pick = Tensor::from_slice(&pick).f_to_device(device)?;
        Ok(hidden.f_select(0, 0)?.f_index_select(0, &pick)?)
    }
}

/// The context of a mixed pass: every call but attention goes to the host's own context;
/// attention splits the packed sequence into the running rows (a decoding step on the batch's
/// cache) and the prompts (a left-padded prefill on the joining rows' cache).
struct MixedContext<'a> {
    decode: HostContext<'a>,
    join: HostContext<'a>,
    /// Running rows (the first `running` positions of the packed sequence).
    running: i64,
    /// Joining rows and their padded length.
    rows: i64,
    longest: i64,
    /// Where each prompt token sits in the padded `[rows * longest]` layout.
    at: &'a Tensor,
}

impl MixedContext<'_> {
    /// The prompts' part of a packed `[1, heads, tokens, dim]` tensor, left-padded to
    /// `[rows, heads, longest, dim]` (zeros in the padding, which attention masks).
    fn padded(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let size = x.size();
        let (heads, dim) = (size[1], size[3]);
        let tokens = size[2] - self.running;
        let flat = x
            .f_narrow(2, self.running, tokens)?
            .f_select(0, 0)?
            .f_transpose(0, 1)?;
        Tensor::f_zeros(
            [self.rows * self.longest, heads, dim],
            (x.kind(), x.device()),
        )?
        .f_index_copy(0, self.at, &flat)?
        .f_view([self.rows, self.longest, heads, dim])?
        .f_transpose(1, 2)
    }

    /// The inverse of [`MixedContext::padded`]: `[rows, heads, longest, dim]` back to the
    /// prompts' tokens `[1, heads, tokens, dim]`.
    fn packed(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let size = x.size();
        let (heads, dim) = (size[1], size[3]);
        x.f_transpose(1, 2)?
            .f_reshape([self.rows * self.longest, heads, dim])?
            .f_index_select(0, self.at)?
            .f_transpose(0, 1)?
            .f_unsqueeze(0)
    }

    /// The running rows' part of a packed `[1, heads, tokens, dim]` tensor as a decoding
    /// step's `[rows, heads, 1, dim]` (and back: the same permutation).
    fn running_rows(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_narrow(2, 0, self.running)?.f_permute([2, 1, 0, 3])
    }
}

impl ModelContext for MixedContext<'_> {
    fn linear(&mut self, slot: &str, x: &Tensor) -> Result<Tensor, String> {
        self.decode.linear(slot, x)
    }

    fn embedding(&mut self, slot: &str, ids: &Tensor) -> Result<Tensor, String> {
        self.decode.embedding(slot, ids)
    }

    fn norm(&mut self, slot: &str, x: &Tensor, kind: NormKind, eps: f64) -> Result<Tensor, String> {
        self.decode.norm(slot, x, kind, eps)
    }

    fn param(&mut self, name: &str) -> Result<Tensor, String> {
        self.decode.param(name)
    }

    fn attention(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: Option<f64>,
    ) -> Result<Tensor, String> {
        let (qd, kd, vd) = (
            self.running_rows(q).map_err(te)?,
            self.running_rows(k).map_err(te)?,
            self.running_rows(v).map_err(te)?,
        );
        let decoded = self.decode.attention(layer, &qd, &kd, &vd, scale)?;
        let (qj, kj, vj) = (
            self.padded(q).map_err(te)?,
            self.padded(k).map_err(te)?,
            self.padded(v).map_err(te)?,
        );
        let prefilled = self.join.attention(layer, &qj, &kj, &vj, scale)?;
        Tensor::f_cat(
            &[
                decoded.f_permute([2, 1, 0, 3]).map_err(te)?,
                self.packed(&prefilled).map_err(te)?,
            ],
            2,
        )
        .map_err(te)
    }
}

/// Prompts of different lengths as one left-padded batch `[prompts, longest]` on the CPU: the ids
/// (padding 0) and, when some prompt is shorter, the mask (1 = token) that
/// [`LoadedModel::forward`] takes.
pub fn left_padded(prompts: &[&[i64]]) -> (Tensor, Option<Tensor>) {
    let b = prompts.len() as i64;
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() != longest);
    let mut ids = Vec::with_capacity(prompts.len() * longest);
    let mut mask = Vec::with_capacity(prompts.len() * longest);
    for p in prompts {
        let pad = longest - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, p.len())));
    }
    let shape = [b, longest as i64];
    let ids = Tensor::from_slice(&ids).view(shape);
    let mask = padded.then(|| Tensor::from_slice(&mask).view(shape));
    (ids, mask)
}
