//! The flag groups. Each field's doc comment is its `--help` line; each default is written once,
//! in its `default_value` (clap fills it in; `args.json` records it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::range;

/// The model to load: `swift sft`, `pt`, `rlhf`, `infer`, `deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ModelArgs {
    /// A model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR|FILE.gguf"))]
    pub model: Option<PathBuf>,
    /// The model family (`swift list models`); default: from config.json.
    #[cfg_attr(feature = "cli", arg(long))]
    pub model_type: Option<String>,
    /// float32, bfloat16 or float16 (default: float32 on the CPU, config.json's on CUDA).
    #[cfg_attr(feature = "cli", arg(long))]
    pub torch_dtype: Option<String>,
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[cfg_attr(feature = "cli", arg(long, default_value = "auto"))]
    pub device: String,
    /// Load a model folder whose stored weights include some its config.json does not use
    /// (by default an error: config.json may not describe these weights).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default)]
    pub allow_unused_weights: bool,
}

/// How `--adapters` checkpoints are checked against the base model: `swift infer`, `deploy`,
/// `export`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct AdapterCheckArgs {
    /// Load adapters whose args.json records another base (model_type, architectures or
    /// sizes) than the model given (by default an error).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default)]
    pub ignore_adapter_mismatch: bool,
}

/// The chat template and what it renders: every command that renders conversations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TemplateArgs {
    /// The chat template (`swift list templates`); default: the tokenizer's chat_template, else
    /// the family's default.
    #[cfg_attr(feature = "cli", arg(long))]
    pub template: Option<String>,
    /// System message (replaces the row's and the template's default).
    #[cfg_attr(feature = "cli", arg(long))]
    pub system: Option<String>,
    /// Qwen3 thinking switch (templates that support it; jinja: passed to the chat_template as
    /// enable_thinking).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub enable_thinking: Option<bool>,
}

/// How rows become training tokens: `swift sft`, `pt`, `rlhf`, `encode`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EncodingArgs {
    /// Longest row in tokens (training: default 2048; encode: no limit); longer rows are
    /// handled by --truncation_strategy.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub max_length: Option<usize>,
    /// delete, left or right.
    #[cfg_attr(feature = "cli", arg(long, default_value = "delete"))]
    pub truncation_strategy: String,
    /// default, last_round or all, plus agent tables (react, hermes, qwen, FILE.json) joined
    /// with `+` (default: default; rlhf: last_round).
    #[cfg_attr(feature = "cli", arg(long))]
    pub loss_scale: Option<String>,
}

impl EncodingArgs {
    /// The training row limit: `--max_length`, else 2048.
    pub fn train_max_length(&self) -> usize {
        self.max_length.unwrap_or(2048)
    }
}

/// The rows to read: `swift sft`, `pt`, `rlhf`, `encode`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DatasetArgs {
    /// Datasets (files or registered names, NAME#N samples N rows). Repeatable.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "SPEC"))]
    pub dataset: Vec<String>,
    /// Seed of NAME#N sampling.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::Any>))]
    #[serde(default, deserialize_with = "range::de_opt::<u64, range::Any, _>")]
    pub data_seed: Option<u64>,
    /// Column renames, a JSON object {"old": "new"}.
    #[cfg_attr(feature = "cli", arg(long))]
    pub columns: Option<String>,
    /// Skip (and count) malformed rows and rows that fail to encode instead of stopping.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub skip_bad_rows: bool,
    /// Fills {{name}} in datasets such as `identity`.
    #[cfg_attr(feature = "cli", arg(long))]
    pub model_name: Option<String>,
    /// Fills {{author}} in datasets such as `identity`.
    #[cfg_attr(feature = "cli", arg(long))]
    pub model_author: Option<String>,
}

/// The validation set of a training run: `swift sft`, `pt`, `rlhf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ValidationArgs {
    /// Validation datasets (evaluated every --eval_steps and at the end).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "SPEC"))]
    pub val_dataset: Vec<String>,
    /// Without --val_dataset: the share of the (shuffled) rows held out for validation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::ZeroToBelowOne, _>")]
    pub split_dataset_ratio: f64,
    /// Evaluate every N steps (default: --save_steps) and at the end, when there are
    /// validation rows.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<u64, range::AtLeastOne, _>"
    )]
    pub eval_steps: Option<u64>,
    /// Also evaluate before the first step (transformers' `eval_on_start`): the untrained
    /// model's validation metrics, logged at step 0 (or at a resumed run's first step).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default)]
    pub eval_on_start: bool,
}

