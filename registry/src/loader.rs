//! Plugin discovery and loading: built-ins first, then every plugin source in order.
//!
//! A source is a directory (scanned non-recursively, in sorted order, for `*.so`, `*.dylib`,
//! `*.toml` and `*.json`) or a single file (the user asked for that plugin by path). A bad plugin
//! found by scanning is a warning and loading carries on; a bad plugin asked for by path is an
//! error. Every compiled plugin goes through the same checks: manifest, contract version,
//! libtorch/tch versions, then `register` into a staging area that is merged only if it succeeded,
//! so a plugin that fails half-way registers nothing.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use swift_plugin_api::records::Record;
use swift_plugin_api::{
    BackendHandle, BackendRecord, BenchmarkRecord, DatasetRecord, HostSink, LoadError, Manifest,
    ModelFamilyHandle, ModelFamilyRecord, OptimizerKindHandle, OptimizerRecord, PluginFile,
    PluginLibrary, PreferenceLossHandle, PreferenceLossRecord, PreprocessorHandle,
    PreprocessorRecord, QuantizerHandle, QuantizerRecord, SinkError, TemplateRecord, TunerHandle,
    TunerRecord, CONTRACT_VERSION, MANIFEST_SYMBOL,
};

use crate::registry::{Conflict, Entry, Provenance, Registry};
use crate::text::parse_text_plugin;

/// One registry per kind.
#[derive(Default)]
pub struct Registries {
    pub models: Registry<ModelFamilyRecord, ModelFamilyHandle>,
    pub templates: Registry<TemplateRecord, ()>,
    pub datasets: Registry<DatasetRecord, ()>,
    pub preprocessors: Registry<PreprocessorRecord, PreprocessorHandle>,
    pub tuners: Registry<TunerRecord, TunerHandle>,
    pub quantizers: Registry<QuantizerRecord, QuantizerHandle>,
    pub backends: Registry<BackendRecord, BackendHandle>,
    pub preference_losses: Registry<PreferenceLossRecord, PreferenceLossHandle>,
    pub optimizers: Registry<OptimizerRecord, OptimizerKindHandle>,
    pub benchmarks: Registry<BenchmarkRecord, ()>,
}

/// One registration waiting to be merged.
enum Pending {
    Model(Entry<ModelFamilyRecord, ModelFamilyHandle>),
    Template(Entry<TemplateRecord, ()>),
    Dataset(Entry<DatasetRecord, ()>),
    Preprocessor(Entry<PreprocessorRecord, PreprocessorHandle>),
    Tuner(Entry<TunerRecord, TunerHandle>),
    Quantizer(Entry<QuantizerRecord, QuantizerHandle>),
    Backend(Entry<BackendRecord, BackendHandle>),
    PreferenceLoss(Entry<PreferenceLossRecord, PreferenceLossHandle>),
    Optimizer(Entry<OptimizerRecord, OptimizerKindHandle>),
    Benchmark(Entry<BenchmarkRecord, ()>),
}

macro_rules! per_kind {
    ($pending:expr, $regs:ident, |$reg:ident, $entry:ident| $body:expr) => {
        match $pending {
            Pending::Model($entry) => {
                let $reg = &mut $regs.models;
                $body
            }
            Pending::Template($entry) => {
                let $reg = &mut $regs.templates;
                $body
            }
            Pending::Dataset($entry) => {
                let $reg = &mut $regs.datasets;
                $body
            }
            Pending::Preprocessor($entry) => {
                let $reg = &mut $regs.preprocessors;
                $body
            }
            Pending::Tuner($entry) => {
                let $reg = &mut $regs.tuners;
                $body
            }
            Pending::Quantizer($entry) => {
                let $reg = &mut $regs.quantizers;
                $body
            }
            Pending::Backend($entry) => {
                let $reg = &mut $regs.backends;
                $body
            }
            Pending::PreferenceLoss($entry) => {
                let $reg = &mut $regs.preference_losses;
                $body
            }
            Pending::Optimizer($entry) => {
                let $reg = &mut $regs.optimizers;
                $body
            }
            Pending::Benchmark($entry) => {
                let $reg = &mut $regs.benchmarks;
                $body
            }
        }
    };
}

