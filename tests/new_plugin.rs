//! `swift new-plugin` writes a crate that a third party builds exactly as its README says and
//! that `swift --plugin-dir NAME/target/release list` then loads; `--kind model-family` writes
//! a family with its own forward pass that builds on the host's compiled dependencies and
//! matches transformers as generated.

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

#[test]
fn scaffolded_model_family_builds_on_the_hosts_dependencies_and_matches_transformers() {
    // Exactly the printed instructions: new-plugin, `cd NAME && cargo build --release` (which
    // reuses this checkout's compiled torch-sys and tch), load it, run its comparison script
    // against transformers on the tiny random Llama.
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("acme-fam");
    let out = ok(swift(&[
        "new-plugin",
        "acme-fam",
        "--kind",
        "model-family",
        "--out",
        crate_dir.to_str().unwrap(),
    ]));
    let line = |prefix: &str| -> String {
        out.lines()
            .find_map(|l| {
                l.split_once(prefix)
                    .map(|(_, rest)| rest.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{out}"))
    };
    let build = line("):");
    assert_eq!(
        build,
        format!("cd {} && cargo build --release", crate_dir.display()),
        "{out}"
    );
    let load = line("then load it with:");
    let so = std::path::PathBuf::from(
        load.split_whitespace()
            .skip_while(|w| *w != "--plugin-dir")
            .nth(1)
            .unwrap_or_else(|| panic!("no --plugin-dir in: {load}")),
    );
    assert_eq!(
        so,
        workspace_root().join("target/release/libacme_fam.so"),
        "{out}"
    );

    // A plain cargo, as a third party runs it: none of this test's cargo environment.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-v"])
        .current_dir(&crate_dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let cargo_var = k.starts_with("CARGO_") && k != "CARGO_HOME";
        if cargo_var || k.starts_with("LIBTORCH") || k.starts_with("DEP_") || k == "RUSTFLAGS" {
            cmd.env_remove(&k);
        }
    }
    let t0 = std::time::Instant::now();
    let built = cmd.output().expect("cargo runs");
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "the scaffold builds:\n{log}");
    // torch-sys (minutes of C++) and tch come from the host's build.
    for dep in ["torch-sys", "tch"] {
        assert!(
            log.lines()
                .any(|l| l.trim_start().starts_with(&format!("Fresh {dep} v"))),
            "{dep} was rebuilt ({:.0} s):\n{log}",
            t0.elapsed().as_secs_f64()
        );
    }

    let listed = ok(swift(&[
        "--plugin-dir",
        so.to_str().unwrap(),
        "list",
        "models",
    ]));
    assert!(listed.contains("acme-fam"), "{listed}");

    let compare = line("and compare it with transformers:");
    let args: Vec<&str> = compare.split_whitespace().collect();
    let run = Command::new(args[0])
        .args(&args[1..])
        .current_dir(&crate_dir)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        text.contains("logits: max difference") && text.contains("greedy: ok"),
        "{text}"
    );
}
