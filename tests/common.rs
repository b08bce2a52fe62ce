//! Shared helpers for the end-to-end tests: the `swift` binary, the plugin fixtures (built once
//! per test binary, without the host's `tensors` feature, into the workspace's target dir), and
//! running commands.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `swift` binary cargo built for this test run.
pub fn swift_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_swift"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The plugin crates the tests load, by package name.
pub const FIXTURES: &[&str] = &[
    "swift-example-plugin",
    "swift-fixture-bad-contract",
    "swift-fixture-libtorch-mismatch",
    "swift-fixture-panicking",
    "swift-fixture-duplicate",
    "swift-fixture-layout-mismatch",
    "swift-fixture-not-a-plugin",
];

/// Builds every plugin fixture (once per test binary) and returns the directory of the .so files.
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
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).expect("copy fixture");
    }
    dir
}

/// Runs swift with the given arguments and no SWIFT_* variables from the outside.
pub fn swift(args: &[&str]) -> Output {
    swift_env(args, &[])
}

pub fn swift_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(swift_bin());
    cmd.args(args)
        .env_remove("SWIFT_PLUGIN_PATH")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("swift runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "swift failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}