impl Pending {
    fn name(&self) -> String {
        match self {
            Pending::Model(e) => e.record.name.clone(),
            Pending::Template(e) => e.record.name.clone(),
            Pending::Dataset(e) => e.record.name.clone(),
            Pending::Preprocessor(e) => e.record.name.clone(),
            Pending::Tuner(e) => e.record.name.clone(),
            Pending::Quantizer(e) => e.record.name.clone(),
            Pending::Backend(e) => e.record.name.clone(),
            Pending::PreferenceLoss(e) => e.record.name.clone(),
            Pending::Optimizer(e) => e.record.name.clone(),
            Pending::Benchmark(e) => e.record.name.clone(),
        }
    }
}

impl Registries {
    fn check(&mut self, p: &Pending) -> Result<(), Box<Conflict>> {
        per_kind!(p, self, |reg, e| reg.check(e))
    }

    fn insert(&mut self, p: Pending, replace: bool) -> Result<(), Box<Conflict>> {
        per_kind!(p, self, |reg, e| reg.insert(e, replace))
    }

    /// One row per entry of the selected kind (`None`: every kind), for `swift list`.
    pub fn rows(&self, kind: Option<&str>) -> Vec<ListRow> {
        let mut rows = Vec::new();
        fn push<R: Record, I>(rows: &mut Vec<ListRow>, reg: &Registry<R, I>) {
            for e in reg.iter() {
                rows.push(ListRow {
                    kind: R::KIND,
                    name: e.record.name().to_string(),
                    aliases: e.record.aliases().to_vec(),
                    provenance: e.provenance.clone(),
                    description: e.record.description().to_string(),
                    capabilities: None,
                    options: Vec::new(),
                    benchmark: None,
                });
            }
        }
        let want = |k: &str| kind.is_none_or(|w| w == k);
        if want("models") {
            push(&mut rows, &self.models);
        }
        if want("templates") {
            push(&mut rows, &self.templates);
        }
        if want("datasets") {
            push(&mut rows, &self.datasets);
        }
        if want("preprocessors") {
            push(&mut rows, &self.preprocessors);
        }
        if want("tuners") {
            let from = rows.len();
            push(&mut rows, &self.tuners);
            // A tuner's options, described as data (its record's `schema`).
            for (row, e) in rows[from..].iter_mut().zip(self.tuners.iter()) {
                row.options = e.record.schema.clone();
            }
        }
        if want("quantizers") {
            push(&mut rows, &self.quantizers);
        }
        if want("backends") {
            let from = rows.len();
            push(&mut rows, &self.backends);
            for (row, e) in rows[from..].iter_mut().zip(self.backends.iter()) {
                row.capabilities = Some(e.record.capabilities.clone());
            }
        }
        if want("preference-losses") {
            push(&mut rows, &self.preference_losses);
        }
        if want("optimizers") {
            let from = rows.len();
            push(&mut rows, &self.optimizers);
            for (row, e) in rows[from..].iter_mut().zip(self.optimizers.iter()) {
                row.options = e.record.options.clone();
            }
        }
        if want("benchmarks") {
            let from = rows.len();
            push(&mut rows, &self.benchmarks);
            for (row, e) in rows[from..].iter_mut().zip(self.benchmarks.iter()) {
                row.benchmark = Some(e.record.clone());
            }
        }
        rows
    }

    /// The kinds `rows` accepts.
    pub const KINDS: [&'static str; 10] = [
        "models",
        "templates",
        "datasets",
        "preprocessors",
        "tuners",
        "quantizers",
        "backends",
        "preference-losses",
        "optimizers",
        "benchmarks",
    ];
}