/// What trains: the tuner and its options (`swift list tuners`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TunerArgs {
    /// lora, full, ... (`swift list tuners`); `--train_type` is the old name.
    #[cfg_attr(
        feature = "cli",
        arg(long, alias = "train-type", default_value = "lora")
    )]
    pub tuner_type: String,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<i64, range::AtLeastOne, _>")]
    pub lora_rank: i64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 32.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub lora_alpha: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::ZeroToBelowOne, _>")]
    pub lora_dropout: f64,
    /// all-linear (every linear slot but the output projection) or slot names (q_proj, ...).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., default_values_t = [String::from("all-linear")]))]
    pub target_modules: Vec<String>,
    /// Layers trained whole beside the LoRA adapters and saved in the adapter (PEFT
    /// `modules_to_save`): slot names or their last parts (lm_head, embed_tokens), or
    /// all-embedding.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    pub modules_to_save: Vec<String>,
    /// Scale LoRA by alpha/√r (the `rslora` tuner sets it).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub use_rslora: Option<bool>,
    /// DoRA on top of LoRA (the `dora` tuner sets it).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub use_dora: Option<bool>,
    /// LoRA initialisation: true, gaussian, pissa or olora.
    #[cfg_attr(feature = "cli", arg(long))]
    pub init_weights: Option<String>,
    /// LoRA+: B's learning rate over A's (the `lora_plus` tuner defaults to 16).
    #[cfg_attr(feature = "cli", arg(long, alias = "lorap-lr-ratio", allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::Positive, _>")]
    pub lora_lr_ratio: Option<f64>,
    /// IA³: targeted slots whose input (not output) is rescaled (PEFT's name; default down_proj).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    #[serde(default)]
    pub feedforward_modules: Vec<String>,
    /// VeRA: the rank of the shared random projections (default 256).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub vera_rank: Option<i64>,
    /// VeRA: the seed of the shared projections (PEFT's projection_prng_key; default 0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::NonNegative, _>"
    )]
    pub vera_projection_prng_key: Option<i64>,
    /// VeRA: dropout on the adapter's input while training (default 0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::ZeroToBelowOne, _>"
    )]
    pub vera_dropout: Option<f64>,
    /// VeRA: the starting value of every λ_d (PEFT's d_initial; default 0.1).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub vera_d_initial: Option<f64>,
    /// AdaLoRA: the rank every targeted slot starts with (PEFT's init_r; default 12).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub adalora_init_r: Option<i64>,
    /// AdaLoRA: the average rank the budget falls to (PEFT's target_r; default 8; below
    /// --adalora_init_r).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub adalora_target_r: Option<i64>,
    /// AdaLoRA: warm-up steps before the budget starts to fall (PEFT's tinit; default 0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<u64, range::NonNegative, _>"
    )]
    pub adalora_tinit: Option<u64>,
    /// AdaLoRA: final steps at the target budget, ranks fixed (PEFT's tfinal; default 0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<u64, range::NonNegative, _>"
    )]
    pub adalora_tfinal: Option<u64>,
    /// AdaLoRA: steps between two rank allocations (PEFT's deltaT; default 1).
    #[cfg_attr(feature = "cli", arg(id = "adalora_deltaT", long = "adalora-deltaT", allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(
        default,
        rename = "adalora_deltaT",
        deserialize_with = "range::de_opt::<u64, range::AtLeastOne, _>"
    )]
    pub adalora_delta_t: Option<u64>,
    /// AdaLoRA: the smoothing of the importance's moving average (PEFT's beta1; default 0.85).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::OpenUnit>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::OpenUnit, _>")]
    pub adalora_beta1: Option<f64>,
    /// AdaLoRA: the smoothing of the importance's uncertainty (PEFT's beta2; default 0.85).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::OpenUnit>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::OpenUnit, _>")]
    pub adalora_beta2: Option<f64>,
    /// AdaLoRA: the weight of the orthogonal regularisation of A and B added to the loss
    /// (PEFT's orth_reg_weight; default 0.5).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub adalora_orth_reg_weight: Option<f64>,
    /// BOFT: the size of each orthogonal block (default 4 unless --boft_block_num is given; the
    /// blocks tile each targeted slot's input, so it must divide it).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::NonNegative, _>"
    )]
    pub boft_block_size: Option<i64>,
    /// BOFT: the number of orthogonal blocks per slot, instead of --boft_block_size (0: unset).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::NonNegative, _>"
    )]
    pub boft_block_num: Option<i64>,
    /// BOFT: butterfly factors (default 1: plain block-diagonal OFT; each more doubles the
    /// effective block size).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub boft_n_butterfly_factor: Option<i64>,
    /// BOFT: multiplicative dropout, the share of one butterfly factor's blocks set to the
    /// identity while training (default 0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::ZeroToBelowOne, _>"
    )]
    pub boft_dropout: Option<f64>,
    /// FourierFT: trained spectral coefficients per slot (default 2000; at most the slot's
    /// out × in).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub fourier_n_frequency: Option<i64>,
    /// FourierFT: the scale of the weight change real(ifft2(spectrum)) (default 300).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::Positive, _>")]
    pub fourier_scaling: Option<f64>,
    /// FourierFT: the seed of the spectral positions (PEFT's random_loc_seed; default 777).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::NonNegative, _>"
    )]
    pub random_loc_seed: Option<i64>,
    /// LongLoRA: the shifted sparse attention's group, as a share of --max_length (ms-swift's
    /// LongLoRAConfig group_size_ratio; default 0.25).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::AboveZeroToOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::AboveZeroToOne, _>"
    )]
    pub group_size_ratio: Option<f64>,
    /// LongLoRA: parameters trained whole beside the adapter, by name part (ms-swift's
    /// LongLoRAConfig embedder_and_normalizer; default embed norm).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    #[serde(default)]
    pub embedder_and_normalizer: Vec<String>,
    /// Parameters kept frozen (name prefixes or * patterns), for the full and freeze tuners.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    pub freeze_parameters: Vec<String>,
    /// Parameters trained even if --freeze_parameters matches them.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    pub trainable_parameters: Vec<String>,
    /// LISA: decoder layers trained at a time (the `lisa` tuner defaults to 2).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub lisa_activated_layers: Option<usize>,
    /// LISA: steps between re-drawing the active layers (default 20).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<u64, range::AtLeastOne, _>"
    )]
    pub lisa_step_interval: Option<u64>,
    /// LLaMA-Pro: new blocks to insert (must divide the number of layers; default 4).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub llamapro_num_new_blocks: Option<usize>,
}

