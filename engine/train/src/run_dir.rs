//! The run folder and its checkpoints, crash-safe.
//!
//! **Run folders.** `--output_dir` (default `output/<model>`) is a parent folder: every run,
//! resumes included, gets its own `v<N>-<YYYYmmdd-HHMMSS>/` inside it, N one more than the
//! highest there (`--add_version`, default on; the folder is created exclusively, so two runs
//! starting together get different N). With `--add_version false` the run writes into the folder
//! itself, which must be empty or new, unless `--overwrite_output_dir true`: then the earlier
//! run's files (`args.json`, `logging.jsonl`, `images/`, `checkpoint-*`, leftovers) are deleted
//! first and anything else is left alone. A run folder holds `args.json`, `logging.jsonl` (one
//! JSON object per logging step, flushed as written) and `checkpoint-<step>/` folders.
//!
//! **Checkpoints.** Each is written into `.checkpoint-<step>.tmp/`, ends with `manifest.json`
//! (every file's path, size and sha256; written last, so a temporary copy without it is
//! incomplete), is synced, and becomes visible by one rename. A checkpoint being replaced, or
//! deleted by `--save_total_limit` rotation, is first renamed aside to `.checkpoint-<step>.old/`
//! and deleted after. So at every instant each visible `checkpoint-N/` is complete; a kill leaves
//! at most hidden leftovers. Those stay where they are: a later run never writes into a killed
//! run's folder (it gets its own), and [`verify_checkpoint`] only reads. When the checkpoint it is
//! asked for is missing or damaged and a complete copy lies beside it (a run killed between
//! renames), its error names that copy ([`RecoveryRule`]: the rules, unit-tested here).
//!
//! [`verify_checkpoint`] is what `infer`, `deploy`, `export` and `--resume_from_checkpoint`
//! call: every listed file must exist with its size and sha256 (sha2 uses the CPU's SHA
//! instructions: 0.42-0.57 s for the 542 MB of a full SmolLM2-135M checkpoint, measured on the
//! shared 2-core machine; writing a checkpoint hashes it once more),
//! naming the missing or damaged file. A checkpoint without `manifest.json` (an older swift-rs,
//! or ms-swift) is loaded with a warning that nothing could be checked.
//!
//! **Failpoints** (tests only): `SWIFT_RS_FAILPOINT=POINT@STEP` aborts the process at that point
//! of the file operations on checkpoint STEP, as a kill would. The points, in order:
//! `checkpoint:before-manifest` (files written, no manifest), `checkpoint:after-manifest` (the
//! temporary copy complete), `checkpoint:after-rename-aside` (replacing: the old copy moved
//! aside), `checkpoint:after-rename` (the new copy visible), `checkpoint:mid-delete-old` (the
//! old copy half deleted); rotation: `rotate:after-rename-aside`, `rotate:mid-delete`. One
//! environment lookup per point; nothing when unset.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file listing a checkpoint's contents.
pub const MANIFEST: &str = "manifest.json";

/// Files that belong to a checkpoint and not to a model folder made from one (a copy of a full
/// checkpoint's side files must leave them out).
pub const CHECKPOINT_ONLY_FILES: &[&str] = &[MANIFEST, "trainer_state.json"];

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

fn invalid(path: &Path, message: impl Into<String>) -> RunDirError {
    RunDirError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    /// `None` on the ranks of a data-parallel run other than 0, which write nothing.
    log: Option<File>,
}

impl RunDir {
    /// Opens the run folder under `parent` (`--output_dir`, or `output/<model>`): a new
    /// `v<N>-<timestamp>/` inside it when `add_version`, else `parent` itself, which must be new
    /// or empty unless `overwrite` (then the earlier run's files are deleted first).
    ///
    /// In a data-parallel run only rank 0 writes (`swift_dist::is_writer`): the other ranks get
    /// a run folder that creates and writes nothing, whose path is `parent`.
    pub fn open(parent: &Path, add_version: bool, overwrite: bool) -> Result<Self, RunDirError> {
        if !swift_dist::is_writer() {
            return Ok(Self {
                root: parent.to_path_buf(),
                log: None,
            });
        }
        let root = if add_version {
            new_version_folder(parent)?
        } else {
            prepare_exact_folder(parent, overwrite)?;
            parent.to_path_buf()
        };
        let log_path = root.join("logging.jsonl");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        Ok(Self {
            root,
            log: Some(log),
        })
    }