/// One line of `swift list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListRow {
    pub kind: &'static str,
    pub name: String,
    pub aliases: Vec<String>,
    pub provenance: Provenance,
    pub description: String,
    /// A backend's capabilities (what `--infer_backend NAME` supports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<swift_plugin_api::backend::Capabilities>,
    /// The options it reads (tuners that describe theirs, optimizers), for `--json` and UIs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<swift_plugin_api::OptionDecl>,
    /// A benchmark's whole record (rows, format, prompt, scoring, metrics), for `--json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<BenchmarkRecord>,
}

/// Where plugins come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A directory to scan (bad plugins in it are warnings).
    Dir(PathBuf),
    /// A plugin file the user named (a bad one is an error).
    File(PathBuf),
}

/// Turns `--plugin-dir` values and `SWIFT_PLUGIN_PATH` (colon-separated) into sources, flags
/// first. An entry that is a file is a plugin asked for by path.
pub fn discover(plugin_dirs: &[PathBuf], env_path: Option<&OsStr>) -> Vec<PluginSource> {
    let from_env = env_path
        .map(|p| {
            std::env::split_paths(p)
                .filter(|p| !p.as_os_str().is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    plugin_dirs
        .iter()
        .cloned()
        .chain(from_env)
        .map(|p| {
            if p.is_file() {
                PluginSource::File(p)
            } else {
                PluginSource::Dir(p)
            }
        })
        .collect()
}

/// A loaded plugin (recorded in checkpoints so that later commands can reload it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LoadedPlugin {
    pub name: String,
    pub version: String,
    /// None for built-ins.
    pub path: Option<PathBuf>,
    /// sha256 of the file, None for built-ins.
    pub sha256: Option<String>,
}

/// What loading produced.
pub struct LoadReport {
    pub registries: Registries,
    pub plugins: Vec<LoadedPlugin>,
    /// One line per bad plugin or refused entry that loading carried on past.
    pub warnings: Vec<String>,
}

/// A plugin problem that stops the command.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugin {path}: {reason}")]
    Plugin { path: PathBuf, reason: String },
    #[error("built-in plugin {plugin}: {reason} (this is a bug in swift-rs)")]
    Builtin { plugin: String, reason: String },
}

/// Loads built-ins and plugin sources into fresh registries.
#[derive(Debug, Clone, Default)]
pub struct PluginLoader {
    /// Entry names or plugin names allowed to replace an existing entry (`--plugin_override`).
    pub overrides: BTreeSet<String>,
    /// Built-in plugins of the tensor engine known here by their records only (see
    /// [`ListedPlugin`]), registered right after the built-ins.
    pub listed: Vec<ListedPlugin>,
}

/// A built-in plugin that lives in the tensor engine, known to a process that does not load the
/// engine (the `swift` binary's `list`) by its records only: its entries are listed, with the
/// plugin's name as provenance, and have no behaviour.
#[derive(Debug, Clone, Default)]
pub struct ListedPlugin {
    pub name: String,
    pub version: String,
    pub models: Vec<ModelFamilyRecord>,
    pub backends: Vec<BackendRecord>,
    pub preference_losses: Vec<PreferenceLossRecord>,
    pub tuners: Vec<TunerRecord>,
    pub optimizers: Vec<OptimizerRecord>,
    pub quantizers: Vec<QuantizerRecord>,
}

/// The libtorch and tch versions that plugins with tensors are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorVersions {
    pub libtorch: String,
    pub tch: String,
}

/// Loads the tensor engine into this process (libtorch with it) and returns its versions.
pub type TensorEngine = fn() -> Result<TensorVersions, String>;

static TENSOR_ENGINE: OnceLock<TensorEngine> = OnceLock::new();

