//! The HTTP side: axum routes, request checking (a chat request's messages and tools in
//! [`crate::validate`]), the chat template, and turning the batcher's
//! events into OpenAI responses (whole, or server-sent events ending in `data: [DONE]`).
//!
//! Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (the prompt is
//! rendered as one user turn through the chat template, as ms-swift does; with `echo`, scored as
//! plain text by [`crate::echo`]), `GET /health`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use swift_model::{FinishReason, SamplingParams};
use swift_plugin_tensors::{Message, StandardRow};
use swift_template::Encoder;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{ApiError, ChatRequest, CompletionRequest, Prompt, Sampling, Usage};
use crate::batcher::{Event, EventKind, Job, SubmitError, Submitter, TokenLogprob};
use crate::{tool_calls, validate};

/// What every handler shares.
pub struct AppState {
    /// The base model's name (requests naming it use no adapter).
    pub base_name: String,
    /// Adapter names, in the batcher's index order.
    pub adapters: Vec<String>,
    /// What the backend supports: requests needing more are refused by parameter.
    pub capabilities: swift_plugin_tensors::backend::Capabilities,
    /// The backend's name (refusals name it).
    pub backend: String,
    pub encoder: Arc<Encoder>,
    /// A vision-language model's image side, or why requests with images are refused.
    pub images: Result<Arc<crate::images::PromptImages>, String>,
    /// The template's stop words (requests add their own).
    pub stop_words: Vec<String>,
    /// Prompt plus answer tokens a request may use.
    pub max_model_len: usize,
    pub api_key: Option<String>,
    pub submitter: Submitter,
    pub max_queue: usize,
    /// Unix time the server started (`created` of the model list).
    pub created: u64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .with_state(state)
}

async fn health() -> &'static str {
    "OK"
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&st, &headers) {
        return e.into_response();
    }
    let entry = |id: &str, parent: Option<&str>| json!({"id": id, "object": "model", "created": st.created, "owned_by": "swift", "root": st.base_name, "parent": parent});
    let mut data = vec![entry(&st.base_name, None)];
    data.extend(
        st.adapters
            .iter()
            .map(|a| entry(a, Some(st.base_name.as_str()))),
    );
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    match chat_inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    match completions_inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &st.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Parses a body as JSON, then as the request type (two messages: bad JSON, bad fields).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
            None,
        ));
    }
    T::deserialize(&value).map_err(|e| {
        // serde does not say which field failed: every field of a request is optional, so the
        // one that fails alone is it (one pass over the body, however many keys it has).
        let param = value.as_object().and_then(|obj| {
            obj.iter()
                .find(|&(k, v)| {
                    let alone = serde_json::Map::from_iter([(k.clone(), v.clone())]);
                    T::deserialize(&Value::Object(alone)).is_err()
                })
                .map(|(k, _)| k)
        });
        match param {
            Some(k) => ApiError::bad_request(format!("Invalid `{k}`: {e}"), Some(k)),
            None => ApiError::bad_request(format!("Invalid request: {e}"), None),
        }
    })
}

/// The adapter a request's `model` names (None: the base model; absent: the base model).
pub(crate) fn resolve_model(
    st: &AppState,
    model: Option<&str>,
) -> Result<(String, Option<usize>), ApiError> {
    match model {
        None => Ok((st.base_name.clone(), None)),
        Some(m) if m == st.base_name => Ok((m.to_string(), None)),
        Some(m) => match st.adapters.iter().position(|a| a == m) {
            Some(i) => Ok((m.to_string(), Some(i))),
            None => {
                let mut known = vec![st.base_name.clone()];
                known.extend(st.adapters.iter().cloned());
                Err(ApiError::unknown_model(m, &known))
            }
        },
    }
}

