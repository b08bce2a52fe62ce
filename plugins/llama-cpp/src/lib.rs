//! The `llama_cpp` inference backend: llama.cpp, through the `llama-cpp-2` binding (which builds
//! the llama.cpp it vendors), behind the backend contract (`swift_plugin_api::backend`).
//!
//! * It loads GGUF files of every type llama.cpp reads; the host hands it a folder as the
//!   project's own float32 GGUF export, and tokenizes with the folder's (or the GGUF's converted)
//!   tokenizer, so llama.cpp only ever sees token ids.
//! * One llama.cpp context holds every running sequence (a unified KV cache; `n_seq_max` =
//!   the batch size): a step removes the leaving sequences' cache, decodes one token for every
//!   fed sequence in one batch, prefills each joining prompt (in chunks of `n_batch`), and
//!   returns each row's last logits: sampling, seeds, logprobs, stop strings and `n` are the
//!   host's, the same as on `pt`.
//! * LoRA adapters: each PEFT LoRA checkpoint is written as a GGUF adapter file (swift-gguf's
//!   `convert_peft_lora_to_gguf`, what `swift export --adapters CKPT --to_gguf` writes) and loaded
//!   with `llama_adapter_lora_init`; llama.cpp applies one adapter set per context, so the record
//!   declares `per_batch`: the host never mixes adapters (or an adapter and the base) in one step,
//!   and a step switches the context's adapter when it differs from the last one.
//!
//! Build: the Makefile sets llama.cpp's instruction sets explicitly (x86-64-v3: AVX, AVX2, FMA,
//! F16C, BMI2; never native, never AMX) through the GGML_* variables the binding forwards to
//! cmake; without them the binding follows rustc's target features (SSE2 only), and [`load`]
//! warns that this build is slow.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use swift_gguf::GgmlType;
use swift_plugin_api::backend::AdapterFile;
use swift_plugin_api::prelude::*;

/// The record: GGUF files on the CPU, host sampling, LoRA adapters one per step.
pub fn record() -> BackendRecord {
    BackendRecord::new(
        "llama_cpp",
        "llama.cpp (vendored by llama-cpp-2) on the CPU: GGUF files of every type it reads, folders through swift's GGUF export",
    )
    .with_capabilities(Capabilities {
        formats: vec![ModelFormat::Gguf],
        devices: vec!["cpu".into()],
        dtypes: false,
        adapters: AdapterSupport::PerBatch,
        sampling: SamplingBy::Host,
        sampling_params: Vec::new(),
        logprobs: false,
        max_batch: 64,
        prompt_logprobs: false,
        images: false,
    })
}

/// Tokens one decode call holds.
const N_BATCH: u32 = 512;
/// Most tokens the shared KV cache holds (all running sequences together).
const MAX_CTX: usize = 32768;

/// llama.cpp's process-wide initialisation, done once.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| format!("llama.cpp init: {e}"))?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct LlamaCpp;

impl Backend for LlamaCpp {
    fn check_model(&self, _config: &serde_json::Value) -> Result<(), String> {
        // llama.cpp decides from the GGUF's own architecture when it loads.
        Ok(())
    }

    fn load(&self, request: &LoadRequest) -> Result<Box<dyn BackendModel>, String> {
        load(request).map(|m| Box::new(m) as Box<dyn BackendModel>)
    }
}

/// Instruction sets this build of llama.cpp was compiled with that matter for speed.
fn built_with_avx2() -> bool {
    // ggml reports what it was compiled for.
    unsafe { llama_cpp_sys_2::ggml_cpu_has_avx2() != 0 }
}

