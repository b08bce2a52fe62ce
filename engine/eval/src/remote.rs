//! A model behind an OpenAI-compatible server (`swift eval --eval_url URL [--api_key K]`):
//! answers through `/v1/chat/completions`, and log-likelihoods through `/v1/completions` with
//! `echo: true, logprobs: 1, max_tokens: 0` (OpenAI's legacy completions and vLLM: the prompt's
//! `token_logprobs`, the first null, with each token's `text_offset`).
//!
//! A continuation's log-likelihood is the sum over the tokens of `context + continuation` that
//! hold continuation text (end past the context's length), the context's trailing whitespace
//! moved to the continuation as lm-evaluation-harness's `_encode_pair` moves it. Where the
//! server's tokenizer splits at the boundary (` A` after `Answer:` in every BPE vocabulary seen
//! here) these are exactly `_encode_pair`'s continuation tokens; a token that straddles the
//! boundary is counted with the continuation.
//!
//! The client speaks HTTP/1.1 over a TCP socket, or over TLS for an `https://` URL (rustls, the
//! server's certificate checked against the system's roots as `rustls-native-certs` reads
//! them: `SSL_CERT_FILE` / `SSL_CERT_DIR` name other roots, as they do for OpenAI's Python
//! client and curl), one request per connection, several requests in flight at once so that
//! the server's batcher fills.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use swift_plugin_api::row::{FunctionCall, ToolCall};

/// Requests in flight at once.
pub const PARALLEL: usize = 8;

/// Why a server cannot be used, or what it answered instead.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--eval_url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{url}{path}: {reason}")]
    Io {
        url: String,
        path: String,
        reason: String,
    },
    /// The server answered with an error status (its own message).
    #[error("{url}{path} answered HTTP {status}: {message}")]
    Status {
        url: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{url}{path}: the answer is not what an OpenAI-compatible server returns: {reason}")]
    Shape {
        url: String,
        path: String,
        reason: String,
    },
}

/// An OpenAI-compatible server and the model it serves.
#[derive(Debug, Clone)]
pub struct Remote {
    /// As given (for messages).
    pub url: String,
    host: String,
    port: u16,
    /// The API's base path (`/v1`).
    base: String,
    api_key: Option<String>,
    /// The TLS settings of an `https://` URL.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The model requests name (the first of `/v1/models`).
    pub model: String,
}

/// The TLS client settings: the system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR`
/// override them), ring's cryptography.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "no root certificate to check the server's against (the system's store, or SSL_CERT_FILE / SSL_CERT_DIR, gave none{}{})",
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        ));
    }
    // ring (no cmake to build, unlike aws-lc-rs) has no post-quantum key exchange, hence the
    // deprecation of its provider in rustls 0.23.48; the classical suites are what servers offer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sampling settings sent with every answer request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0: not sent (an extension of vLLM and `swift deploy`).
    pub top_k: usize,
    /// 1: not sent (an extension).
    pub repetition_penalty: f64,
    pub seed: u64,
    pub stop: Vec<String>,
}

