//! Records which libtorch this build of swift-plugin-tensors links against. torch-sys declares `links = "tch"` and exports the libtorch library directory as
//! `DEP_TCH_LIBTORCH_LIB`; the torch wheel keeps its version next to it in `torch/version.py`.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| libtorch_version(Path::new(&lib)))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SWIFT_LIBTORCH_VERSION={version}");
}

/// Reads `__version__ = '2.13.0+cu130'` from `<lib>/../version.py` (pip wheel layout) or the
/// first line of `<lib>/../build-version` (libtorch zip layout), keeping the public part.
fn libtorch_version(lib: &Path) -> Option<String> {
    let root = lib.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=', ':']).trim();
                let v = v.trim_matches(|c| c == '\'' || c == '"');
                return Some(public_part(v));
            }
        }
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(public_part(text.lines().next()?.trim()))
}

fn public_part(v: &str) -> String {
    v.split('+').next().unwrap_or(v).to_string()
}
