//! `swift new-plugin NAME --kind model-family`: a crate with its own forward pass that builds and
//! loads as is (templates in `host/templates/model-family/`).
//!
//! A tensor plugin links libtorch through torch-sys, whose first build compiles libtch for
//! minutes. The crate reuses the host's compiled dependencies instead: it builds into this
//! checkout's target folder with this checkout's `.cargo/config.toml` (libtorch, rustflags),
//! `Cargo.lock` and `[profile.*]` sections, so cargo finds torch-sys and tch already built
//! ("Fresh") and compiles only swift-plugin-api, swift-plugin-tensors and the plugin.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const LIB_RS: &str = include_str!("../../../templates/model-family/lib.rs");
const COMPARE_PY: &str = include_str!("../../../templates/model-family/compare.py");
const README: &str = include_str!("../../../templates/model-family/README.md");

/// What the scaffold needs from the swift-rs checkout.
pub struct Checkout {
    pub root: PathBuf,
    pub tensors: PathBuf,
}

/// Writes the crate into `out` (which exists and is empty) and prints how to build, load and
/// compare it.
pub fn write(name: &str, out: &Path, checkout: &Checkout) -> Result<()> {
    let root = &checkout.root;
    let config_path = root.join(".cargo/config.toml");
    let config = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "a model family links libtorch, and {} says where it is; run `make setup` in {} first",
            config_path.display(),
            root.display()
        )
    })?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))
        .with_context(|| format!("reading {}", root.join("Cargo.lock").display()))?;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))
        .with_context(|| format!("reading {}", root.join("Cargo.toml").display()))?;
    let target = root.join("target");
    let lib_name = name.replace('-', "_");
    let swift = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "swift".into());
    let venv = std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/swift-rs")))
        .unwrap_or_else(|| PathBuf::from("~/.cache/swift-rs"))
        .join("venv");
    let fill = |text: &str| {
        text.replace("__NAME__", name)
            .replace("__LIB__", &lib_name)
            .replace("__ROOT__", &root.display().to_string())
            .replace("__TARGET__", &target.display().to_string())
            .replace("__SWIFT__", &swift)
            .replace("__VENV__", &venv.display().to_string())
    };
    std::fs::create_dir_all(out.join("src"))?;
    std::fs::create_dir_all(out.join("tests"))?;
    std::fs::create_dir_all(out.join(".cargo"))?;
    write_file(
        &out.join("Cargo.toml"),
        &cargo_toml(name, &checkout.tensors, &manifest),
    )?;
    write_file(&out.join("Cargo.lock"), &lock)?;
    write_file(
        &out.join(".cargo/config.toml"),
        &cargo_config(&config, &config_path, &target),
    )?;
    write_file(&out.join("src/lib.rs"), &fill(LIB_RS))?;
    write_file(&out.join("tests/compare.py"), &fill(COMPARE_PY))?;
    write_file(&out.join("README.md"), &fill(README))?;
    write_file(&out.join(".gitignore"), "/target\n")?;
    let so = target.join(format!("release/lib{lib_name}.so"));
    println!("created {} (model-family plugin)", out.display());
    println!(
        "build it (reuses {}'s compiled torch-sys and tch): cd {} && cargo build --release",
        target.display(),
        out.display()
    );
    println!(
        "then load it with: {swift} --plugin-dir {} list models",
        so.display()
    );
    println!(
        "and compare it with transformers: {}/bin/python tests/compare.py --swift {swift} --plugin {} --model {}",
        venv.display(),
        so.display(),
        root.join("tests/fixtures/models/llama").display()
    );
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn cargo_toml(name: &str, tensors: &Path, workspace_manifest: &str) -> String {
    let profiles = profile_sections(workspace_manifest);
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A plugin is a shared library that swift loads with --plugin-dir.
crate-type = ["cdylib"]

[dependencies]
# The plugin contract with its tensor side, the SDK and the exact tch swift links
# (`swift_plugin_tensors::tch`: add no tch of your own), by path into the swift-rs checkout.
swift-plugin-tensors = {{ path = "{tensors}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A plugin crate is its own workspace, so it builds wherever it is placed.
[workspace]

# The swift-rs workspace's profiles (with its Cargo.lock and .cargo/config.toml): dependencies
# compile exactly as the host's did, so its target folder's builds are reused.
{profiles}"#,
        tensors = tensors.display()
    )
}

/// The `[profile.*]` tables of a Cargo.toml, verbatim.
fn profile_sections(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            inside = t.starts_with("[profile.") || t.starts_with("[profile]");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The checkout's cargo configuration, with its target folder added under `[build]`.
fn cargo_config(config: &str, from: &Path, target: &Path) -> String {
    let dir = format!("target-dir = {:?}", target.display().to_string());
    let mut out = format!(
        "# Copied from {} by `swift new-plugin` (libtorch for torch-sys, rustflags), building into\n\
         # that checkout's target folder so that its compiled dependencies are reused.\n",
        from.display()
    );
    let mut added = false;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[build]" {
            out.push_str(&dir);
            out.push('\n');
            added = true;
        }
    }
    if !added {
        out.push_str(&format!("\n[build]\n{dir}\n"));
    }
    out
}

/// Whether the arguments ask for a scaffold this kind can build.
pub fn check_checkout(tensors: &Path) -> Result<()> {
    if !tensors.join("Cargo.toml").is_file() {
        bail!(
            "cannot find swift-plugin-tensors at {}; pass --api-path to a swift-rs checkout's plugin-api",
            tensors.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_gets_the_target_folder_under_its_build_table() {
        let c = "[env]\nLIBTORCH = \"/t\"\n\n[build]\nrustflags = [\"-C\", \"x\"]\n";
        let out = cargo_config(
            c,
            Path::new("/r/.cargo/config.toml"),
            Path::new("/r/target"),
        );
        assert!(
            out.contains("[build]\ntarget-dir = \"/r/target\"\nrustflags"),
            "{out}"
        );
        let out = cargo_config("[env]\n", Path::new("/c"), Path::new("/r/target"));
        assert!(
            out.ends_with("[build]\ntarget-dir = \"/r/target\"\n"),
            "{out}"
        );
    }

    #[test]
    fn profiles_are_copied_verbatim() {
        let m = "[workspace]\nmembers = []\n\n[profile.dev]\ndebug = 1\n\n[profile.dev.package.\"*\"]\nopt-level = 2\n[x]\ny = 1\n";
        assert_eq!(
            profile_sections(m),
            "[profile.dev]\ndebug = 1\n\n[profile.dev.package.\"*\"]\nopt-level = 2\n"
        );
    }
}
