//! `POST /v1/completions` with `echo: true`: the prompt scored, as OpenAI's legacy completions
//! and vLLM return it for log-likelihood evaluation (`echo: true, logprobs: N, max_tokens: 0`).
//!
//! The prompt is scored as the plain text it is (tokenized without the chat template, which an
//! answer's prompt goes through): `choices[0].text` is the prompt, `logprobs.tokens` its tokens,
//! `token_logprobs` each token's log-probability given the ones before (the first is null, it
//! has none), `top_logprobs` the `logprobs` most likely tokens at each position (null first),
//! `text_offset` each token's byte offset in the prompt. Nothing is generated: `max_tokens` must
//! be 0 (sampling fields then have nothing to act on). The backend scores the prompt in one pass
//! between two decoding steps ([`crate::batcher::ScoreJob`]); a backend whose record does not
//! declare `prompt_logprobs` is refused with a 400 naming it.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use swift_plugin_tensors::backend::PromptScore;

use crate::api::{ApiError, CompletionRequest, Usage};
use crate::app::{request_id, resolve_model, single_prompt, AppState};
use crate::batcher::{ScoreJob, SubmitError};

/// Answers an `echo` request.
pub async fn respond(st: &AppState, req: CompletionRequest) -> Result<Response, ApiError> {
    if !st.capabilities.prompt_logprobs {
        return Err(ApiError::bad_request(
            format!(
                "`echo` is not supported by the `{}` backend: it does not score prompts (`swift list backends` says which do; `pt` does)",
                st.backend
            ),
            Some("echo"),
        ));
    }
    match req.sampling.max_tokens {
        Some(0) => {}
        other => {
            return Err(ApiError::bad_request(
                format!(
                    "with `echo` this server scores the prompt and generates nothing: set `max_tokens` to 0 (got {})",
                    other.map_or("none".to_string(), |m| m.to_string())
                ),
                Some("max_tokens"),
            ))
        }
    }
    if req.sampling.stream {
        return Err(ApiError::bad_request(
            "`stream` does not apply to `echo` with `max_tokens: 0` (the answer is the scored prompt)",
            Some("stream"),
        ));
    }
    if req.sampling.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "`n` does not apply to `echo` with `max_tokens: 0`: leave it out or set 1",
            Some("n"),
        ));
    }
    let top = match req.logprobs {
        Some(k) if !(0..=20).contains(&k) => {
            return Err(ApiError::bad_request(
                format!("logprobs must be between 0 and 20, got {k}"),
                Some("logprobs"),
            ))
        }
        k => k.map(|k| k as usize),
    };
    let (model, adapter) = resolve_model(st, req.model.as_deref())?;
    let prompt = single_prompt(req.prompt)?;
    let tokenizer = &st.encoder.tokenizer;
    let ids: Vec<u32> = tokenizer.encode(&prompt).map_err(|e| {
        ApiError::bad_request(
            format!("The prompt cannot be tokenized: {e}"),
            Some("prompt"),
        )
    })?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "The prompt has no tokens",
            Some("prompt"),
        ));
    }
    if ids.len() > st.max_model_len {
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {} tokens. However, your prompt resulted in {} tokens. Please shorten the prompt.",
                st.max_model_len,
                ids.len()
            ),
            Some("prompt"),
        )
        .with_code("context_length_exceeded"));
    }
    let scored = match top {
        None => Vec::new(),
        Some(k) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job = ScoreJob {
                request: PromptScore {
                    prompt: ids.iter().map(|&i| i64::from(i)).collect(),
                    adapter,
                    top: k,
                },
                reply: tx,
            };
            st.submitter.try_score(job).map_err(|e| match e {
                SubmitError::QueueFull => ApiError::overloaded(st.max_queue),
                SubmitError::ShuttingDown => ApiError::unavailable("The server is shutting down"),
            })?;
            rx.await
                .map_err(|_| ApiError::internal("The scoring stopped before it answered"))?
                .map_err(|e| ApiError::internal(format!("scoring the prompt failed: {e}")))?
        }
    };
    let logprobs = match top {
        None => Value::Null,
        Some(_) => {
            let decode = |ids: &[u32]| tokenizer.decode(ids).unwrap_or_default();
            let (tokens, offsets) = token_texts(&ids, &decode);
            let mut token_logprobs = vec![Value::Null];
            let mut top_logprobs = vec![Value::Null];
            for s in &scored {
                token_logprobs.push(json!(s.logprob));
                let mut m = serde_json::Map::new();
                for (id, lp) in &s.top {
                    m.insert(decode(&[*id as u32]), json!(lp));
                }
                top_logprobs.push(Value::Object(m));
            }
            json!({
                "tokens": tokens,
                "token_logprobs": token_logprobs,
                "top_logprobs": top_logprobs,
                "text_offset": offsets,
            })
        }
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let usage = Usage {
        prompt_tokens: ids.len(),
        completion_tokens: 0,
        total_tokens: ids.len(),
    };
    let body = json!({
        "id": format!("cmpl-{}", request_id()),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": prompt, "logprobs": logprobs, "finish_reason": "length"}],
        "usage": usage,
    });
    Ok(Json(body).into_response())
}

/// Each token's text and byte offset: the growth of the decoded prefix where decoding is
/// prefix-stable (so the texts concatenate to the decoded prompt), the token decoded alone
/// otherwise.
pub fn token_texts(ids: &[u32], decode: &dyn Fn(&[u32]) -> String) -> (Vec<String>, Vec<usize>) {
    let mut tokens = Vec::with_capacity(ids.len());
    let mut offsets = Vec::with_capacity(ids.len());
    let mut before = String::new();
    for i in 0..ids.len() {
        let upto = decode(&ids[..=i]);
        offsets.push(before.len());
        match upto.strip_prefix(before.as_str()) {
            Some(t) => tokens.push(t.to_string()),
            None => tokens.push(decode(&ids[i..=i])),
        }
        before = upto;
    }
    (tokens, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_texts_follow_the_decoded_prefix() {
        let words = ["He", "llo", " world"];
        let decode = |ids: &[u32]| ids.iter().map(|&i| words[i as usize]).collect::<String>();
        let (t, o) = token_texts(&[0, 1, 2], &decode);
        assert_eq!(t, ["He", "llo", " world"]);
        assert_eq!(o, [0, 2, 5]);
    }
}
