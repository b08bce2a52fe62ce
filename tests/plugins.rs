//! End-to-end tests of plugin loading through the real `swift` binary: the example plugin, text
//! plugins, `SWIFT_PLUGIN_PATH`, conflicts and overrides, and every load-time failure built for
//! real (garbage file, foreign library, wrong contract, wrong libtorch, wrong layout, panicking
//! register). A bad plugin found by scanning is one warning; the host carries on.

use crate::common::*;
use serde_json::Value;

fn list_json(args: &[&str]) -> (Vec<Value>, String) {
    let mut full = args.to_vec();
    full.extend(["list", "templates", "--json"]);
    let out = swift(&full);
    let err = stderr(&out);
    let rows: Vec<Value> = serde_json::from_str(&ok(out)).expect("list --json prints JSON");
    (rows, err)
}

fn find<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["name"] == name)
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("WARN")).collect()
}

#[test]
fn example_plugin_template_is_listed_with_its_path() {
    let dir = plugin_dir_with(&["swift-example-plugin"]);
    let so = dir.path().join("libswift_example_plugin.so");
    let (rows, err) = list_json(&["--plugin-dir", dir.path().to_str().unwrap()]);
    let builtin = find(&rows, "chatml").expect("built-in chatml listed");
    assert_eq!(builtin["provenance"]["type"], "builtin");
    let ex = find(&rows, "example-chat").expect("example template listed");
    assert_eq!(ex["provenance"]["type"], "library");
    assert_eq!(ex["provenance"]["path"], so.to_str().unwrap());
    assert_eq!(ex["provenance"]["plugin"], "swift-example-plugin");
    assert!(warnings(&err).is_empty(), "no warnings expected:\n{err}");
    // The plugin's own log line reached the host's tracing, tagged with the plugin's name.
    assert!(
        err.contains("example plugin registered") && err.contains("swift-example-plugin"),
        "{err}"
    );

    // The other kinds it registers are there too.
    let out = ok(swift(&[
        "--plugin_dir",
        dir.path().to_str().unwrap(),
        "list",
        "--json",
    ]));
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("preprocessor", "example-faq")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("model", "example-smollm")), "{kinds:?}");
}

#[test]
fn plugin_path_variable_loads_files_and_directories() {
    let dir = plugin_dir_with(&["swift-example-plugin"]);
    let so = dir.path().join("libswift_example_plugin.so");
    let text_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        text_dir.path().join("org.toml"),
        "[[template]]\nname = \"org-chat\"\nprompt = \"Q: {{QUERY}}\\nA: \"\n",
    )
    .unwrap();
    let path = format!("{}:{}", so.display(), text_dir.path().display());
    let out = swift_env(
        &["list", "templates", "--json"],
        &[("SWIFT_PLUGIN_PATH", &path)],
    );
    let rows: Vec<Value> = serde_json::from_str(&ok(out)).unwrap();
    assert!(find(&rows, "example-chat").is_some());
    let org = find(&rows, "org-chat").expect("text plugin template listed");
    assert_eq!(org["provenance"]["type"], "text_file");
    assert_eq!(
        org["provenance"]["path"],
        text_dir.path().join("org.toml").to_str().unwrap()
    );
}

#[test]
fn garbage_so_is_one_warning_and_the_rest_loads() {
    let dir = plugin_dir_with(&["swift-example-plugin"]);
    std::fs::write(
        dir.path().join("garbage.so"),
        b"this is not an ELF file at all",
    )
    .unwrap();
    let (rows, err) = list_json(&["--plugin-dir", dir.path().to_str().unwrap()]);
    assert!(
        find(&rows, "example-chat").is_some(),
        "the good plugin still loads"
    );
    let w = warnings(&err);
    assert_eq!(w.len(), 1, "exactly one warning:\n{err}");
    assert!(
        w[0].contains("garbage.so") && w[0].contains("not a loadable shared library"),
        "{}",
        w[0]
    );
}

