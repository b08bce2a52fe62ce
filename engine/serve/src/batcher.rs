//! The continuous batcher: one thread owns the model and decodes every running request together.
//!
//! Between two decoding steps requests join and leave the batch: finished rows leave the KV
//! cache at once ([`KvCache::retain`]), and waiting requests are prefilled together in a cache
//! of their own which is then appended to the running one ([`KvCache::append`], left padding
//! keeps each row attending to its own tokens only). Each row keeps its own sampling settings,
//! seeded generator, stop words, token budget and LoRA adapter (set per row before each pass,
//! see [`crate::adapters`]).
//!
//! Requests wait in a bounded queue; [`Submitter::try_submit`] refuses at once when it is full,
//! and the batcher takes from it only while the batch has room. When every [`Submitter`] is
//! dropped the thread finishes the rows it runs, answers what is still queued, and exits.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use swift_model::{FinishReason, KvCache, LoadedModel, Sampler, SamplingParams};
use swift_template::Encoder;
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc::UnboundedSender;

use crate::adapters::Selection;
use crate::ServeError;

/// One request: a prompt decoded `choices` times (OpenAI's `n`), each choice a row of the batch.
pub struct Job {
    pub prompt: Vec<i64>,
    /// The LoRA adapter (index into the loaded list), or None for the base model.
    pub adapter: Option<usize>,
    pub choices: usize,
    /// Choice `i` samples with seed `params.seed + i`.
    pub params: SamplingParams,
    /// Strings that end an answer (not part of it).
    pub stop_words: Vec<String>,
    /// Keep generating past end-of-sequence tokens (vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
}

/// What the batcher reports about one choice of a job.
#[derive(Debug, Clone)]
pub struct Event {
    pub choice: usize,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// New answer text (possibly empty: text that might start a stop word is held back) and
    /// the token's log-probabilities when asked for.
    Delta {
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// The choice is complete: `rest` is the text not yet sent as deltas, `text` the whole answer.
    Done {
        rest: String,
        text: String,
        /// The answer's tokens (an ending EOS excluded).
        tokens: Vec<i64>,
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

/// A token and its log-probability under the model, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull,
    ShuttingDown,
}

/// The handle request handlers submit jobs through.
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<Job>,
}

impl Submitter {
    /// Queues a job, or refuses at once when the queue is full.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::QueueFull,
            TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
        })
    }
}

/// Settings of the batcher.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most rows decoded together.
    pub max_batch_size: usize,
    /// Jobs that may wait for room in the batch; more are refused.
    pub max_queue: usize,
    pub eos_ids: Vec<i64>,
    /// Test hook: sleep this long after every decoding step (holds requests in flight).
    pub step_delay: Option<Duration>,
}

/// Starts the batcher thread on `model`.
pub fn spawn(
    model: LoadedModel,
    selection: Option<Selection>,
    encoder: Arc<Encoder>,
    options: BatchOptions,
) -> Result<(Submitter, JoinHandle<()>), ServeError> {
    let (tx, rx) = mpsc::sync_channel(options.max_queue);
    let batcher = Batcher {
        model,
        selection,
        encoder,
        options,
    };
    let handle = std::thread::Builder::new()
        .name("swift-batcher".into())
        .spawn(move || batcher.run(rx))
        .map_err(|e| ServeError::Startup(format!("starting the batcher thread: {e}")))?;
    Ok((Submitter { tx }, handle))
}

/// One choice being decoded.
pub(crate) struct Row {
    choice: usize,
    events: UnboundedSender<Event>,
    adapter: Option<usize>,
    /// The prompt, then the answer's tokens (the repetition penalty reads both).
    history: Vec<i64>,
    prompt_len: usize,
    params: SamplingParams,
    sampler: Sampler,
    stop_words: Arc<Vec<String>>,
    ignore_eos: bool,
    logprobs: Option<usize>,
    /// Tokens generated (an ending EOS included).
    generated: usize,
    /// Bytes of the answer's text already sent.
    sent: usize,
}

pub(crate) struct Batcher {
    pub(crate) model: LoadedModel,
    pub(crate) selection: Option<Selection>,
    /// For decoding answers (stop words, deltas).
    pub(crate) encoder: Arc<Encoder>,
    pub(crate) options: BatchOptions,
}