    /// Whether this process writes the run's files (rank 0, or a process running alone).
    pub fn writes(&self) -> bool {
        self.log.is_some()
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `args.json` (atomically).
    pub fn write_args(&self, args: &serde_json::Value) -> Result<(), RunDirError> {
        if !self.writes() {
            return Ok(());
        }
        let text = serde_json::to_string_pretty(args)
            .map_err(|e| invalid(&self.root.join("args.json"), e.to_string()))?;
        write_atomic(&self.root.join("args.json"), text.as_bytes())
    }

    /// Appends one record to `logging.jsonl` and flushes it.
    pub fn log(&mut self, record: &serde_json::Value) -> Result<(), RunDirError> {
        let path = self.root.join("logging.jsonl");
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        writeln!(log, "{record}")
            .and_then(|_| log.flush())
            .map_err(io(&path))
    }

    /// Starts writing `checkpoint-<step>` (into its temporary folder, emptied first: a leftover
    /// there is this run's own, since the folder is new to it).
    pub fn begin_checkpoint(&self, step: u64) -> Result<CheckpointWriter, RunDirError> {
        if !self.writes() {
            return Err(invalid(
                &self.root,
                "only rank 0 of a data-parallel run writes checkpoints",
            ));
        }
        let tmp = self.root.join(tmp_name(step));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(CheckpointWriter {
            step,
            tmp,
            dest: self.root.join(format!("checkpoint-{step}")),
        })
    }

    /// Visible checkpoints, oldest first, as (step, path).
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>, RunDirError> {
        visible_checkpoints(&self.root)
    }

    /// Deletes the oldest visible checkpoints beyond `limit`, each renamed aside first.
    pub fn rotate(&self, limit: usize) -> Result<(), RunDirError> {
        let all = self.checkpoints()?;
        let excess = all.len().saturating_sub(limit);
        for (step, p) in all.into_iter().take(excess) {
            let aside = self.root.join(old_name(step));
            rename_aside(&p, &aside)?;
            failpoint("rotate:after-rename-aside", step)?;
            delete_aside(&aside, "rotate:mid-delete", step)?;
        }
        Ok(())
    }
}

/// A checkpoint being written: put files under [`CheckpointWriter::dir`], then [`commit`].
///
/// [`commit`]: CheckpointWriter::commit
#[derive(Debug)]
pub struct CheckpointWriter {
    step: u64,
    tmp: PathBuf,
    dest: PathBuf,
}

impl CheckpointWriter {
    /// Where to write the checkpoint's files.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Syncs every file, writes the manifest, and makes the checkpoint visible by one rename
    /// (a checkpoint of the same step is renamed aside first and deleted after); returns the
    /// final path.
    pub fn commit(self) -> Result<PathBuf, RunDirError> {
        let step = self.step;
        failpoint("checkpoint:before-manifest", step)?;
        let manifest = Manifest::of_folder(&self.tmp, step)?;
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| invalid(&self.tmp.join(MANIFEST), e.to_string()))?;
        let path = self.tmp.join(MANIFEST);
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(io(&path))?;
        sync_dir(&self.tmp);
        failpoint("checkpoint:after-manifest", step)?;
        let parent = self.dest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let aside = parent.join(old_name(step));
        let replacing = self.dest.exists();
        if replacing {
            rename_aside(&self.dest, &aside)?;
            failpoint("checkpoint:after-rename-aside", step)?;
        }
        fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        sync_dir(&parent);
        failpoint("checkpoint:after-rename", step)?;
        // The visible copy is complete now: an aside copy of the step (this replace's, or a
        // leftover) is garbage.
        if replacing || aside.exists() {
            delete_aside(&aside, "checkpoint:mid-delete-old", step)?;
        }
        Ok(self.dest)
    }
}

/// One file of a checkpoint as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the checkpoint folder, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `checkpoint-N/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub step: u64,
    pub files: Vec<ManifestEntry>,
}

const MANIFEST_FORMAT: &str = "swift-rs checkpoint 1";

