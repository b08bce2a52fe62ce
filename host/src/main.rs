//! The `swift` binary: parses the command line, resolves settings, loads plugins into the
//! registries, and dispatches to a command. Errors reach the user here, through anyhow, as one
//! message with its causes.

mod cli;
mod commands;
mod config;

// Built-in plugins are linked statically and found through `inventory`; naming the crates here
// makes sure the linker keeps them.
use swift_plugin_datasets as _;
use swift_plugin_losses as _;
use swift_plugin_models as _;
use swift_plugin_quantizers as _;
use swift_plugin_templates as _;
use swift_plugin_tuners as _;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::config::GlobalSettings;

fn main() -> std::process::ExitCode {
    passive_openmp();
    let args = cli::normalize_args(std::env::args());
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings = match GlobalSettings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(settings.log_level.as_deref());
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
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// libtorch's OpenMP threads spin while they wait by default. On a machine whose cores are
/// shared (2 cores here, with other processes and test threads) the spinning threads steal the
/// cores the work needs: decoding measured 5 tokens/s spinning against 17 passive under the same
/// load. libgomp reads OMP_WAIT_POLICY once, when it is loaded (before `main`), so unless the user
/// chose a policy, the process re-executes itself once with OMP_WAIT_POLICY=PASSIVE.
fn passive_openmp() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("OMP_WAIT_POLICY").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // `exec` only returns if it failed; then carry on in this process.
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .exec();
        eprintln!("warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
    }
}

fn init_tracing(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
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

fn run(command: Command, ctx: &Ctx) -> Result<()> {
    match command {
        Command::List(args) => commands::list::run(&args, ctx.settings),
        Command::NewPlugin(args) => commands::new_plugin::run(&args),
        Command::Export(_) => commands::export::run(ctx),
        Command::Pt(_) => commands::train::run(ctx, true),
        Command::Sft(_) => commands::train::run(ctx, false),
        Command::Rlhf(_) => commands::train::run_rlhf(ctx),
        Command::Infer(_) => commands::infer::run(ctx),
        Command::Deploy(_) => commands::deploy::run(ctx),
        Command::Eval(_) => commands::not_yet("eval", "evaluation"),
        Command::WebUi(_) => commands::not_yet("web-ui", "web UI"),
        Command::Encode(_) => commands::encode::run(ctx),
    }
}