#[test]
fn each_bad_plugin_is_refused_with_its_reason() {
    let cases: &[(&str, &[&str])] = &[
        ("swift-fixture-not-a-plugin", &["not a swift-rs plugin"]),
        ("swift-fixture-bad-contract", &["contract v999", "rebuild"]),
        (
            "swift-fixture-libtorch-mismatch",
            &["built against libtorch 1.0.0, this swift uses 2.13.0", "rebuild"],
        ),
        (
            "swift-fixture-unknown-libtorch",
            &["does not know which libtorch", "rebuild it against swift-plugin-tensors"],
        ),
        // A stale plugin's manifest is read before its root module's layout.
        (
            "swift-fixture-old-contract",
            &["contract v2, this swift speaks v", "rebuild"],
        ),
        // One built before plugins exported their manifest: the layout error, what differs,
        // and why.
        (
            "swift-fixture-layout-mismatch",
            &[
                "incompatible plugin API",
                "mismatched package: expected swift-plugin-api, found swift-fixture-layout-mismatch",
                "older plugin-api",
            ],
        ),
        (
            "swift-fixture-panicking",
            &["panicked", "fixture panic inside register"],
        ),
    ];
    for (package, expected) in cases {
        let dir = plugin_dir_with(&[package, "swift-example-plugin"]);
        let (rows, err) = list_json(&["--plugin-dir", dir.path().to_str().unwrap()]);
        assert!(
            find(&rows, "example-chat").is_some(),
            "{package}: the good plugin still loads"
        );
        assert!(
            find(&rows, "never-registered").is_none(),
            "{package}: nothing registered"
        );
        assert!(
            find(&rows, "half-registered").is_none(),
            "{package}: a failed plugin keeps nothing"
        );
        let w = warnings(&err);
        assert_eq!(w.len(), 1, "{package}: exactly one warning:\n{err}");
        let file = fixture_so(package)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            w[0].contains(&file),
            "{package}: the warning names the file: {}",
            w[0]
        );
        for e in *expected {
            assert!(
                w[0].contains(e),
                "{package}: warning should contain `{e}`: {}",
                w[0]
            );
        }
    }
}

#[test]
fn a_bad_plugin_asked_for_by_path_is_an_error() {
    for package in ["swift-fixture-bad-contract", "swift-fixture-panicking"] {
        let so = fixture_so(package);
        let out = swift(&["--plugin-dir", so.to_str().unwrap(), "list"]);
        assert!(
            !out.status.success(),
            "{package}: named plugin must fail the command"
        );
        let err = stderr(&out);
        assert!(
            err.contains(so.to_str().unwrap()),
            "{package}: error names the file: {err}"
        );
    }
}

#[test]
fn duplicate_names_are_refused_naming_both_unless_overridden() {
    let dir = plugin_dir_with(&["swift-example-plugin", "swift-fixture-duplicate"]);
    let d = dir.path().to_str().unwrap();
    let dup = dir.path().join("libswift_fixture_duplicate.so");
    let example = dir.path().join("libswift_example_plugin.so");
    let (rows, err) = list_json(&["--plugin-dir", d]);
    // Sorted scan: the example plugin comes first and keeps `example-chat`.
    let ex = find(&rows, "example-chat").unwrap();
    assert_eq!(ex["provenance"]["path"], example.to_str().unwrap());
    assert_eq!(
        find(&rows, "chatml").unwrap()["provenance"]["type"],
        "builtin"
    );
    assert!(
        find(&rows, "duplicate-own").is_some(),
        "the plugin's other names still register"
    );
    let w = warnings(&err);
    assert_eq!(w.len(), 2, "one warning per refused name:\n{err}");
    let example_chat = w
        .iter()
        .find(|l| l.contains("`example-chat`"))
        .expect("example-chat warning");
    assert!(
        example_chat.contains(dup.to_str().unwrap())
            && example_chat.contains(example.to_str().unwrap())
    );
    let chatml = w
        .iter()
        .find(|l| l.contains("`chatml`"))
        .expect("chatml warning");
    assert!(
        chatml.contains("built-in (swift-plugin-templates)")
            && chatml.contains("--plugin_override")
    );

    // An organisation overriding a built-in template.
    let (rows, err) = list_json(&["--plugin-dir", d, "--plugin_override", "chatml"]);
    let chatml = find(&rows, "chatml").unwrap();
    assert_eq!(chatml["provenance"]["path"], dup.to_str().unwrap());
    assert_eq!(
        warnings(&err).len(),
        1,
        "only example-chat is still refused:\n{err}"
    );

    // Asked for by path, the conflict is an error naming both providers.
    let out = swift(&[
        "--plugin-dir",
        example.to_str().unwrap(),
        "--plugin-dir",
        dup.to_str().unwrap(),
        "list",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("example-chat") && err.contains(example.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn text_plugins_register_templates_and_datasets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.toml"),
        r#"
[[template]]
name = "acme-chat"
description = "ACME's private format"
prompt = "<|user|>{{QUERY}}<|bot|>"
suffix = "<|end|>"

[[dataset]]
name = "acme-faq"
path = "faq.jsonl"
"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.json"), "{ not json").unwrap();
    let out = swift(&[
        "--plugin-dir",
        dir.path().to_str().unwrap(),
        "list",
        "--json",
    ]);
    let err = stderr(&out);
    let rows: Vec<Value> = serde_json::from_str(&ok(out)).unwrap();
    assert!(rows
        .iter()
        .any(|r| r["kind"] == "template" && r["name"] == "acme-chat"));
    assert!(rows
        .iter()
        .any(|r| r["kind"] == "dataset" && r["name"] == "acme-faq"));
    let w = warnings(&err);
    assert_eq!(w.len(), 1, "{err}");
    assert!(
        w[0].contains("broken.json") && w[0].contains("invalid JSON plugin"),
        "{}",
        w[0]
    );
}

#[test]
fn config_file_and_environment_feed_global_settings() {
    let dir = plugin_dir_with(&["swift-example-plugin"]);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("swift.yaml");
    std::fs::write(&cfg, format!("plugin_dir:\n  - {}\n", dir.path().display())).unwrap();
    let (rows, _) = list_json(&["--config", cfg.to_str().unwrap()]);
    assert!(
        find(&rows, "example-chat").is_some(),
        "plugin_dir from the config file"
    );
    // SWIFT_LOG_LEVEL (environment) beats the default; the flag beats the environment.
    let out = swift_env(
        &["--config", cfg.to_str().unwrap(), "list", "templates"],
        &[("SWIFT_LOG_LEVEL", "error")],
    );
    assert!(
        !stderr(&out).contains("example plugin registered"),
        "env silences info lines"
    );
    let out = swift_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--log-level",
            "info",
            "list",
            "templates",
        ],
        &[("SWIFT_LOG_LEVEL", "error")],
    );
    assert!(
        stderr(&out).contains("example plugin registered"),
        "the flag wins over the env"
    );
}

