//! `swift new-plugin` writes a crate that a third party builds exactly as its README says and
//! that `swift --plugin-dir NAME/target/release list` then loads.

use std::process::Command;

use crate::common::*;

#[test]
fn scaffolded_template_plugin_builds_and_loads() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("acme");
    let out = ok(swift(&[
        "new-plugin",
        "acme",
        "--kind",
        "template",
        "--out",
        crate_dir.to_str().unwrap(),
    ]));
    assert!(out.contains("cargo build --release"), "{out}");
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert!(readme.contains("--plugin-dir target/release"), "{readme}");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&crate_dir)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the scaffolded plugin builds");

    let release = crate_dir.join("target/release");
    let out = ok(swift(&[
        "--plugin-dir",
        release.to_str().unwrap(),
        "list",
        "templates",
    ]));
    assert!(out.contains("acme"), "{out}");
    assert!(
        out.contains(release.join("libacme.so").to_str().unwrap()),
        "{out}"
    );

    // Refuses to overwrite, and refuses names that are not crate names.
    let again = swift(&[
        "new-plugin",
        "acme",
        "--kind",
        "template",
        "--out",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success() && stderr(&again).contains("not empty"));
    let bad = swift(&["new-plugin", "9lives", "--kind", "model"]);
    assert!(!bad.status.success() && stderr(&bad).contains("not a valid crate name"));
}

#[test]
fn every_kind_scaffolds_a_crate_that_compiles() {
    // `cargo check` of each kind's lib.rs against this checkout's plugin-api (sharing one target
    // dir keeps this quick); the template kind is built and loaded for real above.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    for kind in ["dataset", "model", "tuner", "quantizer", "backend"] {
        let dir = work.path().join(format!("p-{kind}"));
        ok(swift(&[
            "new-plugin",
            &format!("p-{kind}"),
            "--kind",
            kind,
            "--out",
            dir.to_str().unwrap(),
        ]));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["check", "--quiet"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "{kind} plugin compiles");
    }
}
