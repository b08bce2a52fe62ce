//! The continuous batcher: one thread owns the backend's loaded model and decodes every running
//! request together, through the backend contract only (`swift_plugin_api::backend`).
//!
//! [`Decoder`] is one generation loop for every backend and every caller (the server here,
//! `swift infer` in swift-pipeline): between two steps rows join and leave; each step tells the
//! backend which sequences leave, which continue (with the token chosen for each) and which join
//! (their prompt, adapter and sampling settings), and reads back per row either logits (host
//! sampling: each row keeps its own seeded [`Sampler`]) or the backend's chosen token. Stop
//! words, EOS, token budgets, streamed deltas and logprobs are decided here, the same on every
//! backend. A backend that applies one adapter per step (`AdapterSupport::PerBatch`) only gets
//! rows of one adapter at a time; the others wait in order. While rows run, waiting rows join a
//! few at a time (`join_now`: a prefill pass of many prompts costs less per token than one of
//! one), or at every step where the served model's joins cost no more per prompt token one at a
//! time ([`BatchOptions::join_at_once`]).
//!
//! Requests wait in a bounded queue; [`Submitter::try_submit`] refuses at once when it is full,
//! and the batcher takes from it only while the batch has room. When every [`Submitter`] is
//! dropped the thread finishes the rows it runs, answers what is still queued, and exits.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use std::collections::VecDeque;

use swift_model::{FinishReason, Sampler, SamplingParams};
use swift_plugin_tensors::backend::{
    AdapterSupport, BackendModelHandle, Capabilities, Chosen, ImageInput, Join, PromptLogprob,
    PromptScore, Sampling, SamplingBy, Step,
};
use swift_template::Encoder;
use tokio::sync::mpsc::UnboundedSender;

use crate::logprobs::{log_probs, logits_at};
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
    /// The prompt's images (its placeholders already expanded), for a backend that reads them.
    pub images: Arc<Vec<ImageInput>>,
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

/// A prompt to score (`echo` on `/v1/completions`): run by the batcher thread between two
/// decoding steps, answered on `reply`.
pub struct ScoreJob {
    pub request: PromptScore,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<PromptLogprob>, String>>,
}

/// What the queue holds.
enum Work {
    Generate(Job),
    Score(ScoreJob),
}

/// The handle request handlers submit jobs through.
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<Work>,
}

