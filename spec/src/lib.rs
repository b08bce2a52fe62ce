//! # swift-spec: what each `swift` command is asked to do
//!
//! Every flag is defined once, in a group (model, template, encoding, dataset, validation,
//! tuner, quantization, trainer, preference, generation, backend, server, export). A group is
//! one struct that derives serde (for `args.json` and `--config` files) and, with the `cli`
//! feature that only the host turns on, clap's `Args`; its doc comments are the `--help` text
//! and its `default_value`s are the only place a default is written. A command's specification
//! ([`TrainSpec`], [`RlhfSpec`], [`InferSpec`], [`DeploySpec`], [`ExportSpec`], [`EncodeSpec`],
//! [`EvalSpec`], [`WebUiSpec`])
//! flattens the groups that apply to it, so a flag that cannot apply to a command is not one of
//! its flags and clap refuses it by name.
//!
//! The engine (swift-pipeline) takes these structs fully resolved; it knows nothing of clap.
//! [`range`] declares the range of every numeric flag (refused when parsed, range named).
//! [`request`] is how the host hands one of them to the tensor engine (swift-runtime).
//! Names follow ms-swift's (snake_case in files, kebab-case or snake_case on the command line).

use std::collections::BTreeSet;

mod commands;
mod groups;
pub mod range;
pub mod request;

pub use commands::*;
pub use groups::*;

/// Parses `true`/`false` (and `1`/`0`, `yes`/`no`, `on`/`off`) for boolean flags.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got `{other}`")),
    }
}

/// The flags a user set (on the command line, in the `--config` file or a `SWIFT_*` variable) to
/// a value other than its default: what the engine checks before refusing a flag that cannot
/// apply to the run it was asked for. Not part of `args.json` (the values are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenFlags(pub BTreeSet<String>);

impl GivenFlags {
    /// Whether `flag` (snake_case, as in `args.json`) was set.
    pub fn contains(&self, flag: &str) -> bool {
        self.0.contains(flag)
    }

    /// Refuses the first of `flags` that was set: `--FLAG does not apply WHY`.
    pub fn refuse(&self, flags: &[&str], why: &str) -> Result<(), String> {
        match flags.iter().find(|f| self.contains(f)) {
            Some(f) => Err(format!("--{f} does not apply {why}: drop it")),
            None => Ok(()),
        }
    }
}

/// A command's specification, as the host fills it.
pub trait CommandSpec {
    /// Where the host records which flags the user set.
    fn given_mut(&mut self) -> &mut GivenFlags;
}
