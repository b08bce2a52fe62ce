//! One module per `swift` subcommand that needs no tensors (`list`, `encode`, `new-plugin`,
//! `web-ui`, which serves pages and starts the others as child processes, `doctor`, which opens the tensor engine only to ask its versions), and
//! one (`engine`) for those that do. Each parses its specification (flags, `--config` file,
//! `SWIFT_*` variables); the first kind calls the registries and data crates and prints the
//! result, `engine` hands the specification to the tensor engine. No command module imports
//! another.

pub mod doctor;
pub mod encode;
pub mod engine;
pub mod list;
pub mod new_plugin;
pub mod web_ui;

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
