//! `swift pt`, `sft`, `rlhf`, `infer`, `deploy` and `export`: the command's specification,
//! layered as every command's, handed to the tensor engine (crate::runtime), which runs it
//! through swift-pipeline and prints what it prints.

use anyhow::Result;
use swift_spec::request::{EngineRequest, TensorCommand};

use super::Ctx;
use crate::config::GlobalSettings;

/// Runs a tensor command whose specification `wrap` turns into the engine's command (e.g.
/// `TensorCommand::Sft`); returns the engine's exit status.
pub fn run<T>(ctx: &Ctx, wrap: fn(T) -> TensorCommand) -> Result<u8>
where
    T: clap::Args
        + clap::FromArgMatches
        + serde::Serialize
        + serde::de::DeserializeOwned
        + swift_spec::CommandSpec,
{
    let request = request(wrap(ctx.spec()?), ctx.settings);
    let status = crate::runtime::run(&request)?;
    Ok(u8::try_from(status).unwrap_or(1))
}

/// The engine's request: the command and the global settings it needs.
fn request(command: TensorCommand, settings: &GlobalSettings) -> EngineRequest {
    EngineRequest {
        plugin_dir: settings.plugin_dir.clone(),
        plugin_override: settings.plugin_override.clone(),
        log_level: settings.log_level.clone(),
        ..EngineRequest::new(command)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn every_tensor_command_crosses_as_json_unchanged() {
        for args in [
            &["swift", "sft", "--model", "m", "--lora_rank", "4"][..],
            &["swift", "pt", "--model", "m"],
            &["swift", "rlhf", "--rlhf_type", "kto", "--model", "m"],
            &["swift", "infer", "--model", "m", "--max_new_tokens", "3"],
            &["swift", "deploy", "--model", "m", "--port", "8001"],
            &["swift", "export", "--to_gguf", "--model", "m"],
        ] {
            let argv = crate::cli::normalize_args(args.iter().map(|s| s.to_string()));
            let matches = Cli::command().get_matches_from(argv);
            let cli = Cli::from_arg_matches(&matches).unwrap();
            let (_, sub) = matches.subcommand().unwrap();
            let settings = GlobalSettings {
                plugin_dir: vec!["plugins".into()],
                plugin_override: vec!["chatml".into()],
                log_level: Some("debug".into()),
            };
            let ctx = Ctx {
                matches: sub,
                global: &cli.global,
                settings: &settings,
            };
            let command = match &cli.command {
                Command::Pt(_) => TensorCommand::Pt(ctx.spec().unwrap()),
                Command::Sft(_) => TensorCommand::Sft(ctx.spec().unwrap()),
                Command::Rlhf(_) => TensorCommand::Rlhf(ctx.spec().unwrap()),
                Command::Infer(_) => TensorCommand::Infer(ctx.spec().unwrap()),
                Command::Deploy(_) => TensorCommand::Deploy(ctx.spec().unwrap()),
                Command::Export(_) => TensorCommand::Export(ctx.spec().unwrap()),
                other => panic!("not a tensor command: {other:?}"),
            };
            let request = request(command, ctx.settings);
            assert_eq!(request.command.name(), args[1]);
            assert_eq!(request.plugin_override, ["chatml"]);
            assert!(
                !request.given.is_empty(),
                "{args:?}: the flags given are recorded"
            );
            let json = serde_json::to_string(&request).unwrap();
            let back: EngineRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(
                (&back.plugin_dir, &back.plugin_override, &back.log_level),
                (
                    &request.plugin_dir,
                    &request.plugin_override,
                    &request.log_level
                )
            );
            // The specification, the flags given included, arrives as the host built it.
            assert_eq!(back.into_command(), request.command, "{args:?}");
        }
    }
}
