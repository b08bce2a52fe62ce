//! The inference backend contract: what a backend declares it supports ([`BackendRecord`],
//! [`Capabilities`]), what the host asks it to load ([`LoadRequest`]), and the step-by-step
//! generation it runs for a batch of sequences ([`Step`] in, [`StepOutput`] out), with the plain
//! Rust traits a plugin implements ([`Backend`], [`BackendModel`]), their FFI objects and the
//! host's handles.
//!
//! The division of labour (ARCHITECTURE.md §3.8): the host owns requests, templates,
//! tokenization, the queue, stop strings, `n`, streaming and (when the backend lets it) sampling;
//! a backend owns weights and the KV cache of its sequences. Every step the host says which
//! sequences leave, which continue (with the token the host chose for each) and which join (their
//! prompt, adapter, sampling settings); the backend runs one forward pass over all of them and
//! returns, per sequence, either its next-token logits (host sampling: every sampling parameter,
//! seed and logprobs work the same on every backend) or the token it chose itself (backend
//! sampling: the backend declares which parameters it honours and the host refuses the rest).
//!
//! Steps cross as JSON (a few integers per sequence and a prompt when it joins); logits cross as
//! one flat `RVec<f32>`, row-major, the rows in the order of [`Step::rows`].

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use std::path::PathBuf;

use abi_stable::{
    sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};
use serde::{Deserialize, Serialize};

use crate::abi::{FfiBackend, FfiBackendBox, FfiBackend_TO};
use crate::behaviour::{guard, into_result};
pub use crate::prompt_score::{PromptLogprob, PromptScore, NO_PROMPT_LOGPROBS};

// ---------------------------------------------------------------------------------------------
// The record: a backend's name and what it supports

/// An inference backend (`pt`, `llama_cpp`, ...) and what it supports; `swift list backends`
/// prints the capabilities, and the host refuses a request that needs one it lacks, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl crate::records::Record for BackendRecord {
    const KIND: &'static str = "backend";
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn description(&self) -> &str {
        &self.description
    }
}

impl BackendRecord {
    /// A record with a name, a description and the default capabilities (a folder on the CPU,
    /// host sampling, no adapters).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            description: description.into(),
            capabilities: Capabilities::default(),
        }
    }

    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
}

/// What `--model` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A Hugging Face folder (config.json, safetensors, tokenizer).
    Folder,
    /// A `.gguf` file (the host converts a folder into one with its own GGUF export when the
    /// backend loads only GGUF).
    Gguf,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Folder => "folder",
            ModelFormat::Gguf => "gguf",
        }
    }
}

/// How a backend applies LoRA adapters named by `--adapters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterSupport {
    /// None: the host refuses `--adapters`.
    #[default]
    None,
    /// One adapter set per step: the host never puts sequences of different adapters (or of the
    /// base model and an adapter) in one step; the others wait.
    PerBatch,
    /// Each sequence of a step uses its own adapter (or none).
    PerRow,
}

impl AdapterSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterSupport::None => "none",
            AdapterSupport::PerBatch => "per_batch",
            AdapterSupport::PerRow => "per_row",
        }
    }
}

/// Who picks each next token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingBy {
    /// The backend returns logits and the host samples: every [`Sampling`] parameter, seeds and
    /// logprobs work as on every other host-sampling backend.
    #[default]
    Host,
    /// The backend returns the token it chose ([`Chosen`]); [`Capabilities::sampling_params`]
    /// lists what it honours and [`Capabilities::logprobs`] whether it reports log-probabilities.
    Backend,
}