/// Declares how a process that links no libtorch (the `swift` binary) reaches the tensor engine:
/// a function that opens the engine library on demand and returns its versions. Plugins with
/// tensors are then checked against the engine's libtorch and tch versions, and the engine is
/// loaded before any plugin file that needs libtorch is opened, so such a plugin finds libtorch
/// already in the process. Called once, at start-up. A process that links the tensor side (the
/// engine) needs no such function: its own versions are known (`tensor::linked`).
pub fn set_tensor_engine(engine: TensorEngine) {
    let _ = TENSOR_ENGINE.set(engine);
}

/// The versions tensor plugins are checked against: the declared engine's, else those of the
/// tensor side linked into this process (`swift_plugin_api::tensor::linked`: the engine, and
/// the engine crates' tests), else none (no tensor support).
fn tensor_versions() -> Result<Option<TensorVersions>, String> {
    if let Some(engine) = TENSOR_ENGINE.get() {
        return engine().map(Some);
    }
    Ok(swift_plugin_api::tensor::linked().map(|l| TensorVersions {
        libtorch: l.libtorch.to_string(),
        tch: l.tch.to_string(),
    }))
}

/// Whether a shared library names libtorch (or its c10) among the libraries it needs: a plugin
/// built against swift-plugin-tensors does. (A search of the file for the NUL-delimited names
/// its dynamic string table holds; a false positive only loads the tensor engine early.)
fn needs_libtorch(bytes: &[u8]) -> bool {
    [
        &b"\0libtorch_cpu.so\0"[..],
        b"\0libtorch.so\0",
        b"\0libc10.so\0",
    ]
    .iter()
    .any(|needle| memchr::memmem::find(bytes, needle).is_some())
}

/// How strictly to treat one plugin's problems.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Found by scanning a directory: warn and carry on.
    Scanned,
    /// Named by path: fail.
    Named,
}

impl PluginLoader {
    /// A loader with the given overrides.
    pub fn new(overrides: impl IntoIterator<Item = String>) -> Self {
        Self {
            overrides: overrides.into_iter().collect(),
            listed: Vec::new(),
        }
    }

