//! The kernel's threads: one worker per core beyond the caller's, which spin for a short while
//! after each job before they sleep.
//!
//! Decoding a token calls [`crate::skinny_matmul`] a few hundred times, each call a few dozen
//! microseconds of work split between the cores, with libtorch's small operations in between. A
//! pool whose idle threads sleep at once (rayon's) pays a wake-up per call, an inter-processor
//! interrupt and a context switch that a virtual machine makes dearer: about a tenth of the
//! decoding time here. These workers wait on an atomic word instead, so a job reaches them in
//! well under a microsecond while calls keep coming, and they sleep after [`SPIN`] without one.
//!
//! Tasks are claimed one at a time from that word, and the caller waits only for tasks that were
//! claimed and not yet finished, never for a worker to show up: a worker that the machine has
//! descheduled (a core shared with other work) or that is still asleep simply claims nothing,
//! and the caller runs the tasks itself. (Waiting for every worker to check in made a loaded
//! 2-core machine spend three quarters of decoding in the pool's waits, perf: 2.2 tokens/s.)

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::ahead::{Ahead, Reading};

/// How long an idle worker waits for the next job before it sleeps: longer than the gaps
/// between the products of one decoding step, short enough not to hold a core between requests.
const SPIN: Duration = Duration::from_micros(500);

/// The job word: `generation << 40 | tasks << 20 | next`. A claim is a compare-and-swap that
/// bumps `next` only while the generation is still the one the claimer saw, so a task index is
/// never handed out for a job that has ended.
const FIELD: u32 = 20;
const MASK: u64 = (1 << FIELD) - 1;
/// The most tasks one job may have (the field's width).
const MAX_TASKS: usize = MASK as usize;

fn pack(generation: u64, tasks: u64, next: u64) -> u64 {
    (generation << (2 * FIELD)) | (tasks << FIELD) | next
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (word >> (2 * FIELD), (word >> FIELD) & MASK, word & MASK)
}

/// What a job runs: `run(t)` for every task index `t < tasks`. It lives on the caller's stack.
type Run<'a> = &'a (dyn Fn(usize) + Sync + 'a);

/// The state the caller and the workers share.
struct Shared {
    /// See [`pack`].
    word: AtomicU64,
    /// The current job's closure (a pointer to the caller's `Run`). Written only by the caller
    /// holding [`Pool::submit`] before it publishes the generation, and read only after a
    /// successful claim in that generation, which keeps the job (and the pointer) alive: the
    /// caller returns only once every claimed task is finished.
    run: AtomicPtr<Run<'static>>,
    /// Tasks of the current job finished (by anyone).
    done: AtomicUsize,
    /// Set by a task that panicked (the caller panics in turn).
    panicked: AtomicBool,
    /// Per worker: asleep (or about to be), so the caller must wake it.
    sleeping: Vec<AtomicBool>,
    /// What the workers read ahead once they have claimed all of the current job's tasks
    /// (`ahead.rs`; null: go on with what they read ahead before). Written with `run`.
    ahead: AtomicPtr<Ahead>,
}

thread_local! {
    /// What this thread's next job asks its workers to read ahead ([`read_ahead_after_next`]).
    static NEXT_AHEAD: Cell<Option<&'static Ahead>> = const { Cell::new(None) };
}

/// Asks the workers of this thread's next [`Pool::run`] to read `what` ahead once that job's
/// tasks are all claimed, while they wait for the job after it.
pub(crate) fn read_ahead_after_next(what: Option<&'static Ahead>) {
    NEXT_AHEAD.with(|n| n.set(what));
}

/// The workers and the lock that lets one job run at a time.
pub(crate) struct Pool {
    shared: &'static Shared,
    workers: Vec<Thread>,
    submit: Mutex<()>,
}

/// The process's pool, started on first use with one worker per core beyond the caller's.
pub(crate) fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::start(cores.saturating_sub(1))
    })
}

