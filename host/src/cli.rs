//! The command line: global flags and subcommands (clap), plus the spelling rules users of the
//! Python tool expect.
//!
//! Every flag is declared in kebab-case; [`normalize_args`] rewrites `--snake_case` spellings
//! before clap sees them, so both work everywhere. Boolean flags take `--flag`, `--flag true` or
//! `--flag false`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// swift: train, align, serve, evaluate and export large language models.
#[derive(Debug, Parser)]
#[command(name = "swift", version, about, long_about = None, propagate_version = true)]
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
    Pt(crate::commands::sft::SftArgs),
    /// Supervised fine-tuning (full or with a tuner such as LoRA).
    Sft(crate::commands::sft::SftArgs),
    /// Preference alignment: DPO, ORPO, KTO, SimPO, CPO, reward modelling.
    Rlhf(crate::commands::rlhf::RlhfArgs),
    /// Chat with a model, or run it over a dataset.
    Infer(crate::commands::infer::InferArgs),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Deploy(crate::commands::deploy::DeployArgs),
    /// Evaluate a model on benchmark datasets.
    Eval(Pending),
    /// Merge adapters, quantize, convert from/to GGUF.
    Export(ExportArgs),
    /// The web UI.
    #[command(name = "web-ui")]
    WebUi(Pending),
    /// List registered models, templates, datasets, tuners, quantizers and backends.
    List(ListArgs),
    /// Write a ready-to-build plugin crate.
    #[command(name = "new-plugin")]
    NewPlugin(NewPluginArgs),
    /// Encode dataset rows with a template (debug a template or a dataset).
    Encode(EncodeArgs),
}

/// Arguments of a command that a later issue implements: accepted, then refused clearly.
#[derive(Debug, Args)]
pub struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// models, templates, datasets, preprocessors, tuners, quantizers, backends or
    /// preference-losses (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(swift_registry::Registries::KINDS))]
    pub kind: Option<String>,
    /// One JSON array on stdout instead of a table.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub json: Option<bool>,
}

