//! `swift deploy` end to end on the built-in `pt` backend: the real server on a loopback port,
//! driven by the official `openai` Python client (tests/deploy_client.py) on the tiny random
//! llama, through the scenarios of tests/common/deploy.rs (which tests/llama_cpp.rs runs on
//! `llama_cpp` too), streamed tool calls of a tiny llama trained to make one, and the server's
//! refusals of bad flags.

use crate::common::*;

#[test]
fn openai_client_against_the_server() {
    openai_client_scenario(&[]);
}

#[test]
fn full_queue_is_refused_and_ctrl_c_drains() {
    full_queue_scenario(&[]);
}

/// The tiny llama trained to answer with text and a tool call (tests/reference/
/// make_tool_call_model.sh): its streamed answers, two choices, arrive as `tool_calls` deltas that
/// assemble into the non-streamed call.
#[test]
fn streamed_tool_calls_on_pt() {
    let model = tool_call_model();
    tool_stream_scenario(
        &[
            "--model",
            model.to_str().unwrap(),
            "--max_model_len",
            "1024",
        ],
        TOOL_CALL_QUERY,
        2,
        "Sure.",
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let model = tiny();
    let m = model.to_str().unwrap();
    assert_fails(
        swift(&["deploy", "--model", m, "--adapters", "x=/no/such/adapter"]),
        &["not a LoRA checkpoint"],
    );
    assert_fails(
        swift(&["deploy", "--model", "/no/such/model"]),
        &["no such file or folder"],
    );
    assert_fails(
        swift(&["deploy", "--model", m, "--infer_backend", "vllm"]),
        &["vllm"],
    );
}
