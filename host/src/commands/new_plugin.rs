//! `swift new-plugin NAME --kind KIND [--out DIR]`: writes a ready-to-build plugin crate for a
//! third party (Cargo.toml, a commented lib.rs for that kind, a README saying how to build and
//! load it). The crate depends on this checkout's plugin-api by path. `--kind model-family`
//! writes a family with its own forward pass ([`family`]).

mod family;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::NewPluginArgs;

pub fn run(args: &NewPluginArgs) -> Result<()> {
    let name = &args.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!("plugin name `{name}` is not a valid crate name: use letters, digits, `-` and `_`, starting with a letter");
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(name));
    if out.exists()
        && std::fs::read_dir(&out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; choose another --out",
            out.display()
        );
    }
    let api = match &args.api_path {
        Some(p) => p.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api"),
    };
    let api = api.canonicalize().with_context(|| {
        format!(
            "cannot find swift-plugin-api at {}; pass --api-path to a swift-rs checkout's plugin-api",
            api.display()
        )
    })?;
    std::fs::create_dir_all(out.join("src"))
        .with_context(|| format!("creating {}", out.display()))?;
    if args.kind == "model-family" {
        let tensors = api.join("tensors");
        family::check_checkout(&tensors)?;
        let root = api
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| api.clone());
        let out = out
            .canonicalize()
            .with_context(|| format!("resolving {}", out.display()))?;
        return family::write(name, &out, &family::Checkout { root, tensors });
    }
    let lib_name = name.replace('-', "_");
    write(&out.join("Cargo.toml"), &cargo_toml(name, &api))?;
    write(&out.join("src/lib.rs"), &lib_rs(name, &args.kind))?;
    write(&out.join("README.md"), &readme(name, &lib_name, &args.kind))?;
    write(&out.join(".gitignore"), "/target\n")?;
    println!(
        "created {} ({} plugin); build it with: cd {} && cargo build --release",
        out.display(),
        args.kind,
        out.display()
    );
    println!(
        "then load it with: swift --plugin-dir {}/target/release list",
        out.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn cargo_toml(name: &str, api: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A plugin is a shared library that swift loads with --plugin-dir.
crate-type = ["cdylib"]

[dependencies]
# The stable contract. A plugin that handles tensors (a model family with its own forward pass,
# a preference loss) depends on swift-plugin-tensors (next to it: plugin-api/tensors) instead,
# and then needs the same libtorch as swift's tensor engine.
swift-plugin-api = {{ path = "{api}" }}
serde_json = "1"

# A plugin crate is its own workspace, so it builds wherever it is placed.
[workspace]
"#,
        api = api.display()
    )
}

