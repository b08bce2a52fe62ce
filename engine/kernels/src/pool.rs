//! The kernel's threads: one worker per core beyond the caller's, which spin for a short while
//! after each job before they sleep.
//!
//! Decoding a token calls [`crate::skinny_matmul`] a few hundred times, each call a few dozen
//! microseconds of work split between the cores, with libtorch's small operations in between. A
//! pool whose idle threads sleep at once (rayon's) pays a wake-up per call, an inter-processor
//! interrupt and a context switch that a virtual machine makes dearer: about a tenth of the
//! decoding time here. These workers wait on an atomic counter instead, so a job reaches them
//! in well under a microsecond while calls keep coming, and they sleep after [`SPIN`] without
//! one. The caller always takes part in its own job, so a job finishes even when every worker
//! is busy elsewhere or asleep.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker waits for the next job before it sleeps: longer than the gaps
/// between the products of one decoding step, short enough not to hold a core between requests.
const SPIN: Duration = Duration::from_micros(500);

/// What a job runs: `run(t)` for every task index `t < tasks`.
#[derive(Clone, Copy)]
struct Job {
    run: *const (dyn Fn(usize) + Sync + 'static),
    tasks: usize,
}

/// The state the caller and the workers share.
struct Shared {
    /// Bumped once per job; a worker takes part in each job exactly once.
    generation: AtomicU64,
    /// The current job. Written only by the caller that holds [`Pool::submit`], before it bumps
    /// `generation`, and read by workers after they see the new generation.
    job: UnsafeCell<Job>,
    /// The next task index to hand out.
    next: AtomicUsize,
    /// Workers that have not yet finished with the current job.
    pending: AtomicUsize,
    /// Set by a task that panicked (the caller panics in turn).
    panicked: AtomicBool,
    /// Per worker: asleep (or about to be), so the caller must wake it.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is the only field that is not Sync; the protocol above orders every write of it
// (under `submit`, before the release of `generation`) before every read (after its acquire),
// and the caller does not write it again until every worker has finished with it (`pending`).
unsafe impl Sync for Shared {}

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
        let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(Job {
                run: noop,
                tasks: 0,
            }),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
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
        let lock = (tasks > 1 && !self.workers.is_empty())
            .then(|| self.submit.try_lock().ok())
            .flatten();
        let Some(_lock) = lock else {
            (0..tasks).for_each(run);
            return;
        };
        let s = self.shared;
        // SAFETY: only the lock's holder writes `job`, and every worker finished with the
        // previous job before its caller released the lock. The lifetime is erased because
        // this function does not return before every worker is done with `run` (`pending`).
        unsafe {
            *s.job.get() = Job {
                run: std::mem::transmute::<
                    *const (dyn Fn(usize) + Sync + '_),
                    *const (dyn Fn(usize) + Sync + 'static),
                >(run),
                tasks,
            };
        }
        s.next.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.pending.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (thread, asleep) in self.workers.iter().zip(&s.sleeping) {
            if asleep.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        take_tasks(s);
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                // A worker that the machine descheduled: let it have the core.
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a kernel task panicked on a worker thread");
        }
    }
}

/// Runs tasks of the current job until none is left.
fn take_tasks(s: &Shared) {
    // SAFETY: called between a job's publication and the end of its `run`, which keeps the
    // closure alive and `job` unchanged meanwhile.
    let job = unsafe { *s.job.get() };
    loop {
        let t = s.next.fetch_add(1, Ordering::Relaxed);
        if t >= job.tasks {
            break;
        }
        // SAFETY: as above, `run` outlives the job.
        let run = unsafe { &*job.run };
        if catch_unwind(AssertUnwindSafe(|| run(t))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
    }
}

/// A worker: waits for each new job (spinning, then asleep), takes tasks, checks out.
fn worker(s: &'static Shared, me: usize) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                s.sleeping[me].store(true, Ordering::SeqCst);
                // Checked again after announcing the sleep: a caller that bumped the generation
                // before seeing the flag is seen here, one that bumps it after unparks us.
                if s.generation.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                s.sleeping[me].store(false, Ordering::SeqCst);
                since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
        take_tasks(s);
        s.pending.fetch_sub(1, Ordering::Release);
    }
}