impl Manifest {
    /// Lists (and syncs) every file under `dir` but the manifest, sorted by path.
    fn of_folder(dir: &Path, step: u64) -> Result<Self, RunDirError> {
        let mut files = Vec::new();
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((folder, prefix)) = stack.pop() {
            for entry in fs::read_dir(&folder).map_err(io(&folder))? {
                let entry = entry.map_err(io(&folder))?;
                let p = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = format!("{prefix}{name}");
                let kind = entry.file_type().map_err(io(&p))?;
                if kind.is_dir() {
                    stack.push((p, format!("{rel}/")));
                } else if rel != MANIFEST {
                    File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
                    let (size, sha256) = hash_file(&p)?;
                    files.push(ManifestEntry {
                        path: rel,
                        size,
                        sha256,
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            format: MANIFEST_FORMAT.into(),
            step,
            files,
        })
    }
}

/// What [`verify_checkpoint`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every file of the manifest is there with its size and checksum.
    Verified,
    /// No manifest (written before manifests, or by another tool): nothing could be checked.
    NoManifest,
}

/// Checks a checkpoint folder against its manifest: every listed file present with its size
/// and sha256. The error names the missing or damaged file and, when a complete copy of the
/// same checkpoint lies beside it (a run killed while saving), that copy.
pub fn verify_checkpoint(dir: &Path) -> Result<Integrity, RunDirError> {
    check_against_manifest(dir).map_err(|e| match (e, complete_copy_beside(dir)) {
        (RunDirError::Invalid { path, message }, Some(copy)) => RunDirError::Invalid {
            path,
            message: format!(
                "{message}; a complete copy of this checkpoint, left by a run killed while saving it, is at {}: pass that folder instead (or rename it to {})",
                copy.display(),
                dir.display()
            ),
        },
        (e, _) => e,
    })
}

/// [`verify_checkpoint`], with a warning when the folder has no manifest but is a checkpoint
/// (it holds `trainer_state.json`); a folder that is neither is left to its loader.
pub fn check_checkpoint(dir: &Path) -> Result<(), RunDirError> {
    if verify_checkpoint(dir)? == Integrity::NoManifest && dir.join("trainer_state.json").is_file()
    {
        tracing::warn!(
            "{} has no {MANIFEST} (written by an older swift-rs or another tool): its files' sizes and checksums cannot be checked",
            dir.display()
        );
    }
    Ok(())
}

fn check_against_manifest(dir: &Path) -> Result<Integrity, RunDirError> {
    if !dir.is_dir() {
        return Err(invalid(dir, "no such checkpoint folder"));
    }
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Integrity::NoManifest),
        Err(e) => return Err(io(&path)(e)),
    };
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        invalid(
            &path,
            format!("not a checkpoint manifest ({e}): the checkpoint is damaged"),
        )
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(invalid(
            &path,
            format!(
                "format `{}`, expected `{MANIFEST_FORMAT}` (written by a newer swift-rs?)",
                manifest.format
            ),
        ));
    }
    for f in &manifest.files {
        let p = dir.join(&f.path);
        if f.path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(invalid(
                &path,
                format!("lists an invalid path `{}`", f.path),
            ));
        }
        let meta = match fs::metadata(&p) {
            Ok(m) if m.is_file() => m,
            _ => {
                return Err(invalid(
                    &p,
                    format!("missing (listed in {MANIFEST}): the checkpoint is incomplete"),
                ))
            }
        };
        if meta.len() != f.size {
            return Err(invalid(
                &p,
                format!(
                    "{} bytes where {MANIFEST} lists {}: the file is damaged",
                    meta.len(),
                    f.size
                ),
            ));
        }
        let (_, sha) = hash_file(&p)?;
        if sha != f.sha256 {
            return Err(invalid(
                &p,
                format!(
                    "sha256 {sha} where {MANIFEST} lists {}: the file is damaged",
                    f.sha256
                ),
            ));
        }
    }
    Ok(Integrity::Verified)
}

/// What is left of checkpoint N after a kill, and which copy holds it: the rules behind
/// [`verify_checkpoint`]'s hint, in the order of [`CheckpointWriter::commit`]'s operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryRule {
    /// The visible checkpoint is complete: leftovers beside it are garbage.
    Visible,
    /// The visible one is missing or damaged and the temporary copy is complete (killed after
    /// the manifest, before or during the renames): the temporary copy is the checkpoint.
    Temporary,
    /// Neither, but the renamed-aside copy is complete (an earlier checkpoint of the step that
    /// was being replaced or rotated out).
    Aside,
    /// No complete copy.
    None,
}

