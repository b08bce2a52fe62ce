//! `swift sft`, `swift pt` and `swift rlhf`: the run is swift-pipeline's; this prints its summary
//! (stderr) and the last checkpoint's path (stdout, for scripts).

use anyhow::Result;
use swift_pipeline::TrainSummary;
use swift_spec::{RlhfSpec, TrainSpec};

use super::Ctx;

/// `swift sft` (`pretrain = false`) or `swift pt` (`pretrain = true`).
pub fn run(ctx: &Ctx, pretrain: bool) -> Result<()> {
    let spec: TrainSpec = ctx.spec()?;
    let summary = swift_pipeline::train::run(&spec, &ctx.settings.plugins(), pretrain)?;
    report(if pretrain { "pt" } else { "sft" }, &summary);
    Ok(())
}

/// `swift rlhf`.
pub fn run_rlhf(ctx: &Ctx) -> Result<()> {
    let spec: RlhfSpec = ctx.spec()?;
    let summary = swift_pipeline::preference::run(&spec, &ctx.settings.plugins())?;
    report(&format!("rlhf {}", spec.preference.rlhf_type), &summary);
    Ok(())
}

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
    if let Some(c) = &summary.last_checkpoint {
        eprintln!("last checkpoint: {}", c.display());
        println!("{}", c.display());
    }
}