/// A request ready for the batcher.
struct Prepared {
    id: String,
    model: String,
    created: u64,
    choices: usize,
    stream: bool,
    include_usage: bool,
    /// Chat (`chat.completion`) or legacy completions (`text_completion`).
    chat: bool,
    /// The request offered tools: answers' tool calls are parsed (whole answers only).
    tools: bool,
    events: UnboundedReceiver<Event>,
}

/// Renders the prompt, checks the request against the context, and queues it.
async fn submit(
    st: &Arc<AppState>,
    model: Option<&str>,
    row: StandardRow,
    sampling: Sampling,
    max_tokens: Option<i64>,
    logprobs: Option<usize>,
    chat: bool,
) -> Result<Prepared, ApiError> {
    let (model, adapter) = resolve_model(st, model)?;
    let tools = row.tools.is_some();
    let s = &sampling;
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            format!("temperature must be between 0 and 2, got {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(
            format!("top_p must be in (0, 1], got {top_p}"),
            Some("top_p"),
        ));
    }
    let n = s.n.unwrap_or(1);
    if !(1..=128).contains(&n) {
        return Err(ApiError::bad_request(
            format!("n must be between 1 and 128, got {n}"),
            Some("n"),
        ));
    }
    if let Some(m) = max_tokens {
        if m < 1 {
            return Err(ApiError::bad_request(
                format!("max_tokens must be at least 1, got {m}"),
                Some("max_tokens"),
            ));
        }
    }
    let top_k = s.top_k.unwrap_or(0).max(0) as usize;
    let repetition_penalty = s.repetition_penalty.unwrap_or(1.0);
    if repetition_penalty <= 0.0 {
        return Err(ApiError::bad_request(
            format!("repetition_penalty must be positive, got {repetition_penalty}"),
            Some("repetition_penalty"),
        ));
    }

    let wanted = swift_plugin_tensors::backend::Sampling {
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        seed: s.seed.map_or(42, |x| x as u64),
    };
    st.capabilities
        .refuse(&wanted, logprobs.is_some())
        .map_err(|(param, msg)| ApiError::bad_request(msg, Some(param.as_str())))?;
    let encoder = st.encoder.clone();
    let (prompt, images) = if row.images.is_empty() {
        let encoded = tokio::task::spawn_blocking(move || encoder.encode(&row))
            .await
            .map_err(|e| ApiError::internal(format!("rendering the prompt: {e}")))?
            .map_err(|e| {
                ApiError::bad_request(
                    format!("The messages cannot be rendered with the chat template: {e}"),
                    Some("messages"),
                )
            })?
            .ok_or_else(|| ApiError::bad_request("The prompt could not be encoded", None))?;
        let ids: Vec<i64> = encoded.input_ids.iter().map(|&i| i64::from(i)).collect();
        (ids, Vec::new())
    } else {
        let side = st.images.clone().map_err(|why| {
            ApiError::bad_request(
                format!("The messages hold images, but {why}"),
                Some("messages"),
            )
        })?;
        let p = tokio::task::spawn_blocking(move || side.encode(&encoder, &row, None))
            .await
            .map_err(|e| ApiError::internal(format!("rendering the prompt: {e}")))?
            .map_err(|e| {
                ApiError::bad_request(format!("The images cannot be read: {e}"), Some("messages"))
            })?;
        (p.ids, p.images)
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("The prompt has no tokens", None));
    }
    let room = st.max_model_len.saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens. Please shorten the messages.",
                st.max_model_len,
                prompt.len()
            ),
            Some("messages"),
        )
        .with_code("context_length_exceeded"));
    }
    let max_new_tokens = max_tokens.map_or(room, |m| (m as usize).min(room));
    let seed = match s.seed {
        Some(seed) => seed as u64,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    let mut stop_words = st.stop_words.clone();
    if let Some(stop) = sampling.stop.clone() {
        stop_words.extend(stop.into_vec().into_iter().filter(|w| !w.is_empty()));
    }
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt,
        adapter,
        choices: n as usize,
        params: SamplingParams {
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
        },
        stop_words,
        ignore_eos: sampling.ignore_eos,
        logprobs,
        images: Arc::new(images),
        events: tx,
    };
    st.submitter.try_submit(job).map_err(|e| match e {
        SubmitError::QueueFull => ApiError::overloaded(st.max_queue),
        SubmitError::ShuttingDown => ApiError::unavailable("The server is shutting down"),
    })?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = if chat { "chatcmpl" } else { "cmpl" };
    Ok(Prepared {
        id: format!("{prefix}-{}", request_id()),
        model,
        created,
        choices: n as usize,
        stream: sampling.stream,
        include_usage: sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        chat,
        tools,
        events: rx,
    })
}