/// Which copy of checkpoint `step` in `run` is the complete one; the temporary copy is newer
/// than the aside one, so it wins. Never modifies anything.
pub fn recovery_rule(run: &Path, step: u64) -> RecoveryRule {
    let ok = |p: PathBuf| matches!(check_against_manifest(&p), Ok(Integrity::Verified));
    if ok(run.join(format!("checkpoint-{step}"))) {
        RecoveryRule::Visible
    } else if ok(run.join(tmp_name(step))) {
        RecoveryRule::Temporary
    } else if ok(run.join(old_name(step))) {
        RecoveryRule::Aside
    } else {
        RecoveryRule::None
    }
}

/// A complete copy of checkpoint folder `dir` (`…/checkpoint-N`) lying beside it.
fn complete_copy_beside(dir: &Path) -> Option<PathBuf> {
    let step: u64 = dir
        .file_name()?
        .to_str()?
        .strip_prefix("checkpoint-")?
        .parse()
        .ok()?;
    let run = dir.parent()?;
    match recovery_rule(run, step) {
        RecoveryRule::Temporary => Some(run.join(tmp_name(step))),
        RecoveryRule::Aside => Some(run.join(old_name(step))),
        RecoveryRule::Visible | RecoveryRule::None => None,
    }
}

fn tmp_name(step: u64) -> String {
    format!(".checkpoint-{step}.tmp")
}

fn old_name(step: u64) -> String {
    format!(".checkpoint-{step}.old")
}

/// `(size, sha256 hex)` of a file, read in 1 MiB blocks.
fn hash_file(path: &Path) -> Result<(u64, String), RunDirError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

fn visible_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>, RunDirError> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(root)
        .map_err(io(root))?
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

