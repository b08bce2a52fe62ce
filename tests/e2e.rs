//! The end-to-end tests, one test binary (`cargo test --release -p swift-host --test e2e`): each
//! module below is one area, run as `--test e2e deploy::` (a module) or by a test's name. One
//! binary links libtorch and the crates once instead of once per file, and every module shares
//! the helpers of [`common`].
//!
//! To add an area: write tests/NAME.rs starting with `use crate::common::*;`, and add
//! `mod NAME;` below.

mod common;

mod adalora;
mod backends;
mod checks;
mod ddp;
mod deploy;
mod encode_cli;
mod eval;
mod eval_gaps;
mod eval_https;
mod eval_more;
mod eval_train_gen;
mod export_gguf;
mod export_merge;
mod export_to_gguf;
mod flags;
mod gguf_decode;
mod gguf_kquants;
mod gradient_checkpointing;
mod longlora;
mod models_families;
mod models_smollm2;
mod models_vision;
mod new_plugin;
mod optimizers;
mod peft_vision;
mod plugins;
mod quant;
mod quant_contract;
mod quant_lm_head;
mod reward_model;
mod rlhf;
mod runs;
mod startup;
mod train_images;
mod train_loop;
mod train_lora;
mod train_packing;
mod tuners;
mod tuners_boft;
mod webui;
