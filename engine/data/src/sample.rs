//! Seeded choices: `#N` sampling plans (ms-swift's rule: N larger than the dataset repeats it
//! whole, then samples the remainder without replacement), `--split_dataset_ratio` splits, and
//! the small deterministic generator behind them (SplitMix64, so that results for a seed never
//! change with a dependency's version).

use std::collections::HashSet;

/// SplitMix64: a tiny, well-mixed, seedable generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finaliser: a bijective 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One pass over a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Every row, in file order.
    All,
    /// These rows (0-based, sorted, distinct), in file order.
    Rows(Vec<u64>),
}

/// The passes that take `n` rows from a file of `len` rows: `n / len` whole passes, then
/// `n % len` distinct rows picked with `seed`. Memory is O(n % len), never O(len).
pub fn plan(len: u64, n: u64, seed: u64) -> Vec<Pass> {
    if len == 0 {
        return Vec::new();
    }
    let mut passes = vec![Pass::All; (n / len) as usize];
    let rem = n % len;
    if rem > 0 {
        passes.push(Pass::Rows(choose(len, rem, seed)));
    }
    passes
}

/// `k` distinct indices out of `0..len`, sorted (Floyd's algorithm: O(k) memory and time).
pub fn choose(len: u64, k: u64, seed: u64) -> Vec<u64> {
    let k = k.min(len);
    let mut rng = Rng::new(seed);
    let mut picked: HashSet<u64> = HashSet::with_capacity(k as usize);
    for j in (len - k)..len {
        let t = rng.below(j + 1);
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    let mut out: Vec<u64> = picked.into_iter().collect();
    out.sort_unstable();
    out
}

/// Splits rows into (train, validation): `ceil(ratio * len)` rows chosen with `seed` go to
/// validation (as Hugging Face's `train_test_split` counts them); both keep the input order.
/// A ratio of 0 (or less) keeps everything for training.
pub fn split_dataset<T>(rows: Vec<T>, ratio: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let len = rows.len() as u64;
    if ratio.is_nan() || ratio <= 0.0 || len == 0 {
        return (rows, Vec::new());
    }
    let n_val = ((ratio.min(1.0) * len as f64).ceil() as u64).min(len);
    let val = choose(len, n_val, seed);
    let mut val_iter = val.iter().peekable();
    let (mut train, mut valid) = (
        Vec::with_capacity((len - n_val) as usize),
        Vec::with_capacity(n_val as usize),
    );
    for (i, row) in rows.into_iter().enumerate() {
        if val_iter.peek() == Some(&&(i as u64)) {
            val_iter.next();
            valid.push(row);
        } else {
            train.push(row);
        }
    }
    (train, valid)
}

/// The streaming equivalent of [`split_dataset`]: whether row `index` goes to validation. Each
/// row is assigned independently (a hash of seed and index), so the validation share is `ratio`
/// on average rather than exactly, and no row count is needed.
pub fn is_validation_row(index: u64, ratio: f64, seed: u64) -> bool {
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let h = mix(mix(seed ^ 0x5157_4946_542D_5253).wrapping_add(index));
    ((h >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_is_distinct_sorted_deterministic() {
        let a = choose(1000, 100, 7);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&i| i < 1000));
        assert_eq!(a, choose(1000, 100, 7));
        assert_ne!(a, choose(1000, 100, 8));
        assert_eq!(choose(5, 5, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn plan_repeats_then_samples() {
        assert_eq!(plan(10, 25, 3)[..2], [Pass::All, Pass::All]);
        let Pass::Rows(rest) = &plan(10, 25, 3)[2] else {
            panic!()
        };
        assert_eq!(rest.len(), 5);
        assert_eq!(plan(10, 20, 3), vec![Pass::All, Pass::All]);
        assert_eq!(plan(10, 3, 3).len(), 1);
        assert!(plan(0, 3, 3).is_empty());
    }

    #[test]
    fn split_counts_like_hugging_face() {
        let (t, v) = split_dataset((0..10).collect(), 0.25, 1);
        assert_eq!((t.len(), v.len()), (7, 3));
        let mut all: Vec<i32> = t.iter().chain(&v).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(t.windows(2).all(|w| w[0] < w[1]) && v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split_dataset((0..10).collect::<Vec<_>>(), 0.25, 1).1, v);
        assert_eq!(split_dataset(vec![1, 2], 0.0, 1), (vec![1, 2], vec![]));
    }

    #[test]
    fn streaming_split_share_is_close_to_ratio() {
        let n = (0..100_000)
            .filter(|&i| is_validation_row(i, 0.1, 42))
            .count();
        assert!((9_000..11_000).contains(&n), "{n}");
        assert_eq!(
            is_validation_row(17, 0.1, 42),
            is_validation_row(17, 0.1, 42)
        );
    }
}
