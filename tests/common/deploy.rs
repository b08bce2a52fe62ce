//! The `swift deploy` scenarios of the official `openai` Python client (tests/deploy_client.py)
//! against the real server on the tiny llama, parametrised by the inference backend's flags so
//! that every backend passes the same ones (tests/deploy.rs runs them on `pt`,
//! tests/llama_cpp.rs on `llama_cpp`).
//!
//! * References come from `swift infer --val_dataset` on the same backend (greedy, with and
//!   without a LoRA adapter that `swift sft` trains here for a few steps): the server's chat
//!   answers, token counts and tool rendering must equal them, and the adapter picked by the
//!   request's `model` must change the answers. The client also checks streaming, completions,
//!   concurrent batches, stop strings, seeds, n, logprobs, and every error case.
//! * With a batch of one row and a queue of one, a third request is refused with 503 at once;
//!   Ctrl-C (SIGINT) lets a streamed request in flight finish, then the server exits cleanly.
//!
//! Needs the reference virtualenv (`openai`); fails saying how to install it when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::*;

const MAX_TOKENS: usize = 24;

fn client(python: &Path, args: &[&str]) {
    let script = workspace_root().join("tests/deploy_client.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "deploy_client.py failed:\n{text}");
}

/// Trains a LoRA adapter on the tiny model for a few steps (answers it learns: fixed phrases).
fn train_adapter(dir: &Path) -> PathBuf {
    let pairs: Vec<(&str, &str)> = [
        ("hi", "hello there friend"),
        ("name a color", "blue is a color"),
        ("what is two plus two", "four is the answer"),
    ]
    .iter()
    .flat_map(|&p| [p; 4])
    .collect();
    let data = write_chat(&dir.join("train.jsonl"), &pairs);
    let out = ok(swift1(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        dir.join("run").to_str().unwrap(),
        "--max_steps",
        "10",
        "--learning_rate",
        "5e-2",
        "--lora_rank",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--save_steps",
        "10",
    ]));
    PathBuf::from(
        out.trim()
            .lines()
            .last()
            .expect("sft prints the checkpoint"),
    )
}

/// `swift infer`'s greedy answers to `rows` (JSON lines of its --result_path) on `backend`.
fn infer(backend: &[&str], dir: &Path, rows: &Path, extra: &[&str], name: &str) -> Vec<Value> {
    let result = dir.join(format!("{name}.jsonl"));
    let n = MAX_TOKENS.to_string();
    let model = tiny();
    let mut args = vec![
        "infer",
        "--model",
        model.to_str().unwrap(),
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        result.to_str().unwrap(),
        "--max_new_tokens",
        &n,
        "--max_batch_size",
        "1",
        // As the server's --max_model_len: the tool descriptions take ~700 tokens, beyond the
        // tiny llama's 256 positions, and a backend with a fixed context sizes it from this.
        "--max_length",
        "1024",
    ];
    args.extend_from_slice(backend);
    args.extend_from_slice(extra);
    ok(swift1(&args));
    read_jsonl(&result)
}

