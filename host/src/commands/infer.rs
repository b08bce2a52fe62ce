//! `swift infer`: chat with a model, answer a dataset, or score with a reward model
//! (swift-pipeline's `generate` and `score`).

use anyhow::Result;
use swift_spec::InferSpec;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let spec: InferSpec = ctx.spec()?;
    swift_pipeline::generate::run(&spec, &ctx.settings.plugins())
}
