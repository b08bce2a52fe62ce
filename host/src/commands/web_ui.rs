//! `swift web-ui`: the web UI's specification (flags, `--config`, `SWIFT_*`), and what only the
//! host knows handed to swift-webui, which serves the pages: the registries' listing (the
//! tensor built-ins' records and the plugins of `--plugin-dir`, as `swift list --json`), this
//! executable (each run is a child `swift`), the global flags the children get, and the
//! command line's own check of a run's arguments (clap, as the child will parse them).

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let spec: swift_spec::WebUiSpec = ctx.spec()?;
    let report = ctx
        .settings
        .plugins()
        .load_listing(crate::catalogue::listed())?;
    let catalogue = serde_json::to_value(report.registries.rows(None))?;
    let swift = std::env::current_exe().context("finding the swift executable")?;
    let cwd = std::env::current_dir().context("the current folder")?;
    let mut global_args = Vec::new();
    for d in &ctx.settings.plugin_dir {
        global_args.push("--plugin-dir".to_string());
        global_args.push(cwd.join(d).display().to_string());
    }
    for o in &ctx.settings.plugin_override {
        global_args.push("--plugin-override".to_string());
        global_args.push(o.clone());
    }
    let check: swift_webui::ArgCheck = Arc::new(|args: &[String]| {
        let argv = std::iter::once("swift".to_string()).chain(args.iter().cloned());
        crate::cli::Cli::command()
            .try_get_matches_from(crate::cli::normalize_args(argv))
            .map(|_| ())
            .map_err(|e| {
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                first.to_string()
            })
    });
    let server = spec.server;
    swift_webui::run(swift_webui::Options {
        server_name: server.server_name,
        port: server.server_port,
        lang: server.lang,
        output_dir: server.output_dir,
        api_key: spec.api.api_key,
        allowed_roots: server.allowed_roots,
        swift,
        global_args,
        catalogue,
        check_args: check,
        vendor_dir: vendor_dir(),
    })?;
    Ok(())
}

/// `$SWIFT_RS_CACHE/webui`, else `~/.cache/swift-rs/webui`: where `make setup` puts uPlot.
fn vendor_dir() -> std::path::PathBuf {
    let cache = std::env::var_os("SWIFT_RS_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/swift-rs"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from(".cache/swift-rs"));
    cache.join("webui")
}
