//! What the kernel examples share: the process's CPU time, read from Linux's `/proc/self/stat`,
//! the value of a `--flag VALUE` argument, and interleaved quantized rows to multiply.

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

/// `n` interleaved rows of `k` weights in `ty`: varied codes, every float16 scale 1/64.
#[allow(dead_code)] // not every example multiplies quantized rows
pub fn blocks(ty: swift_kernels::BlockType, n: usize, k: usize, seed: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..ty.row_bytes(k) * n)
        .map(|i| ((i + seed) * 7 % 251) as u8)
        .collect();
    let scales: &[usize] = if ty == swift_kernels::BlockType::Q4_1 {
        &[0, 2]
    } else {
        &[0]
    };
    for b in v.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            b[at..at + 2].copy_from_slice(&0x2400u16.to_le_bytes());
        }
    }
    swift_kernels::interleave(ty, &mut v, k).expect("whole groups");
    v
}
