//! A decoded token's log-probability and its most likely alternatives, from a row's logits: what
//! the batcher reports when a request asks for `logprobs`.
//!
//! It runs for every row of every decoding step on the batcher thread (49,152 logits a row for
//! SmolLM2), between two passes over the weights, while the kernels' other core waits: so the
//! normalisation `log Σ exp(logits)` is written to vectorize (an exponential without a libm
//! call, [`exp_le0`]; lanes summed in float64) and the top `k` are found in one pass, without
//! sorting or allocating the whole vocabulary's indices. Before, libm's `exp` per logit and a
//! vector of every index took about 3 % of a 16-client server's time (BENCHMARKS.md, Deploy).

/// Lanes the sums run over (wide enough for the compiler to use every vector register width).
const LANES: usize = 8;

/// log Σ exp(logits) and the `k` most likely tokens with their log-probabilities, most likely
/// first (ties: the lower token id first).
pub fn log_probs(logits: &[f32], k: usize) -> (f64, Vec<(i64, f64)>) {
    let lse = log_sum_exp(logits);
    let top = top_k(logits, k)
        .into_iter()
        .map(|i| (i as i64, logits[i] as f64 - lse))
        .collect();
    (lse, top)
}

/// Token `tok`'s log-probability given `lse` (from [`log_probs`]); -inf for an id outside the
/// logits.
pub fn logits_at(logits: &[f32], tok: i64, lse: f64) -> f64 {
    usize::try_from(tok)
        .ok()
        .and_then(|i| logits.get(i))
        .map(|&l| l as f64 - lse)
        .unwrap_or(f64::NEG_INFINITY)
}

/// log Σ exp(x) over `xs`: the maximum, then Σ exp(x − max) with float32 exponentials (relative
/// error about 2e-7 each) summed in float64 lanes.
fn log_sum_exp(xs: &[f32]) -> f64 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if !max.is_finite() {
        // Every logit -inf (or one +inf, or NaN): what the float64 formula gives.
        let sum: f64 = xs.iter().map(|&x| (x as f64 - max as f64).exp()).sum();
        return max as f64 + sum.ln();
    }
    let mut sums = [0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    for c in chunks {
        for (s, &x) in sums.iter_mut().zip(c) {
            *s += exp_le0(x - max) as f64;
        }
    }
    let sum: f64 =
        sums.iter().sum::<f64>() + tail.iter().map(|&x| exp_le0(x - max) as f64).sum::<f64>();
    max as f64 + sum.ln()
}

/// e^x for x ≤ 0 (a logit less the maximum), as Cephes' `expf`: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// a degree-7 polynomial for e^r, and 2^n put into the exponent bits; below −87 it gives
/// 2^−126 instead of a smaller number (49,152 of those add 6e-34). Branch-free, so a loop of it
/// vectorizes.
#[inline(always)]
fn exp_le0(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5 · 2^23 rounds to the nearest integer (|x · log2 e| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let x = if x > -87.0 { x } else { -87.0 };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 0.166_666_65)
        * r
        + 0.5)
        * r2
        + r
        + 1.0;
    // n is in [-126, 0]: 2^n is a normal float32.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The indices of the `k` largest values, largest first, ties to the lower index; NaNs are
/// never picked.
fn top_k(xs: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(xs.len());
    if k == 0 {
        return Vec::new();
    }
    // Kept sorted, largest first; a value enters only when larger than the last kept one (so,
    // scanning in index order, an equal value later on never displaces an earlier one).
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() || (best.len() == k && x <= best[k - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(v, _)| v >= x);
        best.insert(at, (x, i));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float64 formula the fast path replaces.
    fn reference(xs: &[f32]) -> f64 {
        let max = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let sum: f64 = xs.iter().map(|&x| (x as f64 - max).exp()).sum();
        max + sum.ln()
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
        assert_eq!(logits_at(&l, 7, lse), f64::NEG_INFINITY);
    }

    #[test]
    fn the_exponential_is_within_float32_rounding_of_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let want = (x as f64).exp();
            let rel = ((exp_le0(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_le0(0.0), 1.0);
        assert!(exp_le0(-1000.0) < 2e-38);
    }

    #[test]
    fn log_sum_exp_equals_the_float64_formula() {
        // A vocabulary-sized row of logits spread like a model's (and a length that is not a
        // multiple of the lanes), and small edge cases.
        let mut state = 12345u64;
        let row: Vec<f32> = (0..49_155)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 25.0
            })
            .collect();
        for xs in [&row[..], &row[..5], &[3.0f32][..], &[-1e30f32, 0.0][..]] {
            let (have, want) = (log_sum_exp(xs), reference(xs));
            assert!((have - want).abs() < 1e-6, "{have} vs {want}");
        }
        // Every logit -inf: NaN, as the float64 formula.
        assert!(log_sum_exp(&[f32::NEG_INFINITY; 3]).is_nan());
        assert!(reference(&[f32::NEG_INFINITY; 3]).is_nan());
    }

    #[test]
    fn top_k_equals_a_full_sort() {
        let xs = [0.5f32, 2.0, -1.0, 2.0, 7.0, 0.5, f32::NAN, 3.0, 2.0];
        let mut want: Vec<usize> = (0..xs.len()).filter(|&i| !xs[i].is_nan()).collect();
        want.sort_by(|&a, &b| xs[b].total_cmp(&xs[a]).then(a.cmp(&b)));
        for k in 0..=8 {
            assert_eq!(top_k(&xs, k), want[..k.min(want.len())].to_vec(), "k = {k}");
        }
        assert_eq!(top_k(&xs, 20), want);
    }
}
