//! Which block kernel decoding runs on this machine, picked by measurement and said why.
//!
//! The kernels (src/dot.rs) differ in how fast they stream weights from memory, and which is
//! fastest depends on the CPU, not on its feature list alone: on AMD Zen 4 the 8-lane walk
//! streamed faster than a 16-lane one although both run there. So the first decoding product of
//! a process times the candidate kernels this CPU runs on the same job (float32 weights larger
//! than the caches, one activation row, split over the pool's threads as decoding does, six
//! interleaved rounds, the best time kept) and keeps the 8-lane `avx2-vl` walk unless the 16-lane
//! `avx512` one streamed at least [`MARGIN`] times faster. The candidates are `avx512`
//! and `avx2-vl` where AVX-512VL is present, else `avx2`, else `portable`: `avx2` is `avx2-vl`
//! with fewer registers (never faster), and `portable` is there for CPUs without AVX2.
//!
//! The result is written to `$SWIFT_RS_CACHE/kernels/` under a name made from the CPU model and
//! the kernels it runs, so later processes on this kind of machine read it instead of measuring
//! (delete the file to measure again). While other work keeps the cores busy (CPU pressure at or
//! above `BUSY_PRESSURE`, else a load average at or above the core count) nothing is measured:
//! a busy machine's figures swing threefold, so the default (`avx2-vl`) runs until a quiet
//! process measures and saves the choice.
//! `SWIFT_KERNEL=NAME` picks one by name. `swift doctor` and the run's log say what was picked
//! and why ([`kernel_choice`]).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use crate::dot::{available, BlockKernel};
use crate::machine::cpu_model;
use crate::Weights;

/// The kernel decoding runs and why.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelChoice {
    /// Its name (`avx512`, `avx2-vl`, `avx2` or `portable`).
    pub kernel: String,
    /// Why, in a sentence (measured here, read from the cache file, or the user's setting).
    pub why: String,
    /// Weight streaming rates, GB/s, of each kernel measured (here or when cached).
    pub measured: Vec<(String, f64)>,
}

/// The bytes of weights the measurement streams: more than these machines' caches.
const PROBE_BYTES: usize = 48 << 20;
const PROBE_K: usize = 576;

/// The choice for this process (measured or read once).
pub fn kernel_choice() -> &'static KernelChoice {
    static CHOICE: OnceLock<KernelChoice> = OnceLock::new();
    CHOICE.get_or_init(decide)
}

/// The kernel for bfloat16 weights and why: `avx512-bf16` (src/dot_bf16.rs: `vdpbf16ps`, the
/// activations rounded to bfloat16) against the float kernel [`kernel_choice`] picked, which
/// widens the weights to float32. Measured as that choice is (bfloat16 weights this time), with
/// `avx512-bf16` first: the widening kernel is kept only where it streamed [`MARGIN`] times
/// faster. `SWIFT_BF16_KERNEL=avx512-bf16|widen` picks one; a CPU without AVX-512 BF16 widens.
pub fn bf16_kernel_choice() -> &'static KernelChoice {
    static CHOICE: OnceLock<KernelChoice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let float = kernel_choice();
        let widen = available()
            .into_iter()
            .find(|(n, _)| *n == float.kernel)
            .map_or(crate::dot::portable as BlockKernel, |(_, k)| k);
        let mut all = crate::dot::available_bf16();
        if all.is_empty() {
            return KernelChoice {
                kernel: float.kernel.clone(),
                why: "this CPU has no AVX-512 BF16: bfloat16 weights are widened to float32 by \
                      the float kernel"
                    .into(),
                measured: Vec::new(),
            };
        }
        all.push(("widen", widen));
        let mut c = decide_among(all, "SWIFT_BF16_KERNEL", "decode-bf16", true);
        if c.kernel == "widen" {
            c.why = format!("{} (widen: the float kernel {})", c.why, float.kernel);
            c.kernel = float.kernel.clone();
        }
        c
    })
}

fn decide() -> KernelChoice {
    decide_among(candidates(available()), "SWIFT_KERNEL", "decode", false)
}