impl Batcher {
    fn run(mut self, rx: Receiver<Job>) {
        let mut rows: Vec<Row> = Vec::new();
        let mut cache: Option<KvCache> = None;
        let max = self.options.max_batch_size.max(1);
        loop {
            let mut joining: Vec<Row> = Vec::new();
            if rows.is_empty() {
                match rx.recv() {
                    Ok(job) => joining.extend(rows_of(job)),
                    Err(_) => break,
                }
            }
            while rows.len() + joining.len() < max {
                match rx.try_recv() {
                    Ok(job) => joining.extend(rows_of(job)),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if !joining.is_empty() {
                tracing::debug!(
                    "{} row(s) join {} running (queue: {})",
                    joining.len(),
                    rows.len(),
                    self.options.max_queue
                );
            }
            if let Err(e) = self.step(&mut rows, &mut cache, joining) {
                tracing::error!("decoding failed: {e}");
                for r in rows.drain(..) {
                    let _ = r.events.send(Event {
                        choice: r.choice,
                        kind: EventKind::Failed(e.to_string()),
                    });
                }
                cache = None;
            }
            if let Some(d) = self.options.step_delay {
                std::thread::sleep(d);
            }
        }
        tracing::debug!("the batcher stops: no more requests can arrive");
    }

    fn select(&self, rows: &[Row]) {
        if let Some(s) = &self.selection {
            s.set(rows.iter().map(|r| r.adapter).collect());
        }
    }

    /// One decoding step for the running rows, the prefill of the joining ones, then one token
    /// for every row; finished rows leave.
    pub(crate) fn step(
        &mut self,
        rows: &mut Vec<Row>,
        cache: &mut Option<KvCache>,
        joining: Vec<Row>,
    ) -> Result<(), ServeError> {
        let mut parts: Vec<Tensor> = Vec::new();
        if !rows.is_empty() {
            let c = cache
                .as_mut()
                .ok_or_else(|| ServeError::Internal("running rows without a cache".into()))?;
            self.select(rows);
            let last: Vec<i64> = rows
                .iter()
                .map(|r| r.history.last().copied().unwrap_or(0))
                .collect();
            let ids = Tensor::from_slice(&last).view([rows.len() as i64, 1]);
            let hidden = self.model.forward(&ids, None, c)?;
            parts.push(self.model.logits(&hidden.f_select(1, -1)?)?);
        }
        if !joining.is_empty() {
            self.select(&joining);
            let prompts: Vec<&[i64]> = joining.iter().map(|r| &r.history[..]).collect();
            let (ids, mask) = left_padded(&prompts);
            let mut fresh = self.model.new_cache(joining.len() as i64);
            let hidden = self.model.forward(&ids, mask.as_ref(), &mut fresh)?;
            parts.push(self.model.logits(&hidden.f_select(1, -1)?)?);
            match cache {
                Some(c) => c.append(fresh)?,
                None => *cache = Some(fresh),
            }
            rows.extend(joining);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let logits = Tensor::f_cat(&parts, 0)?
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let mut flat: Vec<f32> = Vec::<f32>::try_from(logits.f_view([-1])?)?;
        let vocab = flat.len() / rows.len();
        let mut keep: Vec<i64> = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter_mut().enumerate() {
            if self.advance(row, &mut flat[i * vocab..(i + 1) * vocab]) {
                keep.push(i as i64);
            }
        }
        if keep.len() < rows.len() {
            if keep.is_empty() {
                rows.clear();
                *cache = None;
            } else {
                if let Some(c) = cache.as_mut() {
                    c.retain(&keep)?;
                    c.trim_padding()?;
                }
                let mut i = 0;
                rows.retain(|_| {
                    let k = keep.contains(&i);
                    i += 1;
                    k
                });
            }
        }
        Ok(())
    }

    /// Picks a row's next token and reports it; false when the row is finished (or its client
    /// has gone away).
    fn advance(&self, row: &mut Row, logits: &mut [f32]) -> bool {
        let top = row.logprobs.map(|k| log_probs(logits, k));
        let tok = row.sampler.pick(logits, &row.history, &row.params);
        row.generated += 1;
        let eos = !row.ignore_eos && self.options.eos_ids.contains(&tok);
        let logprob = match (&top, eos) {
            (Some((lse, top)), false) => Some(TokenLogprob {
                token: self.decode(&[tok]),
                logprob: logits_at(logits, tok, *lse),
                top: top
                    .iter()
                    .map(|&(id, lp)| (self.decode(&[id]), lp))
                    .collect(),
            }),
            _ => None,
        };
        if !eos {
            row.history.push(tok);
        }
        let text = self.decode(&row.history[row.prompt_len..]);
        let stop_at = row
            .stop_words
            .iter()
            .filter(|w| !w.is_empty())
            .filter_map(|w| text.find(w.as_str()))
            .min();
        let finish = if eos {
            Some(FinishReason::Eos)
        } else if stop_at.is_some() {
            Some(FinishReason::StopWord)
        } else if row.generated >= row.params.max_new_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let Some(finish) = finish else {
            let safe = safe_len(&text, &row.stop_words);
            let delta = match text.get(row.sent..safe) {
                Some(d) if safe > row.sent => d.to_string(),
                _ => String::new(),
            };
            if safe > row.sent {
                row.sent = safe;
            }
            if delta.is_empty() && logprob.is_none() {
                return !row.events.is_closed();
            }
            return row
                .events
                .send(Event {
                    choice: row.choice,
                    kind: EventKind::Delta {
                        text: delta,
                        logprob,
                    },
                })
                .is_ok();
        };
        if logprob.is_some() {
            let _ = row.events.send(Event {
                choice: row.choice,
                kind: EventKind::Delta {
                    text: String::new(),
                    logprob,
                },
            });
        }
        let mut text = text;
        if let Some(cut) = stop_at {
            text.truncate(cut);
        }
        let rest = text.get(row.sent..).unwrap_or_default().to_string();
        let _ = row.events.send(Event {
            choice: row.choice,
            kind: EventKind::Done {
                rest,
                text,
                tokens: row.history[row.prompt_len..].to_vec(),
                finish,
                prompt_tokens: row.prompt_len,
                completion_tokens: row.generated,
            },
        });
        false
    }

    fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.encoder.tokenizer.decode(&ids).unwrap_or_default()
    }
}

/// The rows of a job, one per choice.
pub(crate) fn rows_of(job: Job) -> Vec<Row> {
    let stop_words = Arc::new(job.stop_words);
    (0..job.choices.max(1))
        .map(|choice| {
            let params = job.params.clone();
            Row {
                choice,
                events: job.events.clone(),
                adapter: job.adapter,
                history: job.prompt.clone(),
                prompt_len: job.prompt.len(),
                sampler: Sampler::new(params.seed.wrapping_add(choice as u64)),
                params,
                stop_words: stop_words.clone(),
                ignore_eos: job.ignore_eos,
                logprobs: job.logprobs,
                generated: 0,
                sent: 0,
            }
        })
        .collect()
}

/// Prompts of different lengths as one left-padded batch: ids and (when needed) the mask.
fn left_padded(prompts: &[&[i64]]) -> (Tensor, Option<Tensor>) {
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

/// log Σ exp(logits) and the `k` most likely tokens with their log-probabilities.
fn log_probs(logits: &[f32], k: usize) -> (f64, Vec<(i64, f64)>) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(idx.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    }
    idx.truncate(k);
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top = idx
        .into_iter()
        .map(|i| (i as i64, logits[i] as f64 - lse))
        .collect();
    (lse, top)
}

fn logits_at(logits: &[f32], tok: i64, lse: f64) -> f64 {
    usize::try_from(tok)
        .ok()
        .and_then(|i| logits.get(i))
        .map(|&l| l as f64 - lse)
        .unwrap_or(f64::NEG_INFINITY)
}

/// How much of `text` can be sent now: all of it but an unfinished UTF-8 sequence (decoded as
/// U+FFFD) at the end and an ending that could be the start of a stop word.
fn safe_len(text: &str, stop_words: &[String]) -> usize {
    let mut end = text.len();
    while text[..end].ends_with('\u{FFFD}') {
        end -= '\u{FFFD}'.len_utf8();
    }
    let head = &text[..end];
    let mut hold = 0;
    for w in stop_words {
        for k in (1..w.len()).rev() {
            if k <= hold {
                break;
            }
            if w.is_char_boundary(k) && head.ends_with(&w[..k]) {
                hold = k;
                break;
            }
        }
    }
    end - hold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_may_start_a_stop_word_is_held_back() {
        let stops = vec!["<|im_end|>".to_string(), "END".to_string()];
        assert_eq!(safe_len("hello", &stops), 5);
        assert_eq!(safe_len("hello <|im", &stops), 6);
        assert_eq!(safe_len("hello E", &stops), 6);
        assert_eq!(safe_len("hello EN", &stops), 6);
        assert_eq!(safe_len("caf\u{FFFD}", &stops), 3);
        assert_eq!(safe_len("", &stops), 0);
    }

    #[test]
    fn log_probs_are_normalised_and_sorted() {
        // log-softmax of [0, ln 3] is [ln 1/4, ln 3/4].
        let l = [0.0f32, 3f32.ln(), f32::NEG_INFINITY];
        let (lse, top) = log_probs(&l, 2);
        assert!((lse - 4f64.ln()).abs() < 1e-6);
        assert_eq!(top[0].0, 1);
        assert!((top[0].1 - 0.75f64.ln()).abs() < 1e-6);
        assert!((top[1].1 - 0.25f64.ln()).abs() < 1e-6);
        assert!((logits_at(&l, 0, lse) - 0.25f64.ln()).abs() < 1e-6);
    }
}