impl Remote {
    /// Parses `url` (`http://HOST:PORT/v1` or `https://…`; a URL with no path means `/v1`) and
    /// asks the server which model it serves.
    pub fn connect(url: &str, api_key: Option<&str>) -> Result<Self, RemoteError> {
        let bad = |reason: &str| RemoteError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (None, Some(r)) => (r, true),
            (None, None) => {
                return Err(bad(
                    "expected http://HOST:PORT/v1 or https://HOST[:PORT]/v1",
                ))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let base = if path.is_empty() { "/v1" } else { path };
        for tail in ["/chat/completions", "/completions", "/models"] {
            if base.ends_with(tail) {
                return Err(bad(&format!(
                    "give the API's base (…/v1), not an endpoint ({tail})"
                )));
            }
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("`{p}` is not a port number")))?,
            ),
            None => (authority.to_string(), if secure { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let tls = match secure {
            true => {
                rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| bad(&format!("`{host}` is not a server name for TLS: {e}")))?;
                Some(tls_config().map_err(|e| bad(&e))?)
            }
            false => None,
        };
        let mut remote = Self {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            base: base.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_string),
            tls,
            model: String::new(),
        };
        let models = remote.request("GET", "/models", None)?;
        remote.model = models["data"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| remote.shape("/models", "no `data[0].id` (the served model's name)"))?;
        Ok(remote)
    }

    fn shape(&self, path: &str, reason: &str) -> RemoteError {
        RemoteError::Shape {
            url: self.url.clone(),
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// One request (`path` under the base), its JSON answer; an error status is an error with
    /// the server's message.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RemoteError> {
        let io = |reason: String| RemoteError::Io {
            url: self.url.clone(),
            path: path.to_string(),
            reason,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| io(format!("cannot resolve {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| io(format!("{} has no address", self.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| io(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(3600)));
        let mut stream: Box<dyn ReadWrite> = match &self.tls {
            Some(config) => {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
                        io(format!("`{}` is not a server name for TLS: {e}", self.host))
                    })?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| io(format!("starting TLS: {e}")))?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            None => Box::new(tcp),
        };
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.base, self.host, self.port
        );
        if let Some(k) = &self.api_key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        if body.is_some() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(payload.as_bytes()))
            .map_err(|e| io(format!("sending the request: {e}{}", tls_hint(&e))))?;
        let mut raw = Vec::new();
        if let Err(e) = stream.read_to_end(&mut raw) {
            // A TLS server that closes without close_notify after a complete answer (common
            // behind proxies) is accepted; the answer's framing is checked below.
            if e.kind() != std::io::ErrorKind::UnexpectedEof || raw.is_empty() {
                return Err(io(format!("reading the answer: {e}{}", tls_hint(&e))));
            }
        }
        let (status, body) = parse_response(&raw).map_err(|e| self.shape(path, &e))?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            self.shape(
                path,
                &format!(
                    "not JSON ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            )
        })?;
        if status != 200 {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            return Err(RemoteError::Status {
                url: self.url.clone(),
                path: path.to_string(),
                status,
                message,
            });
        }
        Ok(value)
    }

    /// The assistant's answer to `messages` (OpenAI chat messages) with `tools` offered: its
    /// text and its tool calls.
    pub fn chat(
        &self,
        messages: &Value,
        tools: Option<&[Value]>,
        g: &GenerationSettings,
    ) -> Result<(String, Vec<ToolCall>), RemoteError> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": g.max_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "seed": g.seed,
        });
        if g.top_k > 0 {
            body["top_k"] = json!(g.top_k);
        }
        if g.repetition_penalty != 1.0 {
            body["repetition_penalty"] = json!(g.repetition_penalty);
        }
        if !g.stop.is_empty() {
            body["stop"] = json!(g.stop);
        }
        if let Some(t) = tools {
            body["tools"] = json!(t);
        }
        let path = "/chat/completions";
        let v = self.request("POST", path, Some(&body))?;
        let message = &v["choices"][0]["message"];
        let text = match &message["content"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            _ => return Err(self.shape(path, "`choices[0].message.content` is not text")),
        };
        let mut calls = Vec::new();
        if let Some(list) = message["tool_calls"].as_array() {
            for c in list {
                let name = c["function"]["name"]
                    .as_str()
                    .ok_or_else(|| self.shape(path, "a tool call without `function.name`"))?;
                calls.push(ToolCall {
                    id: c["id"].as_str().map(str::to_string),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.to_string(),
                        arguments: c["function"]["arguments"].clone(),
                    },
                });
            }
        }
        Ok((text, calls))
    }

    /// The log-probability of each token of `text` given those before (the first is None) and
    /// each token's byte offset in `text`.
    pub fn prompt_logprobs(
        &self,
        text: &str,
    ) -> Result<(Vec<Option<f64>>, Vec<usize>), RemoteError> {
        let path = "/completions";
        let body = json!({
            "model": self.model,
            "prompt": text,
            "echo": true,
            "logprobs": 1,
            "max_tokens": 0,
            "temperature": 0,
        });
        let v = self.request("POST", path, Some(&body))?;
        let lp = &v["choices"][0]["logprobs"];
        let lps = lp["token_logprobs"]
            .as_array()
            .ok_or_else(|| self.shape(path, "no `choices[0].logprobs.token_logprobs` (does the server support `echo` with `logprobs`?)"))?;
        let offsets = lp["text_offset"]
            .as_array()
            .ok_or_else(|| self.shape(path, "no `choices[0].logprobs.text_offset`"))?;
        if lps.len() != offsets.len() {
            return Err(self.shape(path, "`token_logprobs` and `text_offset` differ in length"));
        }
        let lps = lps.iter().map(Value::as_f64).collect();
        let offsets = offsets
            .iter()
            .map(|o| o.as_u64().map(|o| o as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.shape(path, "a `text_offset` is not a number"))?;
        Ok((lps, offsets))
    }

    /// lm-evaluation-harness's log-likelihood of `continuation` after `context` (see the
    /// module's documentation).
    pub fn loglikelihood(&self, context: &str, continuation: &str) -> Result<f64, RemoteError> {
        let trimmed = context.trim_end();
        let whole = format!("{trimmed}{}{continuation}", &context[trimmed.len()..]);
        let (lps, offsets) = self.prompt_logprobs(&whole)?;
        continuation_sum(&lps, &offsets, trimmed.len(), whole.len())
            .map_err(|e| self.shape("/completions", &e))
    }
}