    /// Loads the built-in plugins, then each source in order.
    pub fn load(&self, sources: &[PluginSource]) -> Result<LoadReport, RegistryError> {
        let mut report = LoadReport {
            registries: Registries::default(),
            plugins: Vec::new(),
            warnings: Vec::new(),
        };
        let mut builtins: Vec<(Manifest, PluginLibrary)> = Vec::new();
        for lib in PluginLibrary::builtins() {
            let manifest = lib.manifest().map_err(|reason| RegistryError::Builtin {
                plugin: "(unknown)".into(),
                reason,
            })?;
            builtins.push((manifest, lib));
        }
        // inventory's order is link order; sort so results never depend on it.
        builtins.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (manifest, lib) in builtins {
            // The same contract check as a file. The libtorch check is a file's only: a
            // built-in is linked into this very binary, so it links what this binary links.
            check_contract(&manifest).map_err(|reason| RegistryError::Builtin {
                plugin: manifest.name.clone(),
                reason,
            })?;
            let prov = Provenance::Builtin {
                plugin: manifest.name.clone(),
            };
            self.register_library(&mut report, &manifest, &lib, prov, Mode::Named)
                .map_err(|reason| RegistryError::Builtin {
                    plugin: manifest.name.clone(),
                    reason,
                })?;
            report.plugins.push(LoadedPlugin {
                name: manifest.name,
                version: manifest.version,
                path: None,
                sha256: None,
            });
        }
        for listed in &self.listed {
            self.register_listed(&mut report, listed)?;
        }
        for source in sources {
            match source {
                PluginSource::File(path) => self
                    .load_file(&mut report, path, Mode::Named)
                    .map_err(|reason| RegistryError::Plugin {
                        path: path.clone(),
                        reason,
                    })?,
                PluginSource::Dir(dir) => {
                    let files = match scan_dir(dir) {
                        Ok(files) => files,
                        Err(e) => {
                            report
                                .warnings
                                .push(format!("plugin directory {}: {e}", dir.display()));
                            continue;
                        }
                    };
                    for path in files {
                        if let Err(reason) = self.load_file(&mut report, &path, Mode::Scanned) {
                            report
                                .warnings
                                .push(format!("skipped plugin {}: {reason}", path.display()));
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Registers a [`ListedPlugin`]'s records as built-in entries without behaviour.
    fn register_listed(
        &self,
        report: &mut LoadReport,
        listed: &ListedPlugin,
    ) -> Result<(), RegistryError> {
        let prov = Provenance::Builtin {
            plugin: listed.name.clone(),
        };
        fn entries<R: Clone, I>(records: &[R], prov: &Provenance) -> Vec<Entry<R, I>> {
            records
                .iter()
                .map(|record| Entry {
                    record: record.clone(),
                    imp: None,
                    provenance: prov.clone(),
                })
                .collect()
        }
        let pending: Vec<Pending> = (entries(&listed.models, &prov).into_iter())
            .map(Pending::Model)
            .chain(
                entries(&listed.backends, &prov)
                    .into_iter()
                    .map(Pending::Backend),
            )
            .chain(
                entries(&listed.preference_losses, &prov)
                    .into_iter()
                    .map(Pending::PreferenceLoss),
            )
            .chain(
                entries(&listed.tuners, &prov)
                    .into_iter()
                    .map(Pending::Tuner),
            )
            .chain(
                entries(&listed.optimizers, &prov)
                    .into_iter()
                    .map(Pending::Optimizer),
            )
            .chain(
                entries(&listed.quantizers, &prov)
                    .into_iter()
                    .map(Pending::Quantizer),
            )
            .collect();
        self.merge(report, &listed.name, pending, Mode::Named)
            .map_err(|reason| RegistryError::Builtin {
                plugin: listed.name.clone(),
                reason,
            })?;
        report.plugins.push(LoadedPlugin {
            name: listed.name.clone(),
            version: listed.version.clone(),
            path: None,
            sha256: None,
        });
        Ok(())
    }

    fn load_file(&self, report: &mut LoadReport, path: &Path, mode: Mode) -> Result<(), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let sha256 = file_sha256(&bytes);
        let is_text = matches!(
            path.extension().and_then(OsStr::to_str),
            Some("toml" | "json")
        );
        let (name, version) = if is_text {
            let plugin = parse_text_plugin(path)?;
            let prov = Provenance::TextFile {
                path: path.to_path_buf(),
            };
            let pending: Vec<Pending> = plugin
                .templates
                .into_iter()
                .map(|record| {
                    Pending::Template(Entry {
                        record,
                        imp: None,
                        provenance: prov.clone(),
                    })
                })
                .chain(plugin.datasets.into_iter().map(|record| {
                    Pending::Dataset(Entry {
                        record,
                        imp: None,
                        provenance: prov.clone(),
                    })
                }))
                .chain(plugin.benchmarks.into_iter().map(|record| {
                    Pending::Benchmark(Entry {
                        record,
                        imp: None,
                        provenance: prov.clone(),
                    })
                }))
                .collect();
            let name = prov.plugin();
            self.merge(report, &name, pending, mode)?;
            (name, String::new())
        } else {
            if let Some(engine) = TENSOR_ENGINE.get() {
                if needs_libtorch(&bytes) {
                    engine()
                        .map_err(|e| format!("it needs libtorch, from the tensor engine: {e}"))?;
                }
            }
            let (lib, manifest) = open_checked(path)?;
            let prov = Provenance::Library {
                plugin: manifest.name.clone(),
                path: path.to_path_buf(),
            };
            self.register_library(report, &manifest, &lib, prov, mode)?;
            (manifest.name, manifest.version)
        };
        report.plugins.push(LoadedPlugin {
            name,
            version,
            path: Some(path.to_path_buf()),
            sha256: Some(sha256),
        });
        Ok(())
    }

    fn register_library(
        &self,
        report: &mut LoadReport,
        manifest: &Manifest,
        lib: &PluginLibrary,
        provenance: Provenance,
        mode: Mode,
    ) -> Result<(), String> {
        let mut sink = StagingSink {
            provenance,
            pending: Vec::new(),
        };
        lib.register(&manifest.name, &mut sink)
            .map_err(|e| format!("plugin `{}` failed to register: {e}", manifest.name))?;
        self.merge(report, &manifest.name, sink.pending, mode)
    }

    /// Merges one plugin's registrations. Named plugins are all-or-nothing; scanned ones lose
    /// only their conflicting entries (with a warning naming both providers).
    fn merge(
        &self,
        report: &mut LoadReport,
        plugin: &str,
        pending: Vec<Pending>,
        mode: Mode,
    ) -> Result<(), String> {
        let may_replace =
            |name: &str| self.overrides.contains(name) || self.overrides.contains(plugin);
        if mode == Mode::Named {
            let mut msg = String::new();
            for p in &pending {
                if may_replace(&p.name()) {
                    continue;
                }
                if let Err(c) = report.registries.check(p) {
                    let _ = write!(msg, "{c}; ");
                }
            }
            if !msg.is_empty() {
                return Err(format!(
                    "{}(pass --plugin_override NAME to let it replace an entry)",
                    msg
                ));
            }
        }
        for p in pending {
            let replace = may_replace(&p.name());
            if let Err(c) = report.registries.insert(p, replace) {
                report.warnings.push(format!(
                    "refused {c} (pass --plugin_override {} to let it replace the entry)",
                    c.name
                ));
            }
        }
        Ok(())
    }
}

/// Opens a plugin file and checks it: its manifest first when it exports one under the plain
/// symbol (so a plugin of another contract, whose root module differs, gets the contract
/// message), then abi_stable's layout check of the root module, then the root module's manifest.
pub fn open_checked(path: &Path) -> Result<(PluginLibrary, Manifest), String> {
    let file = PluginFile::open(path).map_err(|e| e.to_string())?;
    let early = file.early_manifest()?;
    if let Some(m) = &early {
        check_manifest(m)?;
    }
    let lib = match file.root_module() {
        Ok(lib) => lib,
        Err(e @ LoadError::Incompatible { .. }) if early.is_none() => {
            return Err(format!(
                "{e}. It exports no `{MANIFEST_SYMBOL}`, which every plugin built against \
                 contract v{CONTRACT_VERSION} exports, so it was built against an older \
                 plugin-api: rebuild it against this swift-rs checkout's plugin-api"
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let manifest = lib
        .manifest()
        .map_err(|e| format!("its manifest failed: {e}"))?;
    check_manifest(&manifest)?;
    Ok((lib, manifest))
}

/// The host-side checks of a plugin file's manifest against this build.
pub fn check_manifest(m: &Manifest) -> Result<(), String> {
    check_contract(m)?;
    check_tensors(m)
}

/// The plugin speaks this build's contract version.
fn check_contract(m: &Manifest) -> Result<(), String> {
    if m.contract_version != CONTRACT_VERSION {
        return Err(format!(
            "plugin `{}` {} was built against plugin contract v{}, this swift speaks v{}; \
             rebuild it against this swift-rs checkout's plugin-api",
            m.name, m.version, m.contract_version, CONTRACT_VERSION
        ));
    }
    Ok(())
}

/// A plugin with tensors links the libtorch and tch that the tensor engine links.
fn check_tensors(m: &Manifest) -> Result<(), String> {
    if m.libtorch_version.is_none() && m.tch_version.is_none() {
        return Ok(());
    }
    let versions = tensor_versions().map_err(|e| {
        format!(
            "plugin `{}` needs libtorch {}: {e}",
            m.name,
            m.libtorch_version.as_deref().unwrap_or("(any)")
        )
    })?;
    check_versions(m, versions.as_ref())
}

/// What a version that could not be read is recorded as (swift-plugin-tensors' build script).
pub const UNKNOWN_VERSION: &str = "unknown";

/// A plugin's libtorch and tch versions against this build's (`None`: no tensor support). An
/// unknown version on either side is a mismatch: it proves nothing about the library.
fn check_versions(m: &Manifest, versions: Option<&TensorVersions>) -> Result<(), String> {
    let check = |what: &str, plugin: &Option<String>, host: Option<&str>| match (plugin, host) {
        (None, _) => Ok(()),
        (Some(p), _) if p == UNKNOWN_VERSION => Err(format!(
            "plugin `{}` does not know which {what} it was built against (its build could not \
             read the version of the torch that torch-sys found); rebuild it against \
             swift-plugin-tensors with LIBTORCH (or LIBTORCH_USE_PYTORCH=1) pointing at a torch \
             installation, e.g. with this checkout's .cargo/config.toml (make setup writes it)",
            m.name
        )),
        (Some(_), Some(h)) if h == UNKNOWN_VERSION => Err(format!(
            "plugin `{}` needs {what}, but this swift's tensor engine does not know which {what} \
             it was built against; rebuild swift with `make setup` (it points torch-sys at the \
             torch wheel through .cargo/config.toml)",
            m.name
        )),
        (Some(p), Some(h)) if p == h => Ok(()),
        (Some(p), Some(h)) => Err(format!(
            "plugin `{}` was built against {what} {p}, this swift uses {h}; rebuild it with the \
             same {what} (`swift doctor` prints this swift's versions)",
            m.name
        )),
        (Some(p), None) => Err(format!(
            "plugin `{}` needs {what} {p} but this swift was built without tensor support",
            m.name
        )),
    };
    check(
        "libtorch",
        &m.libtorch_version,
        versions.map(|v| v.libtorch.as_str()),
    )?;
    check("tch", &m.tch_version, versions.map(|v| v.tch.as_str()))
}

/// Plugin files in a directory, sorted by name, non-recursively.
fn scan_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read: {e}"))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            matches!(
                p.extension().and_then(OsStr::to_str),
                Some("so" | "dylib" | "toml" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

fn file_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Collects one plugin's registrations before they are merged.
struct StagingSink {
    provenance: Provenance,
    pending: Vec<Pending>,
}

impl StagingSink {
    fn entry<R, I>(&self, record: R, imp: Option<I>) -> Entry<R, I> {
        Entry {
            record,
            imp: imp.map(Arc::new),
            provenance: self.provenance.clone(),
        }
    }
}

impl HostSink for StagingSink {
    fn add_template(&mut self, record: TemplateRecord) -> Result<(), SinkError> {
        let e = self.entry(record, None);
        self.pending.push(Pending::Template(e));
        Ok(())
    }

    fn add_dataset(&mut self, record: DatasetRecord) -> Result<(), SinkError> {
        let e = self.entry(record, None);
        self.pending.push(Pending::Dataset(e));
        Ok(())
    }

    fn add_benchmark(&mut self, record: BenchmarkRecord) -> Result<(), SinkError> {
        let e = self.entry(record, None);
        self.pending.push(Pending::Benchmark(e));
        Ok(())
    }

    fn add_preprocessor(
        &mut self,
        record: PreprocessorRecord,
        imp: PreprocessorHandle,
    ) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::Preprocessor(e));
        Ok(())
    }

    fn add_model_family(
        &mut self,
        record: ModelFamilyRecord,
        imp: Option<ModelFamilyHandle>,
    ) -> Result<(), SinkError> {
        let e = self.entry(record, imp);
        self.pending.push(Pending::Model(e));
        Ok(())
    }

    fn add_tuner(&mut self, record: TunerRecord, imp: TunerHandle) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::Tuner(e));
        Ok(())
    }

    fn add_quantizer(
        &mut self,
        record: QuantizerRecord,
        imp: QuantizerHandle,
    ) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::Quantizer(e));
        Ok(())
    }

    fn add_backend(&mut self, record: BackendRecord, imp: BackendHandle) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::Backend(e));
        Ok(())
    }

    fn add_preference_loss(
        &mut self,
        record: PreferenceLossRecord,
        imp: PreferenceLossHandle,
    ) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::PreferenceLoss(e));
        Ok(())
    }