impl Submitter {
    /// Queues a job, or refuses at once when the queue is full.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        self.send(Work::Generate(job))
    }

    /// Queues a prompt to score (in the same queue, so the same limit), or refuses at once.
    pub fn try_score(&self, job: ScoreJob) -> Result<(), SubmitError> {
        self.send(Work::Score(job))
    }

    fn send(&self, work: Work) -> Result<(), SubmitError> {
        self.tx.try_send(work).map_err(|e| match e {
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
    /// Waiting rows join at every step ([`join_now`]): the backend's joining step costs about
    /// as much per prompt token for one prompt as for several (`PtModel::small_joins_cheap`).
    pub join_at_once: bool,
    /// Test hook: sleep this long after every decoding step (holds requests in flight).
    pub step_delay: Option<Duration>,
}

/// Starts the batcher thread on a backend's loaded model.
pub fn spawn(
    model: BackendModelHandle,
    capabilities: &Capabilities,
    encoder: Arc<Encoder>,
    options: BatchOptions,
) -> Result<(Submitter, JoinHandle<()>), ServeError> {
    let (tx, rx) = mpsc::sync_channel(options.max_queue);
    let mut max = options.max_batch_size.max(1);
    if capabilities.max_batch > 0 {
        max = max.min(capabilities.max_batch);
    }
    let decoder = Decoder::new(model, capabilities, encoder, options.eos_ids.clone());
    let batcher = Batcher {
        decoder,
        per_batch: capabilities.adapters == AdapterSupport::PerBatch,
        max,
        options,
    };
    let handle = std::thread::Builder::new()
        .name("swift-batcher".into())
        .spawn(move || batcher.run(rx))
        .map_err(|e| ServeError::Startup(format!("starting the batcher thread: {e}")))?;
    Ok((Submitter { tx }, handle))
}

/// One choice being decoded.
pub struct Row {
    /// The backend's sequence id (given when the row joins).
    seq: u64,
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
    images: Arc<Vec<ImageInput>>,
    /// Tokens generated (an ending EOS included).
    generated: usize,
    /// Bytes of the answer's text already sent.
    sent: usize,
    /// The batcher's step count when the row was queued (how long it has waited to join).
    queued_at: usize,
}

/// Where a busy period's time went (from the first request to an empty batch), logged at debug
/// level when the batch empties: how to see whether prefill or host work holds decoding back.
#[derive(Default)]
struct BusyStats {
    steps: usize,
    /// Steps in which rows joined, the rows and their prompt tokens.
    join_steps: usize,
    joined: usize,
    prompt_tokens: usize,
    /// Tokens generated (one per fed or joining row per step).
    tokens: usize,
    /// Seconds in the backend's `step` (steps with joining rows, and the others), and in the
    /// host's work on its output (sampling, detokenizing, stop words, events).
    join_step_s: f64,
    decode_step_s: f64,
    host_s: f64,
    started: Option<std::time::Instant>,
}

impl BusyStats {
    fn add(&mut self, t: &StepTimes) {
        self.steps += 1;
        self.tokens += t.rows;
        if t.joined > 0 {
            self.join_steps += 1;
            self.joined += t.joined;
            self.prompt_tokens += t.prompt_tokens;
            self.join_step_s += t.backend_s;
        } else {
            self.decode_step_s += t.backend_s;
        }
        self.host_s += t.host_s;
    }

    fn report(&mut self) {
        if let Some(t0) = self.started {
            let wall = t0.elapsed().as_secs_f64();
            tracing::debug!(
                "busy {wall:.2} s: {} steps ({} with {} joining rows, {} prompt tokens), {} tokens ({:.1}/s); backend {:.2} s in steps with joins, {:.2} s in the others; host {:.2} s; rest {:.2} s",
                self.steps,
                self.join_steps,
                self.joined,
                self.prompt_tokens,
                self.tokens,
                self.tokens as f64 / wall.max(1e-9),
                self.join_step_s,
                self.decode_step_s,
                self.host_s,
                wall - self.join_step_s - self.decode_step_s - self.host_s,
            );
        }
        *self = Self::default();
    }
}

/// What one [`Decoder::step`] did and how long its parts took.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepTimes {
    /// Rows that got a token (fed and joining).
    pub rows: usize,
    pub joined: usize,
    pub prompt_tokens: usize,
    /// Seconds in the backend's step, and in the host's work on its output.
    pub backend_s: f64,
    pub host_s: f64,
}

struct Batcher {
    decoder: Decoder,
    /// The backend applies one adapter per step.
    per_batch: bool,
    max: usize,
    options: BatchOptions,
}

impl Batcher {
    /// A generation job's rows wait; a prompt to score is scored now, between two steps.
    fn take(&mut self, work: Work, waiting: &mut VecDeque<Row>, steps: usize) {
        match work {
            Work::Generate(job) => waiting.extend(rows_of(job).into_iter().map(|mut r| {
                r.queued_at = steps;
                r
            })),
            Work::Score(job) => {
                let out = self.decoder.prompt_logprobs(&job.request);
                let _ = job.reply.send(out);
            }
        }
    }

    fn run(mut self, rx: Receiver<Work>) {
        // Rows taken from the queue that wait for room (or, per-batch adapters, their turn).
        let mut waiting: VecDeque<Row> = VecDeque::new();
        let mut open = true;
        let mut stats = BusyStats::default();
        // Steps taken so far (how long a waiting row has waited).
        let mut steps = 0usize;
        loop {
            if self.decoder.running() == 0 && waiting.is_empty() {
                stats.report();
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(work) => self.take(work, &mut waiting, steps),
                    Err(_) => break,
                }
            }
            // Take from the queue only while the batch has room.
            while open && self.decoder.running() + waiting.len() < self.max {
                match rx.try_recv() {
                    Ok(work) => self.take(work, &mut waiting, steps),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            let mut joining: Vec<Row> = Vec::new();
            let mut adapter = self.decoder.adapter();
            let mut i = 0;
            let admit = join_now(
                self.decoder.running(),
                waiting.len(),
                waiting.front().map_or(0, |r| steps - r.queued_at),
                !open || self.options.join_at_once,
            );
            while admit && i < waiting.len() && self.decoder.running() + joining.len() < self.max {
                if self.per_batch {
                    let a = waiting[i].adapter;
                    if *adapter.get_or_insert(a) != a {
                        i += 1;
                        continue;
                    }
                }
                joining.extend(waiting.remove(i));
            }
            if !joining.is_empty() {
                tracing::debug!(
                    "{} row(s) join {} running ({} waiting)",
                    joining.len(),
                    self.decoder.running(),
                    waiting.len()
                );
            }
            stats.started.get_or_insert_with(std::time::Instant::now);
            steps += 1;
            match self.decoder.step(joining) {
                Ok(t) => {
                    tracing::trace!(
                        "step {steps} at {:.3} s: {} rows ({} joining, {} prompt tokens), backend {:.1} ms, host {:.1} ms; {} waiting",
                        stats.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
                        t.rows,
                        t.joined,
                        t.prompt_tokens,
                        t.backend_s * 1e3,
                        t.host_s * 1e3,
                        waiting.len()
                    );
                    stats.add(&t)
                }
                Err(e) => tracing::error!("decoding failed: {e}"),
            }
            if let Some(d) = self.options.step_delay {
                std::thread::sleep(d);
            }
        }
        tracing::debug!("the batcher stops: no more requests can arrive");
    }
}

/// Rows that join a running batch together at once ([`join_now`]).
const JOIN_ROWS: usize = 4;
/// Steps the first waiting row waits at most for others to join with it ([`join_now`]).
const JOIN_WAIT_STEPS: usize = 4;

/// Whether the waiting rows join the batch at this step. A joining step prefills its rows in a
/// pass of its own beside the running rows' decoding pass (or, on `pt`, in the same pass:
/// `LoadedModel::forward_mixed`), and there prompt tokens cost about twice as much when one or
/// two prompts join as when many do (the CPU's general matrix product only pays off on many
/// rows; a mixed step on libtorch has a cost of its own beyond its tokens; BENCHMARKS.md,
/// Deploy): so while rows run, waiting rows join once [`JOIN_ROWS`] of them wait or the first
/// has waited [`JOIN_WAIT_STEPS`] steps; into an empty batch, or when `at_once` (no more
/// requests can come, or the backend's joins cost as much per prompt token one at a time:
/// [`BatchOptions::join_at_once`]), at once.
fn join_now(running: usize, waiting: usize, first_waited: usize, at_once: bool) -> bool {
    waiting > 0
        && (running == 0 || at_once || waiting >= JOIN_ROWS || first_waited >= JOIN_WAIT_STEPS)
}

/// The generation loop over a backend's loaded model (see the module's documentation).
pub struct Decoder {
    model: BackendModelHandle,
    sampling: SamplingBy,
    /// For decoding answers (stop words, deltas).
    encoder: Arc<Encoder>,
    eos_ids: Vec<i64>,
    rows: Vec<Row>,
    /// Sequences to tell the backend to drop at the next step.
    leaving: Vec<u64>,
    next_seq: u64,
}

/// What a row's next token comes from.
enum Pick<'a> {
    Logits(&'a mut [f32]),
    Chosen(&'a Chosen),
}

impl Decoder {
    pub fn new(
        model: BackendModelHandle,
        capabilities: &Capabilities,
        encoder: Arc<Encoder>,
        eos_ids: Vec<i64>,
    ) -> Self {
        Self {
            model,
            sampling: capabilities.sampling,
            encoder,
            eos_ids,
            rows: Vec::new(),
            leaving: Vec::new(),
            next_seq: 0,
        }
    }

    /// The loaded model's own description.
    pub fn info(&self) -> &swift_plugin_tensors::backend::ModelInfo {
        self.model.info()
    }

    /// Scores a prompt ([`BackendModelHandle::prompt_logprobs`]); the running rows are
    /// untouched.
    pub fn prompt_logprobs(&mut self, request: &PromptScore) -> Result<Vec<PromptLogprob>, String> {
        self.model.prompt_logprobs(request)
    }

    /// Rows being decoded.
    pub fn running(&self) -> usize {
        self.rows.len()
    }

    /// The adapter of the running rows, when there are any (for per-batch adapters).
    pub fn adapter(&self) -> Option<Option<usize>> {
        self.rows.first().map(|r| r.adapter)
    }

    /// One step: the running rows' next tokens and the joining rows' prefill; every row then
    /// gets one token, and finished rows leave. On an error every row is answered with it and
    /// dropped.
    pub fn step(&mut self, joining: Vec<Row>) -> Result<StepTimes, ServeError> {
        let r = self.try_step(joining);
        if let Err(e) = &r {
            for row in self.rows.drain(..) {
                self.leaving.push(row.seq);
                let _ = row.events.send(Event {
                    choice: row.choice,
                    kind: EventKind::Failed(e.to_string()),
                });
            }
        }
        r
    }

    fn try_step(&mut self, mut joining: Vec<Row>) -> Result<StepTimes, ServeError> {
        for row in &mut joining {
            row.seq = self.next_seq;
            self.next_seq += 1;
        }
        if self.rows.is_empty() && joining.is_empty() && self.leaving.is_empty() {
            return Ok(StepTimes::default());
        }
        let mut times = StepTimes {
            rows: self.rows.len() + joining.len(),
            joined: joining.len(),
            prompt_tokens: joining.iter().map(|r| r.history.len()).sum(),
            ..StepTimes::default()
        };
        let step = Step {
            leave: std::mem::take(&mut self.leaving),
            feed: self
                .rows
                .iter()
                .map(|r| (r.seq, r.history.last().copied().unwrap_or(0)))
                .collect(),
            join: joining
                .iter()
                .map(|r| Join {
                    seq: r.seq,
                    prompt: r.history.clone(),
                    adapter: r.adapter,
                    sampling: Sampling {
                        temperature: r.params.temperature,
                        top_k: r.params.top_k,
                        top_p: r.params.top_p,
                        repetition_penalty: r.params.repetition_penalty,
                        seed: r.sampler_seed(),
                    },
                    logprobs: r.logprobs,
                    images: r.images.as_ref().clone(),
                })
                .collect(),
        };
        // Joining rows are part of the batch from here on (a failure answers them too).
        self.rows.extend(joining);
        let t0 = std::time::Instant::now();
        let mut out = self.model.step(&step).map_err(ServeError::Internal)?;
        let t1 = std::time::Instant::now();
        times.backend_s = (t1 - t0).as_secs_f64();
        if self.rows.is_empty() {
            return Ok(times);
        }
        let vocab = out.vocab;
        let mut keep = vec![true; self.rows.len()];
        for (i, row) in self.rows.iter_mut().enumerate() {
            let pick = match self.sampling {
                SamplingBy::Host => Pick::Logits(&mut out.logits[i * vocab..(i + 1) * vocab]),
                SamplingBy::Backend => match out.chosen.get(i) {
                    Some(c) => Pick::Chosen(c),
                    None => {
                        return Err(ServeError::Internal(
                            "a backend that samples returned logits".into(),
                        ))
                    }
                },
            };
            keep[i] = advance(&self.encoder, &self.eos_ids, row, pick);
        }
        times.host_s = t1.elapsed().as_secs_f64();
        let mut i = 0;
        let leaving = &mut self.leaving;
        self.rows.retain(|r| {
            let k = keep[i];
            i += 1;
            if !k {
                leaving.push(r.seq);
            }
            k
        });
        Ok(times)
    }
}

/// Picks a row's next token and reports it; false when the row is finished (or its client
/// has gone away).
fn advance(encoder: &Encoder, eos_ids: &[i64], row: &mut Row, pick: Pick<'_>) -> bool {
    let decode = |ids: &[i64]| decode(encoder, ids);
    let (tok, lp) = match pick {
        Pick::Logits(logits) => {
            let top = row.logprobs.map(|k| log_probs(logits, k));
            let tok = row.sampler.pick(logits, &row.history, &row.params);
            let lp = top.map(|(lse, top)| (logits_at(logits, tok, lse), top));
            (tok, lp)
        }
        Pick::Chosen(c) => (
            c.token,
            match (row.logprobs, c.logprob) {
                (Some(_), Some(l)) => Some((l, c.top.clone())),
                _ => None,
            },
        ),
    };
    row.generated += 1;
    let eos = !row.ignore_eos && eos_ids.contains(&tok);
    let logprob = match (lp, eos) {
        (Some((logprob, top)), false) => Some(TokenLogprob {
            token: decode(&[tok]),
            logprob,
            top: top.iter().map(|&(id, lp)| (decode(&[id]), lp)).collect(),
        }),
        _ => None,
    };
    if !eos {
        row.history.push(tok);
    }
    let text = decode(&row.history[row.prompt_len..]);
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

fn decode(encoder: &Encoder, ids: &[i64]) -> String {
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    encoder.tokenizer.decode(&ids).unwrap_or_default()
}

impl Row {
    /// The seed this row samples with (its job's seed plus its choice).
    fn sampler_seed(&self) -> u64 {
        self.params.seed.wrapping_add(self.choice as u64)
    }
}

/// A channel for a job's events (the receiving side reads them with `try_recv` or `recv`).
pub fn channel() -> (
    UnboundedSender<Event>,
    tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    tokio::sync::mpsc::unbounded_channel()
}

/// The rows of a job, one per choice.
pub fn rows_of(job: Job) -> Vec<Row> {
    let stop_words = Arc::new(job.stop_words);
    (0..job.choices.max(1))
        .map(|choice| {
            let params = job.params.clone();
            Row {
                seq: 0,
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
                images: job.images.clone(),
                generated: 0,
                sent: 0,
                queued_at: 0,
            }
        })
        .collect()
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
    fn waiting_rows_join_together_or_after_a_few_steps() {
        // Into an empty batch at once; none waiting: nothing to do.
        assert!(join_now(0, 1, 0, false));
        assert!(!join_now(3, 0, 9, false));
        // Beside running rows: one or three wait (up to 3 steps); four join at once.
        assert!(!join_now(12, 1, 0, false));
        assert!(!join_now(12, 3, 3, false));
        assert!(join_now(12, 4, 0, false));
        assert!(join_now(12, 1, 4, false));
        // Draining (no more requests can arrive), or a backend whose small joins are cheap:
        // at once; still nothing to do when none waits.
        assert!(join_now(12, 1, 0, true));
        assert!(!join_now(12, 0, 0, true));
    }
}
