//! The dataset pipeline: resolving a `--dataset` spec to a file, then for each raw row: column
//! renames → preprocessor (fixed, or `auto` from the columns) → checks → `{{name}}`/`{{author}}`
//! placeholders → relative image paths made absolute. `Dataset` is the iterator over the result,
//! with counts of what was read, skipped and dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use swift_plugin_api::{PreprocessOutcome, PreprocessorHandle, StandardRow};
use swift_registry::{Provenance, Registries};

use crate::error::DataError;
use crate::read::{self, Format, RowReader};
use crate::sample::{self, Pass};

/// How datasets are read and preprocessed.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Seed of `#N` sampling (`--data_seed`).
    pub data_seed: u64,
    /// Column renames applied before preprocessing, after the dataset record's own
    /// (`--columns '{"old": "new"}'`).
    pub columns: BTreeMap<String, String>,
    /// Skip malformed rows and rows no preprocessor accepts, counting them, instead of failing
    /// (`--skip_bad_rows`).
    pub skip_bad_rows: bool,
    /// Fills `{{name}}` in rows (`--model_name`).
    pub model_name: Option<String>,
    /// Fills `{{author}}` in rows (`--model_author`).
    pub model_author: Option<String>,
    /// Where `asset:` dataset paths point; `None`: `$SWIFT_RS_CACHE/assets`, else
    /// `~/.cache/swift-rs/assets`.
    pub asset_dir: Option<PathBuf>,
    /// Use this preprocessor for every dataset instead of the record's (or `auto`).
    pub preprocessor: Option<String>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        Self {
            data_seed: 42,
            columns: BTreeMap::new(),
            skip_bad_rows: false,
            model_name: None,
            model_author: None,
            asset_dir: None,
            preprocessor: None,
        }
    }
}

impl DatasetOptions {
    /// The options of a command's dataset flags (`--data_seed`, `--columns`, `--skip_bad_rows`,
    /// `--model_name`, `--model_author`).
    pub fn from_spec(args: &swift_spec::DatasetArgs) -> Result<Self, DataError> {
        let mut opts = Self {
            skip_bad_rows: args.skip_bad_rows,
            model_name: args.model_name.clone(),
            model_author: args.model_author.clone(),
            ..Default::default()
        };
        if let Some(seed) = args.data_seed {
            opts.data_seed = seed;
        }
        if let Some(c) = &args.columns {
            opts.columns = Self::parse_columns(c)?;
        }
        Ok(opts)
    }

    /// Parses `--columns` (a JSON object of old → new names) into `columns`.
    pub fn parse_columns(json: &str) -> Result<BTreeMap<String, String>, DataError> {
        let v: Value = serde_json::from_str(json).map_err(|e| DataError::BadColumns {
            reason: format!("not JSON: {e}"),
        })?;
        let Value::Object(o) = v else {
            return Err(DataError::BadColumns {
                reason: "not a JSON object".into(),
            });
        };
        o.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(DataError::BadColumns {
                    reason: format!("the new name for `{k}` should be a string, found {other}"),
                }),
            })
            .collect()
    }

    /// The asset directory `asset:` paths resolve against.
    pub fn asset_dir(&self) -> PathBuf {
        if let Some(d) = &self.asset_dir {
            return d.clone();
        }
        if let Some(c) = std::env::var_os("SWIFT_RS_CACHE").filter(|c| !c.is_empty()) {
            return PathBuf::from(c).join("assets");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/swift-rs/assets")
    }
}

/// One preprocessed row and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedRow {
    pub row: StandardRow,
    pub file: PathBuf,
    /// 1-based line the row starts on (JSONL, JSON, CSV, text) or 1-based row number (Parquet).
    pub line: usize,
    /// 0-based position of the row in its file.
    pub index: u64,
}

/// What iterating has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatasetStats {
    /// Raw rows read from the files (rows not picked by `#N` sampling are not counted).
    pub rows_read: u64,
    /// Rows skipped as bad (malformed, unrecognised, refused) under `skip_bad_rows`.
    pub rows_bad: u64,
    /// Rows the preprocessor dropped on purpose (nothing to train on, e.g. empty text).
    pub rows_dropped: u64,
    /// Rows handed out.
    pub rows_yielded: u64,
}

