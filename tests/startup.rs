//! The `swift` binary starts without libtorch: it does not link it, and the commands that need no
//! tensors (`--help`, `list`, `encode`, `new-plugin`, text-only plugins) never load it; the
//! tensor commands open the engine library (libswift_runtime.so), and a missing engine is a clear
//! error. (Start-up time itself is measured by scripts/bench_startup.sh, not here.)

use std::process::Command;

use crate::common::*;

/// The shared libraries the dynamic loader opened while running `swift args` (LD_DEBUG=files).
fn opened_libraries(args: &[&str], env: &[(&str, &str)]) -> (bool, Vec<String>) {
    let mut cmd = Command::new(swift_bin());
    cmd.args(args)
        .env("LD_DEBUG", "files")
        .env_remove("SWIFT_PLUGIN_PATH")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("swift runs");
    let opened = stderr(&out)
        .lines()
        .filter_map(|l| l.split("file=").nth(1))
        .map(|f| f.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    (out.status.success(), opened)
}

fn torch_among(libs: &[String]) -> Vec<&String> {
    libs.iter()
        .filter(|l| l.contains("libtorch") || l.contains("libc10"))
        .collect()
}

#[test]
fn the_binary_does_not_link_libtorch() {
    let out = Command::new("ldd")
        .arg(swift_bin())
        .output()
        .expect("ldd runs");
    let text = stdout(&out);
    assert!(out.status.success(), "ldd failed: {}", stderr(&out));
    let torch: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("libtorch") || l.contains("libc10"))
        .collect();
    assert!(
        torch.is_empty(),
        "target/release/swift links libtorch (a crate in its dependency graph pulled in tch; \
         keep tensor code in swift-plugin-tensors and the engine crates):\n{}",
        torch.join("\n")
    );
}

#[test]
fn commands_without_tensors_never_load_libtorch() {
    let text_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        text_dir.path().join("org.toml"),
        "[[template]]\nname = \"org-chat\"\nprompt = \"Q: {{QUERY}}\\nA: \"\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let new_plugin = out_dir.path().join("acme");
    let text = text_dir.path().to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["sft", "--help"],
        vec!["list"],
        vec!["--plugin-dir", text, "list", "templates"],
        vec![
            "new-plugin",
            "acme",
            "--kind",
            "template",
            "--out",
            new_plugin.to_str().unwrap(),
        ],
    ];
    for args in cases {
        let (ran, libs) = opened_libraries(&args, &[]);
        assert!(ran, "swift {args:?} failed");
        assert!(
            torch_among(&libs).is_empty(),
            "swift {args:?} loaded libtorch: {:?}",
            torch_among(&libs)
        );
    }
}

#[test]
fn list_shows_the_engines_built_ins_without_loading_it() {
    let (listed, libs) = opened_libraries(&["list", "--json"], &[]);
    assert!(listed);
    assert!(torch_among(&libs).is_empty(), "{libs:?}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&ok(swift(&["list", "--json"]))).unwrap();
    let has = |kind: &str, name: &str, plugin: &str| {
        rows.iter()
            .any(|r| r["kind"] == kind && r["name"] == name && r["provenance"]["plugin"] == plugin)
    };
    assert!(has("model", "llama", "swift-plugin-models"), "{rows:?}");
    assert!(has("model", "qwen3", "swift-plugin-models"));
    assert!(has("backend", "pt", "swift-plugin-models"));
    assert!(has("preference loss", "sigmoid", "swift-plugin-losses"));
    assert!(has(
        "preference loss",
        "bradley_terry",
        "swift-plugin-losses"
    ));
}

#[test]
fn tensor_commands_open_the_engine() {
    let (_, libs) = opened_libraries(&["export", "--from_gguf", "/nonexistent.gguf"], &[]);
    assert!(
        libs.iter().any(|l| l.ends_with("libswift_runtime.so")),
        "{libs:?}"
    );
    assert!(!torch_among(&libs).is_empty(), "{libs:?}");
}

#[test]
fn a_missing_engine_is_a_clear_error() {
    let missing = "/nonexistent/libswift_runtime.so";
    let out = swift_env(
        &["export", "--from_gguf", "/nonexistent.gguf"],
        &[("SWIFT_RS_RUNTIME", missing)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(missing) && err.contains("cargo build --release -p swift-runtime"),
        "{err}"
    );
    assert!(
        err.contains("`swift export` needs the tensor engine"),
        "{err}"
    );
}
