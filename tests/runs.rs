//! Run folders and crash-safe checkpoints (engine/train/src/run_dir.rs) through the real binary,
//! on the tiny llama (each run about a second):
//!
//! * a second run into the same `--output_dir` gets its own `v<N>-<timestamp>` folder and leaves
//!   the first run's files byte-identical; each run prints its folder; `--add_version false`
//!   refuses a folder that is not empty unless `--overwrite_output_dir true`;
//! * a kill (`SWIFT_RS_FAILPOINT`) at each file operation of a checkpoint save and of a
//!   `--save_total_limit` rotation leaves every visible checkpoint complete (its manifest checked
//!   here with `sha256sum`, its safetensors read) and resuming from the newest one gives the
//!   uninterrupted run's final weights, without touching the killed run's folder;
//! * a damaged or incomplete checkpoint is refused by `infer`, `export`, `deploy` and
//!   `--resume_from_checkpoint`, naming the file; one without a manifest loads with a warning.
//!
//! Replacing a checkpoint of the same step cannot happen through the binary (every run writes a
//! new folder); the kill points of a replace are unit tests in run_dir.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::common::*;

/// `swift sft` on the tiny model: 3 steps (unless `extra` says), a checkpoint every step, the
/// newest 2 kept.
fn train(data: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let model = tiny();
    let mut args = vec![
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
        "--save_steps",
        "1",
        "--save_total_limit",
        "2",
        "--learning_rate",
        "1e-2",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--max_steps") {
        args.extend(["--max_steps", "3"]);
    }
    swift_env(&args, &[&[ONE_THREAD], env].concat())
}

/// The uninterrupted run: (its dataset, its run folder).
fn uninterrupted() -> &'static (PathBuf, PathBuf) {
    static RUN: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let data = ten_chat_rows(&root);
        ok(train(&data, &root.join("whole"), &[], &[]));
        (data, run_folder(&root.join("whole")))
    })
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The names of a folder's entries, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The visible checkpoints of a run folder.
fn checkpoints(run: &Path) -> Vec<String> {
    entries(run)
        .into_iter()
        .filter(|n| n.starts_with("checkpoint-"))
        .collect()
}

/// Checks `ck/manifest.json` independently: every file of the folder listed, with the size the
/// file system reports and the sha256 `sha256sum` computes; the weights read as safetensors.
fn assert_complete(ck: &Path) {
    let manifest = read_json(&ck.join("manifest.json"));
    let files = manifest["files"].as_array().expect("manifest lists files");
    let mut listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    listed.sort();
    let mut present = entries(ck);
    present.retain(|n| n != "manifest.json");
    assert_eq!(listed, present, "{}", ck.display());
    for f in files {
        let p = ck.join(f["path"].as_str().unwrap());
        assert_eq!(f["size"].as_u64(), Some(file_size(&p)), "{}", p.display());
        let o = std::process::Command::new("sha256sum")
            .arg(&p)
            .output()
            .expect("sha256sum runs");
        let sum = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            f["sha256"].as_str(),
            sum.split_whitespace().next(),
            "{}",
            p.display()
        );
    }
    assert!(!read_safetensors(&ck.join("adapter_model.safetensors")).is_empty());
    assert!(!read_safetensors(&ck.join("optimizer.safetensors")).is_empty());
}