fn lib_rs(name: &str, kind: &str) -> String {
    let header = format!(
        "//! {name}: a swift-rs plugin.\n//!\n//! `register` runs once when swift loads the library; everything the plugin offers is\n//! registered there. Panics are caught and reported as errors naming this plugin; log with\n//! `plugin_info!`/`plugin_warn!` (lines go to swift's log).\n\nuse swift_plugin_api::prelude::*;\n\n"
    );
    let body = match kind {
        "template" => format!(
            r#"fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    // A chat template in ms-swift's TemplateMeta style: {{{{SYSTEM}}}} and {{{{QUERY}}}} are
    // replaced; the assistant's answer follows `prompt`; `suffix` ends the last answer.
    let mut t = TemplateRecord::new("{name}", "<|user|>\n{{{{QUERY}}}}<|end|>\n<|assistant|>\n");
    t.description = "{name}'s chat format".into();
    t.system_prefix = Some("<|system|>\n{{{{SYSTEM}}}}<|end|>\n".into());
    t.chat_sep = Some("<|end|>\n".into());
    t.suffix = "<|end|>".into();
    t.stop_words = vec!["<|end|>".into()];
    r.template(t)?;
    plugin_info!("{name}: registered template `{name}`");
    Ok(())
}}
"#
        ),
        "dataset" => format!(
            r#"use serde_json::{{Map, Value}};

/// Turns rows like {{"question": ..., "answer": ...}} into standard `messages` rows.
struct QaPreprocessor;

impl DatasetPreprocessor for QaPreprocessor {{
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {{
        let field = |k: &str| row.get(k).and_then(Value::as_str).ok_or_else(|| format!("row has no string `{{k}}`"));
        let messages = vec![Message::new("user", field("question")?), Message::new("assistant", field("answer")?)];
        Ok(PreprocessOutcome::Row(StandardRow {{ messages, ..Default::default() }}))
    }}
}}

fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    r.preprocessor(
        PreprocessorRecord {{
            name: "{name}-qa".into(),
            aliases: vec![],
            description: "question/answer rows".into(),
            detect_columns: vec!["question".into(), "answer".into()],
            priority: 0,
        }},
        QaPreprocessor,
    )?;
    Ok(())
}}
"#
        ),
        "model" => format!(
            r#"fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    // A declarative family: checkpoints whose config.json names these architectures are run by
    // the `llama` family, with this plugin's default template.
    r.model_family_alias(ModelFamilyRecord {{
        name: "{name}".into(),
        aliases: vec![],
        description: "{name} checkpoints (Llama architecture)".into(),
        architectures: vec![],
        model_types: vec!["{name}".into()],
        default_template: Some("chatml".into()),
        alias_of: Some("llama".into()),
    }})?;
    Ok(())
}}
"#
        ),
        "tuner" => format!(
            r#"use serde_json::Value;

/// Attaches to the linear slots whose names end with one of `target_modules`.
struct SuffixTuner;

impl Tuner for SuffixTuner {{
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {{
        let wanted: Vec<&str> = args["target_modules"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        Ok(slots.iter().filter(|s| wanted.iter().any(|w| s.ends_with(w))).cloned().collect())
    }}
}}

fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    // Its slot choice over the built-in `lora` tuner's math (a tuner with math of its own
    // implements `AdapterTuner` and registers with `adapter_tuner`: ARCHITECTURE.md §3.8).
    r.tuner(TunerRecord::new("{name}", "{name} tuner").with_adapter("lora", []), SuffixTuner)?;
    Ok(())
}}
"#
        ),
        "quantizer" => format!(
            r#"// A quantizer's math (packing a weight, reading a packed slot back, its forward) is the
// quantizer contract: depend on swift-plugin-tensors (next to swift-plugin-api:
// plugin-api/tensors), implement `QuantMethod` -> `QuantScheme` -> `PackedSlot` and register
// with `r.quant_method(record, MyQuantizer)` (ARCHITECTURE.md §3.10; a complete example:
// plugins/examples/src/int8row.rs). Registered with `quantizer` as below, it only checks bit
// widths: `swift list quantizers` lists it, and `swift export --quant_method` refuses it.
struct MyQuantizer;

impl Quantizer for MyQuantizer {{
    fn check_bits(&self, bits: u8) -> Result<(), String> {{
        match bits {{
            4 | 8 => Ok(()),
            b => Err(format!("{name} supports 4 and 8 bits, not {{b}}")),
        }}
    }}
}}

fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    r.quantizer(QuantizerRecord::new("{name}", "{name} quantizer"), MyQuantizer)?;
    Ok(())
}}
"#
        ),
        _ => format!(
            r#"use serde_json::Value;

// A backend declares what it supports in its record (`BackendRecord::with_capabilities`) and
// generates through `Backend::load` -> `BackendModel::step` (ARCHITECTURE.md §3.8); until `load`
// is written it refuses to load. Examples: the llama_cpp plugin (plugins/llama-cpp) and the
// example plugin's `example-echo` (plugins/examples/src/echo.rs).
struct MyBackend;

impl Backend for MyBackend {{
    fn check_model(&self, config: &Value) -> Result<(), String> {{
        match config["model_type"].as_str() {{
            Some("llama") => Ok(()),
            other => Err(format!("{name} serves llama models, not {{other:?}}")),
        }}
    }}
}}

fn register(r: &mut Registrar) -> Result<(), PluginError> {{
    r.backend(BackendRecord::new("{name}", "{name} inference backend"), MyBackend)?;
    Ok(())
}}
"#
        ),
    };
    format!("{header}{body}\nswift_plugin_api::export_plugin!(register);\n")
}

fn readme(name: &str, lib_name: &str, kind: &str) -> String {
    format!(
        r#"# {name}

A swift-rs plugin that registers a {kind}.

Build:

    cargo build --release

Load (the directory is scanned for `*.so` files):

    swift --plugin-dir target/release list

or set `SWIFT_PLUGIN_PATH=$PWD/target/release/lib{lib_name}.so` to load it in every command.

The plugin must be rebuilt whenever swift's plugin contract version changes (swift refuses it
with a message saying so), and, if it depends on `swift-plugin-tensors`, whenever swift's
libtorch changes.
"#
    )
}