#[derive(Debug, Args)]
pub struct NewPluginArgs {
    /// The plugin's name (a crate name: letters, digits, `-` and `_`).
    pub name: String,
    /// What the plugin registers: template, dataset, model, tuner, quantizer or backend.
    #[arg(long, value_parser = ["template", "dataset", "model", "tuner", "quantizer", "backend"])]
    pub kind: String,
    /// Where to create the crate (default: ./NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Path of the swift-plugin-api crate to depend on (default: this checkout's).
    #[arg(long = "api-path")]
    pub api_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Convert this GGUF file into a Hugging Face model folder.
    #[arg(long = "from-gguf", value_name = "FILE")]
    pub from_gguf: Option<PathBuf>,
    /// Where to write the result.
    #[arg(long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    // -- merge LoRA, GGUF and Ollama (host/src/commands/export/) --
    /// The model to export (a Hugging Face folder); with --adapters, the base model (default:
    /// the adapter's args.json / adapter_config.json `base_model_name_or_path`).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// LoRA checkpoints (PEFT layout) to merge into the base model (with --merge_lora).
    #[arg(long, num_args = 1.., value_name = "CKPT")]
    pub adapters: Vec<PathBuf>,
    /// Merge the --adapters into the base weights and write a full model folder
    /// (default: `<first checkpoint>-merged`).
    #[arg(long = "merge-lora", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub merge_lora: Option<bool>,
    /// Write the model (or the merged model) as one GGUF file for llama.cpp.
    #[arg(long = "to-gguf", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub to_gguf: Option<bool>,
    /// The GGUF tensor type of the matrices: f32, f16, q8_0, q4_0 or q4_1 (norms stay f32).
    #[arg(long = "gguf-type", value_name = "TYPE", default_value = "f16")]
    pub gguf_type: String,
    /// Also write an Ollama `Modelfile` next to the GGUF file (implies --to_gguf).
    #[arg(long = "to-ollama", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub to_ollama: Option<bool>,
    /// The chat template recorded in the export (`swift list templates`); default: the adapter's,
    /// else the model's recorded one, else the tokenizer's chat_template, else the family's.
    #[arg(long)]
    pub template: Option<String>,
    // -- end of merge LoRA, GGUF and Ollama --
    // --- quantization (`--quant_method`, host/src/commands/quantize.rs) ---
    // (--model, above, is also the float model folder to quantize.)
    /// Quantize with this registered quantizer (`swift list quantizers`: bnb, hqq, gptq, awq,
    /// rtn) into --output_dir, which `swift infer` loads directly.
    #[arg(long = "quant-method", value_name = "NAME")]
    pub quant_method: Option<String>,
    /// Bits per weight: 4 or 8 (awq: 4).
    #[arg(long = "quant-bits", value_name = "B")]
    pub quant_bits: Option<u8>,
    /// Calibration data for gptq and awq (files or registered names, NAME#N). Repeatable.
    #[arg(long, num_args = 1.., value_name = "SPEC")]
    pub dataset: Vec<String>,
    /// Input columns per scale (hqq, gptq, awq, rtn; default 128; 0: one per row).
    #[arg(long = "group-size", value_name = "G")]
    pub group_size: Option<i64>,
    /// Calibration texts used (gptq, awq).
    #[arg(long = "quant-n-samples", default_value_t = 128)]
    pub quant_n_samples: usize,
    /// Tokens per calibration text.
    #[arg(long = "max-length", default_value_t = 512)]
    pub max_length: usize,
    /// gptq: quantize columns by decreasing Hessian diagonal (default true).
    #[arg(long = "act-order", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub act_order: Option<bool>,
    /// bnb 4-bit code book: nf4 (default) or fp4.
    #[arg(long = "bnb-4bit-quant-type", value_name = "T")]
    pub bnb_4bit_quant_type: Option<String>,
    /// bnb 4-bit: quantize the block absmax values again (default true).
    #[arg(long = "bnb-4bit-use-double-quant", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub bnb_4bit_use_double_quant: Option<bool>,
    /// Where the model runs while quantizing: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    // --- end of quantization flags ---
    /// Everything else `swift export` will accept (merge, quantize, to GGUF: later issues).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// A model folder: its tokenizer.json (and tokenizer_config.json, whose chat_template is used
    /// when --template is not given).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// A tokenizer.json file (a tokenizer_config.json next to it is read too).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// The template (`swift list templates`); default: the tokenizer's chat_template (`jinja`).
    #[arg(long)]
    pub template: Option<String>,
    /// A dataset file or registered name, optionally NAME#N (sample N rows). Repeatable.
    #[arg(long, value_name = "SPEC", required = true)]
    pub dataset: Vec<String>,
    /// Encode inference prompts: drop a final assistant answer, end with the assistant header.
    #[arg(long = "generation-prompt", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub generation_prompt: Option<bool>,
    /// Print the rendered text with trained spans marked `[[...]]{loss_scale}` (the default).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, conflicts_with = "json")]
    pub show: Option<bool>,
    /// Print one JSON line per row: input_ids, labels, loss_scale.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub json: Option<bool>,
    /// Longest row in tokens; longer rows are handled by --truncation-strategy.
    #[arg(long = "max-length", value_name = "N")]
    pub max_length: Option<usize>,
    /// delete (default), left or right.
    #[arg(long = "truncation-strategy", value_name = "S")]
    pub truncation_strategy: Option<String>,
    /// default, last_round or all, plus agent tables (react, hermes, qwen, FILE.json) joined with `+`.
    #[arg(long = "loss-scale", value_name = "S")]
    pub loss_scale: Option<String>,
    /// Use this system message instead of the row's and the template's default.
    #[arg(long)]
    pub system: Option<String>,
    /// Qwen3 thinking (jinja: passed to the chat_template as enable_thinking).
    #[arg(long = "enable-thinking", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_thinking: Option<bool>,
    /// Seed of NAME#N sampling.
    #[arg(long = "data-seed")]
    pub data_seed: Option<u64>,
    /// Column renames, a JSON object {"old": "new"}.
    #[arg(long)]
    pub columns: Option<String>,
    /// Skip (and count) malformed rows and rows that fail to encode instead of stopping.
    #[arg(long = "skip-bad-rows", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub skip_bad_rows: Option<bool>,
    /// Fills {{name}} in datasets such as `identity`.
    #[arg(long = "model-name")]
    pub model_name: Option<String>,
    /// Fills {{author}} in datasets such as `identity`.
    #[arg(long = "model-author")]
    pub model_author: Option<String>,
}

/// Parses `true`/`false` (and `1`/`0`, `yes`/`no`) for boolean flags.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got `{other}`")),
    }
}

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
    fn pending_commands_accept_any_flags() {
        let a = parse(&["swift", "web-ui", "--model", "m", "--lora_rank", "8"]);
        let Command::WebUi(p) = a.command else {
            panic!()
        };
        assert_eq!(p.args, ["--model", "m", "--lora-rank", "8"]);
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
            (s.lora_rank, s.tuner_type.as_deref()),
            (Some(8), Some("full"))
        );
    }
}