/// What to do about a TLS error: a certificate the roots do not vouch for is usually signed by
/// the user's own CA.
fn tls_hint(e: &std::io::Error) -> &'static str {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => {
            " (the server's certificate is not trusted by the system's root certificates: if your own CA signed it, name its PEM file with SSL_CERT_FILE=FILE)"
        }
        _ => "",
    }
}

/// A plain or TLS connection.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The sum of the log-probabilities of the tokens that end past `boundary` (of a text
/// `len` bytes long).
pub fn continuation_sum(
    lps: &[Option<f64>],
    offsets: &[usize],
    boundary: usize,
    len: usize,
) -> Result<f64, String> {
    let mut sum = 0.0;
    let mut counted = 0;
    for (i, lp) in lps.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(len);
        if end > boundary {
            match lp {
                Some(x) => sum += x,
                None => {
                    return Err(format!(
                        "token {i} holds continuation text but has no log-probability (the context is empty?)"
                    ))
                }
            }
            counted += 1;
        }
    }
    if counted == 0 {
        return Err("no token holds the continuation".into());
    }
    Ok(sum)
}

/// Runs `f` over `0..n` with up to [`PARALLEL`] calls in flight; results in order. Stops at
/// the first error (calls in flight finish).
pub fn parallel<T: Send, E: Send>(
    n: usize,
    f: &(dyn Fn(usize) -> Result<T, E> + Sync),
    done: &(dyn Fn() + Sync),
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let err: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(n) {
            s.spawn(|| loop {
                if err.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                match f(i) {
                    Ok(v) => {
                        if let Ok(mut o) = out.lock() {
                            o[i] = Some(v);
                        }
                        done();
                    }
                    Err(e) => {
                        if let Ok(mut slot) = err.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = err.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(out
        .into_inner()
        .map(|v| v.into_iter().flatten().collect())
        .unwrap_or_default())
}

/// An HTTP/1.1 response's status and body (a `Transfer-Encoding: chunked` body decoded).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size {
            return Err("a chunk shorter than its size".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let raw = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let (s, b) = parse_response(raw).unwrap();
        assert_eq!((s, b.as_slice()), (400, &b"{\"a\":1}"[..]));
    }

    #[test]
    fn the_continuation_is_the_tokens_past_the_context() {
        // "Answer: A" as ["Answer", ":", " A"]: the context "Answer:" is 7 bytes.
        let lps = [None, Some(-1.0), Some(-2.5)];
        assert_eq!(continuation_sum(&lps, &[0, 6, 7], 7, 9), Ok(-2.5));
        // A token straddling the boundary (": A") is counted.
        assert_eq!(continuation_sum(&lps[..2], &[0, 6], 7, 9), Ok(-1.0));
        assert!(continuation_sum(&[None], &[0], 0, 2).is_err());
    }

    #[test]
    fn urls_are_checked() {
        for (url, part) in [
            ("ftp://x", "http://HOST:PORT"),
            ("https://x:99999/v1", "port"),
            ("http://x:99999/v1", "port"),
            ("http://127.0.0.1:1/v1/chat/completions", "base"),
        ] {
            let e = Remote::connect(url, None).unwrap_err().to_string();
            assert!(e.contains(part) && e.contains("--eval_url"), "{url}: {e}");
        }
    }
}
