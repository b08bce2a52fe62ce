//! One module per `swift` subcommand.

pub mod deploy;
pub mod encode;
pub mod export;
pub mod infer;
pub mod list;
pub mod new_plugin;
pub mod quantize;
pub mod reward;
pub mod rlhf;
pub mod sft;
pub mod tuning;

/// The answer of a command that a later issue implements: a clear refusal, never a pretence.
pub fn not_yet(command: &str, area: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "`swift {command}` is not implemented in this build yet (it comes with the {area} work); \
         `swift --help` lists what works"
    )
}
