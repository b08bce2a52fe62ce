//! Generation: prompts of different lengths decoded together (left padding, one KV cache),
//! greedy or sampled (temperature, top-k, top-p, repetition penalty, seeded), stopping at EOS,
//! stop words or `max_new_tokens`, with every new token reported through a callback (streaming).

use tch::{Device, Kind, Tensor};

use crate::{LoadedModel, ModelError};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 (or less) decodes greedily.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// > 1 discourages tokens already in the prompt or the answer (as transformers does).
    pub repetition_penalty: f64,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 42,
        }
    }
}

/// When a row is finished besides `max_new_tokens`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopCriteria {
    /// Token ids that end a row (not part of the answer).
    pub eos_ids: Vec<i64>,
    /// Strings that end a row once the answer's text contains them.
    pub stop_words: Vec<String>,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    StopWord,
    Length,
}

impl FinishReason {
    /// OpenAI's spelling (`stop` or `length`).
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            _ => "stop",
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The answer's tokens (an ending EOS token excluded).
    pub tokens: Vec<i64>,
    /// Tokens generated, the ending EOS included.
    pub generated_tokens: usize,
    pub prompt_tokens: usize,
    pub finish: FinishReason,
}

/// A small seeded generator (splitmix64), so runs with the same `--seed` repeat exactly.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Generates an answer for every prompt (token ids). `decode` turns answer tokens into text
/// (for stop words); `on_token(row, token)` sees every token as it is chosen, EOS included.
pub fn generate(
    model: &LoadedModel,
    prompts: &[Vec<i64>],
    params: &SamplingParams,
    stop: &StopCriteria,
    decode: &dyn Fn(&[i64]) -> String,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<Vec<Generated>, ModelError> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Config(format!("prompt {i} has no tokens")));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // Models with a bounded position table stop where it ends (finish reason `length`).
    let bounded: SamplingParams;
    let params = match model.layout().max_positions {
        Some(max) if longest as i64 >= max => {
            return Err(ModelError::Config(format!(
                "a prompt of {longest} tokens does not fit the model's {max} positions"
            )))
        }
        Some(max) if (longest + params.max_new_tokens) as i64 > max => {
            bounded = SamplingParams {
                max_new_tokens: (max as usize) - longest,
                ..params.clone()
            };
            &bounded
        }
        _ => params,
    };
    let padded = prompts.iter().any(|p| p.len() != longest);
    let mut ids = Vec::with_capacity(b * longest);
    let mut mask = Vec::with_capacity(b * longest);
    for p in prompts {
        let pad = longest - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, p.len())));
    }
    let ids = Tensor::from_slice(&ids).view([b as i64, longest as i64]);
    let mask = padded.then(|| Tensor::from_slice(&mask).view([b as i64, longest as i64]));

    let mut cache = model.new_cache(b as i64);
    let mut rng = Rng(params.seed);
    let mut rows: Vec<Generated> = prompts
        .iter()
        .map(|p| Generated {
            tokens: Vec::new(),
            generated_tokens: 0,
            prompt_tokens: p.len(),
            finish: FinishReason::Length,
        })
        .collect();
    let mut done = vec![false; b];
    if params.max_new_tokens == 0 {
        return Ok(rows);
    }
    let hidden = model.forward(&ids, mask.as_ref(), &mut cache)?;
    let mut logits = model.logits(&hidden.f_select(1, -1)?)?;
    // Decoding steps of a few rows keep libtorch on one thread (see `TorchThreads`); set once
    // for the whole loop.
    let _threads = (model.decodes_on_kernels() && b <= swift_kernels::WIDE_ROWS)
        .then(crate::skinny::TorchThreads::one);
    let mut last = vec![0i64; b];
    // Rows still generating, in cache order; finished rows leave the cache (and the batch).
    let mut active: Vec<usize> = (0..b).collect();
    for _ in 0..params.max_new_tokens {
        if active.is_empty() {
            break;
        }
        let host = logits
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let mut flat: Vec<f32> = Vec::<f32>::try_from(host.f_view([-1])?)?;
        let vocab = flat.len() / active.len();
        for (&r, row) in active.iter().zip(flat.chunks_exact_mut(vocab)) {
            let history = prompts[r].iter().chain(rows[r].tokens.iter());
            let tok = pick(row, history, params, &mut rng);
            last[r] = tok;
            on_token(r, tok);
            let g = &mut rows[r];
            g.generated_tokens += 1;
            if stop.eos_ids.contains(&tok) {
                g.finish = FinishReason::Eos;
                done[r] = true;
                continue;
            }
            g.tokens.push(tok);
            if !stop.stop_words.is_empty() {
                let text = decode(&g.tokens);
                if stop
                    .stop_words
                    .iter()
                    .any(|w| !w.is_empty() && text.contains(w.as_str()))
                {
                    g.finish = FinishReason::StopWord;
                    done[r] = true;
                    continue;
                }
            }
            if g.generated_tokens >= params.max_new_tokens {
                done[r] = true;
            }
        }
        let keep: Vec<i64> = (0..active.len() as i64)
            .filter(|&i| !done[active[i as usize]])
            .collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache.retain(&keep)?;
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
        let next: Vec<i64> = active.iter().map(|&r| last[r]).collect();
        let next = Tensor::from_slice(&next).view([active.len() as i64, 1]);
        let hidden = model.forward(&next, None, &mut cache)?;
        logits = model.logits(&hidden.f_select(1, -1)?)?;
    }
    Ok(rows)
}