/// A preprocessor `auto` may pick.
#[derive(Clone)]
struct Candidate {
    name: String,
    /// All groups must be present; a group is satisfied by any of its columns.
    detect: Vec<Vec<String>>,
    priority: i32,
    handle: Arc<PreprocessorHandle>,
}

/// Which preprocessor a file uses.
#[derive(Clone)]
enum Choice {
    Auto,
    Fixed(String, Arc<PreprocessorHandle>),
}

/// One file to read (one `--dataset` spec).
struct Source {
    path: PathBuf,
    format: Format,
    choice: Choice,
    renames: Vec<(String, String)>,
    passes: VecDeque<Pass>,
    /// A registered dataset: `{{name}}`/`{{author}}` must be filled.
    registered: bool,
}

/// The file being read.
struct Active {
    source: Source,
    reader: Box<dyn RowReader>,
    /// The rows of the current pass when it picks rows, and how many are done.
    picks: Option<(Vec<u64>, usize)>,
    /// Rows seen in this pass (selected or not).
    seen: u64,
    /// Totals for the file, for the end-of-file checks.
    read: u64,
    bad: u64,
    dropped: u64,
    yielded: u64,
    /// The first row error of this file, for the end-of-file message.
    first_bad: Option<String>,
}

/// An iterator over preprocessed rows of one or more datasets, in order. Nothing is loaded
/// ahead: files are read row by row as the iterator is advanced.
///
/// A row error (see [`DataError::is_row_error`]) is yielded and iteration may continue with the
/// next row, or, with `skip_bad_rows`, counted and skipped. Any other error ends the iteration.
pub struct Dataset {
    pending: VecDeque<Source>,
    active: Option<Active>,
    candidates: Vec<Candidate>,
    auto_cache: HashMap<Vec<String>, Option<usize>>,
    /// The last row's (sorted, non-null) columns and the choice for them.
    last_pick: Option<(Vec<String>, Option<usize>)>,
    opts: DatasetOptions,
    stats: DatasetStats,
    first_bad: Option<String>,
    placeholder_warned: bool,
    done: bool,
}

/// Splits `SPEC` into the dataset and the `#N` sample size.
pub fn parse_spec(spec: &str) -> Result<(&str, Option<u64>), DataError> {
    let spec_err = |reason: &str| DataError::BadSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    if spec.trim().is_empty() {
        return Err(spec_err("empty dataset name"));
    }
    if Path::new(spec).is_file() {
        return Ok((spec, None));
    }
    match spec.rsplit_once('#') {
        None => Ok((spec, None)),
        Some((base, n)) => match n.trim().parse::<u64>() {
            Ok(0) => Err(spec_err(
                "`#0` samples nothing; give a row count of at least 1",
            )),
            Ok(n) if !base.is_empty() => Ok((base, Some(n))),
            _ => Err(spec_err(
                "the part after `#` should be the number of rows to sample, e.g. `data.jsonl#1000`",
            )),
        },
    }
}

