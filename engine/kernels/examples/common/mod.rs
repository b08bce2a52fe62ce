//! What the kernel examples share: the process's CPU time, read from Linux's `/proc/self/stat`,
//! and the value of a `--flag VALUE` argument.

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of 10 ms):
/// on a machine shared with other work, CPU time is steadier than wall time (run an example under
/// `taskset -c 0` for one thread, whose CPU time is then the kernel's alone).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The argument after `--NAME` on the command line, if any.
#[allow(dead_code)] // not every example takes a valued flag
pub fn flag_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}
