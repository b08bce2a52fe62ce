//! A page's form → the argument list of the run it launches, which is also the command line the
//! page shows (one list, built once): the command, `--FLAG VALUE...` for each field the user set,
//! and the job's `--output_dir`. Refused before anything starts: a command the UI does not
//! launch, a flag the UI sets itself or that reaches outside it (`--config`, `--plugin-dir`), a
//! value the command line would read as a flag (`-…`, numbers aside), a path that does not exist or resolves (symlinks included) outside the allowed roots, and
//! whatever the command line itself refuses (an unknown flag, a value out of range: the host's
//! check, [`crate::ArgCheck`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::safety::Roots;

/// One field's value: text, several values, or a switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    One(String),
    Many(Vec<String>),
}

/// What a page sends to preview or launch a run.
#[derive(Debug, Clone, Deserialize)]
pub struct RunRequest {
    pub command: String,
    #[serde(default)]
    pub flags: BTreeMap<String, FlagValue>,
}

/// Flags the web UI sets itself, or that would load files or code from elsewhere.
const UI_FLAGS: [&str; 7] = [
    "output_dir",
    "add_version",
    "overwrite_output_dir",
    "config",
    "plugin_dir",
    "plugin_override",
    "log_level",
];

/// Flags whose values are existing paths.
const PATH_FLAGS: [&str; 5] = [
    "model",
    "adapters",
    "ref_model",
    "resume_from_checkpoint",
    "from_gguf",
];

/// Flags whose values are registered names or existing files (with `#N` sampling).
const DATA_FLAGS: [&str; 3] = ["dataset", "val_dataset", "eval_dataset"];

/// Flags whose values are files the run writes.
const OUTPUT_FLAGS: [&str; 1] = ["result_path"];

/// The names (and aliases) of the registered datasets and benchmarks.
pub fn registered_names(catalogue: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for row in catalogue.as_array().into_iter().flatten() {
        if matches!(row["kind"].as_str(), Some("dataset" | "benchmark")) {
            names.extend(row["name"].as_str().map(String::from));
            for a in row["aliases"].as_array().into_iter().flatten() {
                names.extend(a.as_str().map(String::from));
            }
        }
    }
    names
}

/// Where a command's output goes inside its job folder.
pub fn output_dir(command: &str, job_dir: &Path) -> std::path::PathBuf {
    if command == "export" {
        job_dir.join("result")
    } else {
        job_dir.to_path_buf()
    }
}

/// The arguments after `swift` (the global flags excluded) for `req`, run in `job_dir`.
pub fn build(
    req: &RunRequest,
    job_dir: &Path,
    roots: &Roots,
    registered: &[String],
    check: &crate::ArgCheck,
) -> Result<Vec<String>, String> {
    if !crate::jobs::COMMANDS.contains(&req.command.as_str()) {
        return Err(format!(
            "the web UI launches {} runs, not `{}`",
            crate::jobs::COMMANDS.join(", "),
            req.command
        ));
    }
    let mut argv = vec![req.command.clone()];
    for (flag, value) in &req.flags {
        if flag.is_empty()
            || !flag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("`{flag}` is not a flag name"));
        }
        if UI_FLAGS.contains(&flag.as_str()) {
            return Err(format!(
                "--{flag} is set by the web UI (each run writes into its own folder under {}); \
                 drop it",
                roots.output().join("webui").display()
            ));
        }
        let values: Vec<String> = match value {
            FlagValue::Bool(b) => vec![b.to_string()],
            FlagValue::One(s) if is_multi(flag) => s.split_whitespace().map(String::from).collect(),
            FlagValue::One(s) => vec![s.trim().to_string()],
            FlagValue::Many(v) => v.iter().map(|s| s.trim().to_string()).collect(),
        };
        let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            continue;
        }
        let mut checked = Vec::new();
        for v in values {
            let field = |e: String| format!("--{flag}: {e}");
            if v.starts_with('-') && v.parse::<f64>().is_err() {
                // The command line would read it as a flag of its own (`--config=FILE`).
                return Err(field(format!("`{v}`: a value may not start with `-`")));
            }
            let v = if PATH_FLAGS.contains(&flag.as_str()) {
                display(&roots.existing(&v).map_err(field)?)
            } else if DATA_FLAGS.contains(&flag.as_str()) {
                let (name, sample) = match v.rsplit_once('#') {
                    Some((n, s)) if s.parse::<u64>().is_ok() => (n.to_string(), format!("#{s}")),
                    _ => (v.clone(), String::new()),
                };
                if registered.contains(&name) {
                    v
                } else {
                    format!(
                        "{}{sample}",
                        display(&roots.existing(&name).map_err(field)?)
                    )
                }
            } else if OUTPUT_FLAGS.contains(&flag.as_str()) {
                display(&roots.writable(&v).map_err(field)?)
            } else if Path::new(&v).exists() {
                // Any other value naming a file or folder (`--loss_scale FILE.json`).
                display(&roots.existing(&v).map_err(field)?)
            } else {
                v
            };
            checked.push(v);
        }
        argv.push(format!("--{flag}"));
        argv.extend(checked);
    }
    argv.push("--output_dir".into());
    argv.push(display(&output_dir(&req.command, job_dir)));
    check(&argv).map_err(|e| format!("swift {}: {e}", req.command))?;
    Ok(argv)
}

