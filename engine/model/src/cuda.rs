//! CUDA on demand.
//!
//! The binaries link only libtorch's CPU half (scripts/setup.sh links against a directory that
//! leaves `libtorch_cuda.so` out): the pip wheel's `libtorch.so` pulls in `libtorch_cuda.so` and
//! with it cuBLAS, NVRTC and the other CUDA libraries, which cost about 270 MiB of resident
//! memory at start-up even on a machine without a GPU. When a CUDA device is asked for, or
//! `--device auto` finds an NVIDIA driver, [`load`] opens `libtorch_cuda.so` into the process
//! with global symbols; its initialisers register the CUDA kernels and hooks with libtorch,
//! which from then on sees the devices as usual. A binary linked against the whole libtorch
//! already has it loaded, and loading it again changes nothing.

use std::sync::OnceLock;

/// Whether this machine has an NVIDIA driver (without one, CUDA is never worth loading).
pub fn driver_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
        || std::path::Path::new("/dev/nvidiactl").exists()
}

/// Loads libtorch's CUDA half once per process; later calls return the first outcome.
pub fn load() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(open).clone()
}

#[cfg(unix)]
fn open() -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // Found through the binary's run path, which points at the wheel's torch/lib.
    // SAFETY: the library's initialisers only register CUDA kernels with the libtorch this
    // process already runs (the same wheel); it is never unloaded.
    match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            std::mem::forget(lib);
            tracing::debug!("loaded libtorch_cuda.so");
            Ok(())
        }
        Err(e) => Err(format!(
            "libtorch's CUDA library could not be loaded ({e}); this libtorch may be a CPU-only build"
        )),
    }
}

#[cfg(not(unix))]
fn open() -> Result<(), String> {
    Ok(())
}