async fn chat_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let req: ChatRequest = parse(&body)?;
    let (messages, images) = validate::messages_and_images(req.messages.as_ref())?;
    let row = StandardRow {
        messages,
        tools: validate::tools(req.tools.as_ref())?,
        images,
        ..Default::default()
    };
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if !(0..=20).contains(&k) => {
            return Err(ApiError::bad_request(
                format!("top_logprobs must be between 0 and 20, got {k}"),
                Some("top_logprobs"),
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "top_logprobs needs `logprobs: true`",
                Some("top_logprobs"),
            ))
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let max_tokens = req.max_completion_tokens.or(req.sampling.max_tokens);
    let p = submit(
        &st,
        req.model.as_deref(),
        row,
        req.sampling,
        max_tokens,
        logprobs,
        true,
    )
    .await?;
    respond(p).await
}

async fn completions_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let req: CompletionRequest = parse(&body)?;
    if req.echo {
        return crate::echo::respond(&st, req).await;
    }
    let prompt = single_prompt(req.prompt)?;
    let row = StandardRow {
        messages: vec![Message::new("user", prompt)],
        ..Default::default()
    };
    let logprobs = match req.logprobs {
        Some(k) if !(0..=20).contains(&k) => {
            return Err(ApiError::bad_request(
                format!("logprobs must be between 0 and 20, got {k}"),
                Some("logprobs"),
            ))
        }
        k => k.map(|k| k as usize),
    };
    let max_tokens = req.sampling.max_tokens.or(Some(16));
    let p = submit(
        &st,
        req.model.as_deref(),
        row,
        req.sampling,
        max_tokens,
        logprobs,
        false,
    )
    .await?;
    respond(p).await
}

/// The one prompt of a completions request.
pub(crate) fn single_prompt(prompt: Option<Prompt>) -> Result<String, ApiError> {
    match prompt {
        Some(Prompt::One(p)) => Ok(p),
        Some(Prompt::Many(mut v)) if v.len() == 1 => Ok(v.remove(0)),
        Some(Prompt::Many(_)) => Err(ApiError::bad_request(
            "Send one prompt per request (a list of several prompts is not supported)",
            Some("prompt"),
        )),
        None => Err(ApiError::bad_request(
            "`prompt` is required",
            Some("prompt"),
        )),
    }
}

pub(crate) fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{t:x}{n:04x}")
}

/// One choice as the events build it.
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
}