/// Flags that take several values (written space-separated in a text field).
fn is_multi(flag: &str) -> bool {
    matches!(
        flag,
        "dataset"
            | "val_dataset"
            | "eval_dataset"
            | "adapters"
            | "target_modules"
            | "modules_to_save"
            | "feedforward_modules"
    )
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(command: &str, flags: &[(&str, &str)]) -> RunRequest {
        RunRequest {
            command: command.into(),
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), FlagValue::One(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn a_form_becomes_one_checked_argument_list() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("model")).unwrap();
        std::fs::write(data.join("rows.jsonl"), "{}").unwrap();
        let roots = Roots::new(&out, std::slice::from_ref(&data)).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let check: crate::ArgCheck = Arc::new(move |a: &[String]| {
            s2.lock().unwrap().push(a.to_vec());
            if a.iter().any(|x| x == "--nope") {
                Err("unexpected argument '--nope' found".into())
            } else {
                Ok(())
            }
        });
        let job = roots.output().join("webui/sft-1");
        let model = data.join("model").canonicalize().unwrap();
        let rows = data.join("rows.jsonl").canonicalize().unwrap();
        let names = vec!["alpaca-en-demo".to_string()];
        let r = req(
            "sft",
            &[
                ("model", model.to_str().unwrap()),
                ("dataset", &format!("{} alpaca-en-demo#3", rows.display())),
                ("system", "Be brief."),
                ("lora_rank", ""),
            ],
        );
        let argv = build(&r, &job, &roots, &names, &check).unwrap();
        let want: Vec<String> = [
            "sft",
            "--dataset",
            rows.to_str().unwrap(),
            "alpaca-en-demo#3",
            "--model",
            model.to_str().unwrap(),
            "--system",
            "Be brief.",
            "--output_dir",
            job.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(argv, want);
        assert_eq!(
            seen.lock().unwrap().last().unwrap(),
            &want,
            "the list checked is the list launched"
        );

        let e = build(&req("sft", &[("nope", "1")]), &job, &roots, &names, &check).unwrap_err();
        assert!(e.contains("--nope"), "{e}");
        let e = build(
            &req("sft", &[("dataset", "/nonexistent/rows.jsonl")]),
            &job,
            &roots,
            &names,
            &check,
        )
        .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = build(
            &req("sft", &[("model", "/etc")]),
            &job,
            &roots,
            &names,
            &check,
        )
        .unwrap_err();
        assert!(e.contains("outside the allowed roots"), "{e}");
        let e = build(
            &req("sft", &[("config", "x.yaml")]),
            &job,
            &roots,
            &names,
            &check,
        )
        .unwrap_err();
        assert!(e.contains("--config is set by the web UI"), "{e}");
        let e = build(&req("deploy", &[]), &job, &roots, &names, &check).unwrap_err();
        assert!(e.contains("not `deploy`"), "{e}");
        let e = build(
            &req("sft", &[("dataset", "alpaca-en-demo --config=/x")]),
            &job,
            &roots,
            &names,
            &check,
        )
        .unwrap_err();
        assert!(e.contains("may not start with `-`"), "{e}");
        assert!(build(
            &req("sft", &[("learning_rate", "-1")]),
            &job,
            &roots,
            &names,
            &check
        )
        .is_ok());
        let e = build(&req("sft", &[("a b", "1")]), &job, &roots, &names, &check).unwrap_err();
        assert!(e.contains("not a flag name"), "{e}");
        let argv = build(&req("export", &[]), &job, &roots, &names, &check).unwrap();
        assert_eq!(argv.last().unwrap(), job.join("result").to_str().unwrap());
    }
}
