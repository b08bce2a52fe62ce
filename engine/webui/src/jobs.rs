//! The runs the web UI starts (train, eval, export), one folder each, `OUTPUT/webui/ID/`:
//!
//! * `job.json`: the command, the argument list launched (after `swift`), the child's PID and
//!   when it started; written before the page hears of it;
//! * `stdout.log`, `stderr.log`: what the child printed (its log and progress);
//! * `exit.json`: its exit code (written by the thread that waits for it); `stopped`: the stop
//!   button was pressed;
//! * the command's own output: the run folder `v<N>-<timestamp>/` of a training run or an
//!   evaluation (the job folder is its `--output_dir`), `result/` of an export.
//!
//! Everything shown is read back from these files, so the list survives a reload and a server
//! restart. A child runs in its own process group, so it outlives the server; stopping one
//! checks first that the PID is still that run's (its command line names the job folder).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobFile {
    pub id: String,
    pub command: String,
    /// The arguments after the program name, as launched.
    pub argv: Vec<String>,
    pub pid: u32,
    /// Seconds since the epoch.
    pub started: u64,
}

pub struct Jobs {
    dir: PathBuf,
    swift: PathBuf,
    global_args: Vec<String>,
    counter: std::sync::atomic::AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The commands a page may launch as jobs.
pub const COMMANDS: [&str; 5] = ["pt", "sft", "rlhf", "eval", "export"];

impl Jobs {
    pub fn open(dir: PathBuf, swift: PathBuf, global_args: Vec<String>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            swift,
            global_args,
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty job folder for `command` (its name is its id).
    pub fn new_dir(&self, command: &str) -> std::io::Result<(String, PathBuf)> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        loop {
            let n = self
                .counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("{command}-{millis}-{n}");
            let dir = self.dir.join(&id);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The whole argument list after the program name: the global flags, then `args`.
    pub fn full_argv(&self, args: &[String]) -> Vec<String> {
        let mut v = self.global_args.clone();
        v.extend(args.iter().cloned());
        v
    }

    /// Starts `swift ARGV` (`argv` from [`Self::full_argv`]) in job folder `dir`; returns
    /// once `job.json` is written. A thread waits for the child and writes `exit.json`.
    pub fn spawn(
        &self,
        id: &str,
        dir: &Path,
        command: &str,
        argv: Vec<String>,
    ) -> Result<(), String> {
        let out = File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let err = File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.swift)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.swift.display()))?;
        let job = JobFile {
            id: id.to_string(),
            command: command.to_string(),
            argv,
            pid: child.id(),
            started: now(),
        };
        let text = serde_json::to_string_pretty(&job).map_err(|e| e.to_string())?;
        if let Err(e) = std::fs::write(dir.join("job.json"), text) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{}: {e}", dir.join("job.json").display()));
        }
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait();
            let record = match status {
                Ok(s) => json!({"code": s.code(), "signal": s.signal(), "finished": now()}),
                Err(e) => json!({"code": null, "error": e.to_string(), "finished": now()}),
            };
            let _ = std::fs::write(dir.join("exit.json"), record.to_string());
        });
        Ok(())
    }

    fn job(&self, id: &str) -> Option<(PathBuf, JobFile)> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let dir = self.dir.join(id);
        let text = std::fs::read_to_string(dir.join("job.json")).ok()?;
        Some((dir, serde_json::from_str(&text).ok()?))
    }

    /// Every job, newest first: id, command, state, start.
    pub fn list(&self) -> Vec<Value> {
        let mut jobs: Vec<(u64, Value)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                let (dir, job) = self.job(&id)?;
                let (state, _) = state(&dir, &job);
                Some((
                    job.started,
                    json!({"id": job.id, "command": job.command, "state": state, "started": job.started}),
                ))
            })
            .collect();
        jobs.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| b.1["id"].as_str().cmp(&a.1["id"].as_str()))
        });
        jobs.into_iter().map(|(_, v)| v).collect()
    }

    /// One job: its state, command line, log, metrics, checkpoints and results.
    pub fn detail(&self, id: &str) -> Option<Value> {
        let (dir, job) = self.job(id)?;
        let (state, code) = state(&dir, &job);
        let stderr = tail(&dir.join("stderr.log"), 64 * 1024);
        let stdout = tail(&dir.join("stdout.log"), 16 * 1024);
        let log: Vec<&str> = stderr
            .split(['\n', '\r'])
            .filter(|l| !l.trim().is_empty())
            .collect();
        let log_tail = log[log.len().saturating_sub(200)..].join("\n");
        let error = log
            .iter()
            .rev()
            .find(|l| l.starts_with("error:") || l.contains("panicked"))
            .map(|l| l.to_string());
        let run = run_folder(&dir);
        let (points, checkpoints, report) = match &run {
            Some(r) => (
                read_jsonl(&r.join("logging.jsonl")),
                checkpoints(r),
                std::fs::read_to_string(r.join("report.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        let error = if state == "failed" { error } else { None };
        let result = dir.join("result");
        let outputs: Vec<String> = std::fs::read_dir(&result)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().display().to_string())
            .collect();
        Some(json!({
            "id": job.id,
            "command": job.command,
            "argv": job.argv,
            "line": command_line(&job.argv),
            "pid": job.pid,
            "started": job.started,
            "state": state,
            "code": code,
            "error": error,
            "log": log_tail,
            "stdout": stdout,
            "run_dir": run.map(|r| r.display().to_string()),
            "points": points,
            "checkpoints": checkpoints,
            "report": report,
            "outputs": outputs,
        }))
    }

    /// Stops a running job (SIGTERM to its process group).
    pub fn stop(&self, id: &str) -> Result<(), String> {
        let (dir, job) = self.job(id).ok_or_else(|| format!("no run {id}"))?;
        if !alive(job.pid, &dir) {
            return Err(format!("run {id} is not running"));
        }
        std::fs::write(dir.join("stopped"), now().to_string()).map_err(|e| e.to_string())?;
        let pid = i32::try_from(job.pid).map_err(|_| "a PID out of range".to_string())?;
        // SAFETY: kill(2) with a process group id (negative) and a signal number; no memory.
        let r = unsafe { libc::kill(-pid, libc::SIGTERM) };
        if r != 0 {
            return Err(format!(
                "cannot stop process group {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// Whether `pid` is running and is this job's (its command line names the job folder; a PID
/// reused after a reboot is not).
fn alive(pid: u32, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    let needle = dir.display().to_string();
    !zombie
        && String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a.starts_with(&needle))
}

/// `running`, `finished`, `failed`, `stopped`, or `ended` (the server restarted while it ran,
/// so its exit code is unknown, and it printed no error); with the exit code when known.
fn state(dir: &Path, job: &JobFile) -> (&'static str, Option<i64>) {
    let stopped = dir.join("stopped").exists();
    if let Some(exit) = std::fs::read_to_string(dir.join("exit.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        let code = exit["code"].as_i64();
        return match (code, stopped) {
            (Some(0), _) => ("finished", code),
            (_, true) => ("stopped", code),
            _ => ("failed", code),
        };
    }
    if alive(job.pid, dir) {
        return ("running", None);
    }
    if stopped {
        return ("stopped", None);
    }
    let err = tail(&dir.join("stderr.log"), 16 * 1024);
    if err
        .lines()
        .any(|l| l.starts_with("error:") || l.contains("panicked"))
    {
        ("failed", None)
    } else {
        ("ended", None)
    }
}

/// The last `max` bytes of a file (lossy UTF-8), from a line start.
fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if from > 0 {
        match text.find('\n') {
            Some(i) => text[i + 1..].to_string(),
            None => text,
        }
    } else {
        text
    }
}

/// The newest `v<N>-<timestamp>/` run folder in a job folder.
fn run_folder(dir: &Path) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.split_once('-'))
                    .is_some_and(|(n, _)| n.parse::<u64>().is_ok())
        })
        .collect();
    runs.sort();
    runs.pop()
}

/// The complete checkpoints of a run folder (those whose manifest is written), by step.
fn checkpoints(run: &Path) -> Vec<String> {
    let mut c: Vec<(u64, String)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let step = p
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            p.join("manifest.json")
                .is_file()
                .then(|| (step, p.display().to_string()))
        })
        .collect();
    c.sort();
    c.into_iter().map(|(_, p)| p).collect()
}

