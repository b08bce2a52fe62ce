//! Weights read ahead by an idle worker: between two products of a decoding step the calling
//! thread does serial work (norms, rotary embeddings, the cache write, libtorch's small
//! operations) while the pool's worker spins and memory sits idle. A step multiplies the same
//! weights in the same order every token, so the product that follows each weight is learned as
//! it happens (the last product seen after it), and the worker streams the start of that next
//! weight into its caches while it waits (`pool.rs`), so that the next product reads part of
//! its weight from cache instead of memory.
//!
//! Only cache hints: the worker issues prefetch instructions, which never fault and change no
//! result (a stale guess, e.g. a weight freed since, costs a few wasted reads); nothing is
//! computed differently.
//!
//! **On unless `SWIFT_READ_AHEAD=0`**: on the quiet 2-core AMD EPYC, batch-1 decoding ran 4–20 %
//! faster with it in every type measured (BENCHMARKS.md, "Weights read ahead, on a quiet
//! machine"); on a loaded one, where the worker is descheduled during the caller's serial work,
//! it was neither faster nor slower.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// The most bytes read ahead for one product: about the worker's L2 (1 MiB on Zen 4, 2 MiB on
/// Sapphire Rapids), less the lines its own tasks keep there.
pub(crate) const MOST: usize = 768 << 10;

/// The byte ranges of one product's weights, as the worker reads them ahead. Leaked once per
/// weight (a few hundred per model), so a worker holding one never sees it freed.
#[derive(Debug)]
pub(crate) struct Ahead {
    pub(crate) ranges: Vec<(usize, usize)>,
}

/// A weight as [`Order`] knows it.
struct Known {
    /// Its ranges.
    ranges: &'static Ahead,
    /// The ranges of the product seen right after it (the latest), once one was.
    next: Option<&'static Ahead>,
}

/// Hashes a weight's address with one multiplication: the keys are addresses, not input an
/// adversary chooses, and SipHash was about a third of [`after`]'s time (perf, a decoding step
/// calls it for each of its ~120 products).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Fibonacci hashing; the high bits (the ones a hash table uses) mix all of the address's.
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(26);
    }
}

#[derive(Default)]
struct Order {
    /// The weight (its first byte's address) of the last product seen.
    last: Option<usize>,
    /// Per weight (its first byte's address): its ranges and what followed it.
    known: HashMap<usize, Known, BuildHasherDefault<AddressHasher>>,
}

/// At most this many weights are remembered (a process that loads many models in turn stops
/// learning rather than growing).
const MOST_WEIGHTS: usize = 1 << 14;

/// 0: not decided yet (`SWIFT_READ_AHEAD` read on first use: `0` turns it off), 1: off, 2: on.
static ON: AtomicU8 = AtomicU8::new(0);

fn enabled() -> bool {
    match ON.load(Ordering::Relaxed) {
        0 => {
            let on = !std::env::var("SWIFT_READ_AHEAD").is_ok_and(|v| v == "0");
            ON.store(1 + on as u8, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Whether weights are read ahead in this process, and why, for `swift doctor` and the run's log.
pub fn read_ahead_setting() -> &'static str {
    if enabled() {
        "on (the default; SWIFT_READ_AHEAD=0 turns it off)"
    } else if ON.load(Ordering::Relaxed) == 1
        && std::env::var("SWIFT_READ_AHEAD").is_ok_and(|v| v == "0")
    {
        "off (SWIFT_READ_AHEAD=0 (yours))"
    } else {
        "off (turned off by this program)"
    }
}

/// Turns reading ahead on or off for the rest of the process (over `SWIFT_READ_AHEAD`): for
/// benchmarks that compare both in one process (`examples/ahead.rs`).
pub fn set_read_ahead(on: bool) {
    ON.store(1 + on as u8, Ordering::Relaxed);
}

fn order() -> &'static Mutex<Order> {
    static ORDER: OnceLock<Mutex<Order>> = OnceLock::new();
    ORDER.get_or_init(Mutex::default)
}

/// Notes that a product over `weights` (its byte ranges; the first one's start names it) is about
/// to run, and returns what to read ahead after it: the weights of the product that followed it
/// last time.
pub(crate) fn after(weights: &[&[u8]]) -> Option<&'static Ahead> {
    if !enabled() {
        return None;
    }
    order().lock().ok()?.note(weights)
}

impl Order {
    /// [`after`] on this order.
    fn note(&mut self, weights: &[&[u8]]) -> Option<&'static Ahead> {
        let first = weights.first()?;
        if first.is_empty() {
            return None;
        }
        let key = first.as_ptr() as usize;
        let same = |a: &Ahead| {
            a.ranges.len() == weights.len()
                && a.ranges
                    .iter()
                    .zip(weights)
                    .all(|(&(p, n), w)| p == w.as_ptr() as usize && n == w.len())
        };
        let new = || -> &'static Ahead {
            Box::leak(Box::new(Ahead {
                ranges: weights
                    .iter()
                    .map(|w| (w.as_ptr() as usize, w.len()))
                    .collect(),
            }))
        };
        let room = self.known.len() < MOST_WEIGHTS;
        // This weight's ranges, and what followed it last time.
        let (this, next) = match self.known.entry(key) {
            Entry::Occupied(mut k) => {
                let k = k.get_mut();
                if !same(k.ranges) {
                    k.ranges = new();
                }
                (Some(k.ranges), k.next)
            }
            Entry::Vacant(v) if room => {
                let ranges = new();
                v.insert(Known { ranges, next: None });
                (Some(ranges), None)
            }
            Entry::Vacant(_) => (None, None),
        };
        if let Some(last) = self.last.replace(key) {
            if last != key {
                if let Some(k) = self.known.get_mut(&last) {
                    k.next = this;
                }
            }
        }
        next
    }
}