/// Quantization by a registered quantizer (`swift list quantizers`): the frozen base of QLoRA
/// (`swift sft`), or the output of `swift export`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct QuantArgs {
    /// The quantizer: bnb, hqq, gptq, awq or rtn (`swift list quantizers`; training: bnb).
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME"))]
    pub quant_method: Option<String>,
    /// Bits per weight: 4 or 8 (awq: 4).
    #[cfg_attr(feature = "cli", arg(long, value_name = "B", allow_negative_numbers = true, value_parser = range::parse::<u8, range::Bits>))]
    #[serde(default, deserialize_with = "range::de_opt::<u8, range::Bits, _>")]
    pub quant_bits: Option<u8>,
}

/// The optimisation loop, its schedule, checkpoints and logs: `swift sft`, `pt`, `rlhf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainerArgs {
    /// Peak learning rate (default: 1e-4 for adapters, 1e-5 for full training).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub learning_rate: Option<f64>,
    /// cosine, linear or constant.
    #[cfg_attr(feature = "cli", arg(long, default_value = "cosine"))]
    pub lr_scheduler_type: String,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::ZeroToOne, _>")]
    pub warmup_ratio: f64,
    /// Overrides --warmup_ratio.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::Any>))]
    #[serde(default, deserialize_with = "range::de_opt::<u64, range::Any, _>")]
    pub warmup_steps: Option<u64>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 3.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub num_train_epochs: f64,
    /// Overrides --num_train_epochs.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<u64, range::AtLeastOne, _>"
    )]
    pub max_steps: Option<u64>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub per_device_train_batch_size: usize,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub gradient_accumulation_steps: usize,
    /// 0 turns clipping off.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(deserialize_with = "range::de::<f64, range::NonNegative, _>")]
    pub max_grad_norm: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.1, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(deserialize_with = "range::de::<f64, range::NonNegative, _>")]
    pub weight_decay: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.9, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::ZeroToBelowOne, _>")]
    pub adam_beta1: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.95, allow_negative_numbers = true, value_parser = range::parse::<f64, range::ZeroToBelowOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::ZeroToBelowOne, _>")]
    pub adam_beta2: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1e-8, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub adam_epsilon: f64,
    /// Seed of the tuner's initialisation, the shuffles and dropout.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 42, allow_negative_numbers = true, value_parser = range::parse::<u64, range::Any>))]
    #[serde(deserialize_with = "range::de::<u64, range::Any, _>")]
    pub seed: u64,
    /// Shuffle the rows once they are read.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub dataset_shuffle: bool,
    /// Reshuffle every epoch.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub train_dataloader_shuffle: bool,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<u64, range::AtLeastOne, _>")]
    pub logging_steps: u64,
    /// Write a checkpoint every N steps (and at the end).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 500, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<u64, range::AtLeastOne, _>")]
    pub save_steps: u64,
    /// Keep only the newest N checkpoints.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub save_total_limit: Option<usize>,
    /// The parent of the run folders (default: output/<model>): each run, resumes included,
    /// writes into a new v<N>-<timestamp>/ inside it (see --add_version).
    #[cfg_attr(feature = "cli", arg(long))]
    pub output_dir: Option<PathBuf>,
    /// Write each run into a new v<N>-<timestamp>/ folder inside --output_dir; false: into
    /// --output_dir itself, which must be empty (see --overwrite_output_dir).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub add_version: bool,
    /// With --add_version false: delete an earlier run's files (args.json, logging.jsonl,
    /// images/, checkpoint-*) in --output_dir instead of refusing a folder that is not empty.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub overwrite_output_dir: bool,
    /// Continue from a checkpoint of an earlier run with the same settings (its optimizer state,
    /// schedule, data position and random draws).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub resume_from_checkpoint: Option<PathBuf>,
    /// Rows per forward/backward pass inside a micro-batch (1: the least memory; 0: the whole
    /// micro-batch at once), laid end to end without padding. The gradient is the same.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(deserialize_with = "range::de::<usize, range::Any, _>")]
    pub rows_per_pass: usize,
    /// At most this many tokens in a pass of several rows (a longer row makes a pass alone; 0: no
    /// limit): bounds the activations a pass holds.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 384, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(deserialize_with = "range::de::<usize, range::Any, _>")]
    pub max_pass_tokens: usize,
    /// Recompute each transformer block's activations in the backward pass instead of keeping
    /// them (less memory, about one extra forward pass of time; the gradient is the same).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub gradient_checkpointing: bool,
    /// Pack rows end to end into sequences of --max_length tokens (each row attends only to
    /// itself; --per_device_train_batch_size then counts packed sequences). sft and pt only.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub packing: bool,
    /// binpack (longest rows first, into the emptiest sequence with room; ms-swift's default)
    /// or sequential (in row order).
    #[cfg_attr(feature = "cli", arg(long, default_value = "binpack"))]
    pub packing_strategy: String,
    /// Data parallel (torchrun, NPROC_PER_NODE): seconds a rank waits for the others to join
    /// and in each collective before the run ends with an error naming the rank that stopped
    /// (ms-swift's default, 18000000). No effect on a single process.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECONDS", default_value_t = 18_000_000, allow_negative_numbers = true, value_parser = range::parse::<u64, range::AtLeastOne>))]
    #[serde(
        default = "default_ddp_timeout",
        deserialize_with = "range::de::<u64, range::AtLeastOne, _>"
    )]
    pub ddp_timeout: u64,
    /// Data parallel: ms-swift's ZeRO names. zero1 shards the optimizer state over the ranks
    /// (each updates its shard of the tensors and all-gathers them), zero2 the gradients too;
    /// zero0 is plain data parallel. zero3, the *_offload configurations and JSON config files
    /// are refused by name.
    #[cfg_attr(feature = "cli", arg(long, value_name = "zero0|zero1|zero2"))]
    #[serde(default)]
    pub deepspeed: Option<String>,
}

