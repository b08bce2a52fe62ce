//! libtorch's thread count during training, chosen before every optimiser step from how busy
//! the cores are with other work (`swift_kernels::training_threads`: one thread while the CPU
//! pressure says other tasks wait for the cores, all of them once it is quiet again), and said
//! in the run's log whenever it changes. This matters only while libtorch's OpenMP threads spin
//! at their barriers (the swift host's choice on quiet cores, host/src/openmp.rs): with
//! `OMP_WAIT_POLICY=PASSIVE` (the host's choice when the cores were busy at start) waiting
//! threads sleep and every core is kept; a user's `OMP_NUM_THREADS`, `OMP_WAIT_POLICY` or
//! `GOMP_SPINCOUNT` wins too.
//! The count is restored when the run ends.

/// The thread policy of one training run.
pub struct TrainThreads {
    /// libtorch's count when the run started (every core unless the user chose).
    all: i32,
    current: i32,
    /// The user chose (`OMP_NUM_THREADS`), or there is only one core.
    fixed: bool,
}

impl TrainThreads {
    pub fn new() -> Self {
        let all = tch::get_num_threads();
        let user = std::env::var("OMP_NUM_THREADS").ok();
        // Set by the host only as PASSIVE (busy cores at start); any other value is the user's.
        let wait = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"]
            .iter()
            .find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")));
        let fixed = user.is_some() || wait.is_some() || all <= 1;
        match (&user, swift_kernels::cpu_pressure()) {
            (Some(u), _) => {
                tracing::info!("libtorch threads: {all} (OMP_NUM_THREADS={u}, yours)")
            }
            _ if wait.is_some() => tracing::info!(
                "libtorch threads: {all}, kept ({}: PASSIVE when the cores were busy as the \
                 command started, else yours)",
                wait.as_deref().unwrap_or_default()
            ),
            _ if all <= 1 => tracing::info!("libtorch threads: 1 (one core)"),
            (None, None) => tracing::info!(
                "libtorch threads: {all}; this kernel reports no CPU pressure \
                 (/proc/pressure/cpu), so the count stays even if other work shares the cores"
            ),
            (None, Some(_)) => {}
        }
        Self {
            all,
            current: all,
            fixed,
        }
    }

    /// Sets the count for the coming step.
    pub fn before_step(&mut self, step: u64) {
        if self.fixed {
            return;
        }
        let pressure = swift_kernels::cpu_pressure();
        let want = swift_kernels::training_threads(pressure, self.current, self.all);
        if want == self.current && step > 1 {
            return;
        }
        let p = pressure.unwrap_or(0.0);
        if want != self.current {
            tch::set_num_threads(want);
            self.current = want;
        }
        if want == 1 {
            tracing::info!(
                "step {step}: CPU pressure {p:.0}% (other work waits for these cores, at or above \
                 {}%): libtorch on 1 thread, so no barrier waits for a descheduled thread",
                swift_kernels::BUSY_PRESSURE
            );
        } else {
            tracing::info!(
                "step {step}: CPU pressure {p:.0}% (at or below {}%): libtorch on {want} threads",
                swift_kernels::QUIET_PRESSURE
            );
        }
    }
}

impl Default for TrainThreads {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TrainThreads {
    fn drop(&mut self) {
        if self.current != self.all {
            tch::set_num_threads(self.all);
        }
    }
}
