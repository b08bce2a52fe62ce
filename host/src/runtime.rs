//! The tensor engine, opened on demand: swift-runtime's `libswift_runtime.so`, found next to the
//! `swift` executable (or at `$SWIFT_RS_RUNTIME`). The binary links no libtorch, so the commands
//! that need no tensors start at once; the engine library brings libtorch with it, once, when a
//! tensor command runs or a plugin that needs libtorch is loaded.
//!
//! Across the boundary: one JSON request in (swift-spec's `request` module), an exit status out;
//! the engine prints what the command prints. The library is opened with global symbols, so that
//! plugin files needing libtorch find the engine's, and is never unloaded.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use libloading::Library;
use swift_spec::request::{EngineInfo, EngineRequest, ENGINE_PROTOCOL};

/// The engine library's file name.
pub const LIBRARY: &str = if cfg!(target_os = "macos") {
    "libswift_runtime.dylib"
} else {
    "libswift_runtime.so"
};

/// Names another engine library file (tests, installs that keep it elsewhere).
pub const PATH_VAR: &str = "SWIFT_RS_RUNTIME";

type RunFn = unsafe extern "C" fn(*const u8, usize) -> i32;

/// An opened, checked engine.
struct Engine {
    info: EngineInfo,
    run: RunFn,
}

/// Where the engine library is expected.
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os(PATH_VAR).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(LIBRARY)))
        .unwrap_or_else(|| PathBuf::from(LIBRARY))
}

/// The engine, opened once per process (the first outcome, error included, is kept).
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE.get_or_init(open).as_ref().map_err(Clone::clone)
}

fn open() -> Result<Engine, String> {
    let path = library_path();
    let how = format!(
        "build it with `cargo build --release -p swift-runtime` (or `make build`), which puts it \
         next to target/release/swift; {PATH_VAR} names another file"
    );
    if !path.is_file() {
        return Err(format!(
            "the tensor engine {} is missing: {how}",
            path.display()
        ));
    }
    // SAFETY: the engine library's initialisers are Rust's and libtorch's own (inventory's
    // registrations, libtorch's operator registry); it is never unloaded.
    let lib = unsafe { open_global(&path) }.map_err(|e| {
        format!(
            "cannot load the tensor engine {}: {e}; {how}",
            path.display()
        )
    })?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    let bad = |what: &str| {
        format!(
            "{} is not a swift-rs tensor engine ({what}); {how}",
            path.display()
        )
    };
    // SAFETY: the symbols' types are the engine's entry points (engine/runtime/src/lib.rs).
    let (info_fn, run) = unsafe {
        let info = lib
            .get::<unsafe extern "C" fn() -> *const c_char>(b"swift_runtime_info\0")
            .map_err(|e| bad(&e.to_string()))?;
        let run = lib
            .get::<RunFn>(b"swift_runtime_run\0")
            .map_err(|e| bad(&e.to_string()))?;
        (*info, *run)
    };
    // SAFETY: the engine returns null or a NUL-terminated string it owns for its lifetime.
    let ptr = unsafe { info_fn() };
    if ptr.is_null() {
        return Err(bad("it could not describe itself"));
    }
    // SAFETY: checked non-null above; the library is never unloaded.
    let json = unsafe { CStr::from_ptr(ptr) }.to_string_lossy();
    let info: EngineInfo =
        serde_json::from_str(&json).map_err(|e| bad(&format!("its description: {e}")))?;
    if info.protocol != ENGINE_PROTOCOL {
        return Err(format!(
            "the tensor engine {} speaks protocol v{}, this swift v{ENGINE_PROTOCOL}: rebuild both \
             from one checkout ({how})",
            path.display(),
            info.protocol
        ));
    }
    if info.contract_version != swift_plugin_api::CONTRACT_VERSION {
        return Err(format!(
            "the tensor engine {} speaks plugin contract v{}, this swift v{}: rebuild both from \
             one checkout ({how})",
            path.display(),
            info.contract_version,
            swift_plugin_api::CONTRACT_VERSION
        ));
    }
    tracing::debug!(path = %path.display(), libtorch = %info.libtorch_version, "opened the tensor engine");
    Ok(Engine { info, run })
}

#[cfg(unix)]
unsafe fn open_global(path: &std::path::Path) -> Result<Library, libloading::Error> {
    use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_LAZY};
    // SAFETY: forwarded to the caller.
    unsafe { UnixLibrary::open(Some(path), RTLD_LAZY | RTLD_GLOBAL) }.map(Library::from)
}

#[cfg(not(unix))]
unsafe fn open_global(path: &std::path::Path) -> Result<Library, libloading::Error> {
    // SAFETY: forwarded to the caller.
    unsafe { Library::new(path) }
}

/// Runs one tensor command in the engine; returns its exit status (the engine has printed the
/// command's output and errors).
pub fn run(request: &EngineRequest) -> Result<i32> {
    let engine = engine().map_err(|e| {
        anyhow!(
            "`swift {}` needs the tensor engine: {e}",
            request.command.name()
        )
    })?;
    let json = serde_json::to_vec(request)?;
    // SAFETY: a live buffer of `json.len()` bytes for the duration of the call.
    Ok(unsafe { (engine.run)(json.as_ptr(), json.len()) })
}

/// swift-registry's tensor engine hook: loads the engine (and libtorch with it) and returns the
/// versions plugins with tensors are checked against.
pub fn plugin_versions() -> Result<swift_registry::TensorVersions, String> {
    let engine = engine()?;
    Ok(swift_registry::TensorVersions {
        libtorch: engine.info.libtorch_version.clone(),
        tch: engine.info.tch_version.clone(),
    })
}