impl Source {
    fn open(
        spec: &str,
        k: usize,
        regs: &Registries,
        opts: &DatasetOptions,
    ) -> Result<Source, DataError> {
        let (base, n) = parse_spec(spec)?;
        let (path, record) = if Path::new(base).exists() {
            (PathBuf::from(base), None)
        } else {
            match regs.datasets.resolve(base) {
                Ok(entry) => {
                    let r = &entry.record;
                    let path = match r.path.strip_prefix("asset:") {
                        Some(rel) => opts.asset_dir().join(rel),
                        None => PathBuf::from(&r.path),
                    };
                    if !path.exists() {
                        let hint = if r.path.starts_with("asset:") {
                            format!(
                                "; run `make setup` to fetch the demo assets into {}",
                                opts.asset_dir().display()
                            )
                        } else {
                            String::new()
                        };
                        return Err(DataError::MissingFile {
                            name: r.name.clone(),
                            provenance: provenance(&entry.provenance),
                            path,
                            hint,
                        });
                    }
                    (path, Some(r.clone()))
                }
                Err(e) => {
                    return Err(DataError::UnknownDataset {
                        spec: spec.to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        if path.is_dir() {
            return Err(DataError::BadSpec {
                spec: spec.to_string(),
                reason: format!("{} is a directory; name a dataset file", path.display()),
            });
        }
        let format = Format::of(&path)?;
        let size = std::fs::metadata(&path)
            .map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        if size == 0 {
            return Err(DataError::Empty { path });
        }
        let name = opts
            .preprocessor
            .clone()
            .or_else(|| record.as_ref().map(|r| r.preprocessor.clone()))
            .unwrap_or_else(|| "auto".into());
        let choice = if name == "auto" {
            Choice::Auto
        } else {
            let entry =
                regs.preprocessors
                    .resolve(&name)
                    .map_err(|e| DataError::UnknownPreprocessor {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
            let handle = entry
                .imp
                .clone()
                .ok_or_else(|| DataError::UnknownPreprocessor {
                    path: path.clone(),
                    reason: format!("preprocessor `{name}` has no implementation"),
                })?;
            Choice::Fixed(entry.record.name.clone(), handle)
        };
        let mut renames: Vec<(String, String)> = record
            .iter()
            .flat_map(|r| r.columns.iter().map(|(a, b)| (a.clone(), b.clone())))
            .collect();
        renames.extend(opts.columns.iter().map(|(a, b)| (a.clone(), b.clone())));
        let passes = match n {
            None => VecDeque::from([Pass::All]),
            Some(n) => {
                let len = read::count_rows(&path, format)?;
                if len == 0 {
                    return Err(DataError::Empty { path });
                }
                if n > len {
                    tracing::warn!(
                        "{}#{n}: the file has {len} rows, so #{n} samples with repetition \
                         ({} whole passes, then {} rows drawn)",
                        path.display(),
                        n / len,
                        n % len
                    );
                }
                let seed = sample::mix(opts.data_seed.wrapping_add(k as u64));
                sample::plan(len, n, seed).into()
            }
        };
        Ok(Source {
            path,
            format,
            choice,
            renames,
            passes,
            registered: record.is_some(),
        })
    }
}

fn provenance(p: &Provenance) -> String {
    p.to_string()
}

/// Opens one dataset: SPEC is a file path or a registered dataset name (or alias), with an
/// optional `#N` suffix to sample N rows with `data_seed`.
pub fn open_dataset(
    spec: &str,
    regs: &Registries,
    opts: &DatasetOptions,
) -> Result<Dataset, DataError> {
    open_datasets(&[spec.to_string()], regs, opts)
}

/// Opens several datasets, read one after the other in the given order. Every spec is checked
/// (file found, format known, preprocessor registered; `#N` counts rows) before any row is read.
pub fn open_datasets(
    specs: &[String],
    regs: &Registries,
    opts: &DatasetOptions,
) -> Result<Dataset, DataError> {
    let pending = specs
        .iter()
        .enumerate()
        .map(|(k, s)| Source::open(s, k, regs, opts))
        .collect::<Result<_, _>>()?;
    let mut candidates: Vec<Candidate> = regs
        .preprocessors
        .iter()
        .filter(|e| !e.record.detect_columns.is_empty())
        .filter_map(|e| {
            Some(Candidate {
                name: e.record.name.clone(),
                detect: e
                    .record
                    .detect_columns
                    .iter()
                    .map(|g| {
                        g.split('|')
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty())
                            .collect()
                    })
                    .collect(),
                priority: e.record.priority,
                handle: e.imp.clone()?,
            })
        })
        .collect();
    // Highest priority first; then the more specific (more columns); then by name.
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.detect.len().cmp(&a.detect.len()))
            .then(a.name.cmp(&b.name))
    });
    Ok(Dataset {
        pending,
        active: None,
        candidates,
        auto_cache: HashMap::new(),
        last_pick: None,
        opts: opts.clone(),
        stats: DatasetStats::default(),
        first_bad: None,
        placeholder_warned: false,
        done: false,
    })
}

/// Renames columns: an exact match first, else a case-insensitive one (as ms-swift does).
fn rename(map: &mut Map<String, Value>, renames: &[(String, String)]) {
    for (old, new) in renames {
        if old == new {
            continue;
        }
        let key = if map.contains_key(old) {
            Some(old.clone())
        } else {
            map.keys().find(|k| k.eq_ignore_ascii_case(old)).cloned()
        };
        if let Some(k) = key {
            if let Some(v) = map.remove(&k) {
                map.insert(new.clone(), v);
            }
        }
    }
}

/// Checks that a preprocessed row can be trained on or generated from.
fn check_row(row: &StandardRow) -> Result<(), String> {
    if row.messages.is_empty() {
        return Err("the row has no messages".into());
    }
    for (i, m) in row.messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "user" | "tool" => {}
            "assistant" => {
                if m.content.trim().is_empty() && m.tool_calls.as_ref().is_none_or(Vec::is_empty) {
                    return Err(format!("assistant turn (message {}) is empty", i + 1));
                }
            }
            other => {
                return Err(format!(
                    "message {} has role `{other}` (expected system, user, assistant or tool)",
                    i + 1
                ))
            }
        }
    }
    if row
        .rejected_response
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err("the rejected answer is empty".into());
    }
    check_image_tags(row)
}

