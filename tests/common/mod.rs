//! The one set of helpers every end-to-end test uses (`use crate::common::*;`):
//!
//! * [`swift`]: running the `swift` binary (its tensor engine built once; plain, one thread, with environment or stdin), the
//!   logits diagnostic, a `swift deploy` server, checks on what a run printed;
//! * [`setup`]: what `make setup` provides (the cache, the reference virtualenv's python, the
//!   assets); a test that needs one fails with the command that installs it, never skips;
//! * [`models`]: the tiny fixture models (as folders and loaded in-process), the recorded
//!   reference numbers, the Python reference scripts;
//! * [`files`]: dataset writers, JSON readers, a run folder's logging.jsonl and args.json;
//! * [`numeric`]: float arrays, differences and tolerances, safetensors files;
//! * [`plugins`]: the plugin fixtures, built once per test process;
//! * [`deploy`]: the `openai` client's scenarios against `swift deploy`, on any backend.

#![allow(dead_code)]

pub mod deploy;
pub mod files;
pub mod models;
pub mod numeric;
pub mod plugins;
pub mod setup;
pub mod swift;

pub use deploy::*;
pub use files::*;
pub use models::*;
pub use numeric::*;
pub use plugins::*;
pub use setup::*;
pub use swift::*;

use std::path::{Path, PathBuf};

/// The repository's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}