/// Token choice for callers that drive decoding step by step themselves (the server's
/// continuous batcher): the same rules as [`generate`], with a generator of the row's own.
pub struct Sampler {
    rng: Rng,
}

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng(seed) }
    }

    /// Chooses the next token from one row of logits (`history`: the prompt and the answer so
    /// far, for the repetition penalty). `logits` may be changed in place.
    pub fn pick(&mut self, logits: &mut [f32], history: &[i64], params: &SamplingParams) -> i64 {
        pick(logits, history.iter(), params, &mut self.rng)
    }
}

/// Chooses one token from a row of logits.
fn pick<'a>(
    logits: &mut [f32],
    history: impl Iterator<Item = &'a i64>,
    p: &SamplingParams,
    rng: &mut Rng,
) -> i64 {
    if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
        let mut seen = std::collections::HashSet::new();
        for &t in history {
            if let Some(l) = usize::try_from(t).ok().and_then(|i| logits.get_mut(i)) {
                if seen.insert(t) {
                    let rp = p.repetition_penalty as f32;
                    *l = if *l < 0.0 { *l * rp } else { *l / rp };
                }
            }
        }
    }
    if p.temperature <= 0.0 || p.top_k == 1 {
        return argmax(logits) as i64;
    }
    let inv_t = 1.0 / p.temperature;
    let scaled = |i: u32| logits[i as usize] as f64 * inv_t;
    // The candidates in a stable descending sort's order: larger first, the lower index first
    // among equals. Only as many as the choice needs are ordered (`Ordered::upto`): a full sort
    // of a 49,152-token vocabulary per row and token cost more than a batch's decoding step.
    let by_rank = |a: &u32, b: &u32| scaled(*b).total_cmp(&scaled(*a)).then(a.cmp(b));
    let limit = if p.top_k > 0 && p.top_k < logits.len() {
        p.top_k
    } else {
        logits.len()
    };
    let mut cand = Ordered {
        idx: (0..logits.len() as u32).collect(),
        sorted: 0,
        limit,
    };
    cand.upto(64, &by_rank);
    let max = scaled(cand.idx[0]);
    // The normaliser: over the top `k` in their order, or over the whole vocabulary (each
    // weight kept, computed once).
    let weights: Vec<f64>;
    let weight = |i: u32| (scaled(i) - max).exp();
    let sum: f64 = if limit < logits.len() {
        weights = Vec::new();
        cand.upto(limit, &by_rank);
        cand.idx[..limit].iter().map(|&i| weight(i)).sum()
    } else {
        weights = (0..logits.len() as u32).map(weight).collect();
        weights.iter().sum()
    };
    let prob = |i: u32| match weights.get(i as usize) {
        Some(w) => w / sum,
        None => weight(i) / sum,
    };
    // How many candidates are kept: the smallest prefix reaching `top_p`.
    let mut keep = limit;
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut i = 0;
        while i < limit {
            cand.upto(i + 1, &by_rank);
            acc += prob(cand.idx[i]);
            if acc >= p.top_p {
                keep = i + 1;
                break;
            }
            i += 1;
        }
    }
    let total: f64 = if keep == logits.len() {
        weights.iter().map(|w| w / sum).sum()
    } else {
        cand.upto(keep, &by_rank);
        cand.idx[..keep].iter().map(|&i| prob(i)).sum()
    };
    let mut u = rng.next_f64() * total;
    for i in 0..keep {
        cand.upto(i + 1, &by_rank);
        let q = prob(cand.idx[i]);
        if u < q {
            return cand.idx[i] as i64;
        }
        u -= q;
    }
    cand.upto(keep, &by_rank);
    cand.idx[keep - 1] as i64
}

/// Token indices of which the first `sorted` are in rank order and the rest are all ranked
/// after them; [`Ordered::upto`] orders more of them on demand (a selection, then a sort of the
/// selected, each step taking four times as many as the last).
struct Ordered {
    idx: Vec<u32>,
    sorted: usize,
    /// The most that may ever be asked for (`top_k`, or the vocabulary).
    limit: usize,
}

impl Ordered {
    fn upto(&mut self, want: usize, by_rank: &impl Fn(&u32, &u32) -> std::cmp::Ordering) {
        if want <= self.sorted {
            return;
        }
        let want = want.max(4 * self.sorted).max(64).min(self.limit);
        let rest = &mut self.idx[self.sorted..];
        let take = want - self.sorted;
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, by_rank);
        }
        rest[..take].sort_unstable_by(by_rank);
        self.sorted = want;
    }
}

