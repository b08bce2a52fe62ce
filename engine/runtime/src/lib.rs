//! # swift-runtime: the tensor engine, opened by `swift` on demand
//!
//! The `swift` binary links no libtorch, so that `swift --help`, `list`, `encode` and
//! `new-plugin` start at once. The commands that need tensors (`pt`, `sft`, `rlhf`, `infer`,
//! `deploy`, `export`) are run here: the binary opens this library (libswift_runtime.so, next to
//! it; host/src/runtime.rs), which brings libtorch into the process, and hands it one
//! [`EngineRequest`] as JSON: the command and its resolved specification, the plugin flags and
//! the log filter. This library runs the command through swift-pipeline, prints what the command
//! prints, and returns an exit status.
//!
//! Being a separate shared library, it has its own copy of every Rust global: its own `tracing`
//! subscriber (set up here from the request's log filter), its own built-in plugins (collected
//! with `inventory`, those that need libtorch included: model families, preference losses), its
//! own registries (plugins from `--plugin-dir` are loaded here, where the tensor engine is) and
//! its own stdout buffer (flushed before returning). Nothing unwinds across the boundary: a
//! panic is caught and becomes an error status.
//!
//! Entry points (C ABI, stable for one [`ENGINE_PROTOCOL`]):
//! * `swift_runtime_info() -> *const c_char`: an [`EngineInfo`] as NUL-terminated JSON, owned by
//!   the library (null only if building it failed).
//! * `swift_runtime_run(request, len) -> i32`: runs `len` bytes of UTF-8 JSON request; 0 on
//!   success, 1 when the command failed (its error already printed), 2 for a request this
//!   engine cannot read, 101 after a panic.

mod commands;

use std::ffi::{c_char, CString};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use swift_spec::request::{EngineInfo, EngineRequest, ENGINE_PROTOCOL};

// Built-in plugins are linked statically and found through `inventory`; naming the crates here
// makes sure the linker keeps them.
use swift_plugin_benchmarks as _;
use swift_plugin_datasets as _;
use swift_plugin_losses as _;
use swift_plugin_models as _;
use swift_plugin_optimizers as _;
use swift_plugin_quantizers as _;
use swift_plugin_templates as _;
use swift_plugin_tuners as _;

/// This engine's [`EngineInfo`] as NUL-terminated JSON (see the crate docs).
#[no_mangle]
pub extern "C" fn swift_runtime_info() -> *const c_char {
    static INFO: OnceLock<Option<CString>> = OnceLock::new();
    let info = INFO.get_or_init(|| {
        catch_unwind(|| {
            let info = EngineInfo {
                protocol: ENGINE_PROTOCOL,
                contract_version: swift_plugin_tensors::CONTRACT_VERSION,
                libtorch_version: swift_plugin_tensors::LIBTORCH_VERSION
                    .unwrap_or("unknown")
                    .to_string(),
                tch_version: swift_plugin_tensors::TCH_VERSION
                    .unwrap_or("unknown")
                    .to_string(),
            };
            serde_json::to_string(&info)
                .ok()
                .and_then(|s| CString::new(s).ok())
        })
        .ok()
        .flatten()
    });
    info.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Runs one request (see the crate docs).
///
/// # Safety
/// `request` must point to `len` readable bytes (or be null with `len` 0) for the duration of
/// the call.
#[no_mangle]
pub unsafe extern "C" fn swift_runtime_run(request: *const u8, len: usize) -> i32 {
    let bytes: &[u8] = if request.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `request`.
        unsafe { std::slice::from_raw_parts(request, len) }
    };
    let status = catch_unwind(AssertUnwindSafe(|| run_json(bytes))).unwrap_or_else(|_| {
        // The panic hook (this library's own std) has printed the message.
        eprintln!("error: the tensor engine panicked; this is a bug in swift-rs");
        101
    });
    // This library's stdout buffer is its own: the binary's exit does not flush it.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    status
}

fn run_json(bytes: &[u8]) -> i32 {
    let request: EngineRequest = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the tensor engine cannot read its request ({e}); are `swift` and libswift_runtime.so from the same build?");
            return 2;
        }
    };
    if request.protocol != ENGINE_PROTOCOL {
        eprintln!(
            "error: `swift` speaks engine protocol v{}, libswift_runtime.so v{ENGINE_PROTOCOL}; \
             rebuild both from one checkout",
            request.protocol
        );
        return 2;
    }
    init_tracing(request.log_level.as_deref());
    match commands::run(request) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// The same log format as the binary's (host/src/main.rs), on this library's own subscriber.
fn init_tracing(level: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    // A second request in one process keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_json_with_this_protocol() {
        let ptr = swift_runtime_info();
        assert!(!ptr.is_null());
        // SAFETY: a NUL-terminated string owned by this library.
        let json = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_str().unwrap();
        let info: EngineInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.protocol, ENGINE_PROTOCOL);
        assert_eq!(
            Some(info.libtorch_version.as_str()),
            swift_plugin_tensors::LIBTORCH_VERSION
        );
    }

    #[test]
    fn bad_requests_are_status_2_not_panics() {
        for bad in [&b""[..], b"not json", br#"{"protocol": 1}"#] {
            // SAFETY: a live slice.
            assert_eq!(unsafe { swift_runtime_run(bad.as_ptr(), bad.len()) }, 2);
        }
        // SAFETY: null with length 0 is allowed.
        assert_eq!(unsafe { swift_runtime_run(std::ptr::null(), 0) }, 2);
        let other = br#"{"protocol": 999, "command": {"command": "export", "spec": {}}}"#;
        // SAFETY: a live slice.
        assert_eq!(unsafe { swift_runtime_run(other.as_ptr(), other.len()) }, 2);
    }
}
