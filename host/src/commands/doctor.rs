//! `swift doctor [--plugin FILE]`: what this swift is built from, and why a plugin file loads or
//! not.
//!
//! Without `--plugin`: the swift version, the plugin contract, the tensor engine with its libtorch
//! and tch versions (opening the engine library; the `swift` binary itself links no libtorch),
//! the CPU's model and vector features, the decoding kernel picked for it and why (measured, or
//! read from the cache: swift-kernels' `kernel_choice`, and `bf16_kernel_choice` for bfloat16
//! weights), whether CUDA is reachable and how
//! libtorch's OpenMP threads wait (crate::openmp). With `--plugin FILE`: the manifest
//! the file exports (read before its root module, as loading does), each check of it against this
//! swift, abi_stable's layout check with only the lines that say what differs, and what the
//! plugin registers.

use std::path::Path;

use anyhow::{bail, Result};
use swift_plugin_api::{LoadError, PluginFile, CONTRACT_VERSION};
use swift_registry::{PluginLoader, PluginSource, Provenance};

use crate::cli::DoctorArgs;

pub fn run(args: &DoctorArgs) -> Result<()> {
    println!("swift {}", env!("CARGO_PKG_VERSION"));
    println!("plugin contract: v{CONTRACT_VERSION}");
    match crate::runtime::plugin_versions() {
        Ok(v) => {
            println!(
                "tensor engine: {}",
                crate::runtime::library_path().display()
            );
            println!("  libtorch: {}", v.libtorch);
            println!("  tch: {}", v.tch);
        }
        Err(e) => println!("tensor engine: not available: {e}"),
    }
    println!("CPU: {}, {}", swift_kernels::cpu_model(), cpu());
    let k = swift_kernels::kernel_choice();
    println!("decoding kernel: {} ({})", k.kernel, k.why);
    let b = swift_kernels::bf16_kernel_choice();
    println!("bfloat16 decoding kernel: {} ({})", b.kernel, b.why);
    println!(
        "weights read ahead while decoding: {}",
        swift_kernels::read_ahead_setting()
    );
    println!("CUDA: {}", cuda());
    println!("OpenMP wait policy: {}", crate::openmp::describe());
    if let Some(path) = &args.plugin {
        plugin(path)?;
    }
    Ok(())
}

fn cpu() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut have = Vec::new();
        macro_rules! feature {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    have.push($f);
                }
            )*};
        }
        feature!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avx512bf16"
        );
        format!(
            "x86_64, {} threads, features: {}",
            threads(),
            have.join(" ")
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!("{}, {} threads", std::env::consts::ARCH, threads())
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether `--device cuda` can work: an NVIDIA driver is loaded (swift opens libtorch's CUDA
/// half itself when a CUDA device is asked for).
fn cuda() -> String {
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
    match driver {
        Some(d) => format!("NVIDIA driver: {d}"),
        None => "no NVIDIA driver found (/proc/driver/nvidia/version): --device cpu only".into(),
    }
}

fn plugin(path: &Path) -> Result<()> {
    println!("plugin: {}", path.display());
    let file = match PluginFile::open(path) {
        Ok(f) => f,
        Err(e) => bail!("{e}"),
    };
    let early = file.early_manifest();
    match &early {
        Ok(Some(m)) => {
            println!("  manifest: {} {}", m.name, m.version);
            println!("    contract: v{}", m.contract_version);
            println!(
                "    libtorch: {}",
                m.libtorch_version.as_deref().unwrap_or("none (no tensors)")
            );
            println!(
                "    tch: {}",
                m.tch_version.as_deref().unwrap_or("none (no tensors)")
            );
            match swift_registry::check_manifest(m) {
                Ok(()) => println!("  checks: contract, libtorch and tch match this swift"),
                Err(e) => println!("  checks: REFUSED: {e}"),
            }
        }
        Ok(None) => println!(
            "  manifest: none exported under `{}` (built against an older plugin-api)",
            swift_plugin_api::MANIFEST_SYMBOL
        ),
        Err(e) => println!("  manifest: unreadable: {e}"),
    }
    match file.root_module() {
        Ok(_) => println!("  root module: its layout matches this swift's"),
        Err(LoadError::Incompatible {
            reason,
            differences,
            ..
        }) => {
            println!("  root module: REFUSED: {reason}");
            for d in differences {
                println!("    {d}");
            }
            return Ok(());
        }
        Err(e) => {
            println!("  root module: REFUSED: {e}");
            return Ok(());
        }
    }
    let loader = PluginLoader::default();
    match loader.load(&[PluginSource::File(path.to_path_buf())]) {
        Ok(report) => {
            println!("  registers:");
            for r in report.registries.rows(None) {
                if matches!(&r.provenance, Provenance::Library { path: p, .. } if p == path) {
                    println!("    {} {}", r.kind, r.name);
                }
            }
        }
        Err(e) => println!("  loading: REFUSED: {e}"),
    }
    Ok(())
}
