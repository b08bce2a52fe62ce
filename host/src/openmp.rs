//! How libtorch's OpenMP threads wait between parallel regions, chosen per command before the
//! tensor engine is opened, and said by `swift doctor`. libgomp reads `OMP_WAIT_POLICY` once,
//! when it is loaded, which is when the tensor engine (or a plugin that needs libtorch) is
//! opened; so it is set in the environment while the process has one thread. A user's own
//! `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` wins.
//!
//! * Training (`pt`, `sft`, `rlhf`): libgomp's default, spinning about 3 ms before sleeping. A
//!   training step issues thousands of small operations; sleeping threads woken for each cost
//!   more than the work (`PASSIVE` measured about 53,000 voluntary context switches per LoRA SFT
//!   step and 1.43 cores busy; the default 14 and 1.97, and 1.29x the speed, on AMD EPYC:
//!   BENCHMARKS.md). The spin is short, so idle threads still yield a shared machine.
//! * Everything else (decoding above all): `PASSIVE`. Decoding's own kernels run on a worker
//!   pool that spins while it waits (swift-kernels); OpenMP threads spinning beside it stole its
//!   cores (5 tokens/s spinning against 17 passive on a loaded 2-core machine).

use std::sync::OnceLock;

/// The user's own setting (`NAME=value`), captured before [`choose`] sets anything.
static USERS: OnceLock<Option<String>> = OnceLock::new();

fn users() -> Option<String> {
    ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
}

/// Sets the policy for a training command or any other. Call once, first thing.
pub fn choose(training: bool) {
    let user = USERS.get_or_init(users);
    if user.is_none() && !training {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
}

/// What [`choose`] does, for `swift doctor`.
pub fn describe() -> String {
    match USERS.get_or_init(users) {
        Some(u) => format!("{u} (yours) for every command"),
        None => "pt/sft/rlhf: libgomp's default (spin about 3 ms, then sleep: a training step's \
                 many small operations); other commands: PASSIVE (decoding's own pool spins); \
                 set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose"
            .to_string(),
    }
}
