//! How `swift eval` runs its multiple-choice forwards: questions laid end to end in passes of up
//! to [`PACK_TOKENS`] tokens after the cached shared prefix (`LoadedModel::forward_blocks`:
//! block-causal, no padding, the prefix's keys and values read in place), the vocabulary
//! projection once per scored position, and the passes spread over as many threads as libtorch
//! has (its own count, `OMP_NUM_THREADS` included), each running its passes on one libtorch
//! thread over its own instance of the model (the same parameters, `LoadedModel::share`).
//!
//! Why threads of their own rather than libtorch's: a pass's matrix products split over two
//! OpenMP threads meet at a barrier after every operation; waiting there passively (the host's
//! wait policy for everything but training) puts a thread to sleep and wakes it thousands of
//! times per question, and spinning collapses when other work holds a core (host/src/openmp.rs).
//! Independent passes never wait for each other; what each computes is the same.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Result};
use swift_model::{KvCache, LoadedModel, TorchThreads};
use swift_registry::Registries;
use tch::{Kind, Tensor};

use crate::bundle::ModelBundle;
use crate::eval::Item;

/// Tokens of multiple-choice questions forwarded together, laid end to end.
const PACK_TOKENS: usize = 512;

/// Makes another instance of the model over the same parameters (one per extra thread).
pub(crate) type MoreFn<'a> = dyn Fn() -> Result<LoadedModel> + 'a;

/// Summed log-probabilities of a pass: per item, per choice scored from it, (choice, sum).
type PassSums = Vec<Vec<(usize, f64)>>;

/// A choice and the (row of the pass's scored positions, token) pairs its log-likelihood sums.
type Pick = (usize, Vec<(i64, i64)>);

/// One forward pass: items whose inputs share their first `skip` tokens with the cached prefix
/// (0: no prefix), laid end to end.
pub(crate) struct Pass<'a, 'b> {
    pub(crate) items: &'b [&'a Item],
    pub(crate) skip: usize,
}

/// `items` in runs of consecutive items whose own tokens (after `skip`) add up to at most
/// [`PACK_TOKENS`] (an item longer than that runs alone).
pub(crate) fn packs<'a, 'b>(items: &'b [&'a Item], skip: usize) -> Vec<Pass<'a, 'b>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (n, i) in items.iter().enumerate() {
        let own = i.input.len() - skip;
        if n > start && tokens + own > PACK_TOKENS {
            out.push(Pass {
                items: &items[start..n],
                skip,
            });
            (start, tokens) = (n, 0);
        }
        tokens += own;
    }
    if start < items.len() {
        out.push(Pass {
            items: &items[start..],
            skip,
        });
    }
    out
}

/// Another instance of `bundle`'s model over its parameters and adapters (`LoadedModel::share`
/// under a fresh instance of its family).
pub(crate) fn another(
    regs: &Registries,
    bundle: &ModelBundle,
    model_type: Option<&str>,
) -> Result<LoadedModel> {
    let (family, _, handle) = crate::bundle::resolve_family(regs, &bundle.config, model_type)?;
    let instance = handle
        .instantiate(&crate::bundle::family_config(&bundle.config))
        .map_err(|e| anyhow!("instantiating model family `{family}` for a second thread: {e}"))?;
    Ok(bundle.model.share(instance)?)
}

