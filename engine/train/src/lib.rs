//! # swift-train: the trainer's model-independent parts
//!
//! * [`schedule`]: learning-rate schedules (cosine, linear, constant) with warm-up, as
//!   transformers' `get_scheduler` defines them.
//! * [`collate`]: turning encoded rows (`input_ids`, `labels`, `loss_scale`) into rectangular
//!   batches, by padding or by packing, with the labelled-token counts that normalise the loss.
//! * [`run_dir`]: the run folder ms-swift users know: `output/<model>/v<N>-<timestamp>/` with
//!   `args.json`, `logging.jsonl`, and `checkpoint-N/` folders that are written under a temporary
//!   name and renamed, so a crash never leaves a half-written checkpoint that looks complete.
//!
//! The model-dependent parts (forward, tuners, optimiser) live with the model engine.

pub mod collate;
pub mod run_dir;
pub mod schedule;

pub use collate::{Batch, Collator, EncodedRow};
pub use run_dir::{CheckpointWriter, RunDir, RunDirError};
pub use schedule::{LrSchedule, ScheduleKind};
