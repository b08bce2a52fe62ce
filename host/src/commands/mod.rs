//! One module per `swift` subcommand that needs no tensors (`list`, `encode`, `new-plugin`,
//! `doctor`, which opens the tensor engine only to ask its versions), and
//! one (`engine`) for those that do. Each parses its specification (flags, `--config` file,
//! `SWIFT_*` variables); the first kind calls the registries and data crates and prints the
//! result, `engine` hands the specification to the tensor engine. No command module imports
//! another.

pub mod doctor;
pub mod encode;
pub mod engine;
pub mod list;
pub mod new_plugin;

/// What every command gets: its own flags, the global flags and the global settings.
pub struct Ctx<'a> {
    pub matches: &'a clap::ArgMatches,
    pub global: &'a crate::cli::GlobalArgs,
    pub settings: &'a crate::config::GlobalSettings,
}

impl Ctx<'_> {
    /// The command's specification, layered (crate::config::spec).
    pub fn spec<T>(&self) -> anyhow::Result<T>
    where
        T: clap::Args
            + clap::FromArgMatches
            + serde::Serialize
            + serde::de::DeserializeOwned
            + swift_spec::CommandSpec,
    {
        crate::config::spec(self.matches, self.global.config.as_deref())
    }
}

/// The answer of a command that a later issue implements: a clear refusal, never a pretence.
pub fn not_yet(command: &str, area: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "`swift {command}` is not implemented in this build yet (it comes with the {area} work); \
         `swift --help` lists what works"
    )
}