/// The main scenario of the `openai` client (tests/deploy_client.py `main`) against `swift deploy`
/// of the tiny llama with a trained adapter, on the backend `backend` names (its flags: none for
/// `pt`, `--plugin-dir DIR --infer_backend NAME` for a plugin's).
pub fn openai_client_scenario(backend: &[&str]) {
    let python = reference_python(&["openai"]);
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = train_adapter(tmp.path());

    let queries = [
        "hi",
        "name a color",
        "what is two plus two",
        "tell me a joke",
    ];
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let tool_messages = json!([{"role": "user", "content": "weather in Paris?"}]);
    let rows_path = write_jsonl(
        &tmp.path().join("queries.jsonl"),
        queries
            .iter()
            .map(|q| user_row(q))
            .chain([json!({"messages": tool_messages, "tools": tools})]),
    );
    let base = infer(backend, tmp.path(), &rows_path, &[], "base");
    let adapted = infer(
        backend,
        tmp.path(),
        &rows_path,
        &["--adapters", ckpt.to_str().unwrap()],
        "adapter",
    );
    let entry = |r: &Value, q: &str| {
        json!({"query": q, "response": r["response"], "prompt_tokens": r["prompt_tokens"],
               "completion_tokens": r["completion_tokens"], "finish_reason": r["finish_reason"]})
    };
    let refs = json!({
        "base_name": "tiny-llama",
        "adapter_name": "colors",
        "max_tokens": MAX_TOKENS,
        "base": queries.iter().zip(&base).map(|(q, r)| entry(r, q)).collect::<Vec<_>>(),
        "adapter": queries.iter().zip(&adapted).map(|(q, r)| entry(r, q)).collect::<Vec<_>>(),
        "tools": {"messages": tool_messages, "tools": tools,
                  "prompt_tokens": base[4]["prompt_tokens"], "response": base[4]["response"]},
    });
    let refs_path = tmp.path().join("refs.json");
    std::fs::write(&refs_path, refs.to_string()).unwrap();

    let adapter_arg = format!("colors={}", ckpt.display());
    let mut server = Server::start(
        &[
            backend,
            &[
                "--model",
                tiny().to_str().unwrap(),
                "--served_model_name",
                "tiny-llama",
                "--adapters",
                &adapter_arg,
                "--api_key",
                "secret-key",
                // The tool descriptions alone take ~700 tokens of the tiny byte-level vocabulary.
                "--max_model_len",
                "1024",
            ],
        ]
        .concat(),
    );
    client(
        &python,
        &[
            "main",
            "--base-url",
            &server.base_url,
            "--api-key",
            "secret-key",
            "--refs",
            refs_path.to_str().unwrap(),
        ],
    );
    server.interrupt();
    assert!(
        server.wait().success(),
        "swift deploy exits cleanly on Ctrl-C"
    );
}

/// With a batch of one row and a queue of one, a third request is refused with 503 at once;
/// Ctrl-C lets a streamed request in flight finish (tests/deploy_client.py `limits`), on the
/// backend `backend` names.
pub fn full_queue_scenario(backend: &[&str]) {
    let python = reference_python(&["openai"]);
    let mut server = Server::start(
        &[
            backend,
            &[
                "--model",
                tiny().to_str().unwrap(),
                "--max_batch_size",
                "1",
                "--max_queue",
                "1",
                "--debug_step_delay_ms",
                "30",
            ],
        ]
        .concat(),
    );
    let pid = server.pid().to_string();
    client(
        &python,
        &["limits", "--base-url", &server.base_url, "--pid", &pid],
    );
    assert!(
        server.wait().success(),
        "swift deploy exits cleanly on Ctrl-C"
    );
}

/// The tiny llama trained to answer its tool prompt with text and a call
/// (tests/reference/make_tool_call_model.sh): `Sure. <tool_call>…get_weather…Paris…</tool_call>`.
pub fn tool_call_model() -> PathBuf {
    tiny_model("llama-tool-call")
}

/// The user's turn [`tool_call_model`] answers with a call.
pub const TOOL_CALL_QUERY: &str = "weather in Paris?";

/// A streamed answer with a tool call, after `content`, in each of `n` choices, arrives as
/// `tool_calls` deltas that the `openai` client assembles into the call of the non-streamed
/// answer (tests/deploy_client.py `tool-stream`), from `swift deploy` started with `server_args`
/// asked `query`.
pub fn tool_stream_scenario(server_args: &[&str], query: &str, n: usize, content: &str) {
    let python = reference_python(&["openai"]);
    let server = Server::start(server_args);
    let n = n.to_string();
    client(
        &python,
        &[
            "tool-stream",
            "--base-url",
            &server.base_url,
            "--query",
            query,
            "--n",
            &n,
            "--content",
            content,
        ],
    );
}