impl Pool {
    fn start(workers: usize) -> Self {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            word: AtomicU64::new(0),
            run: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            ahead: AtomicPtr::new(std::ptr::null_mut()),
        }));
        // Workers that could not be started are left out (the caller alone still runs a job).
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            match std::thread::Builder::new()
                .name(format!("swift-kernel-{i}"))
                .spawn(move || worker(shared, i))
            {
                Ok(h) => threads.push(h.thread().clone()),
                Err(_) => break,
            }
        }
        Self {
            shared,
            workers: threads,
            submit: Mutex::new(()),
        }
    }

    /// Threads a job runs on, the caller's included.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `run(t)` for every `t < tasks` on the caller and the workers, and returns once all
    /// are done. While another thread's job runs, the caller runs its tasks alone.
    pub(crate) fn run(&self, tasks: usize, run: &(dyn Fn(usize) + Sync)) {
        let ahead = NEXT_AHEAD.with(Cell::take);
        let lock = (tasks > 1 && tasks <= MAX_TASKS && !self.workers.is_empty())
            .then(|| self.submit.try_lock().ok())
            .flatten();
        let Some(_lock) = lock else {
            (0..tasks).for_each(run);
            return;
        };
        let s = self.shared;
        // The previous job's claims are all finished (its caller waited for them), so nobody
        // reads `run` or writes `done` until the new generation is published below.
        let local: Run<'_> = run;
        // SAFETY: the lifetime is erased because this function does not return before every
        // claimed task is finished, and no task can be claimed after that (the generation
        // changes before the pointer is written again).
        let ptr = unsafe {
            std::mem::transmute::<*const Run<'_>, *mut Run<'static>>(&local as *const Run<'_>)
        };
        s.run.store(ptr, Ordering::Relaxed);
        s.ahead.store(
            ahead.map_or(std::ptr::null_mut(), |a| a as *const Ahead as *mut Ahead),
            Ordering::Relaxed,
        );
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let (generation, _, _) = unpack(s.word.load(Ordering::Relaxed));
        let generation = (generation + 1) & ((1 << (64 - 2 * FIELD)) - 1);
        s.word
            .store(pack(generation, tasks as u64, 0), Ordering::SeqCst);
        for (thread, asleep) in self.workers.iter().zip(&s.sleeping) {
            if asleep.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        take_tasks(s, generation);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) != tasks {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                // A worker holding a task was descheduled: let it have the core.
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a kernel task panicked on a worker thread");
        }
    }
}

/// Claims and runs tasks of job `generation` until none is left (or the job has changed).
fn take_tasks(s: &Shared, generation: u64) {
    let mut word = s.word.load(Ordering::Acquire);
    loop {
        let (g, tasks, next) = unpack(word);
        if g != generation || next >= tasks {
            return;
        }
        match s.word.compare_exchange_weak(
            word,
            pack(g, tasks, next + 1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: task `next` of this generation is claimed and not yet finished, so
                // the caller is still inside `run` and its closure (and `run`'s pointer, written
                // before the generation was published) are alive.
                let run = unsafe { *s.run.load(Ordering::Acquire) };
                if catch_unwind(AssertUnwindSafe(|| run(next as usize))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
                s.done.fetch_add(1, Ordering::AcqRel);
                word = s.word.load(Ordering::Acquire);
            }
            Err(now) => word = now,
        }
    }
}

/// A worker: waits for each new job (spinning, then asleep), claims its tasks; between jobs it
/// reads ahead what the last job asked for (`ahead.rs`), a chunk at a time, looking for the
/// next job after each chunk.
fn worker(s: &'static Shared, me: usize) {
    /// Bytes read ahead between two looks at the job word (64 cache lines).
    const CHUNK: usize = 4096;
    let mut seen = unpack(s.word.load(Ordering::Acquire)).0;
    let mut reading = Reading::default();
    loop {
        // When the worker ran out of work (the last job's tasks and what it read ahead): taken
        // at the first look at the clock after that, not after every chunk read ahead (the
        // clock was 2.6 % of the worker's time, perf).
        let mut since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let g = unpack(s.word.load(Ordering::Acquire)).0;
            if g != seen {
                seen = g;
                break;
            }
            if reading.step(CHUNK) {
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.get_or_insert_with(Instant::now).elapsed() > SPIN
            {
                s.sleeping[me].store(true, Ordering::SeqCst);
                // Checked again after announcing the sleep: a caller that published before
                // seeing the flag is seen here, one that publishes after unparks us.
                if unpack(s.word.load(Ordering::SeqCst)).0 == seen {
                    std::thread::park();
                }
                s.sleeping[me].store(false, Ordering::SeqCst);
                since = None;
            } else {
                std::hint::spin_loop();
            }
        }
        // Written before the generation this worker saw was published (Acquire above).
        let ahead = s.ahead.load(Ordering::Relaxed);
        take_tasks(s, seen);
        if !ahead.is_null() {
            // SAFETY: `ahead.rs` leaks every `Ahead` it hands out: it is never freed.
            reading.start(unsafe { &*ahead });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_even_when_workers_are_late() {
        // A pool of its own with more workers than this machine has cores: most jobs end
        // before some worker wakes, which then must claim nothing of a job that has ended.
        let pool = Pool::start(3);
        for tasks in [2usize, 3, 7, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_goes_on() {
        let pool = Pool::start(1);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|t| assert!(t != 5, "task 5 fails"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
