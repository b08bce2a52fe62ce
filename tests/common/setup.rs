//! What `make setup` provides to the tests, and the one place that says how to get it: the cache
//! folder (`$SWIFT_RS_CACHE`), the reference virtualenv's python (transformers, peft, openai,
//! gguf, checked by importing them), and the assets (SmolLM2, LLaMA-Factory's demo data, real
//! tokenizers). A test that needs one of them and does not find it fails with the command that
//! installs it; it never skips.
//!
//! Plain `std` only, and no `super::` items, so that the engine crates' tests can include this
//! file too (`#[path = ".../tests/common/setup.rs"] mod setup;`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository's root: the nearest folder above the crate under test that holds
/// scripts/setup.sh.
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("scripts/setup.sh").is_file())
        .unwrap_or(&manifest)
        .to_path_buf()
}

/// `$SWIFT_RS_CACHE` (as `make setup` and the `swift` binary read it), default
/// `~/.cache/swift-rs`.
pub fn cache() -> PathBuf {
    match std::env::var_os("SWIFT_RS_CACHE").filter(|c| !c.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/swift-rs"),
    }
}

/// The line that installs everything for this cache.
fn make_setup() -> String {
    let default =
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/swift-rs");
    if cache() == default {
        "make setup".into()
    } else {
        format!("SWIFT_RS_CACHE={} make setup", cache().display())
    }
}

/// The reference packages with the versions the tests were written against:
/// scripts/requirements-reference.txt, plus torch as scripts/setup.sh pins it.
pub fn reference_requirements() -> Vec<String> {
    let root = repo_root();
    let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).unwrap_or_default();
    let torch = setup
        .split_whitespace()
        .find(|w| w.starts_with("torch=="))
        .unwrap_or("torch")
        .to_string();
    let req = std::fs::read_to_string(root.join("scripts/requirements-reference.txt"))
        .expect("scripts/requirements-reference.txt is in the repository");
    std::iter::once(torch)
        .chain(
            req.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(String::from),
        )
        .collect()
}

/// The reference virtualenv's python (`$SWIFT_RS_CACHE/venv/bin/python`), checked to import
/// every module in `modules` (e.g. `["transformers", "peft"]`). Panics, saying how to install
/// them, when it cannot. The check runs once per set of modules and process.
pub fn reference_python(modules: &[&str]) -> PathBuf {
    static CHECKED: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let venv = cache().join("venv");
    let python = venv.join("bin/python");
    let imports = modules.join(", ");
    let key = format!("{} {imports}", python.display());
    let result = {
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        checked
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert_with(|| can_import(&python, &imports))
            .clone()
    };
    if let Err(why) = result {
        panic!(
            "the reference tools are missing: `{python} -c 'import {imports}'` fails ({why}).\n\
             This test compares swift-rs with them. Install them with\n    \
             {setup}\n\
             or by hand, into the virtualenv the tests use ($SWIFT_RS_CACHE/venv):\n    \
             python3 -m venv {venv}\n    \
             {python} -m pip install {packages}",
            python = python.display(),
            setup = make_setup(),
            venv = venv.display(),
            packages = reference_requirements().join(" "),
        );
    }
    python
}

fn can_import(python: &Path, imports: &str) -> Result<(), String> {
    if !python.is_file() {
        return Err(format!("{} does not exist", python.display()));
    }
    let out = Command::new(python)
        .args(["-c", &format!("import {imports}")])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error message")
            .trim()
            .to_string())
    }
}

/// Panics with how to get `path`, a file or folder that `make setup` writes.
fn missing(path: &Path, what: &str) -> ! {
    panic!(
        "{} is missing: this test needs {what}, which `make setup` (scripts/setup.sh) puts in \
         $SWIFT_RS_CACHE ({}). Install it with\n    {}",
        path.display(),
        cache().display(),
        make_setup()
    )
}

/// `$SWIFT_RS_CACHE/assets/REL` (fetched by `make setup`, see shared/ASSETS.md); panics with the
/// install command when it is missing.
pub fn asset(rel: &str) -> PathBuf {
    let p = cache().join("assets").join(rel);
    if !p.exists() {
        missing(&p, &format!("the asset `{rel}`"));
    }
    p
}

/// The SmolLM2-135M-Instruct folder that `make setup` converts from the GGUF (the project's
/// default model).
pub fn smollm2() -> PathBuf {
    let dir = cache().join("models/SmolLM2-135M-Instruct");
    if !dir.join("model.safetensors").is_file() {
        missing(
            &dir.join("model.safetensors"),
            "the default model (SmolLM2-135M-Instruct, converted from its GGUF)",
        );
    }
    dir
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF the default model comes from.
pub fn smollm2_gguf() -> PathBuf {
    asset("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A file of LLaMA-Factory's demo data (`wiki_demo.txt`, `alpaca_en_demo.json`, ...).
pub fn llamafactory_data(file: &str) -> PathBuf {
    asset(&format!("llamafactory/data/{file}"))
}

/// A registered demo dataset spec such as `"dpo-en-demo#8"`, after checking that LLaMA-Factory's
/// demo data (which the built-in `*-demo` datasets read) is in the cache.
pub fn demo(spec: &'static str) -> &'static str {
    llamafactory_data("alpaca_en_demo.json");
    spec
}

/// The tokenizer.json of a real model family (`qwen3`, `llama3`).
pub fn tokenizer(family: &str) -> PathBuf {
    asset(&format!("tokenizers/{family}/tokenizer.json"))
}
