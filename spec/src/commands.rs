//! One specification per command: the groups that apply to it, flattened (on the command line,
//! in `args.json` and in `--config` files alike), plus the few flags that are the command's own.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::groups::*;
use crate::range;

/// `swift sft` and `swift pt`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainSpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub template: TemplateArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub encoding: EncodingArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub data: DatasetArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub validation: ValidationArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub tuner: TunerArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub quant: QuantArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub trainer: TrainerArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub optimizer: OptimizerArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub evalscope: EvalDuringTrainingArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub eval: EvalArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub vision: VisionArgs,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

/// `swift rlhf`: every training flag plus the preference ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RlhfSpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub train: TrainSpec,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub preference: PreferenceArgs,
}

/// `swift infer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct InferSpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub template: TemplateArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub generation: GenerationArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub backend: BackendArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub image: ImageSizeArgs,
    /// LoRA checkpoints (PEFT layout, e.g. `output/.../checkpoint-N` from `swift sft`); their
    /// args.json supplies the model and template when --model / --template are not given.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "CKPT"))]
    pub adapters: Vec<PathBuf>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub adapter_check: AdapterCheckArgs,
    /// Fold the --adapters into the base weights at load time (faster decoding, same output;
    /// `swift export --merge_lora` writes such a model to disk).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub merge_lora: bool,
    /// Rows generated together with --val_dataset.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub max_batch_size: usize,
    /// Longest prompt in tokens (chat: older turns are dropped to fit).
    #[cfg_attr(feature = "cli", arg(long, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<usize, range::AtLeastOne, _>"
    )]
    pub max_length: Option<usize>,
    /// Datasets to answer (files or registered names, NAME#N samples N rows).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "SPEC"))]
    pub val_dataset: Vec<String>,
    /// Images for the chat's first question (paths, data URLs or base64; remote URLs are
    /// refused): a vision-language model only. Without `<image>` tags in the question, one per
    /// image goes before it.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "IMAGE"))]
    #[serde(default)]
    pub images: Vec<String>,
    /// Where --val_dataset results go (JSON lines).
    #[cfg_attr(feature = "cli", arg(long))]
    pub result_path: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long, hide = true))]
    pub debug_input_ids: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, hide = true, default_value_t = 32, allow_negative_numbers = true, value_parser = range::parse::<usize, range::Any>))]
    #[serde(deserialize_with = "range::de::<usize, range::Any, _>")]
    pub debug_greedy_tokens: usize,
    #[cfg_attr(feature = "cli", arg(long, hide = true))]
    pub nll_file: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long, hide = true, default_value_t = 192, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub nll_tokens: usize,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

/// `swift deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DeploySpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub template: TemplateArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub backend: BackendArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub server: ServerArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub api: ApiKeyArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub adapter_check: AdapterCheckArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub image: ImageSizeArgs,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