/// Index of the largest value (the first one on ties, as torch.argmax): what
/// [`argmax_straight`] gives, in two passes that the compiler vectorises (a greedy step scans
/// the whole vocabulary, 49,152 logits for SmolLM2: the one-lane loop was about 1 % of a
/// batch-1 Q4_0 token's instructions): the largest value in [`LANES`] lanes, then the first
/// block of lanes holding it.
fn argmax(v: &[f32]) -> usize {
    // The straight loop keeps index 0 when `v[0]` is NaN (nothing compares greater), and
    // otherwise ends at the first index of the largest value (NaN never compares greater, so
    // it is passed over; −0 and +0 compare equal, so the first of either is kept).
    let Some(&first) = v.first() else {
        return 0;
    };
    if first.is_nan() {
        return 0;
    }
    let mut lanes = [first; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = first;
    for &x in lanes.iter().chain(tail) {
        if x > max {
            max = x;
        }
    }
    // `max` is one of the values (never NaN), so some block holds it.
    v.chunks(LANES)
        .enumerate()
        .find_map(|(c, chunk)| {
            chunk
                .iter()
                .fold(false, |any, &x| any | (x == max))
                .then(|| c * LANES + chunk.iter().position(|&x| x == max).unwrap_or(0))
        })
        .unwrap_or(0)
}

/// [`argmax`]'s lanes.
const LANES: usize = 16;

/// The straight one-lane loop [`argmax`] must equal.
#[cfg(test)]
fn argmax_straight(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_in_lanes_is_the_straight_loops() {
        // Lengths around the lanes, ties across lanes, NaN (first and later), ±0, ±∞.
        let mut rng = Rng(7);
        let specials = [
            f32::NAN,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
            -1.0,
        ];
        for n in [1usize, 2, 15, 16, 17, 31, 33, 100, 49_152] {
            for round in 0..60 {
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = rng.next_f64();
                        match round % 4 {
                            // Few distinct values: many ties.
                            0 => (r * 4.0).floor() as f32,
                            1 => specials[(r * specials.len() as f64) as usize % specials.len()],
                            2 if r < 0.05 => f32::NAN,
                            _ => (r * 20.0 - 10.0) as f32,
                        }
                    })
                    .collect();
                assert_eq!(argmax(&v), argmax_straight(&v), "{v:?}");
            }
        }
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), 0);
        let mut late = vec![f32::NAN; 40];
        late[37] = -5.0;
        assert_eq!(argmax(&late), argmax_straight(&late));
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut l = vec![0.1, 3.0, 3.0, -1.0];
        let mut rng = Rng(1);
        assert_eq!(
            pick(&mut l, [].iter(), &SamplingParams::default(), &mut rng),
            1
        );
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut l = vec![2.0, -2.0, 1.5];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let tok = pick(&mut l, [0i64, 1, 0].iter(), &p, &mut Rng(1));
        assert_eq!(l, vec![1.0, -4.0, 1.5]);
        assert_eq!(tok, 2);
    }

    /// The sampler before partial ordering: every candidate sorted, then the same rules.
    fn sorted_pick(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> i64 {
        let inv_t = 1.0 / p.temperature;
        let mut cand: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, l as f64 * inv_t))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = rng.next_f64() * total;
        for (i, q) in probs.iter().enumerate() {
            if u < *q {
                return cand[i].0 as i64;
            }
            u -= q;
        }
        cand[cand.len() - 1].0 as i64
    }

    #[test]
    fn partial_ordering_samples_as_a_full_sort() {
        // A vocabulary of 5,000 with repeated values (ties keep the lower index first), draws
        // reaching deep into the tail at a high temperature, and every truncation rule.
        let mut state = 0x1234_5678u64;
        let logits: Vec<f32> = (0..5000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) % 2000) as f32 / 100.0 - 10.0
            })
            .collect();
        for (temperature, top_k, top_p) in [
            (1.0, 0, 1.0),
            (2.0, 0, 1.0),
            (0.7, 0, 0.9),
            (1.0, 40, 1.0),
            (1.0, 3000, 0.95),
            (1.5, 0, 0.999),
        ] {
            let p = SamplingParams {
                temperature,
                top_k,
                top_p,
                ..Default::default()
            };
            let (mut a, mut b) = (Rng(99), Rng(99));
            for _ in 0..300 {
                let want = sorted_pick(&logits, &p, &mut a);
                assert_eq!(
                    pick(&mut logits.clone(), [].iter(), &p, &mut b),
                    want,
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let l = vec![1.0f32, 0.9, 0.8, -5.0, 0.7];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            seed: 7,
            ..Default::default()
        };
        let run = |seed| {
            let mut rng = Rng(seed);
            (0..200)
                .map(|_| pick(&mut l.clone(), [].iter(), &p, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert!(a.iter().all(|t| [0, 1, 2].contains(t)), "{a:?}");
        assert!([0, 1, 2].iter().all(|t| a.contains(t)));
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.01,
            ..Default::default()
        };
        assert_eq!(pick(&mut l.clone(), [].iter(), &p, &mut Rng(3)), 0);
    }
}
