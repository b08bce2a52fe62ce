//! Data parallel for the training commands: joins the process group of the launch
//! (swift-dist, from `RANK`/`WORLD_SIZE`/`MASTER_ADDR`/`MASTER_PORT`, set by torchrun or by
//! `swift`'s own NPROC_PER_NODE launcher) with `--ddp_timeout` for sft, pt and rlhf, and
//! refuses what does not run data parallel yet (KTO). The loop's part is `swift_train::parallel`.

use std::time::Duration;

use anyhow::{bail, Result};
use swift_spec::TrainSpec;

/// Joins the group when this process is one rank of several (`WORLD_SIZE` > 1); nothing
/// otherwise. Called before the model loads, so a launch that cannot meet fails early.
pub fn join(s: &TrainSpec, command: &str) -> Result<Option<&'static swift_dist::ProcessGroup>> {
    let timeout = Duration::from_secs(s.trainer.ddp_timeout);
    let group = swift_dist::init(timeout)?;
    if let Some(g) = group {
        tracing::info!(
            "swift {command}: data parallel over {} ranks (Gloo), this is rank {} (local rank {})",
            g.world(),
            g.rank(),
            g.env().local_rank
        );
    }
    Ok(group)
}

/// Checks the loaded model's device against the group's backend.
pub fn check_device(device: tch::Device) -> Result<()> {
    if swift_dist::current().is_some() {
        swift_dist::check_device(device)?;
    }
    Ok(())
}

/// Refuses a launch of several ranks for what does not run data parallel yet, so
/// the ranks do not each train a full copy into the same folder.
pub fn refuse(command: &str) -> Result<()> {
    if let Some(env) = swift_dist::DistEnv::from_env()? {
        bail!(
            "swift {command} does not run data parallel yet, but this process is rank {} of {} (WORLD_SIZE): launch it as one process (unset NPROC_PER_NODE / WORLD_SIZE)",
            env.rank,
            env.world
        );
    }
    Ok(())
}

/// This process's rank when it is one of a data-parallel run's ranks other than 0 (which
/// write nothing and print no run folder).
pub fn follower_rank() -> Option<usize> {
    swift_dist::current().map(|g| g.rank()).filter(|&r| r != 0)
}
