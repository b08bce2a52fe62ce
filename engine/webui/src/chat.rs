//! The chat tab: one `swift deploy` child on a free loopback port for the model or checkpoint
//! chosen (started on demand, reused while the choice is the same, replaced when it changes,
//! stopped with the server), and each question passed to its OpenAI-compatible
//! `/v1/chat/completions` with `stream: true`, the answer's server-sent events passed through
//! to the page as they come. The deploy server's own checks (sampling ranges, lengths) answer
//! the page unchanged. Its log is `OUTPUT/webui/chat.log`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

/// The base model's name in the deploy server; a checkpoint is served as adapter `ckpt`.
const BASE: &str = "base";
const ADAPTER: &str = "ckpt";

/// How long a model may take to load before the chat gives up.
const START_TIMEOUT: Duration = Duration::from_secs(300);

struct Deploy {
    key: (Option<PathBuf>, Option<PathBuf>),
    child: Child,
    addr: String,
    model: &'static str,
}

pub struct Chat {
    dir: PathBuf,
    swift: PathBuf,
    global_args: Vec<String>,
    current: tokio::sync::Mutex<Option<Deploy>>,
}

impl Chat {
    pub fn new(dir: PathBuf, swift: PathBuf, global_args: Vec<String>) -> Self {
        Self {
            dir,
            swift,
            global_args,
            current: tokio::sync::Mutex::new(None),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("chat.log")
    }

    /// Serves `model` and/or `checkpoint` (both resolved inside the roots already); reuses the
    /// running server when it serves the same.
    pub async fn start(
        &self,
        model: Option<PathBuf>,
        checkpoint: Option<PathBuf>,
    ) -> Result<Value, String> {
        if model.is_none() && checkpoint.is_none() {
            return Err("choose a model folder or a checkpoint to chat with".into());
        }
        let key = (model.clone(), checkpoint.clone());
        let mut current = self.current.lock().await;
        if let Some(d) = current.as_mut() {
            if d.key == key && running(&mut d.child) {
                return Ok(json!({"model": d.model, "reused": true}));
            }
        }
        if let Some(mut d) = current.take() {
            stop_child(&mut d.child);
        }
        let mut args = self.global_args.clone();
        args.push("deploy".into());
        if let Some(m) = &model {
            args.extend(["--model".into(), m.display().to_string()]);
        }
        if let Some(c) = &checkpoint {
            args.extend(["--adapters".into(), format!("{ADAPTER}={}", c.display())]);
        }
        args.extend(
            [
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--served_model_name",
                BASE,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let log = std::fs::File::create(self.log())
            .map_err(|e| format!("{}: {e}", self.log().display()))?;
        let mut cmd = Command::new(&self.swift);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // The model server never outlives the web UI, even one killed outright.
        // SAFETY: prctl(2) only, between fork and exec; no allocation, no locks.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.swift.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(l)) => l,
            _ => String::new(),
        };
        let Some(addr) = line
            .trim()
            .strip_prefix("listening on http://")
            .map(String::from)
        else {
            stop_child(&mut child);
            let text = std::fs::read_to_string(self.log()).unwrap_or_default();
            let why = text
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("the model server did not start (see chat.log)");
            return Err(why.to_string());
        };
        let served = if checkpoint.is_some() { ADAPTER } else { BASE };
        *current = Some(Deploy {
            key,
            child,
            addr,
            model: served,
        });
        Ok(json!({"model": served, "reused": false}))
    }

    /// Passes one chat request (`messages`, `system`, sampling options) to the running server
    /// with `stream: true`; its answer streams through.
    pub async fn ask(&self, req: Value) -> Result<Response<Body>, String> {
        let (addr, model) = {
            let mut current = self.current.lock().await;
            let up = current.as_mut().is_some_and(|d| running(&mut d.child));
            match current.as_ref() {
                Some(d) if up => (d.addr.clone(), d.model),
                _ => return Err("no model is loaded: press Load first".into()),
            }
        };
        let mut messages = Vec::new();
        if let Some(s) = req["system"].as_str().filter(|s| !s.trim().is_empty()) {
            messages.push(json!({"role": "system", "content": s}));
        }
        for m in req["messages"].as_array().into_iter().flatten() {
            messages.push(json!({"role": m["role"], "content": m["content"]}));
        }
        let mut body = json!({"model": model, "messages": messages, "stream": true});
        for k in [
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "repetition_penalty",
            "seed",
        ] {
            if !req[k].is_null() {
                body[k] = req[k].clone();
            }
        }
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("the model server at {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::post("/v1/chat/completions")
            .header(header::HOST, &addr)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the model server at {addr}: {e}"))?;
        let (parts, incoming) = response.into_parts();
        let mut out = Response::builder().status(parts.status);
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            out = out.header(header::CONTENT_TYPE, ct);
        }
        out.header(header::CACHE_CONTROL, "no-cache")
            .body(Body::new(incoming))
            .map_err(|e| e.to_string())
    }

    /// Stops the model server, if one runs.
    pub async fn stop(&self) {
        if let Some(mut d) = self.current.lock().await.take() {
            stop_child(&mut d.child);
        }
    }

    /// What is loaded: `{model, checkpoint}` or null.
    pub async fn status(&self) -> Value {
        let mut current = self.current.lock().await;
        let up = current.as_mut().is_some_and(|d| running(&mut d.child));
        match current.as_ref() {
            Some(d) if up => json!({
                "model": d.key.0.as_ref().map(|p| p.display().to_string()),
                "checkpoint": d.key.1.as_ref().map(|p| p.display().to_string()),
            }),
            _ => Value::Null,
        }
    }
}

fn running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// SIGTERM (the server answers what is in flight and exits), then SIGKILL after 5 s.
fn stop_child(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's PID, which it keeps until we wait for it.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A refusal the page shows.
pub fn refusal(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"error": message}).to_string()))
        .unwrap_or_default()
}