/// What a backend supports. Everything not listed here (streaming, stop strings, `n`, the
/// queue and continuous batching) is the host's and works on every backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// What `--model` may name (default: a folder).
    #[serde(default = "default_formats")]
    pub formats: Vec<ModelFormat>,
    /// `--device` values it runs on (`cpu`, `cuda`; default `cpu`).
    #[serde(default = "default_devices")]
    pub devices: Vec<String>,
    /// Whether it honours `--torch_dtype` (otherwise the host refuses the flag).
    #[serde(default)]
    pub dtypes: bool,
    /// LoRA adapters (default: none).
    #[serde(default)]
    pub adapters: AdapterSupport,
    /// Who samples (default: the host, from logits).
    #[serde(default)]
    pub sampling: SamplingBy,
    /// With backend sampling: the [`Sampling`] fields it honours (`temperature`, `top_k`,
    /// `top_p`, `repetition_penalty`, `seed`); a request setting another away from its default
    /// is refused.
    #[serde(default)]
    pub sampling_params: Vec<String>,
    /// With backend sampling: whether it reports the chosen token's log-probability and the
    /// most likely alternatives ([`Chosen::logprob`], [`Chosen::top`]).
    #[serde(default)]
    pub logprobs: bool,
    /// Most sequences one step may hold (0: no limit of its own).
    #[serde(default)]
    pub max_batch: usize,
    /// Whether its models score a whole prompt ([`BackendModel::prompt_logprobs`]): what
    /// `/v1/completions` with `echo` and `logprobs` returns, and what `swift eval --eval_url`
    /// needs for log-likelihood benchmarks.
    #[serde(default)]
    pub prompt_logprobs: bool,
    /// Whether its models read images ([`Join::images`], issue 21); the host refuses images
    /// (`--images`, image rows, `image_url` parts) for a backend without it, naming it.
    #[serde(default)]
    pub images: bool,
}

fn default_formats() -> Vec<ModelFormat> {
    vec![ModelFormat::Folder]
}

fn default_devices() -> Vec<String> {
    vec!["cpu".into()]
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            formats: default_formats(),
            devices: default_devices(),
            dtypes: false,
            adapters: AdapterSupport::None,
            sampling: SamplingBy::Host,
            sampling_params: Vec::new(),
            logprobs: false,
            max_batch: 0,
            prompt_logprobs: false,
            images: false,
        }
    }
}

impl Capabilities {
    /// Refuses what a request asks that this backend cannot do: with backend sampling, a
    /// sampling parameter it does not honour, or logprobs it does not report. The error is
    /// (the parameter's name, a message naming the backend's limit).
    pub fn refuse(&self, sampling: &Sampling, logprobs: bool) -> Result<(), (String, String)> {
        if self.sampling == SamplingBy::Host {
            return Ok(());
        }
        if let Some(p) = sampling
            .used()
            .into_iter()
            .find(|p| !self.sampling_params.iter().any(|q| q == p))
        {
            return Err((
                p.to_string(),
                format!(
                    "`{p}` is not supported by this backend (it samples itself and honours {})",
                    if self.sampling_params.is_empty() {
                        "no sampling parameter: greedy only".to_string()
                    } else {
                        self.sampling_params.join(", ")
                    }
                ),
            ));
        }
        if logprobs && !self.logprobs {
            return Err((
                "logprobs".into(),
                "`logprobs` is not supported by this backend (it samples itself and reports no log-probabilities)".into(),
            ));
        }
        Ok(())
    }

