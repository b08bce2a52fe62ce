//! The built-in `pt` backend's loaded model: a [`LoadedModel`] (libtorch, the host's model
//! families and decoding kernels) behind the backend contract ([`BackendModel`]), so that the
//! batcher and `swift infer` drive it exactly as they drive a plugin's backend.
//!
//! One KV cache holds the running sequences in the order they joined: a step drops the leaving
//! rows ([`KvCache::retain`]), decodes one token for the fed rows, prefills the joining rows
//! together in a cache of their own (left padding) and appends it ([`KvCache::append`]); when the
//! model allows ([`LoadedModel::can_mix`]), the decoding and the prefill are one pass over the
//! weights ([`LoadedModel::forward_mixed`]). Per-row
//! LoRA adapters are the server's switches ([`crate::adapters`]), set before each pass.

use swift_model::{left_padded, ImageBatch, KvCache, LoadedModel, TorchThreads};
use swift_plugin_tensors::backend::{
    BackendModel, ImageInput, Join, ModelInfo, PromptLogprob, PromptScore, Step, StepOutput,
};
use swift_plugin_tensors::sdk::shape;
use tch::{Device, Kind, Tensor};

use crate::adapters::Selection;

/// A [`LoadedModel`] as a backend's model.
pub struct PtModel {
    model: LoadedModel,
    selection: Option<Selection>,
    cache: Option<KvCache>,
    /// The cached sequences, in cache order, with their adapters.
    seqs: Vec<(u64, Option<usize>)>,
    vocab_size: usize,
    description: String,
    /// Held between decoding steps (dropped before a prefill, which wants libtorch's threads),
    /// so that libtorch does not rebuild its thread pool at every step.
    threads: Option<TorchThreads>,
}

impl PtModel {
    /// `selection`: the per-row adapter switches attached to `model` (see
    /// [`crate::adapters::attach`]), when adapters were loaded; `vocab_size` the width of its
    /// logits (config.json's `vocab_size`).
    pub fn new(
        model: LoadedModel,
        selection: Option<Selection>,
        vocab_size: usize,
        description: String,
    ) -> Self {
        Self {
            model,
            selection,
            cache: None,
            seqs: Vec::new(),
            vocab_size,
            description,
            threads: None,
        }
    }

    fn select(&self, adapters: Vec<Option<usize>>) {
        if let Some(s) = &self.selection {
            s.set(adapters);
        }
    }