/// Renames `from` to `aside` (emptied first: an earlier leftover of the same name is garbage,
/// the visible `from` being complete) and syncs the folder.
fn rename_aside(from: &Path, aside: &Path) -> Result<(), RunDirError> {
    if aside.exists() {
        fs::remove_dir_all(aside).map_err(io(aside))?;
    }
    fs::rename(from, aside).map_err(io(aside))?;
    if let Some(parent) = aside.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Deletes a folder renamed aside (one file first, then the rest, so a failpoint can stop it
/// half way).
fn delete_aside(aside: &Path, point: &'static str, step: u64) -> Result<(), RunDirError> {
    if let Some(first) = fs::read_dir(aside)
        .map_err(io(aside))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
    {
        fs::remove_file(&first).map_err(io(&first))?;
        failpoint(point, step)?;
    }
    fs::remove_dir_all(aside).map_err(io(aside))
}

/// Makes renames inside `dir` durable (best effort: some file systems refuse to sync folders).
fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// The test-only kill switch (see the file's doc): aborts when `SWIFT_RS_FAILPOINT` is
/// `POINT@STEP`. Unit tests set [`tests::CRASH_AT`] instead, which returns an error at that
/// point; no error path cleans up, so what is on disk is what a kill leaves.
fn failpoint(point: &'static str, step: u64) -> Result<(), RunDirError> {
    #[cfg(test)]
    if tests::CRASH_AT.with(|c| c.borrow().as_deref() == Some(&format!("{point}@{step}"))) {
        return Err(invalid(Path::new(point), "simulated crash"));
    }
    if let Some(v) = std::env::var_os("SWIFT_RS_FAILPOINT") {
        if v.to_str() == Some(&format!("{point}@{step}")) {
            eprintln!("SWIFT_RS_FAILPOINT={point}@{step}: aborting");
            std::process::abort();
        }
    }
    Ok(())
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

/// Creates `parent/v<N>-<timestamp>/` exclusively, N one more than the highest there.
fn new_version_folder(parent: &Path) -> Result<PathBuf, RunDirError> {
    fs::create_dir_all(parent).map_err(io(parent))?;
    let stamp = timestamp(SystemTime::now());
    let mut next = next_version(parent)?;
    for _ in 0..1000 {
        let root = parent.join(format!("v{next}-{stamp}"));
        match fs::create_dir(&root) {
            Ok(()) => return Ok(root),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
            Err(e) => return Err(io(&root)(e)),
        }
    }
    Err(invalid(
        parent,
        "could not create a new v<N>-<timestamp> folder",
    ))
}

/// Whether `name`, an entry of a run folder, is something a run writes.
fn is_run_file(name: &str) -> bool {
    matches!(name, "args.json" | "args.tmp" | "logging.jsonl" | "images")
        || name.starts_with("checkpoint-")
        || name.starts_with(".checkpoint-")
}

/// `--add_version false`: `dir` must be new or empty; with `overwrite`, the earlier run's files
/// are deleted (checkpoints renamed aside first), anything else is kept.
fn prepare_exact_folder(dir: &Path, overwrite: bool) -> Result<(), RunDirError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        return Err(invalid(
            dir,
            format!(
                "not empty ({}{}) and --add_version false: pass --overwrite_output_dir true to delete the earlier run's files, or leave --add_version on to write into a new v<N>-<timestamp> folder inside it",
                shown.join(", "),
                if names.len() > shown.len() { ", ..." } else { "" }
            ),
        ));
    }
    for (step, p) in visible_checkpoints(dir)? {
        let aside = dir.join(old_name(step));
        rename_aside(&p, &aside)?;
        fs::remove_dir_all(&aside).map_err(io(&aside))?;
    }
    let mut kept = Vec::new();
    for name in names {
        let p = dir.join(&name);
        if !p.exists() {
            continue;
        }
        if is_run_file(&name) {
            if p.is_dir() {
                fs::remove_dir_all(&p).map_err(io(&p))?;
            } else {
                fs::remove_file(&p).map_err(io(&p))?;
            }
        } else {
            kept.push(name);
        }
    }
    if !kept.is_empty() {
        tracing::warn!(
            "--overwrite_output_dir: deleted the earlier run's files in {}; kept the others ({})",
            dir.display(),
            kept.join(", ")
        );
    }
    Ok(())
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
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    thread_local! {
        /// `POINT@STEP` where [`failpoint`] returns an error in this thread (a simulated kill).
        pub(crate) static CRASH_AT: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    fn crash_at(point: Option<&str>) {
        CRASH_AT.with(|c| *c.borrow_mut() = point.map(String::from));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Commits checkpoint `step` holding `weights` (and a second file).
    fn save(run: &RunDir, step: u64, weights: &[u8]) -> Result<PathBuf, RunDirError> {
        let w = run.begin_checkpoint(step)?;
        fs::write(w.dir().join("adapter_model.safetensors"), weights).unwrap();
        fs::write(
            w.dir().join("trainer_state.json"),
            format!("{{\"step\":{step}}}"),
        )
        .unwrap();
        w.commit()
    }

    fn weights(ck: &Path) -> Vec<u8> {
        fs::read(ck.join("adapter_model.safetensors")).unwrap()
    }

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
    fn every_run_gets_a_new_version_folder_and_logs_append() {
        let base = tempfile::tempdir().unwrap();
        let parent = base.path().join("out");
        let mut a = RunDir::open(&parent, true, false).unwrap();
        let a_name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(a_name.starts_with("v0-") && a_name.len() == "v0-20261128-145310".len());
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
        // Within the same second: still a new folder; the first is untouched.
        let b = RunDir::open(&parent, true, false).unwrap();
        assert!(b
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("v1-"));
        assert_eq!(
            fs::read_to_string(a.path().join("logging.jsonl")).unwrap(),
            text
        );
        assert_eq!(names(a.path()), ["args.json", "logging.jsonl"]);
        // A folder named like a version that is not one's own is skipped, not reused.
        fs::create_dir(parent.join(format!("v2-{}", timestamp(SystemTime::now())))).unwrap();
        let c = RunDir::open(&parent, true, false).unwrap();
        assert!(c
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("v3-"));
    }

    #[test]
    fn an_exact_folder_must_be_empty_unless_overwritten() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("exact");
        let run = RunDir::open(&dir, false, false).unwrap();
        assert_eq!(run.path(), dir);
        save(&run, 1, b"one").unwrap();
        fs::create_dir(dir.join(".checkpoint-2.tmp")).unwrap();
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        drop(run);
        let err = RunDir::open(&dir, false, false).unwrap_err().to_string();
        assert!(
            err.contains("not empty") && err.contains("--overwrite_output_dir true"),
            "{err}"
        );
        assert!(dir.join("checkpoint-1/adapter_model.safetensors").is_file());
        let run = RunDir::open(&dir, false, true).unwrap();
        assert_eq!(names(run.path()), ["logging.jsonl", "notes.txt"]);
    }

    #[test]
    fn checkpoints_appear_complete_with_a_manifest_and_rotate() {
        let base = tempfile::tempdir().unwrap();
        let run = RunDir::open(base.path(), false, false).unwrap();
        for step in [10, 20, 30] {
            let w = run.begin_checkpoint(step).unwrap();
            fs::write(w.dir().join("adapter_model.safetensors"), b"weights").unwrap();
            fs::create_dir(w.dir().join("sub")).unwrap();
            fs::write(w.dir().join("sub/x.json"), b"{}").unwrap();
            assert!(
                run.checkpoints().unwrap().iter().all(|(s, _)| *s != step),
                "not visible before commit"
            );
            let ck = w.commit().unwrap();
            assert_eq!(verify_checkpoint(&ck).unwrap(), Integrity::Verified);
        }
        let m: Manifest = serde_json::from_str(
            &fs::read_to_string(base.path().join("checkpoint-30/manifest.json")).unwrap(),
        )
        .unwrap();
        // sha256("weights") and sha256("{}"), from `printf weights | sha256sum`.
        assert_eq!(
            m.files,
            [
                ManifestEntry {
                    path: "adapter_model.safetensors".into(),
                    size: 7,
                    sha256: "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"
                        .into()
                },
                ManifestEntry {
                    path: "sub/x.json".into(),
                    size: 2,
                    sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                        .into()
                },
            ]
        );
        run.rotate(2).unwrap();
        let steps: Vec<u64> = run
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, [20, 30]);
        assert_eq!(
            names(base.path()),
            ["checkpoint-20", "checkpoint-30", "logging.jsonl"]
        );
    }

    #[test]
    fn verification_names_the_missing_or_damaged_file() {
        let base = tempfile::tempdir().unwrap();
        let run = RunDir::open(base.path(), false, false).unwrap();
        let ck = save(&run, 1, b"0123456789").unwrap();
        let file = ck.join("adapter_model.safetensors");
        // Same size, one byte changed.
        fs::write(&file, b"0123456780").unwrap();
        let err = verify_checkpoint(&ck).unwrap_err().to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("sha256"),
            "{err}"
        );
        fs::write(&file, b"012345").unwrap();
        let err = verify_checkpoint(&ck).unwrap_err().to_string();
        assert!(
            err.contains("6 bytes where manifest.json lists 10"),
            "{err}"
        );
        fs::remove_file(&file).unwrap();
        let err = verify_checkpoint(&ck).unwrap_err().to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("missing"),
            "{err}"
        );
        fs::write(ck.join(MANIFEST), b"{").unwrap();
        let err = verify_checkpoint(&ck).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("damaged"),
            "{err}"
        );
        fs::remove_file(ck.join(MANIFEST)).unwrap();
        assert_eq!(verify_checkpoint(&ck).unwrap(), Integrity::NoManifest);
        let err = verify_checkpoint(&base.path().join("checkpoint-9")).unwrap_err();
        assert!(err.to_string().contains("no such checkpoint"), "{err}");
    }

    /// Every visible checkpoint verifies and holds one of `allowed` weights.
    fn assert_visible_complete(dir: &Path, allowed: &[(u64, &[&[u8]])]) {
        let run_ck = visible_checkpoints(dir).unwrap();
        for (step, p) in &run_ck {
            assert_eq!(verify_checkpoint(p).unwrap(), Integrity::Verified, "{p:?}");
            let ok = allowed
                .iter()
                .find(|(s, _)| s == step)
                .is_some_and(|(_, ws)| ws.contains(&weights(p).as_slice()));
            assert!(ok, "{p:?} holds unexpected weights");
        }
    }

    #[test]
    fn a_kill_at_any_point_of_a_replace_leaves_a_complete_checkpoint() {
        let points = [
            (
                "checkpoint:before-manifest",
                RecoveryRule::Visible,
                b"old".as_slice(),
            ),
            ("checkpoint:after-manifest", RecoveryRule::Visible, b"old"),
            (
                "checkpoint:after-rename-aside",
                RecoveryRule::Temporary,
                b"new",
            ),
            ("checkpoint:after-rename", RecoveryRule::Visible, b"new"),
            ("checkpoint:mid-delete-old", RecoveryRule::Visible, b"new"),
        ];
        for (point, rule, visible) in points {
            let base = tempfile::tempdir().unwrap();
            let run = RunDir::open(base.path(), false, false).unwrap();
            save(&run, 1, b"first").unwrap();
            save(&run, 2, b"old").unwrap();
            crash_at(Some(&format!("{point}@2")));
            let err = save(&run, 2, b"new").unwrap_err();
            crash_at(None);
            assert!(
                err.to_string().contains("simulated crash"),
                "{point}: {err}"
            );
            assert_visible_complete(base.path(), &[(1, &[b"first"]), (2, &[b"old", b"new"])]);
            assert_eq!(recovery_rule(base.path(), 2), rule, "{point}");
            let ck2 = base.path().join("checkpoint-2");
            match rule {
                RecoveryRule::Visible => assert_eq!(weights(&ck2), visible, "{point}"),
                _ => {
                    // checkpoint-2 is not visible; asking for it names the complete copy.
                    assert!(!ck2.exists(), "{point}");
                    let err = verify_checkpoint(&ck2).unwrap_err().to_string();
                    let copy = base.path().join(".checkpoint-2.tmp");
                    assert!(err.contains(&copy.display().to_string()), "{point}: {err}");
                    assert_eq!(weights(&copy), visible);
                }
            }
            // The run goes on: the next save of the same step replaces whatever is left.
            save(&run, 2, b"again").unwrap();
            assert_eq!(weights(&ck2), b"again");
            assert_eq!(
                names(base.path()),
                ["checkpoint-1", "checkpoint-2", "logging.jsonl"],
                "{point}"
            );
        }
    }

    #[test]
    fn a_kill_at_any_point_of_a_rotation_leaves_complete_checkpoints() {
        for point in ["rotate:after-rename-aside", "rotate:mid-delete"] {
            let base = tempfile::tempdir().unwrap();
            let run = RunDir::open(base.path(), false, false).unwrap();
            for s in 1..=3 {
                save(&run, s, format!("w{s}").as_bytes()).unwrap();
            }
            crash_at(Some(&format!("{point}@1")));
            let err = run.rotate(2).unwrap_err();
            crash_at(None);
            assert!(
                err.to_string().contains("simulated crash"),
                "{point}: {err}"
            );
            assert_visible_complete(base.path(), &[(2, &[b"w2"]), (3, &[b"w3"])]);
            assert_eq!(run.checkpoints().unwrap().len(), 2, "{point}");
            // The half-deleted copy is never offered as complete.
            let expect = if point == "rotate:after-rename-aside" {
                RecoveryRule::Aside
            } else {
                RecoveryRule::None
            };
            assert_eq!(recovery_rule(base.path(), 1), expect, "{point}");
            // The next rotation is not disturbed by the leftover.
            save(&run, 4, b"w4").unwrap();
            run.rotate(2).unwrap();
            assert_eq!(
                names(base.path()),
                [
                    ".checkpoint-1.old",
                    "checkpoint-3",
                    "checkpoint-4",
                    "logging.jsonl"
                ],
                "{point}"
            );
        }
    }

    #[test]
    fn a_temporary_copy_wins_over_an_aside_one_only_when_complete() {
        let base = tempfile::tempdir().unwrap();
        let run = RunDir::open(base.path(), false, false).unwrap();
        save(&run, 5, b"aside").unwrap();
        fs::rename(
            base.path().join("checkpoint-5"),
            base.path().join(".checkpoint-5.old"),
        )
        .unwrap();
        // An incomplete temporary copy (no manifest) is not a candidate.
        let w = run.begin_checkpoint(5).unwrap();
        fs::write(w.dir().join("adapter_model.safetensors"), b"half").unwrap();
        assert_eq!(recovery_rule(base.path(), 5), RecoveryRule::Aside);
        let err = verify_checkpoint(&base.path().join("checkpoint-5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".checkpoint-5.old"), "{err}");
        // A damaged visible checkpoint with a complete temporary copy beside it.
        drop(w);
        save(&run, 6, b"visible").unwrap();
        let w = run.begin_checkpoint(6).unwrap();
        fs::write(w.dir().join("adapter_model.safetensors"), b"newer").unwrap();
        crash_at(Some("checkpoint:after-manifest@6"));
        w.commit().unwrap_err();
        crash_at(None);
        fs::write(
            base.path().join("checkpoint-6/adapter_model.safetensors"),
            b"visiblX",
        )
        .unwrap();
        assert_eq!(recovery_rule(base.path(), 6), RecoveryRule::Temporary);
        let err = verify_checkpoint(&base.path().join("checkpoint-6"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("damaged") && err.contains(".checkpoint-6.tmp"),
            "{err}"
        );
    }
}