    fn add_optimizer(
        &mut self,
        record: OptimizerRecord,
        imp: OptimizerKindHandle,
    ) -> Result<(), SinkError> {
        let e = self.entry(record, Some(imp));
        self.pending.push(Pending::Optimizer(e));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorch_is_found_among_needed_libraries_only_by_its_name() {
        assert!(needs_libtorch(
            b"\x7fELF..\0libc.so.6\0libtorch_cpu.so\0libm.so.6\0"
        ));
        assert!(needs_libtorch(b"\0libc10.so\0"));
        assert!(!needs_libtorch(b"\0libc.so.6\0libm.so.6\0"));
        assert!(!needs_libtorch(b"mentions libtorch_cpu.so in a sentence"));
    }

    #[test]
    fn unknown_versions_on_either_side_are_refused_with_the_rebuild_message() {
        let m = |libtorch: Option<&str>| Manifest {
            name: "p".into(),
            version: "1".into(),
            contract_version: CONTRACT_VERSION,
            libtorch_version: libtorch.map(str::to_string),
            tch_version: libtorch.map(|_| "0.26.0".to_string()),
        };
        let host = |libtorch: &str| TensorVersions {
            libtorch: libtorch.into(),
            tch: "0.26.0".into(),
        };
        assert!(check_versions(&m(Some("2.13.0")), Some(&host("2.13.0"))).is_ok());
        // Plugins without tensors need no libtorch, known or not.
        assert!(check_versions(&m(None), Some(&host("unknown"))).is_ok());
        assert!(check_versions(&m(None), None).is_ok());
        let e = check_versions(&m(Some("unknown")), Some(&host("unknown"))).unwrap_err();
        assert!(
            e.contains("does not know which libtorch") && e.contains("rebuild"),
            "{e}"
        );
        let e = check_versions(&m(Some("2.13.0")), Some(&host("unknown"))).unwrap_err();
        assert!(e.contains("rebuild swift with `make setup`"), "{e}");
        let e = check_versions(&m(Some("2.12.0")), Some(&host("2.13.0"))).unwrap_err();
        assert!(e.contains("libtorch 2.12.0, this swift uses 2.13.0"), "{e}");
    }

    #[test]
    fn listed_plugins_are_built_ins_without_behaviour() {
        let mut loader = PluginLoader::new(Vec::<String>::new());
        loader.listed = vec![ListedPlugin {
            name: "engine-models".into(),
            version: "1".into(),
            models: vec![ModelFamilyRecord {
                name: "fam".into(),
                aliases: vec!["f".into()],
                description: "a family".into(),
                architectures: vec![],
                model_types: vec![],
                default_template: None,
                alias_of: None,
            }],
            preference_losses: vec![PreferenceLossRecord::new("lossy", "a loss")],
            ..Default::default()
        }];
        let report = loader.load(&[]).unwrap();
        let fam = report.registries.models.resolve("f").unwrap();
        assert!(fam.imp.is_none());
        assert_eq!(
            fam.provenance,
            Provenance::Builtin {
                plugin: "engine-models".into()
            }
        );
        assert!(report.registries.preference_losses.get("lossy").is_some());
        let rows = report.registries.rows(Some("preference-losses"));
        assert_eq!(rows.len(), 1);
        assert!(report.plugins.iter().any(|p| p.name == "engine-models"));
    }
}