/// Each image of a row is placed by one `<image>` tag in its messages (and in its rejected
/// conversation, when it has one), as ms-swift's templates read them.
fn check_image_tags(row: &StandardRow) -> Result<(), String> {
    let count = |ms: &[swift_plugin_api::Message]| -> usize {
        ms.iter()
            .map(|m| m.content.matches("<image>").count())
            .sum()
    };
    let n = row.images.len();
    let mut sides = vec![("messages", count(&row.messages))];
    if let Some(r) = &row.rejected_messages {
        sides.push(("rejected_messages", count(r)));
    }
    for (side, tags) in sides {
        if tags != n {
            return Err(format!(
                "{side} have {tags} <image> tag(s) but the row has {n} image(s); put one <image> where each image goes"
            ));
        }
    }
    Ok(())
}

/// The placeholders of self-cognition datasets.
const PLACEHOLDERS: [(&str, &str); 2] = [
    ("{{name}}", "--model_name"),
    ("{{author}}", "--model_author"),
];

fn for_each_text(row: &mut StandardRow, f: &mut dyn FnMut(&mut String)) {
    let msgs = row
        .messages
        .iter_mut()
        .chain(row.rejected_messages.iter_mut().flatten());
    for m in msgs {
        f(&mut m.content);
    }
    if let Some(r) = &mut row.rejected_response {
        f(r);
    }
}

fn relative_image(dir: &Path, img: &str) -> Option<String> {
    let is_url = img.contains("://") || img.starts_with("data:");
    // ms-swift's `_check_path`: a string over 2000 characters is never a path, and one that is no
    // file but reads as base64 is inline image bytes.
    let joined = dir.join(img);
    let base64_like = !img.is_empty()
        && img.len() % 4 == 0
        && img
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    let is_inline = img.len() > 2000 || (base64_like && !joined.exists());
    (!is_url && !is_inline && Path::new(img).is_relative())
        .then(|| joined.to_string_lossy().into_owned())
}

impl Dataset {
    /// Counts so far.
    pub fn stats(&self) -> DatasetStats {
        self.stats
    }

