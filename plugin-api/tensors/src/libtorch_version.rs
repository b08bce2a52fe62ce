//! Which libtorch a library folder holds: shared by this crate's build script (which records it
//! as [`crate::LIBTORCH_VERSION`]) and its tests.
//!
//! torch-sys exports the folder it links against as `DEP_TCH_LIBTORCH_LIB`. Built the standard
//! tch way (`LIBTORCH_USE_PYTORCH=1` or `LIBTORCH=<torch>`), that is the torch wheel's own
//! `torch/lib`, with `torch/version.py` next to it. This checkout's `.cargo/config.toml` points it
//! at a folder of links instead (`$SWIFT_RS_CACHE/libtorch-link/lib`, libtorch without its CUDA
//! half, made by scripts/setup.sh), which holds no version file: the version is then read from
//! the torch folder that the link folder's `.source` names, or that its libraries link to.

use std::path::{Path, PathBuf};

/// The libtorch version of a library folder (`2.13.0`, the local `+cu130` part dropped), and the
/// files it was read from or looked for (a build script reruns when they change). `None` when
/// no torch installation can be found behind it.
pub fn libtorch_version(lib: &Path) -> (Option<String>, Vec<PathBuf>) {
    let mut looked = Vec::new();
    for root in candidate_roots(lib) {
        if let Some(v) = version_in(&root, &mut looked) {
            return (Some(v), looked);
        }
    }
    (None, looked)
}

/// The torch folders that may hold the version: the folder above `lib`, the folder a link
/// folder's `.source` names, and the folder above the real file of each libtorch library.
fn candidate_roots(lib: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(root) = lib.parent() {
        roots.push(root.to_path_buf());
        if let Ok(text) = std::fs::read_to_string(root.join(".source")) {
            let source = text.trim();
            if !source.is_empty() {
                roots.push(PathBuf::from(source));
            }
        }
    }
    for name in [
        "libtorch_cpu.so",
        "libc10.so",
        "libtorch.so",
        "libtorch_cpu.dylib",
    ] {
        if let Ok(real) = std::fs::canonicalize(lib.join(name)) {
            if let Some(root) = real.parent().and_then(Path::parent) {
                roots.push(root.to_path_buf());
            }
        }
    }
    roots
}

/// Reads `__version__ = '2.13.0+cu130'` from `<root>/version.py` (pip wheel layout) or the first
/// line of `<root>/build-version` (libtorch zip layout).
fn version_in(root: &Path, looked: &mut Vec<PathBuf>) -> Option<String> {
    let py = root.join("version.py");
    looked.push(py.clone());
    if let Ok(text) = std::fs::read_to_string(&py) {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=', ':']).trim();
                let v = v.trim_matches(|c| c == '\'' || c == '"');
                if !v.is_empty() {
                    return Some(public_part(v));
                }
            }
        }
    }
    let bv = root.join("build-version");
    looked.push(bv.clone());
    let text = std::fs::read_to_string(&bv).ok()?;
    let first = text.lines().next()?.trim();
    (!first.is_empty()).then(|| public_part(first))
}

fn public_part(v: &str) -> String {
    v.split('+').next().unwrap_or(v).to_string()
}