async fn respond(p: Prepared) -> Result<Response, ApiError> {
    if p.stream {
        return Ok(stream_response(p).into_response());
    }
    let mut p = p;
    let mut choices: Vec<Choice> = (0..p.choices).map(|_| Choice::default()).collect();
    let mut prompt_tokens = 0;
    let mut done = 0;
    while done < p.choices {
        let Some(ev) = p.events.recv().await else {
            return Err(ApiError::internal(
                "The generation stopped before the answer was complete",
            ));
        };
        let c = choices
            .get_mut(ev.choice)
            .ok_or_else(|| ApiError::internal("an event for an unknown choice"))?;
        match ev.kind {
            EventKind::Delta { logprob, .. } => c.logprobs.extend(logprob),
            EventKind::Done {
                text,
                finish,
                prompt_tokens: pt,
                completion_tokens,
                ..
            } => {
                c.text = text;
                c.finish = Some(finish);
                c.completion_tokens = completion_tokens;
                prompt_tokens = pt;
                done += 1;
            }
            EventKind::Failed(e) => {
                return Err(ApiError::internal(format!("generation failed: {e}")))
            }
        }
    }
    let completion_tokens: usize = choices.iter().map(|c| c.completion_tokens).sum();
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    let finish = |c: &Choice| c.finish.map(FinishReason::as_openai).unwrap_or("stop");
    let body =
        if p.chat {
            let list: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let parsed = if p.tools { tool_calls::parse(&c.text) } else { None };
                if let Some((text, calls)) = parsed {
                    let calls: Vec<Value> = calls
                        .into_iter()
                        .enumerate()
                        .map(|(k, call)| {
                            json!({"id": format!("call_{}_{i}_{k}", p.id), "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments}})
                        })
                        .collect();
                    let content = (!text.is_empty()).then_some(text);
                    return json!({
                        "index": i,
                        "message": {"role": "assistant", "content": content, "tool_calls": calls},
                        "logprobs": chat_logprobs(&c.logprobs),
                        "finish_reason": "tool_calls",
                    });
                }
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": chat_logprobs(&c.logprobs),
                    "finish_reason": finish(c),
                })
            })
            .collect();
            json!({"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
               "choices": list, "usage": usage})
        } else {
            let list: Vec<Value> = choices
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "index": i,
                        "text": c.text,
                        "logprobs": completion_logprobs(&c.logprobs, 0),
                        "finish_reason": finish(c),
                    })
                })
                .collect();
            json!({"id": p.id, "object": "text_completion", "created": p.created, "model": p.model,
               "choices": list, "usage": usage})
        };
    Ok(Json(body).into_response())
}

/// Chat `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`, or null when none
/// were asked for.
fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    if lps.is_empty() {
        return Value::Null;
    }
    let entry =
        |token: &str, lp: f64| json!({"token": token, "logprob": lp, "bytes": token.as_bytes()});
    let content: Vec<Value> = lps
        .iter()
        .map(|t| {
            let mut e = entry(&t.token, t.logprob);
            e["top_logprobs"] = Value::Array(t.top.iter().map(|(s, lp)| entry(s, *lp)).collect());
            e
        })
        .collect();
    json!({ "content": content })
}

