//! The run folder: `output/<model>/v<N>-<YYYYmmdd-HHMMSS>/` (or `--output_dir`), holding
//! `args.json`, `logging.jsonl` (one JSON object per logging step, flushed as written) and
//! `checkpoint-<step>/` folders.
//!
//! Checkpoints are written into `.checkpoint-<step>.tmp/`, synced, and renamed into place, so a
//! crash mid-save leaves at most a temporary folder (removed when the run folder is next opened),
//! never a `checkpoint-N` that looks complete but is not. `save_total_limit` keeps the newest N.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A run-folder operation that failed, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    log: File,
}

impl RunDir {
    /// Opens `output_dir` if given, else creates `<base>/<model_name>/v<N>-<timestamp>/` with N one
    /// more than the highest existing version. Stale temporary checkpoints are removed.
    pub fn open(
        output_dir: Option<&Path>,
        base: &Path,
        model_name: &str,
    ) -> Result<Self, RunDirError> {
        let root = match output_dir {
            Some(d) => d.to_path_buf(),
            None => {
                let parent = base.join(model_name);
                let next = next_version(&parent)?;
                parent.join(format!("v{next}-{}", timestamp(SystemTime::now())))
            }
        };
        fs::create_dir_all(&root).map_err(io(&root))?;
        for entry in fs::read_dir(&root).map_err(io(&root))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        let log_path = root.join("logging.jsonl");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        Ok(Self { root, log })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `args.json` (atomically).
    pub fn write_args(&self, args: &serde_json::Value) -> Result<(), RunDirError> {
        let text = serde_json::to_string_pretty(args).map_err(|e| RunDirError::Invalid {
            path: self.root.join("args.json"),
            message: e.to_string(),
        })?;
        write_atomic(&self.root.join("args.json"), text.as_bytes())
    }

    /// Appends one record to `logging.jsonl` and flushes it.
    pub fn log(&mut self, record: &serde_json::Value) -> Result<(), RunDirError> {
        let path = self.root.join("logging.jsonl");
        writeln!(self.log, "{record}")
            .and_then(|_| self.log.flush())
            .map_err(io(&path))
    }

    /// Starts writing `checkpoint-<step>`.
    pub fn begin_checkpoint(&self, step: u64) -> Result<CheckpointWriter, RunDirError> {
        let tmp = self.root.join(format!(".checkpoint-{step}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(CheckpointWriter {
            tmp,
            dest: self.root.join(format!("checkpoint-{step}")),
        })
    }

    /// Completed checkpoints, oldest first, as (step, path).
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>, RunDirError> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&self.root)
            .map_err(io(&self.root))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes the oldest completed checkpoints beyond `limit`.
    pub fn rotate(&self, limit: usize) -> Result<(), RunDirError> {
        let all = self.checkpoints()?;
        let excess = all.len().saturating_sub(limit);
        for (_, p) in all.into_iter().take(excess) {
            fs::remove_dir_all(&p).map_err(io(&p))?;
        }
        Ok(())
    }
}

/// A checkpoint being written: put files under [`CheckpointWriter::dir`], then [`commit`].
///
/// [`commit`]: CheckpointWriter::commit
#[derive(Debug)]
pub struct CheckpointWriter {
    tmp: PathBuf,
    dest: PathBuf,
}

impl CheckpointWriter {
    /// Where to write the checkpoint's files.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Syncs every file and renames the folder into place; returns the final path.
    pub fn commit(self) -> Result<PathBuf, RunDirError> {
        for entry in fs::read_dir(&self.tmp).map_err(io(&self.tmp))?.flatten() {
            let p = entry.path();
            if p.is_file() {
                File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
            }
        }
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).map_err(io(&self.dest))?;
        }
        fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        if let Some(parent) = self.dest.parent() {
            // Make the rename itself durable.
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(self.dest)
    }
}

/// Writes a file through a temporary name and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn next_version(parent: &Path) -> Result<u64, RunDirError> {
    if !parent.exists() {
        return Ok(0);
    }
    let max = fs::read_dir(parent)
        .map_err(io(parent))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix('v')?
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    Ok(max.map_or(0, |m| m + 1))
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-28 14:53:10 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_877_590);
        assert_eq!(timestamp(t), "20261128-145310");
        // A leap day.
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
    }

    #[test]
    fn versions_count_up_and_logs_append() {
        let base = tempfile::tempdir().unwrap();
        let mut a = RunDir::open(None, base.path(), "SmolLM2").unwrap();
        assert!(a
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("v0-"));
        a.log(&serde_json::json!({"loss": 1.5, "step": 1})).unwrap();
        a.log(&serde_json::json!({"loss": 1.25, "step": 2}))
            .unwrap();
        let text = fs::read_to_string(a.path().join("logging.jsonl")).unwrap();
        assert_eq!(
            text,
            "{\"loss\":1.5,\"step\":1}\n{\"loss\":1.25,\"step\":2}\n"
        );
        a.write_args(&serde_json::json!({"model": "m"})).unwrap();
        assert!(a.path().join("args.json").is_file());
        let b = RunDir::open(None, base.path(), "SmolLM2").unwrap();
        assert!(b
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("v1-"));
    }

    #[test]
    fn checkpoints_appear_only_when_committed_and_rotate() {
        let base = tempfile::tempdir().unwrap();
        let out = base.path().join("run");
        let run = RunDir::open(Some(&out), base.path(), "m").unwrap();
        for step in [10, 20, 30] {
            let w = run.begin_checkpoint(step).unwrap();
            fs::write(w.dir().join("adapter_model.safetensors"), b"weights").unwrap();
            assert!(
                run.checkpoints().unwrap().iter().all(|(s, _)| *s != step),
                "not visible before commit"
            );
            w.commit().unwrap();
        }
        // A crash mid-save leaves only a temporary folder, which the next open removes.
        let crashed = run.begin_checkpoint(40).unwrap();
        fs::write(crashed.dir().join("half"), b"x").unwrap();
        drop(crashed);
        assert_eq!(run.checkpoints().unwrap().len(), 3);
        let run = RunDir::open(Some(&out), base.path(), "m").unwrap();
        assert!(!out.join(".checkpoint-40.tmp").exists());
        run.rotate(2).unwrap();
        let steps: Vec<u64> = run
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [20, 30]);
    }
}
