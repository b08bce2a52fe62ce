//! # swift-serve: the OpenAI-compatible server behind `swift deploy`
//!
//! * [`api`]: the request and response shapes, and OpenAI's error shape.
//! * [`batcher`]: the thread that owns the backend's loaded model and decodes every running
//!   request together (continuous batching with a bounded queue), through the backend contract;
//!   its [`batcher::Decoder`] is also `swift infer`'s generation loop.
//! * [`pt`]: the built-in `pt` backend's model (libtorch) behind that contract.
//! * [`adapters`]: several adapters on one libtorch model (through the tuner contract), chosen
//!   per row without merging.
//! * [`echo`]: `/v1/completions` with `echo`: the prompt's token log-probabilities (OpenAI's
//!   legacy completions, vLLM), from backends that declare prompt scoring.
//! * [`images`]: images in prompts (infer's rows, deploy's `image_url` parts): read, processed
//!   by the model's image processor, placeholders expanded.
//! * [`logprobs`]: a decoded token's log-probability and alternatives from a row's logits.
//! * [`tool_calls`]: tool calls in answers read back into OpenAI's `tool_calls`.
//! * [`validate`]: a chat request's `messages` and `tools` checked field by field (OpenAI's
//!   rules per role), each failure a 400 naming its `param`.
//! * [`app`]: the axum routes.
//!
//! [`run`] ties them together: it binds the address, serves until Ctrl-C (or SIGTERM), then
//! stops accepting connections, lets every request in flight finish, and returns.

pub mod adapters;
pub mod api;
pub mod app;
pub mod batcher;
pub mod echo;
pub mod images;
pub mod logprobs;
pub mod pt;
#[cfg(test)]
mod tests;
pub mod tool_calls;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swift_plugin_tensors::backend::{BackendModelHandle, Capabilities};
use swift_template::Encoder;

/// Everything that can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading adapter {0}")]
    Adapter(String),
    #[error("{0}")]
    Startup(String),
    #[error("model: {0}")]
    Model(#[from] swift_model::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Internal(String),
}

/// The model to serve, loaded by its backend and bound to its template.
pub struct ServedModel {
    pub model: BackendModelHandle,
    /// What the backend supports (requests needing more are refused with a 400).
    pub capabilities: Capabilities,
    /// The backend's name (`--infer_backend`), named by refusals.
    pub backend: String,
    /// The chat template bound to the tokenizer (`generation_prompt` on).
    pub encoder: Encoder,
    /// A vision-language model's image side, or why requests with images are refused.
    pub images: Result<Arc<images::PromptImages>, String>,
    pub eos_ids: Vec<i64>,
    /// Prompt plus answer tokens one request may use.
    pub max_model_len: usize,
    /// The name requests use for the base model.
    pub name: String,
    /// Waiting requests join the running batch at every step (`batcher::BatchOptions::
    /// join_at_once`; the `pt` model's `PtModel::small_joins_cheap`).
    pub join_at_once: bool,
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (the chosen address is printed).
    pub port: u16,
    pub api_key: Option<String>,
    /// The LoRA adapters the backend loaded, as (name, checkpoint folder): adapter `i` is what
    /// the backend's `Join::adapter` `Some(i)` selects.
    pub adapters: Vec<(String, PathBuf)>,
    pub max_batch_size: usize,
    pub max_queue: usize,
    /// Test hook: sleep after every decoding step.
    pub step_delay: Option<Duration>,
}

/// Serves `served` until Ctrl-C or SIGTERM; returns once every request in flight is answered.
/// Prints `listening on http://ADDR` on stdout when the socket is bound.
pub fn run(served: ServedModel, options: ServeOptions) -> Result<(), ServeError> {
    let ServedModel {
        model,
        capabilities,
        backend,
        encoder,
        images,
        eos_ids,
        max_model_len,
        name,
        join_at_once,
    } = served;
    for (a, path) in &options.adapters {
        if *a == name {
            return Err(ServeError::Startup(format!(
                "adapter name `{a}` is the base model's name; choose another (--adapters NAME=PATH)"
            )));
        }
        tracing::info!("adapter `{a}`: {}", path.display());
    }
    let encoder = Arc::new(encoder);
    let stop_words = encoder.template.stop_words.clone();
    let (submitter, batcher) = batcher::spawn(
        model,
        &capabilities,
        encoder.clone(),
        batcher::BatchOptions {
            max_batch_size: options.max_batch_size,
            max_queue: options.max_queue,
            eos_ids,
            join_at_once,
            step_delay: options.step_delay,
        },
    )?;
    let state = Arc::new(app::AppState {
        base_name: name,
        adapters: options.adapters.iter().map(|(a, _)| a.clone()).collect(),
        capabilities,
        backend,
        encoder,
        images,
        stop_words,
        max_model_len,
        api_key: options.api_key.clone(),
        submitter,
        max_queue: options.max_queue,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Startup(format!("starting the async runtime: {e}")))?;
    let served = runtime.block_on(serve(state, &options));
    // Every handler is done and the state dropped: the batcher sees no more senders and exits.
    if batcher.join().is_err() {
        return Err(ServeError::Internal("the batcher thread panicked".into()));
    }
    served
}

async fn serve(state: Arc<app::AppState>, options: &ServeOptions) -> Result<(), ServeError> {
    let addr = format!("{}:{}", options.host, options.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServeError::Startup(format!("cannot listen on {addr}: {e}")))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServeError::Startup(e.to_string()))?;
    tracing::info!(
        "serving `{}`{} on http://{local}/v1 (batches of up to {}, {} waiting at most)",
        state.base_name,
        if state.adapters.is_empty() {
            String::new()
        } else {
            format!(" and adapters {}", state.adapters.join(", "))
        },
        options.max_batch_size,
        options.max_queue
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on http://{local}");
        let _ = out.flush();
    }
    let app = app::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| ServeError::Internal(format!("the server failed: {e}")))?;
    tracing::info!("every request in flight is answered; stopping");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: no new connections; finishing the requests in flight");
}