/// Legacy completions `logprobs`: parallel lists, `text_offset` counted from `offset`.
pub(crate) fn completion_logprobs(lps: &[TokenLogprob], offset: usize) -> Value {
    if lps.is_empty() {
        return Value::Null;
    }
    let mut at = offset;
    let mut text_offset = Vec::new();
    for t in lps {
        text_offset.push(at);
        at += t.token.len();
    }
    json!({
        "tokens": lps.iter().map(|t| t.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|t| {
            let mut m = serde_json::Map::new();
            for (s, lp) in &t.top { m.insert(s.clone(), json!(lp)); }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// Server-sent events: one chunk per delta (the role first, for chat), a last chunk per choice
/// with its finish reason, the usage when `stream_options.include_usage`, then `[DONE]`.
fn stream_response(p: Prepared) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        p: Prepared,
        queue: VecDeque<String>,
        done: usize,
        prompt_tokens: usize,
        completion_tokens: usize,
        /// Bytes of text sent per choice (legacy logprobs' text_offset).
        sent: Vec<usize>,
        /// Per choice, when the request offered tools: text held back as a possible call.
        calls: Vec<tool_calls::Holdback>,
        finished: bool,
    }
    let mut queue = VecDeque::new();
    if p.chat {
        for i in 0..p.choices {
            queue.push_back(
                chunk(
                    &p,
                    i,
                    json!({"role": "assistant", "content": ""}),
                    None,
                    None,
                )
                .to_string(),
            );
        }
    }
    let state = St {
        sent: vec![0; p.choices],
        calls: (0..p.choices).map(|_| Default::default()).collect(),
        p,
        queue,
        done: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        finished: false,
    };
    let s = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.queue.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.finished {
                return None;
            }
            if s.done >= s.p.choices {
                if s.p.include_usage {
                    let usage = Usage {
                        prompt_tokens: s.prompt_tokens,
                        completion_tokens: s.completion_tokens,
                        total_tokens: s.prompt_tokens + s.completion_tokens,
                    };
                    let object = if s.p.chat {
                        "chat.completion.chunk"
                    } else {
                        "text_completion"
                    };
                    s.queue.push_back(
                        json!({"id": s.p.id, "object": object, "created": s.p.created,
                               "model": s.p.model, "choices": [], "usage": usage})
                        .to_string(),
                    );
                }
                s.queue.push_back("[DONE]".into());
                s.finished = true;
                continue;
            }
            let Some(ev) = s.p.events.recv().await else {
                let err =
                    ApiError::internal("The generation stopped before the answer was complete");
                s.queue.push_back(err.body().to_string());
                s.finished = true;
                continue;
            };
            let i = ev.choice;
            match ev.kind {
                EventKind::Delta { text, logprob } => {
                    let text = match s.calls.get_mut(i) {
                        Some(h) if s.p.chat && s.p.tools => h.push(&text),
                        _ => text,
                    };
                    let lps: Vec<TokenLogprob> = logprob.into_iter().collect();
                    if let Some(c) = delta_chunk(
                        &s.p,
                        i,
                        &text,
                        &lps,
                        s.sent.get(i).copied().unwrap_or(0),
                        None,
                    ) {
                        s.queue.push_back(c.to_string());
                    }
                    if let Some(n) = s.sent.get_mut(i) {
                        *n += text.len();
                    }
                }
                EventKind::Done {
                    rest,
                    text,
                    finish,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    let mut ending = None;
                    let rest = match s.calls.get_mut(i) {
                        Some(h) if s.p.chat && s.p.tools => {
                            let mut now = h.push(&rest);
                            match h.finish(&text) {
                                tool_calls::Ending::Text(t) => now.push_str(&t),
                                tool_calls::Ending::Calls(calls) => ending = Some(calls),
                            }
                            now
                        }
                        _ => rest,
                    };
                    if !rest.is_empty() {
                        if let Some(c) = delta_chunk(
                            &s.p,
                            i,
                            &rest,
                            &[],
                            s.sent.get(i).copied().unwrap_or(0),
                            None,
                        ) {
                            s.queue.push_back(c.to_string());
                        }
                    }
                    let last = if let Some(calls) = ending {
                        // The calls as OpenAI streams them: one delta naming each call whole,
                        // then the finish reason `tool_calls`.
                        let calls: Vec<Value> = calls
                            .into_iter()
                            .enumerate()
                            .map(|(k, call)| {
                                json!({"index": k, "id": format!("call_{}_{i}_{k}", s.p.id),
                                       "type": "function",
                                       "function": {"name": call.name, "arguments": call.arguments}})
                            })
                            .collect();
                        s.queue.push_back(
                            chunk(&s.p, i, json!({"tool_calls": calls}), None, None).to_string(),
                        );
                        let mut last = chunk(&s.p, i, json!({}), None, None);
                        last["choices"][0]["finish_reason"] = json!("tool_calls");
                        last
                    } else if s.p.chat {
                        chunk(&s.p, i, json!({}), Some(finish), None)
                    } else {
                        completion_chunk(&s.p, i, "", Value::Null, Some(finish))
                    };
                    s.queue.push_back(last.to_string());
                    s.prompt_tokens = prompt_tokens;
                    s.completion_tokens += completion_tokens;
                    s.done += 1;
                }
                EventKind::Failed(e) => {
                    let err = ApiError::internal(format!("generation failed: {e}"));
                    s.queue.push_back(err.body().to_string());
                    s.finished = true;
                }
            }
        }
    });
    Sse::new(s)
}