    fn run(&mut self, step: &Step) -> Result<StepOutput, String> {
        let te = |e: tch::TchError| e.to_string();
        let me = |e: swift_model::ModelError| e.to_string();
        // Leaving rows (a sequence this model does not hold, after a failed step, is ignored).
        if !step.leave.is_empty() {
            let keep: Vec<i64> = (0..self.seqs.len() as i64)
                .filter(|&i| !step.leave.contains(&self.seqs[i as usize].0))
                .collect();
            if keep.is_empty() {
                self.cache = None;
                self.seqs.clear();
            } else if keep.len() < self.seqs.len() {
                if let Some(c) = self.cache.as_mut() {
                    c.retain(&keep).map_err(me)?;
                    c.trim_padding().map_err(me)?;
                }
                self.seqs = keep.iter().map(|&i| self.seqs[i as usize]).collect();
            }
        }
        let fed: Vec<u64> = step.feed.iter().map(|(s, _)| *s).collect();
        let cached: Vec<u64> = self.seqs.iter().map(|(s, _)| *s).collect();
        if fed != cached {
            return Err(format!(
                "the step feeds sequences {fed:?} but the cache holds {cached:?} (feed every running sequence, in the order they joined)"
            ));
        }
        if !step.feed.is_empty() && !step.join.is_empty() && self.mixes(&step.join) {
            return self.run_mixed(step);
        }
        let mut parts: Vec<Tensor> = Vec::new();
        if !step.feed.is_empty() {
            let c = self
                .cache
                .as_mut()
                .ok_or("running sequences without a cache")?;
            if let Some(s) = &self.selection {
                s.set(self.seqs.iter().map(|(_, a)| *a).collect());
            }
            let last: Vec<i64> = step.feed.iter().map(|(_, t)| *t).collect();
            let ids = Tensor::from_slice(&last).view([last.len() as i64, 1]);
            let hidden = self.model.forward(&ids, None, c).map_err(me)?;
            parts.push(
                self.model
                    .logits(&hidden.f_select(1, -1).map_err(te)?)
                    .map_err(me)?,
            );
        }
        if !step.join.is_empty() {
            self.threads = None;
            self.select(step.join.iter().map(|j| j.adapter).collect());
            let prompts: Vec<&[i64]> = step.join.iter().map(|j| &j.prompt[..]).collect();
            if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
                return Err(format!(
                    "sequence {} joins with no tokens",
                    step.join[i].seq
                ));
            }
            let (ids, mask) = left_padded(&prompts);
            let mut fresh = self.model.new_cache(prompts.len() as i64);
            let images = image_batch(&step.join).map_err(te)?;
            let hidden = self
                .model
                .forward_with_images(&ids, mask.as_ref(), &mut fresh, images.as_ref())
                .map_err(me)?;
            parts.push(
                self.model
                    .logits(&hidden.f_select(1, -1).map_err(te)?)
                    .map_err(me)?,
            );
            match self.cache.as_mut() {
                Some(c) => c.append(fresh).map_err(me)?,
                None => self.cache = Some(fresh),
            }
            self.seqs
                .extend(step.join.iter().map(|j| (j.seq, j.adapter)));
        }
        self.keep_threads();
        if parts.is_empty() {
            return Ok(StepOutput::default());
        }
        // One part (every decoding step) is the logits themselves: no copy of the vocabulary.
        let logits = match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::f_cat(&parts, 0).map_err(te)?,
        };
        self.output(logits)
    }

    /// Whether joining rows go into the running rows' pass ([`PtModel::run_mixed`]): a text
    /// model with plain slots, no adapters and no images.
    fn mixes(&self, join: &[Join]) -> bool {
        self.selection.is_none()
            && join
                .iter()
                .all(|j| j.images.is_empty() && !j.prompt.is_empty())
            && self.model.can_mix()
    }

    /// A step with running and joining rows as one pass over the weights
    /// ([`LoadedModel::forward_mixed`]): the running rows' next tokens and the joining rows'
    /// prompts together, instead of a decoding pass and then a prefill pass.
    fn run_mixed(&mut self, step: &Step) -> Result<StepOutput, String> {
        let me = |e: swift_model::ModelError| e.to_string();
        // On the kernels the pass keeps libtorch on one thread, as a decoding step does; else
        // libtorch's threads serve its products.
        let rows = step.feed.len() + step.join.iter().map(|j| j.prompt.len()).sum::<usize>();
        if !self.model.mixes_on_kernels(rows) {
            self.threads = None;
        }
        let cache = self
            .cache
            .as_mut()
            .ok_or("running sequences without a cache")?;
        let last: Vec<i64> = step.feed.iter().map(|(_, t)| *t).collect();
        let prompts: Vec<&[i64]> = step.join.iter().map(|j| &j.prompt[..]).collect();
        let mut fresh = self.model.new_cache(prompts.len() as i64);
        let hidden = self
            .model
            .forward_mixed(&last, cache, &prompts, &mut fresh)
            .map_err(me)?;
        cache.append(fresh).map_err(me)?;
        self.seqs
            .extend(step.join.iter().map(|j| (j.seq, j.adapter)));
        self.keep_threads();
        let logits = self.model.logits(&hidden).map_err(me)?;
        self.output(logits)
    }

    /// Whether rows joining a running batch cost about as much per prompt token one at a time
    /// as several together, so that the server lets them join at once (`BatchOptions::
    /// join_at_once`): their prompts go into the running rows' pass ([`PtModel::mixes`]: no
    /// adapters, no images) and that pass runs on the decoding kernels
    /// ([`LoadedModel::mixes_on_kernels`], a float32 model), whose cost grows with the rows
    /// it carries (`examples/mixed_step.rs`: 4-5 ms per prompt token for one prompt of 16 tokens,
    /// 4.3 for four, loaded AMD EPYC; BENCHMARKS.md, Deploy). Asked for a pass just past the
    /// decoding kernel's own rows (one prompt beside a full batch).
    pub fn small_joins_cheap(&self) -> bool {
        self.selection.is_none()
            && self.model.can_mix()
            && self.model.mixes_on_kernels(swift_model::KERNEL_ROWS + 1)
    }

    /// Holds one libtorch thread between decoding steps of a batch the kernels serve.
    fn keep_threads(&mut self) {
        if self.seqs.is_empty() || self.seqs.len() > swift_model::KERNEL_ROWS {
            self.threads = None;
        } else if self.threads.is_none() {
            self.threads = self.model.decoding_threads(self.seqs.len());
        }
    }

    /// Logits `[rows, vocab]` as the step's output.
    fn output(&self, logits: Tensor) -> Result<StepOutput, String> {
        let te = |e: tch::TchError| e.to_string();
        let logits = logits
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_to_kind(Kind::Float))
            .and_then(|t| t.f_contiguous())
            .map_err(te)?;
        let vocab = shape(&logits).last().copied().unwrap_or(0) as usize;
        let flat = logits.f_view([-1]).map_err(te)?;
        let logits = Vec::<f32>::try_from(flat).map_err(te)?;
        Ok(StepOutput {
            vocab,
            logits,
            chosen: Vec::new(),
        })
    }
}

