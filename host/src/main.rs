//! The `swift` binary: parses the command line, resolves settings, and dispatches to a command:
//! those that need no tensors run here, the others in the tensor engine, a library opened on
//! demand (crate::runtime), so that this binary links no libtorch and starts at once. Errors
//! reach the user here, through anyhow, as one message with its causes.

mod catalogue;
mod cli;
mod commands;
mod config;
mod launch;
mod openmp;
mod runtime;

// Built-in plugins are linked statically and found through `inventory`; naming the crates here
// makes sure the linker keeps them. (The tensor engine links its own copies, with the plugins
// whose behaviour needs libtorch.)
use swift_plugin_benchmarks as _;
use swift_plugin_datasets as _;
use swift_plugin_templates as _;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::config::GlobalSettings;

fn main() -> std::process::ExitCode {
    swift_registry::set_tensor_engine(runtime::plugin_versions);
    let args = cli::normalize_args(std::env::args());
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `swift infer` on a backend plugin: its own OpenMP threads (llama.cpp) wait as training's
    // do (host/src/openmp.rs).
    let plugin_backend =
        matches!(&cli.command, Command::Infer(s) if s.backend.infer_backend != "pt");
    openmp::choose(
        plugin_backend
            || matches!(
                cli.command,
                Command::Pt(_) | Command::Sft(_) | Command::Rlhf(_)
            ),
    );
    let mut settings = match GlobalSettings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // Rank 0 tells the run; the other ranks torchrun (or Slurm…) starts speak up for warnings
    // and errors only, as those `swift` starts itself (a level given still wins).
    if settings.log_level.is_none()
        && std::env::var_os("RUST_LOG").is_none()
        && launch::is_follower_rank()
    {
        settings.log_level = Some("warn".into());
    }
    init_tracing(settings.log_level.as_deref());
    if matches!(
        cli.command,
        Command::Pt(_) | Command::Sft(_) | Command::Rlhf(_)
    ) {
        // NPROC_PER_NODE / NNODES: this process starts the local ranks and waits (crate::launch).
        match launch::Launch::from_env() {
            Ok(None) => {}
            Ok(Some(l)) => {
                return match launch::run(&l) {
                    Ok(status) => std::process::ExitCode::from(status),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Some((_, sub)) = matches.subcommand() else {
        eprintln!("error: no command given (see swift --help)");
        return std::process::ExitCode::from(2);
    };
    let ctx = Ctx {
        matches: sub,
        global: &cli.global,
        settings: &settings,
    };
    match run(cli.command, &ctx) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l),
        // Rank 0 tells the run; torchrun's other ranks speak up for warnings and errors only.
        None => EnvFilter::try_from_default_env().or_else(|_| {
            EnvFilter::try_new(if launch::is_follower_rank() {
                "warn"
            } else {
                "info"
            })
        }),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Runs the command; returns the exit status. The tensor commands run in the engine, which
/// prints their errors itself (and returns a failing status).
fn run(command: Command, ctx: &Ctx) -> Result<u8> {
    use swift_spec::request::TensorCommand;
    let done = |r: Result<()>| r.map(|()| 0);
    match command {
        Command::List(args) => done(commands::list::run(&args, ctx.settings)),
        Command::NewPlugin(args) => done(commands::new_plugin::run(&args)),
        Command::Doctor(args) => done(commands::doctor::run(&args)),
        Command::WebUi(_) => done(commands::web_ui::run(ctx)),
        Command::Encode(_) => done(commands::encode::run(ctx)),
        Command::Pt(_) => commands::engine::run(ctx, TensorCommand::Pt),
        Command::Sft(_) => commands::engine::run(ctx, TensorCommand::Sft),
        Command::Rlhf(_) => commands::engine::run(ctx, TensorCommand::Rlhf),
        Command::Infer(_) => commands::engine::run(ctx, TensorCommand::Infer),
        Command::Deploy(_) => commands::engine::run(ctx, TensorCommand::Deploy),
        Command::Export(_) => commands::engine::run(ctx, TensorCommand::Export),
        Command::Eval(_) => commands::engine::run(ctx, TensorCommand::Eval),
    }
}
