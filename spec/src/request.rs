//! What the `swift` binary hands to the tensor engine (swift-runtime, a library it opens only
//! for the commands that need tensors): one command's resolved specification, the plugin flags
//! and the log filter, as JSON across a plain C boundary. Both sides compile this file, so the
//! request is typed on both; [`ENGINE_PROTOCOL`] says when its meaning changes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    CommandSpec, DeploySpec, EvalSpec, ExportSpec, GivenFlags, InferSpec, RlhfSpec, TrainSpec,
};

/// The version of the request and of the engine's entry points. The host refuses an engine that
/// speaks another one (a binary and a library from different builds).
pub const ENGINE_PROTOCOL: u32 = 1;

/// One tensor command, with its fully resolved specification (flags, config file and `SWIFT_*`
/// variables already layered by the host).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", content = "spec", rename_all = "lowercase")]
pub enum TensorCommand {
    Pt(TrainSpec),
    Sft(TrainSpec),
    Rlhf(RlhfSpec),
    Infer(InferSpec),
    Deploy(DeploySpec),
    Export(ExportSpec),
    Eval(EvalSpec),
}

impl TensorCommand {
    /// The command's name, as typed after `swift`.
    pub fn name(&self) -> &'static str {
        match self {
            TensorCommand::Pt(_) => "pt",
            TensorCommand::Sft(_) => "sft",
            TensorCommand::Rlhf(_) => "rlhf",
            TensorCommand::Infer(_) => "infer",
            TensorCommand::Deploy(_) => "deploy",
            TensorCommand::Export(_) => "export",
            TensorCommand::Eval(_) => "eval",
        }
    }

    /// The specification's record of the flags the user set (not serialised with it: it
    /// crosses as [`EngineRequest::given`]).
    pub fn given_mut(&mut self) -> &mut GivenFlags {
        match self {
            TensorCommand::Pt(s) | TensorCommand::Sft(s) => s.given_mut(),
            TensorCommand::Rlhf(s) => s.given_mut(),
            TensorCommand::Infer(s) => s.given_mut(),
            TensorCommand::Deploy(s) => s.given_mut(),
            TensorCommand::Export(s) => s.given_mut(),
            TensorCommand::Eval(s) => s.given_mut(),
        }
    }
}

/// The whole request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineRequest {
    /// [`ENGINE_PROTOCOL`] of the host that wrote it.
    pub protocol: u32,
    pub command: TensorCommand,
    /// The flags the user set (the specification's `given`, which its serde form leaves out).
    #[serde(default)]
    pub given: BTreeSet<String>,
    /// `--plugin-dir` values (`SWIFT_PLUGIN_PATH` is read by the engine from the environment).
    #[serde(default)]
    pub plugin_dir: Vec<PathBuf>,
    /// `--plugin-override` values.
    #[serde(default)]
    pub plugin_override: Vec<String>,
    /// `--log-level` (None: `RUST_LOG`, else `info`).
    #[serde(default)]
    pub log_level: Option<String>,
}

/// What the engine says about itself before any request (`swift_runtime_info`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineInfo {
    /// [`ENGINE_PROTOCOL`] of the engine.
    pub protocol: u32,
    /// The plugin contract version the engine's plugin-api speaks.
    pub contract_version: u32,
    /// The libtorch version the engine links.
    pub libtorch_version: String,
    /// The tch version the engine links.
    pub tch_version: String,
}

impl EngineRequest {
    /// A request for `command`, carrying its record of the flags the user set.
    pub fn new(mut command: TensorCommand) -> Self {
        let given = command.given_mut().0.clone();
        Self {
            protocol: ENGINE_PROTOCOL,
            command,
            given,
            plugin_dir: Vec::new(),
            plugin_override: Vec::new(),
            log_level: None,
        }
    }

    /// The command with its record of the flags the user set restored (the engine's side).
    pub fn into_command(self) -> TensorCommand {
        let mut command = self.command;
        command.given_mut().0 = self.given;
        command
    }
}