/// Runs every pass (`prefix`: the cached prefix, for the passes with `skip` > 0) and returns
/// their sums in order; `progress` is told each finished pass's items. With `more`, a CPU model
/// and more than one libtorch thread, the passes are shared among that many threads of one
/// libtorch thread each (the calling thread one of them); else they run here one after the
/// other.
pub(crate) fn run(
    model: &LoadedModel,
    more: Option<&MoreFn<'_>>,
    prefix: Option<KvCache>,
    passes: &[Pass<'_, '_>],
    progress: &(dyn Fn(&[&Item]) + Sync),
) -> Result<Vec<PassSums>> {
    let threads = (tch::get_num_threads().max(1) as usize).min(passes.len());
    // On a GPU the passes queue on one device: one thread feeds it.
    let more = more.filter(|_| threads > 1 && model.device() == tch::Device::Cpu);
    let Some(more) = more else {
        let mut prefix = prefix;
        return passes
            .iter()
            .map(|p| {
                let sums = one_pass(model, prefix.as_mut(), p)?;
                progress(p.items);
                Ok(sums)
            })
            .collect();
    };
    // Each thread its own model instance and its own copy of the prefix's cache (a pass writes
    // its keys and values after the prefix's, in the cache's buffers).
    let mut workers = Vec::with_capacity(threads - 1);
    for _ in 1..threads {
        let cache = prefix.as_ref().map(|c| c.copy_rows(&[0])).transpose()?;
        workers.push((more()?, cache));
    }
    let next = AtomicUsize::new(0);
    let work =
        |model: &LoadedModel, mut prefix: Option<KvCache>| -> Result<Vec<(usize, PassSums)>> {
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = passes.get(n) else {
                    return Ok(out);
                };
                out.push((n, one_pass(model, prefix.as_mut(), p)?));
                progress(p.items);
            }
        };
    // One libtorch thread here, and in the threads started below (libtorch starts a new
    // thread at the count last set).
    let one = TorchThreads::one();
    let results: Vec<Result<Vec<(usize, PassSums)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|(m, c)| {
                let work = &work;
                s.spawn(move || {
                    let _one = TorchThreads::one();
                    work(&m, c)
                })
            })
            .collect();
        let mut results = vec![work(model, prefix)];
        for h in handles {
            results.push(
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a scoring thread panicked"))),
            );
        }
        results
    });
    drop(one);
    let mut all: Vec<Option<PassSums>> = (0..passes.len()).map(|_| None).collect();
    for r in results {
        for (n, sums) in r? {
            all[n] = Some(sums);
        }
    }
    all.into_iter()
        .map(|s| s.ok_or_else(|| anyhow!("a pass was not run")))
        .collect()
}

/// One pass: after the prefix in `cache` (a fresh cache when the pass has no prefix).
fn one_pass(
    model: &LoadedModel,
    cache: Option<&mut KvCache>,
    p: &Pass<'_, '_>,
) -> Result<PassSums> {
    match cache {
        Some(c) if p.skip > 0 => forward_pack(model, c, p.skip, p.items),
        _ => forward_pack(model, &mut model.new_cache(1), 0, p.items),
    }
}

/// Forwards `items`' inputs after the `skip` tokens `cache` holds, laid end to end in one pass
/// (`LoadedModel::forward_blocks`: each attends to the cached tokens and to its own), and
/// returns, per item, each of its choices' summed log-probabilities. The vocabulary projection
/// runs once per scored position.
fn forward_pack(
    model: &LoadedModel,
    cache: &mut KvCache,
    skip: usize,
    items: &[&Item],
) -> Result<PassSums> {
    let (mut ids, mut blocks) = (Vec::new(), Vec::with_capacity(items.len()));
    // The pass's scored positions (each once), and per choice its (position row, token) pairs.
    let mut cols: Vec<i64> = Vec::new();
    let mut picks: Vec<Vec<Pick>> = Vec::with_capacity(items.len());
    for i in items {
        let start = ids.len();
        let own = &i.input[skip..];
        ids.extend_from_slice(own);
        blocks.push(own.len() as i64);
        let mut choices = Vec::with_capacity(i.targets.len());
        for (c, targets) in &i.targets {
            let mut pairs = Vec::with_capacity(targets.len());
            for &(p, t) in targets {
                let col = (start + p - skip) as i64;
                let row = match cols.iter().rposition(|&x| x == col) {
                    Some(r) => r,
                    None => {
                        cols.push(col);
                        cols.len() - 1
                    }
                };
                pairs.push((row as i64, t));
            }
            choices.push((*c, pairs));
        }
        picks.push(choices);
    }
    let hidden = model.forward_blocks(&ids, &blocks, cache)?;
    let device = hidden.device();
    let h = hidden
        .get(0)
        .index_select(0, &Tensor::from_slice(&cols).to_device(device));
    let logp = model.logits(&h)?.log_softmax(-1, Kind::Float);
    let (rows, toks): (Vec<i64>, Vec<i64>) = picks
        .iter()
        .flatten()
        .flat_map(|(_, pairs)| pairs.iter().copied())
        .unzip();
    let picked = logp
        .index_select(0, &Tensor::from_slice(&rows).to_device(device))
        .gather(
            -1,
            &Tensor::from_slice(&toks).view([-1, 1]).to_device(device),
            false,
        )
        .to_kind(Kind::Double)
        .view([-1]);
    let picked = Vec::<f64>::try_from(picked.to_device(tch::Device::Cpu))?;
    let mut next = picked.into_iter();
    Ok(picks
        .iter()
        .map(|choices| {
            choices
                .iter()
                .map(|(c, pairs)| (*c, next.by_ref().take(pairs.len()).sum()))
                .collect()
        })
        .collect())
}