    /// One line for `swift list backends`.
    pub fn summary(&self) -> String {
        let formats: Vec<&str> = self.formats.iter().map(|f| f.as_str()).collect();
        let sampling = match self.sampling {
            SamplingBy::Host => "host (all parameters, seeds, logprobs)".to_string(),
            SamplingBy::Backend => format!(
                "backend ({}{})",
                if self.sampling_params.is_empty() {
                    "greedy only".to_string()
                } else {
                    self.sampling_params.join(", ")
                },
                if self.logprobs { ", logprobs" } else { "" }
            ),
        };
        format!(
            "models: {}; devices: {}; dtypes: {}; adapters: {}; sampling: {sampling}; batch: {}{}",
            formats.join(", "),
            self.devices.join(", "),
            if self.dtypes { "yes" } else { "no" },
            self.adapters.as_str(),
            if self.max_batch == 0 {
                "any".to_string()
            } else {
                format!("up to {}", self.max_batch)
            },
            if self.prompt_logprobs {
                "; prompt log-probabilities (echo)"
            } else {
                ""
            },
        ) + if self.images { "; images" } else { "" }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// What the host asks a backend to load. The host has already resolved the model: `model` is
/// what the user named, `path` the file or folder in a format the backend declared (a `.gguf`
/// the host made from a folder, or the folder itself), `dir` a Hugging Face folder with the same
/// config and tokenizer (the host tokenizes; a GGUF file is converted once for this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRequest {
    pub model: PathBuf,
    pub format: ModelFormat,
    pub path: PathBuf,
    pub dir: PathBuf,
    /// `config.json` of `dir`.
    pub config: serde_json::Value,
    /// LoRA adapters in PEFT's layout, index `i` is what [`Join::adapter`] `Some(i)` names.
    #[serde(default)]
    pub adapters: Vec<AdapterFile>,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `--torch_dtype` when given (only to backends that declare `dtypes`).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Most sequences a step will hold.
    pub max_batch: usize,
    /// Longest sequence (prompt and answer) the host will ask for.
    pub max_len: usize,
    /// CPU threads the backend may use (0: its own choice).
    #[serde(default)]
    pub threads: usize,
}

/// One adapter checkpoint to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterFile {
    pub name: String,
    pub path: PathBuf,
}

/// What a loaded model tells the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Length of each logits row.
    pub vocab_size: usize,
    /// Longest sequence it can hold (None: no limit of its own).
    #[serde(default)]
    pub max_len: Option<usize>,
    /// One line for the log (what was loaded, how).
    #[serde(default)]
    pub description: String,
}

// ---------------------------------------------------------------------------------------------
// Generation steps

/// How one sequence picks its tokens (OpenAI's / transformers' meaning). With host sampling the
/// backend may ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 decodes greedily.
    pub temperature: f64,
    /// 0: all tokens.
    pub top_k: usize,
    /// 1: all tokens.
    pub top_p: f64,
    /// 1: none.
    pub repetition_penalty: f64,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 42,
        }
    }
}

impl Sampling {
    /// The parameters set away from their defaults, by name (`seed` only with sampling on).
    pub fn used(&self) -> Vec<&'static str> {
        let d = Sampling::default();
        let mut out = Vec::new();
        if self.temperature != d.temperature {
            out.push("temperature");
        }
        if self.top_k != d.top_k {
            out.push("top_k");
        }
        if self.top_p != d.top_p {
            out.push("top_p");
        }
        if self.repetition_penalty != d.repetition_penalty {
            out.push("repetition_penalty");
        }
        if self.temperature > 0.0 && self.seed != d.seed {
            out.push("seed");
        }
        out
    }
}

/// A sequence that joins: its prompt is prefilled in this step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub seq: u64,
    pub prompt: Vec<i64>,
    /// Index into [`LoadRequest::adapters`] (None: the base model).
    #[serde(default)]
    pub adapter: Option<usize>,
    #[serde(default)]
    pub sampling: Sampling,
    /// Report log-probabilities with this many alternatives (backend sampling only).
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// The prompt's images, in order, as the model's image processor gave them; the prompt
    /// holds each one's placeholder positions already. Only for backends declaring
    /// [`Capabilities::images`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageInput>,
}

/// One processed image: pixel values (row-major, `shape`) and its patch grid `(t, h, w)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInput {
    pub pixel_values: Vec<f32>,
    /// CLIP: `[3, H, W]`; Qwen2-VL: `[patches, c·t·p·p]`.
    pub shape: Vec<i64>,
    pub grid_thw: [i64; 3],
}

/// One step: sequences leave (their cache is freed), continue with one more token, or join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub leave: Vec<u64>,
    /// Running sequences and the token each appends (the one chosen from the last step).
    #[serde(default)]
    pub feed: Vec<(u64, i64)>,
    #[serde(default)]
    pub join: Vec<Join>,
}

