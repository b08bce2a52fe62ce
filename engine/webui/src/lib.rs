//! # swift-webui: `swift web-ui`
//!
//! A small axum server (the project's HTTP stack, as `swift deploy`'s) of server-rendered pages
//! with a little plain JavaScript (`assets/app.js`) and one vendored chart library (uPlot, which
//! `make setup` installs from npm into the cache: [`vendor`]). It needs no tensors and links no
//! libtorch: every run it starts is a `swift` child process, launched with an argument list (no
//! shell), whose output folder the pages read back.
//!
//! * [`safety`]: loopback unless told otherwise (and then an API key), `Host`/`Origin` checks,
//!   every path resolved (symlinks) inside the allowed roots;
//! * `args`: a form's flags → the argument list launched (and shown as the equivalent command),
//!   checked against the command's own flag definitions before anything starts;
//! * `jobs`: runs (train, eval, export) in `OUTPUT/webui/ID/`, their PID recorded there, so the
//!   list survives reloads and restarts and a run started before a restart can be stopped;
//! * `chat`: a `swift deploy` child on a free loopback port for the chosen model or checkpoint,
//!   its streamed answers passed through to the page;
//! * `page`: the HTML (English or Chinese labels), built from the registries' records, so a
//!   plugin's tuner or optimizer shows with its options and no UI code.
//!
//! The host (`swift web-ui`) hands over what only it knows: the registries' listing, the
//! executable, the global flags the children need, and the command-line check.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

mod args;
mod chat;
mod jobs;
mod page;
pub mod safety;
pub mod vendor;

/// Checks a `swift` argument list (without the program name: `["sft", "--model", ...]`) the
/// way the command line parses it; `Err` says what is wrong (an unknown flag, a bad value).
pub type ArgCheck = Arc<dyn Fn(&[String]) -> Result<(), String> + Send + Sync>;

/// Everything `swift web-ui` was given.
pub struct Options {
    pub server_name: String,
    /// 0 picks a free port.
    pub port: u16,
    /// `en` or `zh`.
    pub lang: String,
    /// Where runs go (`OUTPUT/webui/ID/`); an allowed root.
    pub output_dir: PathBuf,
    pub api_key: Option<String>,
    /// Model and data folders the UI may read, beside `output_dir`.
    pub allowed_roots: Vec<PathBuf>,
    /// The `swift` executable the runs are started with.
    pub swift: PathBuf,
    /// Global flags every child gets (`--plugin-dir DIR`, `--plugin-override NAME`).
    pub global_args: Vec<String>,
    /// The registries' rows (`swift list --json`).
    pub catalogue: serde_json::Value,
    /// The command line's own check of a run's arguments.
    pub check_args: ArgCheck,
    /// Where `make setup` put the chart library.
    pub vendor_dir: PathBuf,
}

/// Why the web UI did not start.
#[derive(Debug, thiserror::Error)]
pub enum WebUiError {
    #[error("{0}")]
    Startup(String),
}

/// What every handler shares.
pub(crate) struct AppState {
    pub lang: page::Lang,
    pub roots: safety::Roots,
    pub guard: safety::Guard,
    pub jobs: jobs::Jobs,
    pub chat: chat::Chat,
    pub catalogue: serde_json::Value,
    pub check_args: ArgCheck,
    pub vendor: vendor::Vendor,
}

/// Serves the web UI until Ctrl-C or SIGTERM. Prints `listening on http://ADDR` on stdout once
/// the socket is bound. Runs it launched keep running after it stops (a later `swift web-ui` on
/// the same `--output_dir` lists them and can stop them); its chat server is stopped.
pub fn run(options: Options) -> Result<(), WebUiError> {
    safety::check_bind(&options.server_name, options.api_key.as_deref())?;
    let lang = page::Lang::parse(&options.lang)?;
    let roots = safety::Roots::new(&options.output_dir, &options.allowed_roots)?;
    let jobs_dir = roots.output().join("webui");
    let jobs = jobs::Jobs::open(jobs_dir, options.swift.clone(), options.global_args.clone())
        .map_err(|e| WebUiError::Startup(format!("{e}")))?;
    let vendor = vendor::Vendor::find(&options.vendor_dir);
    if let Some(why) = vendor.missing() {
        tracing::warn!("{why}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| WebUiError::Startup(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", options.server_name, options.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| WebUiError::Startup(format!("cannot listen on {addr}: {e}")))?;
        let local: SocketAddr = listener
            .local_addr()
            .map_err(|e| WebUiError::Startup(e.to_string()))?;
        let state = Arc::new(AppState {
            lang,
            roots,
            guard: safety::Guard::new(&options.server_name, local.port(), options.api_key),
            chat: chat::Chat::new(jobs.dir().to_path_buf(), options.swift, options.global_args),
            jobs,
            catalogue: options.catalogue,
            check_args: options.check_args,
            vendor,
        });
        {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "listening on http://{local}");
            let _ = out.flush();
        }
        tracing::info!(
            "web UI on http://{local}/ (runs in {})",
            state.jobs.dir().display()
        );
        let app = page::router(state.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| WebUiError::Startup(format!("the server failed: {e}")));
        state.chat.stop().await;
        served
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