/// `--ddp_timeout`'s default (ms-swift's), for files written before the flag.
fn default_ddp_timeout() -> u64 {
    18_000_000
}

/// The optimizer (`swift list optimizers`) and its options: `swift sft`, `pt`, `rlhf`. The
/// galore flags are options of the `galore` and `q_galore` optimizers (their defaults, ms-swift's,
/// are in their records); one given with an optimizer that does not read it is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct OptimizerArgs {
    /// adamw, galore, q_galore, or a plugin's (`swift list optimizers`).
    #[cfg_attr(feature = "cli", arg(long, default_value = "adamw"))]
    pub optimizer: String,
    /// ms-swift's spelling of --optimizer galore (q_galore with --galore_quantization true).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub use_galore: bool,
    /// With --use_galore true: Q-GaLore (int4 projections, int8 weights).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub galore_quantization: bool,
    /// GaLore's projection rank (default 128).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub galore_rank: Option<i64>,
    /// Optimiser steps between two SVDs of a gradient (default 50).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<i64, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::AtLeastOne, _>"
    )]
    pub galore_update_proj_gap: Option<i64>,
    /// The projected-back update is multiplied by it (default 1.0).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub galore_scale: Option<f64>,
    /// 2-D trainable tensors whose name contains one of these are projected (default: attn
    /// and mlp, the attention and MLP linears).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    #[serde(default)]
    pub galore_target_modules: Option<Vec<String>>,
}

