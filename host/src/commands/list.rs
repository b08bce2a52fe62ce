//! `swift list [KIND] [--json]`: prints every registry (name, aliases, provenance, description),
//! the tensor engine's built-ins included (by their records: crate::catalogue), without loading
//! libtorch.

use std::io::Write;

use anyhow::Result;

use crate::cli::ListArgs;
use crate::config::GlobalSettings;

pub fn run(args: &ListArgs, settings: &GlobalSettings) -> Result<()> {
    let report = settings
        .plugins()
        .load_listing(crate::catalogue::listed())?;
    let rows = report.registries.rows(args.kind.as_deref());
    let mut out = std::io::stdout().lock();
    if args.json.unwrap_or(false) {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut kind = "";
    for r in &rows {
        if r.kind != kind {
            kind = r.kind;
            writeln!(out, "{}:", kind_heading(kind))?;
        }
        let aliases = if r.aliases.is_empty() {
            String::new()
        } else {
            format!(" (aliases: {})", r.aliases.join(", "))
        };
        writeln!(out, "  {:<24} {}{}", r.name, r.description, aliases)?;
        if let Some(c) = &r.capabilities {
            writeln!(out, "  {:<24} {}", "", c.summary())?;
        }
        if r.kind == "optimizer" && !r.options.is_empty() {
            let opts: Vec<String> = r
                .options
                .iter()
                .map(|o| format!("{}={}", o.name, o.default))
                .collect();
            writeln!(out, "  {:<24} options: {}", "", opts.join(" "))?;
        }
        if let Some(b) = &r.benchmark {
            writeln!(
                out,
                "  {:<24} {:?} scoring, metrics {}, {} shot(s) by default of {} held out",
                "",
                b.scoring,
                b.metrics.join(", "),
                b.few_shot,
                b.holdout
            )?;
        }
        writeln!(out, "  {:<24} from {}", "", r.provenance)?;
    }
    if rows.is_empty() {
        writeln!(
            out,
            "nothing registered{}",
            args.kind
                .as_deref()
                .map(|k| format!(" for {k}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn kind_heading(kind: &str) -> &'static str {
    match kind {
        "model" => "models",
        "template" => "templates",
        "dataset" => "datasets",
        "preprocessor" => "preprocessors",
        "tuner" => "tuners",
        "quantizer" => "quantizers",
        "preference loss" => "preference losses",
        "optimizer" => "optimizers",
        "benchmark" => "benchmarks",
        _ => "backends",
    }
}
