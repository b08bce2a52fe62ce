//! The repository's own fixtures: the tiny random-weight models of tests/fixtures/models/
//! (written by tests/reference/make_tiny_models.py, with transformers' numbers beside them), the
//! other recorded files, the Python reference scripts of tests/reference/, and the tiny models
//! loaded in-process for tests that drive the engine directly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;
use swift_model::LoadedModel;
use swift_registry::{PluginLoader, PluginSource};
use tch::{Device, Kind};

// The built-in model families are collected with `inventory`: link them into the test binary.
use swift_plugin_models as _;
use swift_plugin_tuners as _;

use super::{plugin_dir_with, read_json, workspace_root};

/// The tiny random model of one family: tests/fixtures/models/FAMILY (llama, qwen2, qwen3,
/// mistral; gpt2 needs the example plugin).
pub fn tiny_model(family: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/models").join(family)
}

/// The tiny random llama (Llama-3 layout, tied embeddings): the default model of the tests.
pub fn tiny() -> PathBuf {
    tiny_model("llama")
}

/// A file under tests/fixtures/.
pub fn fixture_file(rel: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(rel)
}

/// transformers' numbers for a tiny model (its expected.json).
pub fn expected(family: &str) -> Value {
    read_json(&tiny_model(family).join("expected.json"))
}

/// Runs tests/reference/SCRIPT ARGS with `python` (from [`super::reference_python`]), offline,
/// on the CPU, with one thread; asserts success and returns the JSON object on the last line of
/// its stdout.
pub fn run_reference(python: &Path, script: &str, args: &[&dyn AsRef<OsStr>]) -> Value {
    let out = Command::new(python)
        .arg(workspace_root().join("tests/reference").join(script))
        .args(args.iter().map(|a| a.as_ref()))
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.trim().lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {text}"))
}

/// libtorch's generator is global to the process: in-process tests that seed it or draw from it
/// hold this lock meanwhile.
pub fn torch_rng() -> MutexGuard<'static, ()> {
    static GENERATOR: Mutex<()> = Mutex::new(());
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

/// A built-in tuner's behaviour (e.g. `lora`, whose math crosses the tuner contract), for
/// in-process tests.
pub fn builtin_tuner(name: &str) -> std::sync::Arc<swift_plugin_api::TunerHandle> {
    let report = PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-in plugins load");
    let entry = report
        .registries
        .tuners
        .resolve(name)
        .expect("a built-in tuner");
    entry.imp.clone().expect("the tuner has behaviour")
}

/// The tiny model of `family` loaded in-process in float32 on the CPU, through the registry and
/// the plugin ABI: the built-in families, and the example plugin's (gpt2) when no built-in one
/// claims the model type.
pub fn load_tiny(family: &str) -> LoadedModel {
    let dir = tiny_model(family);
    let config = read_json(&dir.join("config.json"));
    let model_type = config["model_type"]
        .as_str()
        .expect("config has a model_type");
    let builtin = PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-in plugins load");
    let claims = |regs: &swift_registry::Registries| {
        regs.models
            .iter()
            .any(|e| e.record.model_types.iter().any(|t| t == model_type))
    };
    let report = if claims(&builtin.registries) {
        builtin
    } else {
        let plugins = plugin_dir_with(&["swift-example-plugin"]);
        PluginLoader::new(Vec::<String>::new())
            .load(&[PluginSource::Dir(plugins.path().to_path_buf())])
            .expect("plugins load")
    };
    let models = &report.registries.models;
    let mut entry = models
        .iter()
        .find(|e| e.record.model_types.iter().any(|t| t == model_type))
        .unwrap_or_else(|| panic!("no family for model_type {model_type}"));
    while entry.imp.is_none() {
        let target = entry.record.alias_of.as_deref().expect("an alias");
        entry = models.resolve(target).expect("the alias resolves");
    }
    let handle = entry
        .imp
        .as_ref()
        .expect("an implementation")
        .instantiate(&config)
        .expect("the family takes the config");
    LoadedModel::load(&dir, handle, Kind::Float, Device::Cpu).expect("the tiny model loads")
}
