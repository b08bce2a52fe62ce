//! # swift-train: the trainer
//!
//! * [`schedule`]: learning-rate schedules (cosine, linear, constant) with warm-up, as
//!   transformers' `get_scheduler` defines them.
//! * [`collate`]: turning encoded rows (`input_ids`, `labels`, `loss_scale`) into rectangular
//!   batches, by padding or by packing, with the labelled-token counts that normalise the loss.
//! * [`run_dir`]: the run folder ms-swift users know: `<output_dir>/v<N>-<timestamp>/` with
//!   `args.json`, `logging.jsonl`, and `checkpoint-N/` folders with a manifest (sizes, sha256),
//!   written under a temporary name and renamed, replaced and rotated by renaming aside first,
//!   so a kill never leaves a visible checkpoint that is not complete; their verification.
//! * [`loss`]: shifted token cross-entropy times the loss scale, summed (normalised by the
//!   caller over the labelled tokens of the whole accumulated step).
//! * [`optim`]: the host side of the optimizer contract: the registered optimizer (`--optimizer`)
//!   over the trainable tensors only, learning-rate factors, gradient-norm clipping.
//! * [`adapter`]: the host side of the tuner contract: a tuner plugin's adapter attached as
//!   swift-model `LinearHook`s on its slots, its tensors owned here, PEFT-layout save/load,
//!   merging, the adapters-off switch, `modules_to_save`.
//! * [`trainer`]: the one training loop (epochs, shuffling, schedule, learning-rate factors,
//!   LISA, accumulation, clipping, seeding, resuming, evaluation, logging, checkpoints, charts)
//!   around a task's [`trainer::Objective`].
//! * [`parallel`]: data parallel over swift-dist's process group: each rank's shard of every
//!   global batch, the gradients of the global batch by one bucketed all-reduce, rank 0 alone
//!   writing.
//! * [`zero`]: ZeRO stages 1 and 2 (`--deepspeed zero1|zero2`): the optimizer state (and with
//!   stage 2 the gradients) sharded over the ranks, the updated tensors all-gathered, the whole
//!   state gathered for checkpoints.
//! * [`token`]: the token objective of `swift sft` / `swift pt` (padded or packed rows,
//!   gradient checkpointing, rows per pass).
//! * [`memory`]: glibc's malloc told to keep freed blocks for reuse while training.
//! * [`rlhf`]: the preference objective (DPO, ORPO, SimPO, CPO, KTO, reward modelling) over
//!   per-sequence log-probs or scores, with the reference as the policy's adapters switched off
//!   or a frozen model.
//! * [`reward`]: reward modelling's value head (scores for the preference loop, PEFT
//!   `modules_to_save` and `*ForSequenceClassification` checkpoints).

pub mod adapter;
pub mod checkpoint;
pub mod collate;
pub mod llamapro;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod parallel;
pub mod peft_names;
pub mod plot;
pub mod reward;
pub mod rlhf;
pub mod run_dir;
pub mod schedule;
pub mod threads;
pub mod token;
pub mod trainer;
pub mod zero;

pub use adapter::{AdapterFiles, AttachedAdapter};
pub use checkpoint::{save_safetensors, TrainError};
pub use collate::{image_batch, Batch, Collator, EncodedRow, PackingStrategy, RowImage};
pub use optim::{Optimizer, OptimizerSetting};
pub use reward::ValueHead;
pub use rlhf::{train_preference, PrefItem, PreferenceObjective, PreferenceSetup, Reference};
pub use run_dir::{
    check_checkpoint, verify_checkpoint, CheckpointWriter, Integrity, RunDir, RunDirError,
};
pub use schedule::{LrSchedule, ScheduleKind};
pub use token::{train_with_eval, TokenObjective};
pub use trainer::{train, Objective, StepInfo, StepOutput, TrainConfig, TrainHooks, TrainSummary};