/// Loads the GGUF file into one context sized for `max_batch` sequences.
pub fn load(request: &LoadRequest) -> Result<LlamaCppModel, String> {
    if request.format != ModelFormat::Gguf {
        return Err(format!(
            "{} is not a GGUF file (the host exports folders to GGUF for this backend)",
            request.path.display()
        ));
    }
    if !built_with_avx2() && std::arch::is_x86_feature_detected!("avx2") {
        plugin_warn!(
            "this llama.cpp was built without AVX2 (SSE2 only: slow); build it with `make llama-cpp`, which sets its instruction sets"
        );
    }
    let b = backend()?;
    let mut model = LlamaModel::load_from_file(b, &request.path, &LlamaModelParams::default())
        .map_err(|e| format!("llama.cpp cannot load {}: {e}", request.path.display()))?;
    let adapters = request
        .adapters
        .iter()
        .enumerate()
        .map(|(i, a)| load_adapter(&mut model, request, i, a))
        .collect::<Result<Vec<_>, String>>()?;
    let n_seq = request.max_batch.clamp(1, 64);
    let train = model.n_ctx_train() as usize;
    // The host's longest sequence wins, as on `pt`, even beyond the model's training context
    // (llama.cpp then extends RoPE as the model's hyper-parameters say).
    let per_seq = if request.max_len == 0 {
        train.max(1)
    } else {
        request.max_len
    };
    let n_ctx = (per_seq * n_seq).clamp(256, MAX_CTX);
    let threads = if request.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        request.threads
    } as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx as u32))
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_seq_max(n_seq as u32)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let vocab = model.n_vocab() as usize;
    let description =
        format!(
        "{} on llama.cpp ({threads} threads, {n_ctx} cached tokens for up to {n_seq} sequences{})",
        request.path.display(),
        if built_with_avx2() { ", AVX2" } else { ", SSE only" }
    );
    let model = Box::into_raw(Box::new(model));
    // SAFETY: the model lives (on the heap, never moved) until `Drop` frees it after the context.
    let ctx = unsafe { &*model }.new_context(b, params).map_err(|e| {
        // SAFETY: no context borrows it.
        drop(unsafe { Box::from_raw(model) });
        format!("llama.cpp cannot make a context: {e}")
    })?;
    Ok(LlamaCppModel {
        ctx: Some(ctx),
        model,
        adapters,
        current: None,
        vocab,
        n_ctx,
        per_seq,
        seqs: BTreeMap::new(),
        free: (0..n_seq as i32).rev().collect(),
        description,
    })
}

/// The PEFT LoRA checkpoint `a` as a llama.cpp adapter of `model`: written as a GGUF adapter
/// file (float32, the Q/K rows permuted as the base's) into the temporary folder, loaded, and
/// the file removed (llama.cpp keeps the tensors).
fn load_adapter(
    model: &mut LlamaModel,
    request: &LoadRequest,
    i: usize,
    a: &AdapterFile,
) -> Result<LlamaLoraAdapter, String> {
    let file = std::env::temp_dir().join(format!(
        "swift-llama-cpp-lora-{}-{i}.gguf",
        std::process::id()
    ));
    swift_gguf::convert_peft_lora_to_gguf(&a.path, &request.config, &file, GgmlType::F32)
        .map_err(|e| format!("adapter {} ({}): {e}", a.name, a.path.display()))?;
    let adapter = model.lora_adapter_init(&file);
    let _ = std::fs::remove_file(&file);
    adapter.map_err(|e| {
        format!(
            "llama.cpp cannot load adapter {} ({}): {e}",
            a.name,
            a.path.display()
        )
    })
}

/// A running sequence: its llama.cpp sequence id, how many tokens its cache holds and its
/// adapter.
struct Seq {
    slot: i32,
    len: usize,
    adapter: Option<usize>,
}

/// A loaded GGUF and its context.
pub struct LlamaCppModel {
    ctx: Option<LlamaContext<'static>>,
    model: *mut LlamaModel,
    /// The loaded adapters, in the request's order (owned by the model in llama.cpp).
    adapters: Vec<LlamaLoraAdapter>,
    /// The adapter the context applies now.
    current: Option<usize>,
    vocab: usize,
    n_ctx: usize,
    per_seq: usize,
    seqs: BTreeMap<u64, Seq>,
    free: Vec<i32>,
    description: String,
}

// SAFETY: the context and model are used from one thread at a time (the contract's
// `BackendModel` is driven by one thread; `&mut self` for every step).
unsafe impl Send for LlamaCppModel {}

impl Drop for LlamaCppModel {
    fn drop(&mut self) {
        self.ctx = None;
        // SAFETY: the context that borrowed the model is gone.
        drop(unsafe { Box::from_raw(self.model) });
    }
}