/// Preference alignment: `swift rlhf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct PreferenceArgs {
    /// dpo, orpo, simpo, cpo, kto or rm (reward modelling).
    #[cfg_attr(feature = "cli", arg(long, default_value = "dpo"))]
    pub rlhf_type: String,
    /// The preference loss (`swift list preference-losses`); DPO: sigmoid (default), ipo,
    /// hinge, robust.
    #[cfg_attr(feature = "cli", arg(long))]
    pub loss_type: Option<String>,
    /// Temperature of the implicit reward (default 0.1; 2.0 for simpo).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::Positive, _>")]
    pub beta: Option<f64>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::BelowHalf>))]
    #[serde(deserialize_with = "range::de::<f64, range::BelowHalf, _>")]
    pub label_smoothing: f64,
    /// Weight of the chosen answers' NLL added to a DPO loss (RPO).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub rpo_alpha: Option<f64>,
    /// SimPO's target reward margin.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(deserialize_with = "range::de::<f64, range::NonNegative, _>")]
    pub simpo_gamma: f64,
    /// Weight of the chosen answers' NLL in CPO / SimPO.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(deserialize_with = "range::de::<f64, range::NonNegative, _>")]
    pub cpo_alpha: f64,
    /// KTO: weight of the desirable rows' loss.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub desirable_weight: f64,
    /// KTO: weight of the undesirable rows' loss.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub undesirable_weight: f64,
    /// Sequences per gradient pass of the policy (1: score every sequence without a graph,
    /// take the loss's gradient per sequence, then back-propagate one sequence at a time; the
    /// same gradient in bounded memory). 0: the whole micro-batch in one pass.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(deserialize_with = "range::de::<usize, range::Any, _>")]
    pub rlhf_chunk_size: usize,
    /// Switch LoRA dropout off for preference training (as TRL's `disable_dropout` and so
    /// ms-swift do).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub disable_dropout: bool,
    /// Reward modelling: weight of `mean((r_chosen + r_rejected)²)` added to the loss, which
    /// centres the scores on zero (TRL's RewardConfig; default off).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<f64, range::NonNegative, _>"
    )]
    pub center_rewards_coefficient: Option<f64>,
    /// A separate reference model folder (default: the policy with its adapters disabled; for
    /// full fine-tuning a frozen copy of --model).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub ref_model: Option<PathBuf>,
}