/// The JSON lines of a file (a partial last line is left for the next read).
fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The argument list as one command line a shell reads back as the same list.
pub fn command_line(argv: &[String]) -> String {
    let mut parts = vec!["swift".to_string()];
    parts.extend(argv.iter().map(|a| quote(a)));
    parts.join(" ")
}

fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+#@%".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_quotes_what_a_shell_would_split() {
        let argv: Vec<String> = [
            "sft",
            "--system",
            "Be brief.",
            "--model",
            "/m/x",
            "--columns",
            r#"{"a": "b"}"#,
            "--x",
            "it's",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            command_line(&argv),
            r#"swift sft --system 'Be brief.' --model /m/x --columns '{"a": "b"}' --x 'it'\''s'"#
        );
    }

    #[test]
    fn a_job_is_read_back_from_its_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(tmp.path().join("webui"), "/bin/sh".into(), vec![]).unwrap();
        let (id, dir) = jobs.new_dir("sft").unwrap();
        let argv = vec![
            "-c".to_string(),
            format!("echo 'error: boom' >&2; exit 3 # {}", dir.display()),
        ];
        jobs.spawn(&id, &dir, "sft", argv).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dir.join("exit.json").exists() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let d = jobs.detail(&id).unwrap();
        assert_eq!(d["state"], "failed");
        assert_eq!(d["code"], 3);
        assert_eq!(d["error"], "error: boom");
        assert_eq!(jobs.list()[0]["id"], id.as_str());
        assert!(jobs.detail("../x").is_none());
        assert!(jobs.stop(&id).unwrap_err().contains("not running"));
    }
}