#[test]
fn doctor_shows_both_sides_versions_and_only_what_differs() {
    // This swift: its contract, and the libtorch its engine records (read through the link
    // folder: the pinned torch, not "unknown").
    let out = ok(swift(&["doctor"]));
    for want in [
        "plugin contract: v5",
        "libtorch: 2.13.0",
        "tch: 0.26.0",
        "CPU: ",
        "decoding kernel: ",
        "bfloat16 decoding kernel: ",
        "weights read ahead while decoding: on (the default",
        "CUDA: ",
        "OpenMP wait policy: ",
    ] {
        assert!(out.contains(want), "`{want}` in:\n{out}");
    }
    // The user's kernel wins over the measured one, and doctor says so; bfloat16 weights
    // widened take the float kernel (on a CPU without AVX-512 BF16 they always do).
    let out = ok(swift_env(
        &["doctor"],
        &[("SWIFT_KERNEL", "portable"), ("SWIFT_BF16_KERNEL", "widen")],
    ));
    assert!(
        out.contains("decoding kernel: portable (SWIFT_KERNEL=portable (yours))"),
        "{out}"
    );
    assert!(
        out.contains("bfloat16 decoding kernel: portable ("),
        "{out}"
    );
    // Reading ahead turned off by the user, and doctor says so.
    let out = ok(swift_env(&["doctor"], &[("SWIFT_READ_AHEAD", "0")]));
    assert!(
        out.contains("weights read ahead while decoding: off (SWIFT_READ_AHEAD=0 (yours))"),
        "{out}"
    );
    // The user's own OpenMP setting wins, and doctor says so.
    let out = ok(swift_env(&["doctor"], &[("OMP_WAIT_POLICY", "ACTIVE")]));
    assert!(
        out.contains("OpenMP wait policy: OMP_WAIT_POLICY=ACTIVE (yours) for every command"),
        "{out}"
    );
    // A plugin built the documented way records the same libtorch, and what it registers.
    let example = fixture_so("swift-example-plugin");
    let out = ok(swift(&["doctor", "--plugin", example.to_str().unwrap()]));
    for want in [
        "libtorch: 2.13.0",
        "checks: contract, libtorch and tch match this swift",
        "root module: its layout matches",
        "model example-gpt2",
        "template example-chat",
    ] {
        assert!(out.contains(want), "`{want}` in:\n{out}");
    }
    // A layout error: the lines that say what differs, not abi_stable's whole report.
    let bad = fixture_so("swift-fixture-layout-mismatch");
    let out = ok(swift(&["doctor", "--plugin", bad.to_str().unwrap()]));
    assert!(
        out.contains(
            "mismatched package: expected swift-plugin-api, found swift-fixture-layout-mismatch"
        ),
        "{out}"
    );
    assert!(out.lines().count() < 20, "{out}");
    let stale = fixture_so("swift-fixture-old-contract");
    let out = ok(swift(&["doctor", "--plugin", stale.to_str().unwrap()]));
    assert!(
        out.contains("contract: v2") && out.contains("REFUSED: plugin `old-contract`"),
        "{out}"
    );
}
