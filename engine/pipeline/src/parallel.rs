//! Data parallel for the training commands: joins the process group of the launch
//! (swift-dist, from `RANK`/`WORLD_SIZE`/`MASTER_ADDR`/`MASTER_PORT`, set by torchrun or by
//! `swift`'s own NPROC_PER_NODE launcher) with `--ddp_timeout` for sft, pt and rlhf, and
//! refuses what does not run data parallel yet (KTO); `--deepspeed`'s ZeRO stage
//! ([`zero_stage`]). The loop's part is `swift_train::parallel` and `swift_train::zero`.

use std::time::Duration;

use anyhow::{bail, Result};
use swift_spec::TrainSpec;
use swift_train::zero::ZeroStage;
use swift_train::AttachedAdapter;

/// Joins the group when this process is one rank of several (`WORLD_SIZE` > 1); nothing
/// otherwise. Called before the model loads, so a launch that cannot meet fails early.
pub fn join(s: &TrainSpec, command: &str) -> Result<Option<&'static swift_dist::ProcessGroup>> {
    zero_stage(s)?;
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

/// `--deepspeed`: ms-swift's names of DeepSpeed's configurations. zero1 and zero2 shard the
/// optimizer state (and gradients) over the ranks; zero0 is plain data parallel; the others are
/// refused by name with what to use instead. With one process the one shard is everything, as
/// DeepSpeed runs it.
pub fn zero_stage(s: &TrainSpec) -> Result<Option<ZeroStage>> {
    let Some(name) = s.trainer.deepspeed.as_deref() else {
        return Ok(None);
    };
    Ok(match name {
        "zero0" => None,
        "zero1" => Some(ZeroStage::One),
        "zero2" => Some(ZeroStage::Two),
        "zero3" => bail!(
            "--deepspeed zero3 (parameters sharded over the ranks) is not built: use --deepspeed zero2 (optimizer state and gradients sharded) or zero1"
        ),
        "zero2_offload" | "zero3_offload" => bail!(
            "--deepspeed {name} (optimizer state offloaded from the GPU to the CPU) is not built: swift-rs trains on the CPU already, where there is nothing to offload to; use --deepspeed zero2 or zero1"
        ),
        other if other.ends_with(".json") => bail!(
            "--deepspeed {other}: DeepSpeed configuration files are not read; name a built-in configuration: zero0, zero1 or zero2"
        ),
        other => bail!(
            "--deepspeed {other:?} is not a configuration swift-rs knows: zero0 (plain data parallel), zero1 (optimizer state sharded) or zero2 (and gradients); zero3 and the *_offload ones are not built"
        ),
    })
}

/// Refuses ZeRO-2 with a tuner whose after-backward hook reads every tensor's gradient
/// (AdaLoRA's rank allocation): ZeRO-2 keeps each rank's shard of the gradients only.
pub fn check_zero(cfg: &swift_train::TrainConfig, adapter: Option<&AttachedAdapter>) -> Result<()> {
    if cfg.zero == Some(ZeroStage::Two) && adapter.is_some_and(|a| a.has_after_backward()) {
        bail!(
            "--deepspeed zero2 keeps each rank's shard of the gradients only, but this tuner's after-backward hook (AdaLoRA's rank allocation) reads every gradient: use --deepspeed zero1"
        );
    }
    Ok(())
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

/// Leaves a failing rank's error in the rendezvous store, so the other ranks' errors quote it
/// instead of only naming the rank as stopped.
pub fn report_failure(error: &anyhow::Error) {
    if let Some(g) = swift_dist::current() {
        g.report_failure(&format!("{error:#}"));
    }
}

/// This process's rank when it is one of a data-parallel run's ranks other than 0 (which
/// write nothing and print no run folder).
pub fn follower_rank() -> Option<usize> {
    swift_dist::current().map(|g| g.rank()).filter(|&r| r != 0)
}