impl Step {
    /// The sequences the output answers, in order: `feed` then `join`.
    pub fn rows(&self) -> Vec<u64> {
        self.feed
            .iter()
            .map(|(s, _)| *s)
            .chain(self.join.iter().map(|j| j.seq))
            .collect()
    }
}

/// A token a backend chose (backend sampling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub token: i64,
    #[serde(default)]
    pub logprob: Option<f64>,
    /// The most likely alternatives (token, log-probability), most likely first.
    #[serde(default)]
    pub top: Vec<(i64, f64)>,
}

/// A step's result, one row per [`Step::rows`]: `vocab` logits per row (host sampling) or one
/// [`Chosen`] per row (backend sampling).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    pub vocab: usize,
    pub logits: Vec<f32>,
    pub chosen: Vec<Chosen>,
}

/// A step's result as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiStepOutput {
    pub vocab: u64,
    pub logits: RVec<f32>,
    /// `[Chosen]` as JSON; empty with host sampling.
    pub chosen_json: RString,
}

// ---------------------------------------------------------------------------------------------
// Behaviour: the plain Rust traits

/// An inference backend: accepts or refuses a model, and loads one.
pub trait Backend: Send + Sync + 'static {
    /// Accepts a model (its `config.json`) or says why it cannot serve it.
    fn check_model(&self, config: &serde_json::Value) -> Result<(), String>;

    /// Loads what `request` names. Only called with formats, devices and adapters the record
    /// declares.
    fn load(&self, request: &LoadRequest) -> Result<Box<dyn BackendModel>, String> {
        let _ = request;
        Err("this backend loads no models".into())
    }
}

/// A loaded model generating for a batch of sequences, one [`Step`] at a time. Called from one
/// thread at a time.
pub trait BackendModel: Send + 'static {
    fn info(&self) -> ModelInfo;
    /// Runs one step. An error fails every running sequence (the host forgets them all; the
    /// next step's sequences all join).
    fn step(&mut self, step: &Step) -> Result<StepOutput, String>;
    /// The log-probability of every prompt token after the first, under the model (one forward
    /// pass, outside the running batch: the sequences it holds are untouched). Only called when
    /// the record declares [`Capabilities::prompt_logprobs`].
    fn prompt_logprobs(&mut self, request: &PromptScore) -> Result<Vec<PromptLogprob>, String> {
        let _ = request;
        Err(NO_PROMPT_LOGPROBS.into())
    }
}

// ---------------------------------------------------------------------------------------------
// FFI objects

/// A loaded model as it crosses the boundary.
#[sabi_trait]
pub trait FfiBackendModel: Send {
    /// [`ModelInfo`] as JSON.
    fn info(&self) -> RResult<RString, RString>;
    /// [`Step`] as JSON in.
    #[sabi(last_prefix_field)]
    fn step(&mut self, step_json: RStr<'_>) -> RResult<FfiStepOutput, RString>;
    /// [`PromptScore`] as JSON in, `[PromptLogprob]` as JSON out. Appended after the prefix
    /// (contract 4 unchanged): a model from a plugin built before it answers with this default.
    fn prompt_logprobs(&mut self, request_json: RStr<'_>) -> RResult<RString, RString> {
        let _ = request_json;
        RResult::RErr(RString::from(NO_PROMPT_LOGPROBS))
    }
}
pub type FfiBackendModelBox = FfiBackendModel_TO<'static, RBox<()>>;

struct ModelAdapter(Box<dyn BackendModel>);

impl FfiBackendModel for ModelAdapter {
    fn info(&self) -> RResult<RString, RString> {
        guard("backend model", || {
            serde_json::to_string(&self.0.info())
                .map(RString::from)
                .map_err(|e| e.to_string())
        })
    }