/// `swift export`: merge adapters, convert from/to GGUF (and Ollama), quantize.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExportSpec {
    /// Convert this GGUF file into a Hugging Face model folder.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub from_gguf: Option<PathBuf>,
    /// Where to write the result.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub output_dir: Option<PathBuf>,
    /// The model to export (a Hugging Face folder); with --adapters, the base model (default:
    /// the adapter's args.json / adapter_config.json `base_model_name_or_path`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub model: Option<PathBuf>,
    /// LoRA checkpoints (PEFT layout) to merge into the base model (with --merge_lora).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "CKPT"))]
    pub adapters: Vec<PathBuf>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub adapter_check: AdapterCheckArgs,
    /// Merge the --adapters into the base weights and write a full model folder
    /// (default: `<first checkpoint>-merged`).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub merge_lora: Option<bool>,
    /// Write the model (or the merged model) as one GGUF file for llama.cpp; with --adapters and
    /// no --merge_lora, each adapter as a GGUF LoRA adapter file (llama.cpp's `--lora`).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub to_gguf: Option<bool>,
    /// The GGUF tensor type of the matrices: f32, f16, q8_0, q4_0, q4_1, q4_k or q6_k (norms stay f32);
    /// f32 or f16 for adapter files.
    #[cfg_attr(feature = "cli", arg(long, value_name = "TYPE", default_value = "f16"))]
    pub gguf_type: String,
    /// Also write an Ollama `Modelfile` next to the GGUF file (implies --to_gguf).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub to_ollama: Option<bool>,
    /// The chat template recorded in the export (`swift list templates`); default: the
    /// adapter's, else the model's recorded one, else the tokenizer's chat_template, else the
    /// family's.
    #[cfg_attr(feature = "cli", arg(long))]
    pub template: Option<String>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub quant: QuantArgs,
    /// Calibration data for gptq and awq (files or registered names, NAME#N). Repeatable.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "SPEC"))]
    pub dataset: Vec<String>,
    /// Input columns per scale (hqq, gptq, awq, rtn; default 128; 0: one per row).
    #[cfg_attr(feature = "cli", arg(long, value_name = "G", allow_negative_numbers = true, value_parser = range::parse::<i64, range::NonNegative>))]
    #[serde(
        default,
        deserialize_with = "range::de_opt::<i64, range::NonNegative, _>"
    )]
    pub group_size: Option<i64>,
    /// Calibration texts used (gptq, awq).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub quant_n_samples: usize,
    /// Tokens per calibration text.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = range::parse::<usize, range::AtLeastOne>))]
    #[serde(deserialize_with = "range::de::<usize, range::AtLeastOne, _>")]
    pub max_length: usize,
    /// gptq: quantize columns by decreasing Hessian diagonal (default true).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub act_order: Option<bool>,
    /// rtn, hqq: quantize the output projection too (`lm_head`; a tied one with the token
    /// embedding it shares), at --quant_bits, so decoding reads no float matrix (default false:
    /// kept in float, as the standard layouts do; gptq, awq and bnb refuse it).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub quant_lm_head: Option<bool>,
    /// bnb 4-bit code book: nf4 (default) or fp4.
    #[cfg_attr(feature = "cli", arg(long, value_name = "T"))]
    pub bnb_4bit_quant_type: Option<String>,
    /// bnb 4-bit: quantize the block absmax values again (default true).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub bnb_4bit_use_double_quant: Option<bool>,
    /// Where the model runs while quantizing: auto, cpu, cuda or cuda:N.
    #[cfg_attr(feature = "cli", arg(long, default_value = "auto"))]
    pub device: String,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

/// `swift encode`: rows encoded with a template, for people debugging a template or a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EncodeSpec {
    /// A model folder: its tokenizer.json (and tokenizer_config.json, whose chat_template is
    /// used when --template is not given).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub model: Option<PathBuf>,
    /// A tokenizer.json file (a tokenizer_config.json next to it is read too).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub tokenizer: Option<PathBuf>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub template: TemplateArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub encoding: EncodingArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub data: DatasetArgs,
    /// Encode inference prompts: drop a final assistant answer, end with the assistant header.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = crate::parse_bool, action = clap::ArgAction::Set))]
    pub generation_prompt: bool,
    /// Print the rendered text with trained spans marked `[[...]]{loss_scale}` (the default).
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool, conflicts_with = "json"))]
    pub show: Option<bool>,
    /// Print one JSON line per row: input_ids, labels, loss_scale.
    #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = crate::parse_bool))]
    pub json: Option<bool>,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

/// `swift eval`: benchmarks on a local model (or its adapters), or on a server's (--eval_url).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EvalSpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub model: ModelArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub template: TemplateArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub generation: GenerationArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub backend: BackendArgs,
    /// LoRA checkpoints (PEFT layout); their args.json supplies the model and template when
    /// --model / --template are not given.
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., value_name = "CKPT"))]
    pub adapters: Vec<PathBuf>,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub adapter_check: AdapterCheckArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub eval: EvalArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub remote: RemoteEvalArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub api: ApiKeyArgs,
    /// Where each evaluation's run folder (v<N>-<timestamp>/) is created (default:
    /// output/eval/<model>).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub output_dir: Option<PathBuf>,
    /// The flags the user set (filled by the host; not a flag, not in `args.json`).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

impl crate::CommandSpec for EvalSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for TrainSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for InferSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for DeploySpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for ExportSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for EncodeSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}

impl crate::CommandSpec for RlhfSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.train.given
    }
}

/// `swift web-ui`: train, chat, evaluate and export from a browser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct WebUiSpec {
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub server: WebUiArgs,
    #[cfg_attr(feature = "cli", command(flatten))]
    #[serde(flatten)]
    pub api: ApiKeyArgs,
    /// The flags the user set (filled by the host; not a flag).
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub given: crate::GivenFlags,
}

impl crate::CommandSpec for WebUiSpec {
    fn given_mut(&mut self) -> &mut crate::GivenFlags {
        &mut self.given
    }
}
