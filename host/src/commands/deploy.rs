//! `swift deploy`: serve a model and its adapters over an OpenAI-compatible HTTP API until
//! Ctrl-C (swift-pipeline's `serve`, over swift-serve).

use anyhow::Result;
use swift_spec::DeploySpec;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let spec: DeploySpec = ctx.spec()?;
    swift_pipeline::serve::run(&spec, &ctx.settings.plugins())
}
