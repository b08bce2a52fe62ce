//! How libtorch's OpenMP threads wait between parallel regions, chosen per command before the
//! tensor engine is opened, and said by `swift doctor`. libgomp reads `OMP_WAIT_POLICY` once,
//! when it is loaded, which is when the tensor engine (or a plugin that needs libtorch) is
//! opened; so it is set in the environment while the process has one thread. A user's own
//! `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` wins.
//!
//! * Training (`pt`, `sft`, `rlhf`) on quiet cores: libgomp's default, spinning about 3 ms
//!   before sleeping. A training step issues thousands of small operations; sleeping threads
//!   woken for each cost more than the work (`PASSIVE` measured about 53,000 voluntary context
//!   switches per LoRA SFT step and 1.43 cores busy; the default 14 and 1.97, and 1.29x the
//!   speed, on AMD EPYC: BENCHMARKS.md).
//! * Training while other work keeps the cores busy (CPU pressure at or above
//!   `swift_kernels::BUSY_PRESSURE` when the command starts): `PASSIVE`. Spinning there is a
//!   collapse, not a cost: a thread spins at each barrier for a partner the scheduler has
//!   descheduled (2 LoRA SFT steps took 189-236 s spinning against 23-26 s `PASSIVE` under a
//!   load average of 6-14, BENCHMARKS.md). If the cores become busy only later, the trainer
//!   takes libtorch down to one thread instead (`swift_train::threads`).
//! * `infer` on a backend plugin (`--infer_backend` other than `pt`): as training.
//!   libgomp is one runtime per process, so a plugin built on OpenMP (llama.cpp, whose every
//!   operation ends at an `omp barrier`) waits the way libtorch does: `PASSIVE` made the
//!   `llama_cpp` backend sleep and wake at each barrier (about 190,000 voluntary context
//!   switches for 256 tokens against 2-7 for `llama-bench`, which spins; 1.0-1.4 cores busy on a
//!   quiet machine), while spinning on busy cores collapsed it (0.9-1.0 tokens/s against 10-12
//!   `PASSIVE` at a load average of 10: BENCHMARKS.md). Not `deploy`: a server outlives the
//!   quiet minutes it started in, and nothing takes its spinning back when the cores fill.
//! * Everything else (decoding above all): `PASSIVE`. Decoding's own kernels run on a worker
//!   pool that spins while it waits (swift-kernels); OpenMP threads spinning beside it stole its
//!   cores (5 tokens/s spinning against 17 passive on a loaded 2-core machine). `eval`'s
//!   multiple-choice passes do not meet at OpenMP barriers at all: they run on threads of one
//!   libtorch thread each (engine/pipeline/src/eval_passes.rs), so no policy slows them.

use std::sync::OnceLock;

/// The user's own setting (`NAME=value`), captured before [`choose`] sets anything.
static USERS: OnceLock<Option<String>> = OnceLock::new();

fn users() -> Option<String> {
    ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
}

/// Whether a training command starting now would wait passively: the cores are busy.
fn busy() -> bool {
    swift_kernels::cpu_pressure().is_some_and(|p| p >= swift_kernels::BUSY_PRESSURE)
}

/// Sets the policy: `spin_when_quiet` for training commands and backend plugins (libgomp's
/// default unless the cores are busy), else `PASSIVE`. Call once, first thing.
pub fn choose(spin_when_quiet: bool) {
    let user = USERS.get_or_init(users);
    if user.is_none() && (!spin_when_quiet || busy()) {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
}

/// What [`choose`] does, for `swift doctor`.
pub fn describe() -> String {
    if let Some(u) = USERS.get_or_init(users) {
        return format!("{u} (yours) for every command");
    }
    let now = match swift_kernels::cpu_pressure() {
        Some(p) => format!(
            "CPU pressure now {p:.0}%, so a training command starting now would {}",
            if p >= swift_kernels::BUSY_PRESSURE {
                "wait PASSIVE"
            } else {
                "spin"
            }
        ),
        None => "no CPU pressure reported (/proc/pressure/cpu): training spins".to_string(),
    };
    format!(
        "pt/sft/rlhf: libgomp's default (spin about 3 ms, then sleep: a training step's many \
         small operations) on quiet cores, PASSIVE when other work keeps them busy (CPU \
         pressure at or above {}% at start; busy only later: libtorch on 1 thread until the \
         pressure falls to {}%), and infer on a backend plugin likewise; {now}; other \
         commands: PASSIVE (decoding's own pool spins); \
         set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose",
        swift_kernels::BUSY_PRESSURE,
        swift_kernels::QUIET_PRESSURE
    )
}