    /// The preprocessors `auto` chooses from, best first, as `name: col + col|alias` lines.
    pub fn known_formats(&self) -> String {
        self.candidates
            .iter()
            .map(|c| {
                let cols: Vec<String> = c.detect.iter().map(|g| g.join("|")).collect();
                format!("{} ({})", c.name, cols.join(" + "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The preprocessor for a row's columns (`auto`).
    fn pick(&mut self, map: &Map<String, Value>) -> Option<usize> {
        // Rows of a file usually share their columns: check the last set without allocating.
        if let Some((last, hit)) = &self.last_pick {
            let mut n = 0;
            let same = map.iter().filter(|(_, v)| !v.is_null()).all(|(k, _)| {
                n += 1;
                last.binary_search_by(|c| c.as_str().cmp(k)).is_ok()
            });
            if same && n == last.len() {
                return *hit;
            }
        }
        let (cols, found) = self.pick_uncached(map);
        self.last_pick = Some((cols, found));
        found
    }

    fn pick_uncached(&mut self, map: &Map<String, Value>) -> (Vec<String>, Option<usize>) {
        let mut cols: Vec<String> = map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        cols.sort_unstable();
        if let Some(hit) = self.auto_cache.get(&cols) {
            return (cols, *hit);
        }
        let has = |c: &str| cols.binary_search_by(|k| k.as_str().cmp(c)).is_ok();
        let found = self
            .candidates
            .iter()
            .position(|cand| cand.detect.iter().all(|g| g.iter().any(|c| has(c))));
        self.auto_cache.insert(cols.clone(), found);
        (cols, found)
    }

    /// Preprocesses one raw row: `Ok(None)` when the preprocessor dropped it.
    fn process(&mut self, raw: read::RawRow) -> Result<Option<SourcedRow>, DataError> {
        let Some(active) = &self.active else {
            return Ok(None);
        };
        let (path, line) = (active.source.path.clone(), raw.line);
        let mut map = raw.map;
        rename(&mut map, &active.source.renames);
        let registered = active.source.registered;
        let (name, handle) = match &active.source.choice {
            Choice::Fixed(name, h) => (name.clone(), h.clone()),
            Choice::Auto => match self.pick(&map) {
                Some(i) => (
                    self.candidates[i].name.clone(),
                    self.candidates[i].handle.clone(),
                ),
                None => {
                    let mut columns: Vec<String> = map.keys().cloned().collect();
                    columns.sort();
                    return Err(DataError::NoFormat {
                        path,
                        line,
                        columns,
                        known: self.known_formats(),
                    });
                }
            },
        };
        let bad = |message: String| DataError::BadRow {
            path: path.clone(),
            line,
            preprocessor: name.clone(),
            message,
        };
        let mut row = match handle.preprocess(&map) {
            Ok(PreprocessOutcome::Row(r)) => r,
            Ok(PreprocessOutcome::Skip) => return Ok(None),
            Err(e) => return Err(bad(e)),
        };
        check_row(&row).map_err(bad)?;
        self.fill_placeholders(&mut row, &path, line, registered)?;
        if let Some(dir) = path.parent() {
            for img in &mut row.images {
                if let Some(abs) = relative_image(dir, img) {
                    *img = abs;
                }
            }
        }
        Ok(Some(SourcedRow {
            row,
            file: path,
            line,
            index: raw.index,
        }))
    }

    fn fill_placeholders(
        &mut self,
        row: &mut StandardRow,
        path: &Path,
        line: usize,
        registered: bool,
    ) -> Result<(), DataError> {
        let values = [self.opts.model_name.clone(), self.opts.model_author.clone()];
        let mut missing: Option<(&str, &str)> = None;
        for_each_text(row, &mut |text: &mut String| {
            for ((ph, flag), value) in PLACEHOLDERS.iter().zip(&values) {
                if text.contains(ph) {
                    match value {
                        Some(v) => *text = text.replace(ph, v),
                        None => missing = missing.or(Some((ph, flag))),
                    }
                }
            }
        });
        match missing {
            Some((ph, flag)) if registered => Err(DataError::Placeholder {
                path: path.to_path_buf(),
                line,
                placeholder: ph.into(),
                flag: flag.into(),
            }),
            Some((ph, flag)) if !self.placeholder_warned => {
                self.placeholder_warned = true;
                tracing::warn!(
                    "{}:{line}: rows contain `{ph}`; it is kept as is (pass {flag} to fill it in)",
                    path.display()
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Counts a skipped bad row and warns about the first few.
    fn skip_bad(&mut self, e: DataError) {
        self.stats.rows_bad += 1;
        if let Some(a) = &mut self.active {
            a.bad += 1;
            a.first_bad.get_or_insert_with(|| e.to_string());
        }
        let n = self.stats.rows_bad;
        if n <= 5 {
            tracing::warn!("skipped bad row: {e}");
        } else if n.is_power_of_two() || n % 10_000 == 0 {
            tracing::warn!("{n} bad rows skipped so far (latest: {e})");
        }
        if self.first_bad.is_none() {
            self.first_bad = Some(e.to_string());
        }
    }

    /// Opens the next pass of the active file, or the next file. `Ok(false)`: nothing left.
    fn advance(&mut self) -> Result<bool, DataError> {
        loop {
            if let Some(active) = &mut self.active {
                if let Some(pass) = active.source.passes.pop_front() {
                    active.reader = read::open(&active.source.path, active.source.format)?;
                    active.picks = match pass {
                        Pass::All => None,
                        Pass::Rows(rows) => Some((rows, 0)),
                    };
                    active.seen = 0;
                    return Ok(true);
                }
                // The file is done: was anything usable in it?
                let a = self.active.take().expect("checked above");
                if a.read == 0 {
                    return Err(DataError::Empty {
                        path: a.source.path,
                    });
                }
                // (Without skip_bad_rows, the caller has already seen this file's row errors.)
                if a.yielded == 0 && (self.opts.skip_bad_rows || a.bad == 0) {
                    let detail = a
                        .first_bad
                        .map(|e| format!("; the first bad row: {e}"))
                        .unwrap_or_default();
                    return Err(DataError::NoUsableRows {
                        path: a.source.path,
                        read: a.read,
                        bad: a.bad,
                        dropped: a.dropped,
                        detail,
                    });
                }
            }
            let Some(mut source) = self.pending.pop_front() else {
                return Ok(false);
            };
            let Some(pass) = source.passes.pop_front() else {
                continue;
            };
            let reader = read::open(&source.path, source.format)?;
            let picks = match pass {
                Pass::All => None,
                Pass::Rows(rows) => Some((rows, 0)),
            };
            self.active = Some(Active {
                source,
                reader,
                picks,
                seen: 0,
                read: 0,
                bad: 0,
                dropped: 0,
                yielded: 0,
                first_bad: None,
            });
            return Ok(true);
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if self.stats.rows_bad > 0 {
            tracing::warn!(
                "skipped {} bad rows of {} read (first: {})",
                self.stats.rows_bad,
                self.stats.rows_read,
                self.first_bad.as_deref().unwrap_or("")
            );
        }
    }

    fn fail(&mut self, e: DataError) -> Option<Result<SourcedRow, DataError>> {
        self.done = true;
        self.active = None;
        self.pending.clear();
        Some(Err(e))
    }
}

impl Iterator for Dataset {
    type Item = Result<SourcedRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let Some(active) = &mut self.active else {
                match self.advance() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.finish();
                        return None;
                    }
                    Err(e) => return self.fail(e),
                }
            };
            // Is the next row picked (or is this pass over)?
            let parse = match &active.picks {
                None => true,
                Some((rows, done)) => match rows.get(*done) {
                    None => {
                        // Every picked row of this pass is read: on to the next pass or file.
                        match self.advance_after_pass() {
                            Ok(()) => continue,
                            Err(e) => return self.fail(e),
                        }
                    }
                    Some(&want) => want == active.seen,
                },
            };
            let next = active.reader.next_row(parse);
            let Some(next) = next else {
                match self.advance_after_pass() {
                    Ok(()) => continue,
                    Err(e) => return self.fail(e),
                }
            };
            active.seen += 1;
            if !parse {
                continue;
            }
            if let Some((_, done)) = &mut active.picks {
                *done += 1;
            }
            active.read += 1;
            self.stats.rows_read += 1;
            let result = next.and_then(|raw| self.process(raw));
            match result {
                Ok(Some(row)) => {
                    self.stats.rows_yielded += 1;
                    if let Some(a) = &mut self.active {
                        a.yielded += 1;
                    }
                    return Some(Ok(row));
                }
                Ok(None) => {
                    self.stats.rows_dropped += 1;
                    if let Some(a) = &mut self.active {
                        a.dropped += 1;
                    }
                }
                Err(e) if e.is_row_error() && self.opts.skip_bad_rows => self.skip_bad(e),
                Err(e) if e.is_row_error() => {
                    if let Some(a) = &mut self.active {
                        a.bad += 1;
                    }
                    return Some(Err(e));
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl Dataset {
    /// Ends the current pass: the next pass of the file, or the file's end-of-file checks.
    fn advance_after_pass(&mut self) -> Result<(), DataError> {
        let more_passes = self
            .active
            .as_ref()
            .is_some_and(|a| !a.source.passes.is_empty());
        if more_passes {
            self.advance().map(|_| ())
        } else {
            // Let `advance` run the end-of-file checks and open the next file.
            match self.advance() {
                Ok(true) => Ok(()),
                Ok(false) => {
                    self.active = None;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }
}
