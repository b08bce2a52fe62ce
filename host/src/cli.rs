//! The command line: global flags and subcommands (clap), plus the spelling rules users of the
//! Python tool expect.
//!
//! The commands' own flags are swift-spec's groups (each defined once, flattened into every
//! command it applies to); this file adds the global flags and the commands that need no
//! specification. Every flag is declared in kebab-case; [`normalize_args`] rewrites
//! `--snake_case` spellings before clap sees them, so both work everywhere. Boolean flags take
//! `--flag`, `--flag true` or `--flag false`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// swift: train, align, serve, evaluate and export large language models.
#[derive(Debug, Parser)]
#[command(
    name = "swift",
    version,
    about = "swift: train, align, serve, evaluate and export large language models",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Load plugins from DIR (every `*.so`, `*.dylib`, `*.toml`, `*.json` in it, sorted by
    /// name), or the single plugin file DIR. Repeatable; SWIFT_PLUGIN_PATH (colon-separated)
    /// adds more.
    #[arg(long = "plugin-dir", global = true, value_name = "DIR")]
    pub plugin_dir: Vec<PathBuf>,
    /// Let the plugin or entry NAME replace an entry that is already registered (e.g. an
    /// organisation's own `chatml` template). Repeatable.
    #[arg(long = "plugin-override", global = true, value_name = "NAME")]
    pub plugin_override: Vec<String>,
    /// A YAML, TOML or JSON file of settings (flags override it; SWIFT_* variables sit between).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace (RUST_LOG-style filters work too).
    #[arg(long = "log-level", global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

// Parsed once per process: the size of the largest variant (`rlhf`'s flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pre-train (continue training; the loss covers every token).
    Pt(swift_spec::TrainSpec),
    /// Supervised fine-tuning (full or with a tuner such as LoRA).
    Sft(swift_spec::TrainSpec),
    /// Preference alignment: DPO, ORPO, KTO, SimPO, CPO, reward modelling.
    Rlhf(swift_spec::RlhfSpec),
    /// Chat with a model, or run it over a dataset.
    Infer(swift_spec::InferSpec),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Deploy(swift_spec::DeploySpec),
    /// Evaluate a model on benchmarks (`swift list benchmarks`) or custom mcq/general_qa files.
    Eval(swift_spec::EvalSpec),
    /// Merge adapters, quantize, convert from/to GGUF.
    Export(swift_spec::ExportSpec),
    /// The web UI: train, chat, evaluate and export from a browser.
    #[command(name = "web-ui")]
    WebUi(swift_spec::WebUiSpec),
    /// List registered models, templates, datasets, tuners, quantizers, backends and benchmarks.
    List(ListArgs),
    /// Write a ready-to-build plugin crate.
    #[command(name = "new-plugin")]
    NewPlugin(NewPluginArgs),
    /// This swift's versions (contract, libtorch, tch, CPU, CUDA), and why a plugin loads or not.
    Doctor(DoctorArgs),
    /// Encode dataset rows with a template (debug a template or a dataset).
    Encode(swift_spec::EncodeSpec),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// models, templates, datasets, preprocessors, tuners, quantizers, backends,
    /// preference-losses, optimizers or benchmarks (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(swift_registry::Registries::KINDS))]
    pub kind: Option<String>,
    /// One JSON array on stdout instead of a table.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub json: Option<bool>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// A plugin file to inspect: its manifest, the checks against this swift, the layout check
    /// (only what differs) and what it registers.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NewPluginArgs {
    /// The plugin's name (a crate name: letters, digits, `-` and `_`).
    pub name: String,
    /// What the plugin registers: template, dataset, model (an alias of a built-in family),
    /// model-family (a family with its own forward pass), tuner, quantizer or backend.
    #[arg(long, value_parser = ["template", "dataset", "model", "model-family", "tuner", "quantizer", "backend"])]
    pub kind: String,
    /// Where to create the crate (default: ./NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Path of the swift-plugin-api crate to depend on (default: this checkout's).
    #[arg(long = "api-path")]
    pub api_path: Option<PathBuf>,
}

pub use swift_spec::parse_bool;

/// Rewrites `--snake_case[=v]` into `--snake-case[=v]` (values are untouched), so scripts
/// written for ms-swift work unchanged. Stops at a bare `--`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for a in args {
        if passthrough || a == "--" || !a.starts_with("--") {
            passthrough |= a == "--";
            out.push(a);
            continue;
        }
        let (flag, value) = match a.find('=') {
            Some(i) => (&a[..i], Some(&a[i..])),
            None => (a.as_str(), None),
        };
        let mut s = flag.replace('_', "-");
        if let Some(v) = value {
            s.push_str(v);
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let args = normalize_args(args.iter().map(|s| s.to_string()));
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn every_flag_is_defined_once() {
        // clap's own checks: no two arguments of a command share an id or a long name, which
        // is what flattening the same group twice, or two groups defining one flag, would do.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn snake_and_kebab_spellings_are_the_same_flag() {
        let a = parse(&["swift", "list", "--plugin_dir", "a", "--plugin-dir=b"]);
        assert_eq!(
            a.global.plugin_dir,
            vec![PathBuf::from("a"), PathBuf::from("b")]
        );
        let a = parse(&[
            "swift",
            "export",
            "--from_gguf=x.gguf",
            "--output-dir",
            "o_ut",
        ]);
        let Command::Export(e) = a.command else {
            panic!()
        };
        assert_eq!(e.from_gguf, Some(PathBuf::from("x.gguf")));
        assert_eq!(
            e.output_dir,
            Some(PathBuf::from("o_ut")),
            "values keep their underscores"
        );
    }

    #[test]
    fn booleans_accept_bare_and_explicit_values() {
        for (args, want) in [
            (vec!["swift", "list", "--json"], Some(true)),
            (vec!["swift", "list", "--json", "true"], Some(true)),
            (vec!["swift", "list", "--json", "false"], Some(false)),
            (vec!["swift", "list", "--json=false"], Some(false)),
            (vec!["swift", "list"], None),
        ] {
            let Command::List(l) = parse(&args).command else {
                panic!()
            };
            assert_eq!(l.json, want, "{args:?}");
        }
        let err = Cli::try_parse_from(["swift", "list", "--json", "maybe"]).unwrap_err();
        assert!(err.to_string().contains("expected true or false"), "{err}");
    }

    #[test]
    fn web_ui_takes_ms_swifts_flag_names_and_host_port_aliases() {
        for args in [
            vec![
                "swift",
                "web-ui",
                "--server_name",
                "0.0.0.0",
                "--server_port",
                "0",
            ],
            vec!["swift", "web-ui", "--host", "0.0.0.0", "--port", "0"],
        ] {
            let Command::WebUi(w) = parse(&args).command else {
                panic!()
            };
            assert_eq!(
                (w.server.server_name.as_str(), w.server.server_port),
                ("0.0.0.0", 0)
            );
        }
        assert!(Cli::try_parse_from(["swift", "web-ui", "--lang", "fr"]).is_err());
        let a = parse(&[
            "swift",
            "sft",
            "--model",
            "m",
            "--lora_rank",
            "8",
            "--train_type",
            "full",
        ]);
        let Command::Sft(s) = a.command else { panic!() };
        assert_eq!(
            (s.tuner.lora_rank, s.tuner.tuner_type.as_str()),
            (8, "full")
        );
    }
}