/// Sampling: `swift infer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct GenerationArgs {
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub max_new_tokens: usize,
    /// 0 decodes greedily.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::NonNegative>))]
    #[serde(deserialize_with = "range::de::<f64, range::NonNegative, _>")]
    pub temperature: f64,
    /// 0: no top-k cut.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(deserialize_with = "range::de::<usize, range::Any, _>")]
    pub top_k: usize,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::AboveZeroToOne>))]
    #[serde(deserialize_with = "range::de::<f64, range::AboveZeroToOne, _>")]
    pub top_p: f64,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(deserialize_with = "range::de::<f64, range::Positive, _>")]
    pub repetition_penalty: f64,
    /// Seed of sampling.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 42, allow_negative_numbers = true, value_parser = range::parse::<u64, range::Any>))]
    #[serde(deserialize_with = "range::de::<u64, range::Any, _>")]
    pub seed: u64,
    /// Extra strings that end an answer (besides EOS and the template's). Repeatable.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1..))]
    pub stop_words: Vec<String>,
    /// Stream answers token by token in the chat.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub stream: bool,
}

/// The inference backend (`swift list backends`): `swift infer`, `deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct BackendArgs {
    /// The inference backend (`swift list backends`); `pt` is the built-in one.
    #[cfg_attr(feature = "cli", arg(long, default_value = "pt"))]
    pub infer_backend: String,
}

/// The HTTP server: `swift deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServerArgs {
    /// LoRA checkpoints served beside the base model, as NAME=CKPT (or CKPT: named after its
    /// folder). A request's `model` field picks one by name; the base model's name picks none.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "NAME=CKPT"))]
    pub adapters: Vec<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value = "127.0.0.1"))]
    pub host: String,
    /// 0 picks a free port; the address is printed as `listening on http://HOST:PORT`.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8000, allow_negative_numbers = true, value_parser = range::parse::<u16, range::Any>))]
    #[serde(deserialize_with = "range::de::<u16, range::Any, _>")]
    pub port: u16,
    /// The name requests use for the base model (default: the model folder's name).
    #[cfg_attr(feature = "cli", arg(long))]
    pub served_model_name: Option<String>,
    /// Most requests (rows) decoded together.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub max_batch_size: usize,
    /// Requests that may wait for room in the batch; beyond that the server answers 503.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub max_queue: usize,
    /// Prompt plus answer tokens per request (default: config.json's max_position_embeddings).
    #[cfg_attr(feature = "cli", arg(long, alias = "max-length", allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub max_model_len: Option<usize>,
    /// Test hook: sleep this many milliseconds after every decoding step, so tests can hold
    /// requests in flight (queue limits, draining on shutdown).
    #[cfg_attr(feature = "cli", arg(long, hide = true, allow_negative_numbers = true, value_parser = range::parse::<u64, range::Any>))]
    #[serde(default, deserialize_with = "range::de_opt::<u64, range::Any, _>")]
    pub debug_step_delay_ms: Option<u64>,
}

/// The API key: `swift deploy` requires it (`Authorization: Bearer KEY` on the /v1 routes);
/// `swift eval --eval_url` sends it; `swift web-ui` requires it (the bearer header, or
/// `/?api_key=KEY` opened once, which sets a cookie).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ApiKeyArgs {
    /// `swift deploy` and `swift web-ui`: require `Authorization: Bearer KEY` (web-ui: or open
    /// `/?api_key=KEY` once); `swift eval --eval_url`: send it so.
    #[cfg_attr(feature = "cli", arg(long))]
    pub api_key: Option<String>,
}

/// A model served elsewhere: `swift eval --eval_url`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RemoteEvalArgs {
    /// Evaluate the model of an OpenAI-compatible server (`http://HOST:PORT/v1`, e.g. `swift
    /// deploy`'s) instead of a local one: generation through /v1/chat/completions, multiple
    /// choice through /v1/completions with `echo` and `logprobs` (prompt log-probabilities).
    #[cfg_attr(feature = "cli", arg(long, value_name = "URL"))]
    pub eval_url: Option<String>,
}