/// A worker's progress through the weights it reads ahead.
#[derive(Default)]
pub(crate) struct Reading {
    what: Option<&'static Ahead>,
    range: usize,
    offset: usize,
    done: usize,
}

impl Reading {
    /// Starts on `what` (dropping what was left of the previous one).
    pub(crate) fn start(&mut self, what: &'static Ahead) {
        *self = Self {
            what: Some(what),
            ..Self::default()
        };
    }

    /// Reads the next `chunk` bytes ahead; false when nothing is left.
    pub(crate) fn step(&mut self, chunk: usize) -> bool {
        let Some(what) = self.what else {
            return false;
        };
        let mut left = chunk;
        while left > 0 && self.done < MOST {
            let Some(&(start, len)) = what.ranges.get(self.range) else {
                break;
            };
            let n = left.min(len - self.offset).min(MOST - self.done);
            prefetch(start + self.offset, n);
            self.offset += n;
            self.done += n;
            left -= n;
            if self.offset == len {
                self.range += 1;
                self.offset = 0;
            }
        }
        let more = self.done < MOST && self.range < what.ranges.len();
        if !more {
            self.what = None;
        }
        more
    }
}

/// Asks for the cache lines of `[at, at + len)`.
#[inline]
fn prefetch(at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut p = at & !63;
        while p < at + len {
            // SAFETY: a prefetch is a hint: it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
            p += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_read_ahead_is_the_one_that_followed_last_time() {
        let (a, b, c) = (vec![1u8; 100], vec![2u8; 200], vec![3u8; 300]);
        let range = |w: &[u8]| (w.as_ptr() as usize, w.len());
        let mut o = Order::default();
        let mut seen = Vec::new();
        for _ in 0..2 {
            for w in [&a[..], &b[..], &c[..]] {
                seen.push(o.note(&[w]).map(|h| h.ranges.clone()));
            }
        }
        // The first pass learns (c's successor, a, only when a comes again); the second reads.
        let want = |w: &[u8]| Some(vec![range(w)]);
        assert_eq!(seen, [None, None, None, want(&b), want(&c), want(&a)]);
        // Another order replaces what was learned: a now followed by c.
        o.note(&[&a[..]]);
        o.note(&[&c[..]]);
        assert_eq!(o.note(&[&a[..]]).map(|h| h.ranges.clone()), want(&c));
        // A product of several weights is read ahead whole.
        o.note(&[&b[..], &c[..]]);
        assert_eq!(
            o.note(&[&a[..]]).map(|h| h.ranges.clone()),
            Some(vec![range(&b), range(&c)])
        );
        let mut r = Reading::default();
        r.start(Box::leak(Box::new(Ahead {
            ranges: vec![
                (a.as_ptr() as usize, a.len()),
                (b.as_ptr() as usize, b.len()),
            ],
        })));
        assert!(r.step(64));
        assert!(r.step(64));
        assert!(!r.step(1 << 20));
        assert!(!r.step(64));
    }
}