impl LlamaCppModel {
    fn ctx(&mut self) -> Result<&mut LlamaContext<'static>, String> {
        self.ctx
            .as_mut()
            .ok_or_else(|| "the context is gone".into())
    }

    fn forget(&mut self, seq: u64) -> Result<(), String> {
        if let Some(s) = self.seqs.remove(&seq) {
            self.ctx()?
                .kv_cache_seq_rm(s.slot, None, None)
                .map_err(|e| format!("llama.cpp: removing a sequence: {e}"))?;
            self.free.push(s.slot);
        }
        Ok(())
    }

    /// Decodes `tokens` as (token, position, slot, wants logits); returns the logits rows asked
    /// for, in order.
    fn decode(&mut self, tokens: &[(i64, usize, i32, bool)]) -> Result<Vec<f32>, String> {
        let vocab = self.vocab;
        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
        let mut wanted = Vec::new();
        for (i, &(t, pos, slot, logits)) in tokens.iter().enumerate() {
            let t = i32::try_from(t).map_err(|_| format!("token {t} is out of range"))?;
            batch
                .add(LlamaToken(t), pos as i32, &[slot], logits)
                .map_err(|e| format!("llama.cpp batch: {e}"))?;
            if logits {
                wanted.push(i as i32);
            }
        }
        let ctx = self.ctx()?;
        ctx.decode(&mut batch)
            .map_err(|e| format!("llama.cpp decode: {e}"))?;
        let mut out = Vec::with_capacity(wanted.len() * vocab);
        for i in wanted {
            let row = ctx.get_logits_ith(i);
            if row.len() < vocab {
                return Err(format!("llama.cpp returned {} logits", row.len()));
            }
            out.extend_from_slice(&row[..vocab]);
        }
        Ok(out)
    }

    /// Makes the context apply `adapter` (None: the base model alone).
    fn use_adapter(&mut self, adapter: Option<usize>) -> Result<(), String> {
        if adapter == self.current {
            return Ok(());
        }
        let ctx = self
            .ctx
            .as_mut()
            .ok_or_else(|| "the context is gone".to_string())?;
        match (adapter, self.current) {
            (Some(i), _) => {
                let a = self
                    .adapters
                    .get_mut(i)
                    .ok_or_else(|| format!("adapter {i} was not loaded"))?;
                ctx.lora_adapter_set(a, 1.0)
                    .map_err(|e| format!("llama.cpp: setting adapter {i}: {e}"))?;
            }
            (None, Some(prev)) => {
                let a = self
                    .adapters
                    .get_mut(prev)
                    .ok_or_else(|| format!("adapter {prev} was not loaded"))?;
                ctx.lora_adapter_remove(a)
                    .map_err(|e| format!("llama.cpp: removing adapter {prev}: {e}"))?;
            }
            (None, None) => {}
        }
        self.current = adapter;
        Ok(())
    }

    /// The one adapter of this step's sequences (the host never mixes them: `per_batch`).
    fn step_adapter(&self, step: &Step) -> Result<Option<usize>, String> {
        let mut wanted = step
            .feed
            .iter()
            .filter_map(|(seq, _)| self.seqs.get(seq).map(|s| s.adapter))
            .chain(step.join.iter().map(|j| j.adapter));
        let Some(first) = wanted.next() else {
            return Ok(self.current);
        };
        if wanted.any(|a| a != first) {
            return Err(
                "one step mixes adapters, which this backend cannot apply (one per context)".into(),
            );
        }
        Ok(first)
    }

    fn run(&mut self, step: &Step) -> Result<StepOutput, String> {
        for s in &step.leave {
            self.forget(*s)?;
        }
        let adapter = self.step_adapter(step)?;
        self.use_adapter(adapter)?;
        let mut logits: Vec<f32> = Vec::new();
        if !step.feed.is_empty() {
            let mut tokens = Vec::with_capacity(step.feed.len());
            for (seq, t) in &step.feed {
                let s = self
                    .seqs
                    .get_mut(seq)
                    .ok_or_else(|| format!("sequence {seq} is not running"))?;
                if s.len >= self.per_seq {
                    return Err(format!(
                        "sequence {seq} reached this context's {} tokens per sequence",
                        self.per_seq
                    ));
                }
                tokens.push((*t, s.len, s.slot, true));
                s.len += 1;
            }
            for chunk in tokens.chunks(N_BATCH as usize) {
                logits.extend(self.decode(chunk)?);
            }
        }
        for j in &step.join {
            if j.prompt.is_empty() {
                return Err(format!("sequence {} joins with no tokens", j.seq));
            }
            if j.prompt.len() >= self.per_seq {
                return Err(format!(
                    "a prompt of {} tokens does not fit this context's {} tokens per sequence",
                    j.prompt.len(),
                    self.per_seq
                ));
            }
            let slot = self.free.pop().ok_or_else(|| {
                format!(
                    "more sequences than this context holds ({})",
                    self.seqs.len()
                )
            })?;
            self.seqs.insert(
                j.seq,
                Seq {
                    slot,
                    len: j.prompt.len(),
                    adapter: j.adapter,
                },
            );
            let n = j.prompt.len();
            let tokens: Vec<(i64, usize, i32, bool)> = j
                .prompt
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, i, slot, i + 1 == n))
                .collect();
            for chunk in tokens.chunks(N_BATCH as usize) {
                logits.extend(self.decode(chunk)?);
            }
        }
        Ok(StepOutput {
            vocab: self.vocab,
            logits,
            chosen: Vec::new(),
        })
    }
}

impl BackendModel for LlamaCppModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            vocab_size: self.vocab,
            max_len: Some(self.per_seq.min(self.n_ctx)),
            description: self.description.clone(),
        }
    }

    fn step(&mut self, step: &Step) -> Result<StepOutput, String> {
        let out = self.run(step);
        if out.is_err() {
            // The host fails every running sequence: start from an empty cache.
            let seqs: Vec<u64> = self.seqs.keys().copied().collect();
            for s in seqs {
                let _ = self.forget(s);
            }
        }
        out
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.backend(record(), LlamaCpp)?;
    Ok(())
}

swift_plugin_api::export_plugin!(register);