impl BackendModel for PtModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            vocab_size: self.vocab_size,
            max_len: self
                .model
                .layout()
                .max_positions
                .and_then(|m| usize::try_from(m).ok()),
            description: self.description.clone(),
        }
    }

    fn prompt_logprobs(&mut self, request: &PromptScore) -> Result<Vec<PromptLogprob>, String> {
        let te = |e: tch::TchError| e.to_string();
        let me = |e: swift_model::ModelError| e.to_string();
        let n = request.prompt.len();
        if n == 0 {
            return Err("the prompt has no tokens".into());
        }
        if n == 1 {
            return Ok(Vec::new());
        }
        // A prefill of its own (the running sequences' cache is untouched); the next step sets
        // the adapters of its rows again.
        self.threads = None;
        self.select(vec![request.adapter]);
        let ids = Tensor::from_slice(&request.prompt).view([1, n as i64]);
        let mut cache = self.model.new_cache(1);
        let hidden = self.model.forward(&ids, None, &mut cache).map_err(me)?;
        let h = hidden.get(0).f_narrow(0, 0, n as i64 - 1).map_err(te)?;
        let logp = self
            .model
            .logits(&h)
            .map_err(me)?
            .f_to_kind(Kind::Float)
            .and_then(|l| l.f_log_softmax(-1, Kind::Float))
            .and_then(|l| l.f_to_device(Device::Cpu))
            .map_err(te)?;
        let next = Tensor::from_slice(&request.prompt[1..]).view([-1, 1]);
        let picked = Vec::<f32>::try_from(
            logp.f_gather(-1, &next, false)
                .and_then(|t| t.f_view([-1]))
                .map_err(te)?,
        )
        .map_err(te)?;
        let tops: Vec<Vec<(i64, f64)>> = if request.top > 0 {
            let k = request.top.min(shape(&logp)[1] as usize) as i64;
            let (values, indices) = logp.f_topk(k, -1, true, true).map_err(te)?;
            let values = Vec::<f32>::try_from(values.f_view([-1]).map_err(te)?).map_err(te)?;
            let indices = Vec::<i64>::try_from(indices.f_view([-1]).map_err(te)?).map_err(te)?;
            values
                .chunks(k as usize)
                .zip(indices.chunks(k as usize))
                .map(|(v, i)| i.iter().zip(v).map(|(&i, &v)| (i, f64::from(v))).collect())
                .collect()
        } else {
            vec![Vec::new(); n - 1]
        };
        Ok(picked
            .into_iter()
            .zip(tops)
            .map(|(lp, top)| PromptLogprob {
                logprob: f64::from(lp),
                top,
            })
            .collect())
    }

    fn step(&mut self, step: &Step) -> Result<StepOutput, String> {
        let out = self.run(step);
        if out.is_err() {
            // The cache may be half updated: forget every sequence (the host fails them).
            self.cache = None;
            self.seqs.clear();
        }
        out
    }
}

/// The joining rows' images, in row order, as one batch (`None` when no row has any): pixel
/// values concatenated along their first dimension (CLIP's images, Qwen2-VL's patches).
fn image_batch(join: &[Join]) -> Result<Option<ImageBatch>, tch::TchError> {
    let images: Vec<&ImageInput> = join.iter().flat_map(|j| j.images.iter()).collect();
    images_as_batch(&images)
}

/// Processed images as one batch for the model (`None` when there are none).
pub fn images_as_batch(images: &[&ImageInput]) -> Result<Option<ImageBatch>, tch::TchError> {
    if images.is_empty() {
        return Ok(None);
    }
    let mut pixels = Vec::with_capacity(images.len());
    for im in images {
        let t = Tensor::from_slice(&im.pixel_values).f_view(im.shape.as_slice())?;
        // CLIP gives one image [3, H, W]: a batch of one.
        pixels.push(if im.shape.len() == 3 {
            t.f_unsqueeze(0)?
        } else {
            t
        });
    }
    let grids: Vec<i64> = images.iter().flat_map(|im| im.grid_thw).collect();
    Ok(Some(ImageBatch {
        pixel_values: Tensor::f_cat(&pixels, 0)?,
        grid_thw: Tensor::from_slice(&grids).f_view([images.len() as i64, 3])?,
    }))
}
