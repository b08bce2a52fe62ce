//! What the machine is, for the choices the engine makes at run time: the CPU's model name and
//! how busy its cores are with other work (Linux's CPU pressure), and from that how many threads
//! libtorch's operations get during training ([`training_threads`]).
//!
//! Why the pressure matters: a training step issues thousands of small parallel regions, each
//! ending in a barrier where libtorch's OpenMP threads wait for each other. On a quiet machine
//! they wait by spinning (libgomp's default during training, `host/src/openmp.rs`), which is
//! fastest; on cores shared with other work, a thread the scheduler has descheduled holds up
//! every barrier while its partner spins: the LoRA SFT benchmark's steps took 13x longer than
//! with one thread (BENCHMARKS.md). One thread has no barriers to wait at.
//!
//! [`release_freed_heap`] hands the heap's free pages back to the system (glibc keeps what a
//! program freed, so a loading step's transient buffers otherwise stay in its RSS).

/// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The share of the last 10 seconds (percent) in which some runnable task waited for a core
/// (`/proc/pressure/cpu`, `some avg10`), or `None` where the kernel does not report it.
pub fn cpu_pressure() -> Option<f64> {
    parse_pressure(&std::fs::read_to_string("/proc/pressure/cpu").ok()?)
}

fn parse_pressure(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// Returns the heap's free memory to the system (glibc's `malloc_trim(0)`; nothing elsewhere):
/// after a step that freed large transient buffers (parsing a tokenizer), so they do not count
/// in the resident memory of what follows.
pub fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory of its own heaps.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// At or above this pressure (percent), training runs libtorch on one thread.
pub const BUSY_PRESSURE: f64 = 25.0;
/// At or below this pressure, it goes back to every core (between the two, it keeps what it has).
pub const QUIET_PRESSURE: f64 = 10.0;

/// libtorch's thread count for the next training step: `all` (the cores) unless other work
/// keeps the cores busy (`pressure` ≥ [`BUSY_PRESSURE`]), then 1, until the pressure falls to
/// [`QUIET_PRESSURE`]. Unknown pressure keeps `current`.
pub fn training_threads(pressure: Option<f64>, current: i32, all: i32) -> i32 {
    match pressure {
        Some(p) if p >= BUSY_PRESSURE => 1,
        Some(p) if p <= QUIET_PRESSURE => all,
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_is_read_from_the_some_line() {
        let text = "some avg10=99.27 avg60=99.20 avg300=97.55 total=7822468041\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_pressure(text), Some(99.27));
        assert_eq!(parse_pressure("full avg10=3.00\n"), None);
        assert_eq!(parse_pressure("some avg10=x\n"), None);
    }

    #[test]
    fn one_thread_while_busy_all_once_quiet_and_no_flapping_between() {
        assert_eq!(training_threads(Some(99.0), 2, 2), 1);
        assert_eq!(training_threads(Some(30.0), 2, 2), 1);
        assert_eq!(training_threads(Some(15.0), 1, 2), 1);
        assert_eq!(training_threads(Some(15.0), 2, 2), 2);
        assert_eq!(training_threads(Some(5.0), 1, 2), 2);
        assert_eq!(training_threads(None, 1, 2), 1);
    }
}
