//! The tensor commands: each calls swift-pipeline with its specification and prints what the
//! command prints (training summaries on stderr and the last checkpoint on stdout, export's
//! written paths on stdout; infer and deploy print as they go).

use anyhow::Result;
use swift_pipeline::TrainSummary;
use swift_registry::PluginSettings;
use swift_spec::request::{EngineRequest, TensorCommand};

/// Runs one request's command; a data-parallel rank that fails leaves its error for the others.
pub fn run(request: EngineRequest) -> Result<()> {
    let result = run_command(request);
    if let Err(e) = &result {
        swift_pipeline::parallel::report_failure(e);
    }
    result
}

fn run_command(request: EngineRequest) -> Result<()> {
    let plugins = PluginSettings {
        plugin_dir: request.plugin_dir.clone(),
        plugin_override: request.plugin_override.clone(),
    };
    match &request.into_command() {
        TensorCommand::Pt(spec) => {
            report("pt", &swift_pipeline::train::run(spec, &plugins, true)?);
        }
        TensorCommand::Sft(spec) => {
            report("sft", &swift_pipeline::train::run(spec, &plugins, false)?);
        }
        TensorCommand::Rlhf(spec) => {
            let summary = swift_pipeline::preference::run(spec, &plugins)?;
            report(&format!("rlhf {}", spec.preference.rlhf_type), &summary);
        }
        TensorCommand::Infer(spec) => swift_pipeline::generate::run(spec, &plugins)?,
        TensorCommand::Deploy(spec) => swift_pipeline::serve::run(spec, &plugins)?,
        TensorCommand::Eval(spec) => swift_pipeline::eval::run(spec, &plugins)?,
        TensorCommand::Export(spec) => {
            for line in swift_pipeline::export::run(spec, &plugins)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// A training run's one-line summary and its run folder (stderr), and its last checkpoint's
/// path (stdout, for scripts).
fn report(command: &str, summary: &TrainSummary) {
    let first = summary.losses.first().copied().unwrap_or(f64::NAN);
    let last = summary.losses.last().copied().unwrap_or(f64::NAN);
    eprintln!(
        "{command}: {} steps in {:.1}s ({:.2} s/step, {:.0} tokens/s); loss {first:.4} -> {last:.4}",
        summary.steps,
        summary.seconds,
        summary.seconds / summary.steps.max(1) as f64,
        summary.tokens as f64 / summary.seconds.max(1e-9)
    );
    if let Some(rank) = swift_pipeline::parallel::follower_rank() {
        eprintln!("rank {rank}: done (rank 0 writes the run folder)");
        return;
    }
    eprintln!("run folder: {}", summary.run_dir.display());
    if let Some(c) = &summary.last_checkpoint {
        eprintln!("last checkpoint: {}", c.display());
        println!("{}", c.display());
    }
}