/// A chunk with new text (and its tokens' log-probabilities); None when there is nothing to say.
fn delta_chunk(
    p: &Prepared,
    i: usize,
    text: &str,
    lps: &[TokenLogprob],
    offset: usize,
    finish: Option<FinishReason>,
) -> Option<Value> {
    if text.is_empty() && lps.is_empty() {
        return None;
    }
    Some(if p.chat {
        chunk(
            p,
            i,
            json!({"content": text}),
            finish,
            Some(chat_logprobs(lps)),
        )
    } else {
        completion_chunk(p, i, text, completion_logprobs(lps, offset), finish)
    })
}

fn chunk(
    p: &Prepared,
    i: usize,
    delta: Value,
    finish: Option<FinishReason>,
    logprobs: Option<Value>,
) -> Value {
    json!({
        "id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
        "choices": [{"index": i, "delta": delta, "logprobs": logprobs.unwrap_or(Value::Null),
                     "finish_reason": finish.map(FinishReason::as_openai)}],
    })
}

fn completion_chunk(
    p: &Prepared,
    i: usize,
    text: &str,
    logprobs: Value,
    finish: Option<FinishReason>,
) -> Value {
    json!({
        "id": p.id, "object": "text_completion", "created": p.created, "model": p.model,
        "choices": [{"index": i, "text": text, "logprobs": logprobs,
                     "finish_reason": finish.map(FinishReason::as_openai)}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(
        tools: bool,
        stream: bool,
    ) -> (Prepared, tokio::sync::mpsc::UnboundedSender<Event>) {
        let (tx, rx) = unbounded_channel();
        let p = Prepared {
            id: "chatcmpl-t".into(),
            model: "m".into(),
            created: 1,
            choices: 1,
            stream,
            include_usage: true,
            chat: true,
            tools,
            events: rx,
        };
        (p, tx)
    }

    fn done(text: &str) -> Event {
        Event {
            choice: 0,
            kind: EventKind::Done {
                rest: text.into(),
                text: text.into(),
                tokens: vec![1, 2, 3],
                finish: FinishReason::StopWord,
                prompt_tokens: 7,
                completion_tokens: 4,
            },
        }
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let e =
            parse::<ChatRequest>(br#"{"messages": [], "x": 1, "temperature": "hot"}"#).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some("temperature"))
        );
        let e = parse::<CompletionRequest>(br#"{"prompt": [1, 2]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(parse::<ChatRequest>(br#"{"messages": [], "stream": true}"#).is_ok());
    }

    #[tokio::test]
    async fn tool_calls_in_answers_become_tool_calls_when_tools_were_offered() {
        let answer = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (p, tx) = prepared(true, false);
        tx.send(done(answer)).unwrap();
        let v: Value = serde_json::from_str(&body(respond(p).await.unwrap()).await).unwrap();
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], Value::Null);
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(v["usage"]["total_tokens"], 11);

        // Without tools in the request the same answer is plain content.
        let (p, tx) = prepared(false, false);
        tx.send(done(answer)).unwrap();
        let v: Value = serde_json::from_str(&body(respond(p).await.unwrap()).await).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], answer);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[tokio::test]
    async fn streams_end_with_usage_then_done() {
        let (p, tx) = prepared(false, true);
        tx.send(Event {
            choice: 0,
            kind: EventKind::Delta {
                text: "Hel".into(),
                logprob: None,
            },
        })
        .unwrap();
        tx.send(Event {
            choice: 0,
            kind: EventKind::Done {
                rest: "lo".into(),
                text: "Hello".into(),
                tokens: vec![1, 2],
                finish: FinishReason::Length,
                prompt_tokens: 3,
                completion_tokens: 2,
            },
        })
        .unwrap();
        let text = body(respond(p).await.unwrap()).await;
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello");
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 2);
    }
}
