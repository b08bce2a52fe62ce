//! `swift export`: merge adapters, convert from/to GGUF (and Ollama), quantize
//! (swift-pipeline's `export`); prints what it wrote, one path (or summary) per line.

use anyhow::Result;
use swift_spec::ExportSpec;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let spec: ExportSpec = ctx.spec()?;
    for line in swift_pipeline::export::run(&spec, &ctx.settings.plugins())? {
        println!("{line}");
    }
    Ok(())
}