    fn step(&mut self, step_json: RStr<'_>) -> RResult<FfiStepOutput, RString> {
        guard("backend model", || {
            let step: Step = serde_json::from_str(step_json.as_str())
                .map_err(|e| format!("a step the backend cannot read: {e}"))?;
            let out = self.0.step(&step)?;
            let chosen_json = if out.chosen.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&out.chosen).map_err(|e| e.to_string())?
            };
            Ok(FfiStepOutput {
                vocab: out.vocab as u64,
                logits: out.logits.into(),
                chosen_json: chosen_json.into(),
            })
        })
    }

    fn prompt_logprobs(&mut self, request_json: RStr<'_>) -> RResult<RString, RString> {
        self.score(request_json)
    }
}

impl ModelAdapter {
    fn score(&mut self, request_json: RStr<'_>) -> RResult<RString, RString> {
        guard("backend model", || {
            let request: PromptScore = serde_json::from_str(request_json.as_str())
                .map_err(|e| format!("a prompt-scoring request the backend cannot read: {e}"))?;
            let out = self.0.prompt_logprobs(&request)?;
            serde_json::to_string(&out)
                .map(RString::from)
                .map_err(|e| e.to_string())
        })
    }
}

/// A Rust model as the FFI object (how a backend's `load` result crosses, and how the host
/// wraps its own `pt` model so that it drives every backend through the same handle).
pub fn model_to_ffi(m: Box<dyn BackendModel>) -> FfiBackendModelBox {
    FfiBackendModel_TO::from_value(ModelAdapter(m), TD_Opaque)
}

struct BackendAdapter<B>(B);

impl<B: Backend> FfiBackend for BackendAdapter<B> {
    fn check_model(&self, config_json: RStr<'_>) -> RResult<(), RString> {
        guard("backend", || {
            let config: serde_json::Value = serde_json::from_str(config_json.as_str())
                .map_err(|e| format!("config.json is not JSON: {e}"))?;
            self.0.check_model(&config)
        })
    }

    fn load(&self, request_json: RStr<'_>) -> RResult<FfiBackendModelBox, RString> {
        guard("backend", || {
            let request: LoadRequest = serde_json::from_str(request_json.as_str())
                .map_err(|e| format!("a load request the backend cannot read: {e}"))?;
            self.0.load(&request).map(model_to_ffi)
        })
    }
}

pub(crate) fn backend_to_ffi<B: Backend>(b: B) -> FfiBackendBox {
    FfiBackend_TO::from_value(BackendAdapter(b), TD_Opaque)
}

// ---------------------------------------------------------------------------------------------
// The host's handles

/// The host's handle on an inference backend.
pub struct BackendHandle {
    inner: FfiBackendBox,
}

impl BackendHandle {
    pub(crate) fn new(inner: FfiBackendBox) -> Self {
        Self { inner }
    }

    /// See [`Backend::check_model`].
    pub fn check_model(&self, config: &serde_json::Value) -> Result<(), String> {
        let json = config.to_string();
        into_result(self.inner.check_model(json.as_str().into()))
    }

    /// See [`Backend::load`].
    pub fn load(&self, request: &LoadRequest) -> Result<BackendModelHandle, String> {
        let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let inner = into_result(self.inner.load(json.as_str().into()))?;
        BackendModelHandle::new(inner)
    }
}

/// The host's handle on a loaded model.
pub struct BackendModelHandle {
    inner: FfiBackendModelBox,
    info: ModelInfo,
}

impl BackendModelHandle {
    /// Wraps a loaded model (reading its [`ModelInfo`] once).
    pub fn new(inner: FfiBackendModelBox) -> Result<Self, String> {
        let json = into_result(inner.info())?;
        let info: ModelInfo = serde_json::from_str(json.as_str())
            .map_err(|e| format!("the backend's model info is not readable: {e}"))?;
        Ok(Self { inner, info })
    }

