//! The plugin fixtures the tests load: built once per test process into the workspace's target
//! folder, and copied into fresh plugin folders.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::workspace_root;

/// The plugin crates the tests load, by package name.
pub const FIXTURES: &[&str] = &[
    "swift-example-plugin",
    "swift-fixture-bad-contract",
    "swift-fixture-libtorch-mismatch",
    "swift-fixture-unknown-libtorch",
    "swift-fixture-old-contract",
    "swift-fixture-panicking",
    "swift-fixture-duplicate",
    "swift-fixture-layout-mismatch",
    "swift-fixture-not-a-plugin",
];

/// Builds every plugin fixture (once per test process) and returns the directory of the .so
/// files.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--release", "--quiet"]);
        for f in FIXTURES {
            cmd.args(["-p", f]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the plugin fixtures failed");
        target_dir().join("release")
    })
}

/// Cargo's target directory (honours CARGO_TARGET_DIR, like the cargo that built these tests).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// The .so of one fixture package.
pub fn fixture_so(package: &str) -> PathBuf {
    fixture_dir().join(format!("lib{}.so", package.replace('-', "_")))
}

/// A fresh directory holding copies of the given fixtures' .so files.
pub fn plugin_dir_with(packages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for p in packages {
        let src = fixture_so(p);
        let name = src.file_name().expect("a file name");
        std::fs::copy(&src, dir.path().join(name)).expect("copy fixture");
    }
    dir
}