/// Benchmarks at each evaluation step of a training run (ms-swift's EvalScope integration):
/// `swift sft`, `pt`, `rlhf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EvalDuringTrainingArgs {
    /// Run the --eval_dataset benchmarks at every evaluation step (--eval_steps, and at the
    /// end) on the model being trained; their metrics are logged beside eval_loss.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default)]
    pub eval_use_evalscope: bool,
    /// Generation benchmarks' settings during training, as JSON with ms-swift's (EvalScope's)
    /// keys: `max_tokens` (default 512), `temperature` (default 0: greedy), `top_p`, `top_k`,
    /// `repetition_penalty`, `seed`; any other key is refused.
    #[cfg_attr(feature = "cli", arg(long, value_name = "JSON"))]
    #[serde(default)]
    pub eval_generation_config: Option<String>,
}

/// What to evaluate: `swift eval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EvalArgs {
    /// Benchmarks to run: registered names (`swift list benchmarks`) or files in ms-swift's
    /// custom formats (`.csv`: mcq, question,A,B,C,D,answer; `.jsonl`: general_qa, query,
    /// response, optional history). Repeatable.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "NAME|PATH"))]
    pub eval_dataset: Vec<String>,
    /// Score only the first N rows of each benchmark (after its held-out few-shot rows).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub eval_limit: Option<usize>,
    /// Few-shot examples per question (default: the benchmark's), taken in order from its
    /// held-out rows.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(default, deserialize_with = "range::de_opt::<usize, range::Any, _>")]
    pub eval_few_shot: Option<usize>,
}

/// The web UI's server: `swift web-ui` (ms-swift's flag names; `--host`/`--port` as aliases).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct WebUiArgs {
    /// The address to listen on; anything but a loopback address needs --api_key.
    #[cfg_attr(
        feature = "cli",
        arg(long, alias = "host", default_value = "127.0.0.1")
    )]
    pub server_name: String,
    /// The port (0 picks a free one); the address is printed as `listening on http://HOST:PORT`.
    #[cfg_attr(feature = "cli", arg(long, alias = "port", default_value_t = 7860, allow_negative_numbers = true, value_parser = range::parse::<u16, range::Any>))]
    #[serde(deserialize_with = "range::de::<u16, range::Any, _>")]
    pub server_port: u16,
    /// The pages' language: en or zh.
    #[cfg_attr(feature = "cli", arg(long, default_value = "en", value_parser = ["en", "zh"]))]
    pub lang: String,
    /// Where the runs it launches go (one folder per run: DIR/webui/ID); an allowed root.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "DIR", default_value = "output")
    )]
    pub output_dir: PathBuf,
    /// Folders of models and data the UI may read (symlinks resolved), beside --output_dir.
    /// Repeatable.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "DIR"))]
    #[serde(default)]
    pub allowed_roots: Vec<PathBuf>,
}

fn yes() -> bool {
    true
}

/// Images in training (issue 21), ms-swift's names and defaults: which parts of a
/// vision-language model train (`--freeze_vit`, `--freeze_aligner`, `--freeze_llm`), their
/// learning rates, and how large images may be. Refused by name on a text-only model when given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct VisionArgs {
    /// Keep the vision tower frozen (full: not trained; LoRA: no adapters on its slots).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default = "yes")]
    pub freeze_vit: bool,
    /// Keep the projector between the vision tower and the language model frozen.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default = "yes")]
    pub freeze_aligner: bool,
    /// Keep the language model frozen.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    #[serde(default)]
    pub freeze_llm: bool,
    /// Learning rate of the vision tower's parameters (default: --learning_rate).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::Positive, _>")]
    pub vit_lr: Option<f64>,
    /// Learning rate of the projector's parameters (default: --learning_rate).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<f64, range::Positive>))]
    #[serde(default, deserialize_with = "range::de_opt::<f64, range::Positive, _>")]
    pub aligner_lr: Option<f64>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub image: ImageSizeArgs,
}

/// How large images may be, wherever images are read (training, `swift infer`, `swift
/// deploy`). Refused by name on a text-only model when given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ImageSizeArgs {
    /// Largest image area in pixels: Qwen2-VL's processor `max_pixels`; other processors get the
    /// image scaled down first, as ms-swift's --max_pixels. Default: the MAX_PIXELS environment
    /// variable, else the processor's own.
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub max_pixels: Option<usize>,
}