    /// A host-side model behind the same handle.
    pub fn from_model(m: Box<dyn BackendModel>) -> Result<Self, String> {
        Self::new(model_to_ffi(m))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs one step; checks the output's shape against the step.
    pub fn step(&mut self, step: &Step) -> Result<StepOutput, String> {
        let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
        let out = into_result(self.inner.step(json.as_str().into()))?;
        let rows = step.feed.len() + step.join.len();
        let chosen: Vec<Chosen> = if out.chosen_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(out.chosen_json.as_str())
                .map_err(|e| format!("the backend's chosen tokens are not readable: {e}"))?
        };
        let vocab = out.vocab as usize;
        let logits = out.logits.into_vec();
        if chosen.is_empty() {
            if logits.len() != rows * vocab || (rows > 0 && vocab == 0) {
                return Err(format!(
                    "the backend returned {} logits for {rows} sequences of vocabulary {vocab}",
                    logits.len()
                ));
            }
        } else if chosen.len() != rows {
            return Err(format!(
                "the backend chose {} tokens for {rows} sequences",
                chosen.len()
            ));
        }
        Ok(StepOutput {
            vocab,
            logits,
            chosen,
        })
    }

    /// See [`BackendModel::prompt_logprobs`]; checks there is one entry per prompt token after
    /// the first.
    pub fn prompt_logprobs(&mut self, request: &PromptScore) -> Result<Vec<PromptLogprob>, String> {
        let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let out = into_result(self.inner.prompt_logprobs(json.as_str().into()))?;
        let out: Vec<PromptLogprob> = serde_json::from_str(out.as_str())
            .map_err(|e| format!("the backend's prompt log-probabilities are not readable: {e}"))?;
        let want = request.prompt.len().saturating_sub(1);
        if out.len() != want {
            return Err(format!(
                "the backend scored {} prompt tokens, expected {want} (all but the first)",
                out.len()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose logits say which sequence and how many tokens it has seen.
    struct Counting {
        seen: std::collections::BTreeMap<u64, usize>,
    }

    impl BackendModel for Counting {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                vocab_size: 2,
                max_len: Some(8),
                description: "counting".into(),
            }
        }
        fn step(&mut self, step: &Step) -> Result<StepOutput, String> {
            for s in &step.leave {
                self.seen.remove(s);
            }
            for (s, _) in &step.feed {
                *self.seen.get_mut(s).ok_or("unknown sequence")? += 1;
            }
            for j in &step.join {
                self.seen.insert(j.seq, j.prompt.len());
            }
            let logits = step
                .rows()
                .iter()
                .flat_map(|s| [*s as f32, self.seen[s] as f32])
                .collect();
            Ok(StepOutput {
                vocab: 2,
                logits,
                chosen: Vec::new(),
            })
        }
    }

    #[test]
    fn a_step_crosses_the_boundary_and_back() {
        let mut h = BackendModelHandle::from_model(Box::new(Counting {
            seen: Default::default(),
        }))
        .unwrap();
        assert_eq!(h.info().max_len, Some(8));
        let join = |seq, n| Join {
            seq,
            prompt: vec![1; n],
            adapter: None,
            sampling: Sampling::default(),
            logprobs: None,
            images: Vec::new(),
        };
        let out = h
            .step(&Step {
                join: vec![join(3, 2), join(5, 4)],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(out.logits, vec![3.0, 2.0, 5.0, 4.0]);
        let out = h
            .step(&Step {
                leave: vec![3],
                feed: vec![(5, 0)],
                join: vec![join(7, 1)],
            })
            .unwrap();
        assert_eq!(out.logits, vec![5.0, 5.0, 7.0, 1.0]);
        // A sequence the backend does not know is its error, returned as one.
        let e = h
            .step(&Step {
                feed: vec![(3, 0)],
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.contains("unknown sequence"), "{e}");
    }

    #[test]
    fn records_default_to_a_folder_host_sampling_and_no_adapters() {
        let r: BackendRecord = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(r.capabilities, Capabilities::default());
        assert!(serde_json::from_str::<BackendRecord>(
            r#"{"name":"x","capabilities":{"fromats":[]}}"#
        )
        .is_err());
        let used = Sampling {
            top_k: 5,
            seed: 1,
            ..Default::default()
        }
        .used();
        assert_eq!(used, vec!["top_k"]);
    }
}