/// Picks among `kernels` (the first the default): the user's `env`, else the cache file
/// `prefix-<hash>.txt`, else (on a quiet machine) measured over float32 or (`bf16`) bfloat16
/// weights and saved.
fn decide_among(
    kernels: Vec<(&'static str, BlockKernel)>,
    env: &str,
    prefix: &str,
    bf16: bool,
) -> KernelChoice {
    let names: Vec<&str> = if bf16 {
        kernels.iter().map(|(n, _)| *n).collect()
    } else {
        available().iter().map(|(n, _)| *n).collect()
    };
    let wanted = std::env::var(env).unwrap_or_default();
    let mut note = String::new();
    if !wanted.is_empty() {
        if names.contains(&wanted.as_str()) {
            return KernelChoice {
                kernel: wanted.clone(),
                why: format!("{env}={wanted} (yours)"),
                measured: Vec::new(),
            };
        }
        note = format!(
            "{env}={wanted} is not a kernel this CPU runs ({}), so measured instead; ",
            names.join(", ")
        );
    }
    if kernels.len() == 1 {
        return KernelChoice {
            kernel: kernels[0].0.to_string(),
            why: format!("{note}the only candidate this CPU runs"),
            measured: Vec::new(),
        };
    }
    let file = cache_file(prefix, &names);
    if let Some(c) = file.as_ref().and_then(|f| read(f, &names)) {
        let path = file
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string());
        return KernelChoice {
            why: format!(
                "{note}measured on this CPU model: {}; read from {path}",
                rates(&c.measured)
            ),
            ..c
        };
    }
    let (load, cores) = (
        load_average(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let pressure = crate::machine::cpu_pressure();
    let busy = match pressure {
        Some(p) => p >= crate::machine::BUSY_PRESSURE,
        None => load.parse::<f64>().map_or(true, |l| l >= cores as f64),
    };
    if busy {
        let now = pressure.map_or(format!("load average {load} on {cores} cores"), |p| {
            format!("CPU pressure {p:.0}%")
        });
        return KernelChoice {
            kernel: kernels[0].0.to_string(),
            why: format!(
                "{note}not measured: other work keeps the cores busy ({now}), which swings such \
                 measurements threefold; the default until a quiet run measures and saves one"
            ),
            measured: Vec::new(),
        };
    }
    let measured = measure(&kernels, bf16);
    let best = pick(&measured);
    let saved = match &file {
        Some(f) => write(f, &best, &measured)
            .map(|()| format!("saved in {}", f.display()))
            .unwrap_or_else(|e| format!("not saved ({}: {e})", f.display())),
        None => "not saved (no cache folder: set SWIFT_RS_CACHE or HOME)".to_string(),
    };
    KernelChoice {
        kernel: best,
        why: format!(
            "{note}measured just now: {}, load average {load}; another than the first is \
             picked only at {MARGIN}x its rate; {saved}",
            rates(&measured),
        ),
        measured,
    }
}

/// How much faster than the first candidate (the one that streamed fastest where it was first
/// measured, AMD Zen 4) another must measure to be picked: a shared machine's single
/// measurements swing by more than the kernels differ.
const MARGIN: f64 = 1.25;

/// The first candidate, unless another streamed [`MARGIN`] times faster.
fn pick(measured: &[(String, f64)]) -> String {
    let Some((first, base)) = measured.first() else {
        return "portable".into();
    };
    measured
        .iter()
        .filter(|(_, r)| *r >= base * MARGIN)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(&(first.clone(), *base))
        .0
        .clone()
}

/// The kernels worth measuring (see the module's page).
fn candidates(all: Vec<(&'static str, BlockKernel)>) -> Vec<(&'static str, BlockKernel)> {
    let has = |name: &str| all.iter().any(|(n, _)| *n == name);
    let drop_avx2 = has("avx2-vl");
    let drop_portable = all.len() > 1;
    let mut out: Vec<_> = all
        .iter()
        .copied()
        .filter(|(n, _)| !(*n == "avx2" && drop_avx2 || *n == "portable" && drop_portable))
        .collect();
    // The 8-lane walk first: the default unless the 16-lane one beats it by the margin.
    out.sort_by_key(|(n, _)| *n == "avx512");
    out
}

fn rates(measured: &[(String, f64)]) -> String {
    measured
        .iter()
        .map(|(n, r)| format!("{n} {r:.1} GB/s"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Each kernel's best rate over six interleaved rounds, GB/s of weights streamed.
fn measure(kernels: &[(&'static str, BlockKernel)], bf16: bool) -> Vec<(String, f64)> {
    let n = PROBE_BYTES / if bf16 { 2 } else { 4 } / PROBE_K;
    // Distinct values, so no page is shared (a zeroed allocation may map one page many times).
    let w: Vec<f32> = (0..n * PROBE_K).map(|i| (i % 251) as f32 * 1e-3).collect();
    let wb: Vec<u16> = if bf16 {
        w.iter().map(|v| (v.to_bits() >> 16) as u16).collect()
    } else {
        Vec::new()
    };
    let weights = if bf16 {
        Weights::Bf16(&wb)
    } else {
        Weights::F32(&w)
    };
    let x: Vec<f32> = (0..PROBE_K).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut y = vec![0f32; n];
    let mut best = vec![f64::MAX; kernels.len()];
    for round in 0..7 {
        for (i, (_, kernel)) in kernels.iter().enumerate() {
            let start = Instant::now();
            crate::matmul_with(*kernel, &x, 1, PROBE_K, weights, &mut y);
            // The first round warms the pages and the pool, and is not counted.
            if round > 0 {
                best[i] = best[i].min(start.elapsed().as_secs_f64());
            }
        }
    }
    kernels
        .iter()
        .zip(best)
        .map(|((name, _), s)| (name.to_string(), PROBE_BYTES as f64 / s.max(1e-9) / 1e9))
        .collect()
}

/// Bumped when a kernel's code changes how fast it runs, so that measurements saved by an
/// earlier build are taken again (2: several accumulators per row in the one- and two-row
/// bfloat16 walks).
const KERNELS_REVISION: u32 = 2;

/// `$SWIFT_RS_CACHE/kernels/decode-<hash>.txt`, the hash over the CPU model, the kernels it
/// runs, this crate's version and [`KERNELS_REVISION`].
fn cache_file(prefix: &str, names: &[&str]) -> Option<PathBuf> {
    let root = std::env::var_os("SWIFT_RS_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/swift-rs")))?;
    let key = format!(
        "{}|{}|{}|{KERNELS_REVISION}",
        cpu_model(),
        names.join(","),
        env!("CARGO_PKG_VERSION")
    );
    // FNV-1a: stable across builds (std's hasher is not).
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    Some(
        root.join("kernels")
            .join(format!("{prefix}-{hash:016x}.txt")),
    )
}

/// The file's text: `cpu=`, `kernel=`, then one `rate=NAME GB/s` line per kernel.
fn format(kernel: &str, measured: &[(String, f64)]) -> String {
    let mut s = format!("cpu={}\nkernel={kernel}\n", cpu_model());
    for (n, r) in measured {
        s.push_str(&format!("rate={n} {r:.3}\n"));
    }
    s
}

fn parse(text: &str, names: &[&str]) -> Option<KernelChoice> {
    let mut kernel = None;
    let mut measured = Vec::new();
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("kernel=") {
            kernel = Some(k.to_string());
        } else if let Some(r) = line.strip_prefix("rate=") {
            let (n, v) = r.split_once(' ')?;
            measured.push((n.to_string(), v.parse().ok()?));
        }
    }
    // A file naming a kernel this build does not run is measured over, not trusted.
    let kernel = kernel.filter(|k| names.contains(&k.as_str()))?;
    Some(KernelChoice {
        kernel,
        why: String::new(),
        measured,
    })
}

fn read(file: &PathBuf, names: &[&str]) -> Option<KernelChoice> {
    parse(&std::fs::read_to_string(file).ok()?, names)
}

fn write(file: &PathBuf, kernel: &str, measured: &[(String, f64)]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(file.as_path());
    std::fs::create_dir_all(dir)?;
    // Written aside and renamed, so a reader never sees half a file.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format(kernel, measured))?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_file_reads_back_and_names_only_kernels_that_run() {
        let measured = vec![("avx2-vl".to_string(), 41.5), ("avx512".to_string(), 30.25)];
        let text = format("avx2-vl", &measured);
        let c = parse(&text, &["avx512", "avx2-vl", "portable"]).expect("parses");
        assert_eq!(c.kernel, "avx2-vl");
        assert_eq!(c.measured, measured);
        // Moved to a CPU without that kernel: not trusted.
        assert!(parse(&text, &["avx2", "portable"]).is_none());
        assert!(parse("kernel=avx2\nrate=avx2 fast\n", &["avx2"]).is_none());
    }

    #[test]
    fn another_kernel_is_picked_only_when_clearly_faster() {
        let m = |a: f64, b: f64| vec![("avx2-vl".to_string(), a), ("avx512".to_string(), b)];
        assert_eq!(pick(&m(30.0, 36.0)), "avx2-vl");
        assert_eq!(pick(&m(30.0, 40.0)), "avx512");
        assert_eq!(pick(&m(30.0, 10.0)), "avx2-vl");
    }

    #[test]
    fn the_choice_is_a_kernel_this_cpu_runs_and_says_why() {
        let c = kernel_choice();
        assert!(available().iter().any(|(n, _)| *n == c.kernel));
        assert!(!c.why.is_empty());
    }
}