/// Asserts two adapters hold the same tensors (within the resume tests' 1e-6).
fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (
        tensors_by_name(&a.join("adapter_model.safetensors")),
        tensors_by_name(&b.join("adapter_model.safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    for (n, va) in &wa {
        let d = max_abs_diff(
            &va.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &wb[n].iter().map(|&x| x as f64).collect::<Vec<_>>(),
        );
        assert!(
            d < 1e-6,
            "{n} differs by {d}: {} vs {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn a_second_run_into_the_same_folder_leaves_the_first_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let out = tmp.path().join("out");
    let first = train(&data, &out, &[], &[]);
    let err = stderr(&first);
    let printed = ok(first);
    let run1 = run_folder(&out);
    // The folder is printed at the start and at the end.
    let line = format!("run folder: {}", run1.display());
    assert_eq!(err.matches(&line).count(), 2, "{err}");
    assert_eq!(printed.trim(), run1.join("checkpoint-3").to_str().unwrap());
    let name1 = run1.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name1.starts_with("v0-"), "{name1}");
    let before = snapshot(&run1);
    assert_eq!(checkpoints(&run1), ["checkpoint-2", "checkpoint-3"]);

    let second = ok(train(&data, &out, &["--max_steps", "2"], &[]));
    let runs = entries(&out);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[1].starts_with("v1-"), "{runs:?}");
    let run2 = out.join(&runs[1]);
    assert_eq!(second.trim(), run2.join("checkpoint-2").to_str().unwrap());
    assert_eq!(snapshot(&run1), before, "the first run's files changed");
    assert_eq!(step_losses(&run2).len(), 2);

    // --add_version false: the folder itself, which must be empty unless overwritten.
    assert_fails(
        train(&data, &out, &["--add_version", "false"], &[]),
        &["not empty", "--overwrite_output_dir true"],
    );
    assert_eq!(snapshot(&run1), before);
    let exact = tmp.path().join("exact");
    ok(train(&data, &exact, &["--add_version", "false"], &[]));
    assert_eq!(checkpoints(&exact), ["checkpoint-2", "checkpoint-3"]);
    std::fs::write(exact.join("notes.txt"), "mine").unwrap();
    ok(train(
        &data,
        &exact,
        &[
            "--add_version",
            "false",
            "--overwrite_output_dir",
            "true",
            "--max_steps",
            "1",
        ],
        &[],
    ));
    assert_eq!(
        entries(&exact),
        [
            "args.json",
            "checkpoint-1",
            "images",
            "logging.jsonl",
            "notes.txt"
        ]
    );
    assert_eq!(
        step_losses(&exact).len(),
        1,
        "the earlier run's log is gone"
    );
    assert_eq!(args_json(&exact)["max_steps"], 1);
    // Overwriting the folder a resumed run starts from is refused.
    let ck = exact.join("checkpoint-1");
    assert_fails(
        train(
            &data,
            &exact,
            &[
                "--add_version",
                "false",
                "--overwrite_output_dir",
                "true",
                "--resume_from_checkpoint",
                ck.to_str().unwrap(),
            ],
            &[],
        ),
        &["lies inside --output_dir", "leave --add_version on"],
    );
    assert!(ck.join("adapter_model.safetensors").is_file());
}

#[test]
fn kills_at_every_checkpoint_step_leave_loadable_checkpoints_and_resume_exactly() {
    let (data, whole) = uninterrupted();
    let final_weights = whole.join("checkpoint-3");
    let tmp = tempfile::tempdir().unwrap();
    // (failpoint, the visible checkpoints a kill there leaves)
    for (point, visible) in [
        (
            "checkpoint:before-manifest@3",
            &["checkpoint-1", "checkpoint-2"][..],
        ),
        (
            "checkpoint:after-manifest@3",
            &["checkpoint-1", "checkpoint-2"],
        ),
        (
            "checkpoint:after-rename@3",
            &["checkpoint-1", "checkpoint-2", "checkpoint-3"],
        ),
        (
            "rotate:after-rename-aside@1",
            &["checkpoint-2", "checkpoint-3"],
        ),
        ("rotate:mid-delete@1", &["checkpoint-2", "checkpoint-3"]),
    ] {
        let out = tmp.path().join(point.replace([':', '@'], "-"));
        let o = train(data, &out, &[], &[("SWIFT_RS_FAILPOINT", point)]);
        assert!(!o.status.success(), "{point}: the run was not killed");
        assert!(
            stderr(&o).contains(&format!("SWIFT_RS_FAILPOINT={point}: aborting")),
            "{point}: {}",
            stderr(&o)
        );
        let run = run_folder(&out);
        assert_eq!(checkpoints(&run), visible, "{point}");
        for ck in visible {
            assert_complete(&run.join(ck));
        }
        let newest = run.join(visible[visible.len() - 1]);
        if newest.ends_with("checkpoint-3") {
            assert_same_weights(&newest, &final_weights);
            continue;
        }
        if point == "checkpoint:after-manifest@3" {
            // Asking for the checkpoint the kill hid names its complete copy.
            assert_fails(
                swift(&[
                    "infer",
                    "--adapters",
                    run.join("checkpoint-3").to_str().unwrap(),
                ]),
                &["no such checkpoint folder", ".checkpoint-3.tmp"],
            );
        }
        let killed = snapshot(&run);
        let resumed_out = tmp.path().join(format!("{}-resumed", out.display()));
        let resumed = ok(train(
            data,
            &resumed_out,
            &["--resume_from_checkpoint", newest.to_str().unwrap()],
            &[],
        ));
        assert_same_weights(Path::new(resumed.trim()), &final_weights);
        assert_eq!(
            snapshot(&run),
            killed,
            "{point}: resuming touched the killed run"
        );
    }
}

#[test]
fn a_damaged_checkpoint_is_refused_naming_the_file() {
    let (data, whole) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the run folder to damage.
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for (p, bytes) in snapshot(whole) {
        let to = run.join(p.strip_prefix(whole).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    let ck = run.join("checkpoint-2");
    let c = ck.to_str().unwrap();
    // One byte changed, same size.
    let weights = ck.join("adapter_model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut bytes = original.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    let named = weights.to_str().unwrap();
    for args in [
        vec!["infer", "--adapters", c, "--debug_input_ids", "1,2,3"],
        vec!["export", "--adapters", c, "--merge_lora", "true"],
        vec!["deploy", "--adapters", c, "--port", "0"],
    ] {
        assert_fails(swift(&args), &[named, "sha256", "damaged"]);
    }
    std::fs::write(&weights, original).unwrap();
    // Truncated: the size is wrong.
    let opt = ck.join("optimizer.safetensors");
    let len = file_size(&opt);
    std::fs::write(&opt, &std::fs::read(&opt).unwrap()[..len as usize / 2]).unwrap();
    let mut resume = vec![
        "sft",
        "--model",
        "MODEL",
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        "OUT",
        "--resume_from_checkpoint",
        c,
    ];
    let model = tiny();
    let out = tmp.path().join("resumed");
    resume[2] = model.to_str().unwrap();
    resume[6] = out.to_str().unwrap();
    assert_fails(
        swift(&resume),
        &[
            "--resume_from_checkpoint",
            opt.to_str().unwrap(),
            &format!("{} bytes where manifest.json lists {len}", len / 2),
        ],
    );
    assert!(!out.exists(), "refused before the run folder");
    // Missing.
    let config = run.join("checkpoint-3/adapter_config.json");
    std::fs::remove_file(&config).unwrap();
    let c3 = run.join("checkpoint-3");
    assert_fails(
        swift(&["infer", "--adapters", c3.to_str().unwrap()]),
        &[config.to_str().unwrap(), "missing"],
    );
    // Without a manifest (an older swift-rs): loaded, with a warning.
    let old = tmp.path().join("old-checkpoint");
    std::fs::create_dir(&old).unwrap();
    for (p, bytes) in snapshot(&whole.join("checkpoint-3")) {
        if !p.ends_with("manifest.json") {
            std::fs::write(old.join(p.file_name().unwrap()), bytes).unwrap();
        }
    }
    let o = swift1(&[
        "infer",
        "--adapters",
        old.to_str().unwrap(),
        "--debug_input_ids",
        "1,2,3",
    ]);
    let err = stderr(&o);
    ok(o);
    assert!(
        err.contains("has no manifest.json") && err.contains("cannot be checked"),
        "{err}"
    );
}

#[test]
fn a_damaged_full_checkpoint_is_refused_as_a_model() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("full");
    let printed = ok(train(
        data,
        &out,
        &["--tuner_type", "full", "--max_steps", "1"],
        &[],
    ));
    let ck = PathBuf::from(printed.trim());
    assert_complete_full(&ck);
    let weights = ck.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    assert_fails(
        swift(&[
            "infer",
            "--model",
            ck.to_str().unwrap(),
            "--debug_input_ids",
            "1,2",
        ]),
        &["--model", weights.to_str().unwrap(), "damaged"],
    );
}

/// A full checkpoint's manifest lists its model files.
fn assert_complete_full(ck: &Path) {
    let manifest = read_json(&ck.join("manifest.json"));
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
    ] {
        assert!(listed.contains(&f), "{f} not in {listed:?}");
    }
}
