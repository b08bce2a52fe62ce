//! Unit tests of the built-in preprocessors on hand-written rows (some taken from the
//! LLaMA-Factory demo files), each against a hand-built expected standard row.

use serde_json::{json, Value};
use swift_plugin_api::prelude::*;

use crate::{Alpaca, Conversations, PlainText, Preference, QueryResponse};

fn run(p: &dyn DatasetPreprocessor, row: Value) -> Result<PreprocessOutcome, String> {
    p.preprocess(row.as_object().expect("test rows are objects").clone())
}

fn row_of(p: &dyn DatasetPreprocessor, row: Value) -> StandardRow {
    match run(p, row) {
        Ok(PreprocessOutcome::Row(r)) => r,
        other => panic!("expected a row, got {other:?}"),
    }
}

fn m(role: &str, content: &str) -> Message {
    Message::new(role, content)
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: None,
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments,
        },
    }
}

const MESSAGES: Conversations = Conversations {
    require_label: false,
};
const KTO: Conversations = Conversations {
    require_label: true,
};

#[test]
fn alpaca_joins_instruction_and_input() {
    let out = row_of(
        &Alpaca,
        json!({"instruction": "Add", "input": "2 and 3", "output": "5"}),
    );
    assert_eq!(
        out,
        StandardRow {
            messages: vec![m("user", "Add\n2 and 3"), m("assistant", "5")],
            ..Default::default()
        }
    );
    let out = row_of(
        &Alpaca,
        json!({"instruction": "", "input": "Only input", "output": "x"}),
    );
    assert_eq!(out.messages[0], m("user", "Only input"));
}

#[test]
fn answers_that_look_like_json_stay_text() {
    let out = row_of(
        &Alpaca,
        json!({"instruction": "Who?", "input": "", "output": "{{name}} is my name."}),
    );
    assert_eq!(out.messages[1], m("assistant", "{{name}} is my name."));
    let out = row_of(
        &QueryResponse,
        json!({"query": "[1, 2]", "response": "{\"a\": 1}"}),
    );
    assert_eq!(
        out.messages,
        vec![m("user", "[1, 2]"), m("assistant", "{\"a\": 1}")]
    );
    // A message list as JSON text (CSV) is read as messages.
    let out = row_of(
        &QueryResponse,
        json!({"prompt": "[{\"role\": \"user\", \"content\": \"Q\"}]", "completion": "A"}),
    );
    assert_eq!(out.messages, vec![m("user", "Q"), m("assistant", "A")]);
}

#[test]
fn alpaca_keeps_system_and_history() {
    let out = row_of(
        &Alpaca,
        json!({"system": "S", "history": [["q1", "a1"]], "instruction": "q2", "input": "", "output": "a2"}),
    );
    assert_eq!(
        out.messages,
        vec![
            m("system", "S"),
            m("user", "q1"),
            m("assistant", "a1"),
            m("user", "q2"),
            m("assistant", "a2")
        ]
    );
    // History as a JSON string (CSV files).
    let out = row_of(
        &Alpaca,
        json!({"history": "[[\"q1\", \"a1\"]]", "instruction": "q2", "input": "", "output": "a2"}),
    );
    assert_eq!(out.messages.len(), 4);
}

#[test]
fn alpaca_rejects_wrong_types_and_empty_queries_and_skips_empty_rows() {
    assert!(run(
        &Alpaca,
        json!({"instruction": [3], "input": "", "output": "x"})
    )
    .unwrap_err()
    .contains("instruction"));
    assert!(run(
        &Alpaca,
        json!({"instruction": "", "input": "", "output": "x"})
    )
    .unwrap_err()
    .contains("empty"));
    assert_eq!(
        run(&Alpaca, json!({"instruction": "", "input": ""})).unwrap(),
        PreprocessOutcome::Skip
    );
    assert!(run(
        &Alpaca,
        json!({"instruction": "q", "history": [["only one"]], "input": ""})
    )
    .unwrap_err()
    .contains("pair"));
}

#[test]
fn query_response_aliases() {
    let want = StandardRow {
        messages: vec![m("user", "Q"), m("assistant", "A")],
        ..Default::default()
    };
    for (q, a) in [
        ("query", "response"),
        ("prompt", "completion"),
        ("question", "answer"),
        ("instruction", "output"),
        ("input", "target"),
    ] {
        assert_eq!(
            row_of(&QueryResponse, json!({q: "Q", a: "A"})),
            want,
            "{q}/{a}"
        );
    }
    // system_prompt, history, numbers as answers, several answers (the first is trained).
    let out = row_of(
        &QueryResponse,
        json!({"system_prompt": "S", "query": "1+1", "answers": ["2", "two"]}),
    );
    assert_eq!(
        out.messages,
        vec![m("system", "S"), m("user", "1+1"), m("assistant", "2")]
    );
    let out = row_of(&QueryResponse, json!({"question": "1+1", "answer": 2}));
    assert_eq!(out.messages[1], m("assistant", "2"));
    // No answer: a prompt for inference.
    assert_eq!(
        row_of(&QueryResponse, json!({"query": "Q"})).messages,
        vec![m("user", "Q")]
    );
}

#[test]
fn query_response_keeps_rejected_response_and_label() {
    let out = row_of(
        &QueryResponse,
        json!({"query": "Q", "response": "good", "rejected_response": "bad"}),
    );
    assert_eq!(out.rejected_response.as_deref(), Some("bad"));
    let out = row_of(
        &QueryResponse,
        json!({"prompt": "Q", "completion": "A", "label": 0}),
    );
    assert_eq!(out.label, Some(false));
    assert!(run(
        &QueryResponse,
        json!({"prompt": "Q", "completion": "A", "label": "maybe"})
    )
    .unwrap_err()
    .contains("label"));
}

#[test]
fn trl_conversational_prompt_and_completion() {
    let out = row_of(
        &QueryResponse,
        json!({"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}),
    );
    assert_eq!(out.messages, vec![m("user", "Q"), m("assistant", "A")]);
}

#[test]
fn plain_text_is_one_assistant_message() {
    assert_eq!(
        row_of(&PlainText, json!({"text": "Once upon a time"})).messages,
        vec![m("assistant", "Once upon a time")]
    );
    assert_eq!(
        run(&PlainText, json!({"text": "  "})).unwrap(),
        PreprocessOutcome::Skip
    );
    assert!(run(&PlainText, json!({"text": 5}))
        .unwrap_err()
        .contains("text"));
}

#[test]
fn sharegpt_roles_and_system_column() {
    let out = row_of(
        &MESSAGES,
        json!({"system": "S", "conversations": [
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
            {"from": "user", "value": "again"}, {"from": "bot", "value": "yes"}]}),
    );
    assert_eq!(
        out.messages,
        vec![
            m("system", "S"),
            m("user", "hi"),
            m("assistant", "hello"),
            m("user", "again"),
            m("assistant", "yes")
        ]
    );
    // A system turn inside the conversation wins over nothing else; no duplicate system.
    let out = row_of(
        &MESSAGES,
        json!({"conversations": [{"from": "system", "value": "T"}, {"from": "human", "value": "q"}]}),
    );
    assert_eq!(out.messages, vec![m("system", "T"), m("user", "q")]);
}

/// A real row of `glaive_toolcall_en_demo.json` (the tool schema shortened).
#[test]
fn glaive_function_call_and_observation() {
    let row = json!({"conversations": [
        {"from": "human", "value": "Hi, I would like to know the latest news about technology and sports in New York."},
        {"from": "function_call", "value": "{\"name\": \"get_news\", \"arguments\": {\"topics\": [\"technology\", \"sports\"], \"location\": \"New York\"}}"},
        {"from": "observation", "value": "{\"news\": [{\"title\": \"Tech Giants Invest in New York\"}]}"},
        {"from": "gpt", "value": "Here are the latest news in New York related to your interests."}],
        "tools": "[{\"name\": \"get_news\", \"description\": \"Get the latest news based on user's preferences\", \"parameters\": {\"type\": \"object\", \"properties\": {\"topics\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}, \"required\": [\"topics\"]}}]"});
    let out = row_of(&MESSAGES, row);
    let mut assistant_call = m("assistant", "");
    assistant_call.tool_calls = Some(vec![call(
        "get_news",
        json!({"topics": ["technology", "sports"], "location": "New York"}),
    )]);
    let mut tool = m(
        "tool",
        "{\"news\": [{\"title\": \"Tech Giants Invest in New York\"}]}",
    );
    tool.name = Some("get_news".into());
    assert_eq!(
        out.messages,
        vec![
            m(
                "user",
                "Hi, I would like to know the latest news about technology and sports in New York."
            ),
            assistant_call,
            tool,
            m(
                "assistant",
                "Here are the latest news in New York related to your interests."
            ),
        ]
    );
    assert_eq!(
        out.tools,
        Some(vec![
            json!({"type": "function", "function": {"name": "get_news", "description": "Get the latest news based on user's preferences",
            "parameters": {"type": "object", "properties": {"topics": {"type": "array", "items": {"type": "string"}}}, "required": ["topics"]}}})
        ])
    );
    // Empty tools are none; a bad function_call names the turn.
    let out = row_of(
        &MESSAGES,
        json!({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "tools": ""}),
    );
    assert_eq!(out.tools, None);
    let err = run(&MESSAGES, json!({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_news("}]}))
        .unwrap_err();
    assert!(
        err.contains("message 2") && err.contains("tool call"),
        "{err}"
    );
}

#[test]
fn function_call_after_assistant_text_merges_into_that_turn() {
    let out = row_of(
        &MESSAGES,
        json!({"conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "Let me look."},
        {"from": "function_call", "value": {"name": "f", "arguments": "{}"}}]}),
    );
    assert_eq!(out.messages.len(), 2);
    assert_eq!(out.messages[1].content, "Let me look.");
    assert_eq!(
        out.messages[1].tool_calls,
        Some(vec![call("f", json!("{}"))])
    );
}

#[test]
fn openai_messages_with_tool_calls_and_tool_results() {
    let out = row_of(
        &MESSAGES,
        json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "c2", "type": "function", "function": {"name": "t", "arguments": {}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "12:00", "tool_call_id": "x"},
        {"role": "assistant", "content": "Sunny at noon."}]}),
    );
    let roles: Vec<_> = out.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
    let calls = out.messages[1].tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].id.as_deref(), Some("c1"));
    assert_eq!(calls[0].function.arguments, json!("{\"city\": \"Paris\"}"));
    assert_eq!(
        (
            out.messages[2].name.as_deref(),
            out.messages[2].tool_call_id.as_deref()
        ),
        (Some("w"), Some("c1"))
    );
    assert_eq!(
        (
            out.messages[3].name.as_deref(),
            out.messages[3].tool_call_id.as_deref()
        ),
        (Some("t"), Some("x"))
    );
    let err = run(
        &MESSAGES,
        json!({"messages": [{"role": "narrator", "content": "x"}]}),
    )
    .unwrap_err();
    assert!(err.contains("unknown role `narrator`"), "{err}");
}

/// LLaMA-Factory v1 typed parts (`v1_sft_demo.jsonl`, `reason_tool_use_demo_50.jsonl`).
#[test]
fn typed_content_parts() {
    let out = row_of(
        &MESSAGES,
        json!({"messages": [
        {"role": "user", "content": [{"type": "text", "value": "hi"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "Hello! I am {{name}}."}], "loss_weight": 1.0}]}),
    );
    assert_eq!(
        out.messages,
        vec![m("user", "hi"), m("assistant", "Hello! I am {{name}}.")]
    );
    let out = row_of(
        &MESSAGES,
        json!({"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "Looks like a cat."}, {"type": "text", "value": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "value": "Movie?"}]},
        {"role": "assistant", "content": [{"type": "tool_call", "value": "{\"name\": \"get_movie_details\", \"arguments\": {\"title\": \"Inception\"}}"}]}]}),
    );
    assert_eq!(out.messages[0], m("user", "<image>What is this?"));
    assert_eq!(out.images, vec!["a.png".to_string()]);
    assert_eq!(
        out.messages[1].content,
        "<think>\nLooks like a cat.\n</think>\n\nA cat."
    );
    assert_eq!(
        out.messages[3].tool_calls,
        Some(vec![call(
            "get_movie_details",
            json!({"title": "Inception"})
        )])
    );
    let err = run(
        &MESSAGES,
        json!({"messages": [{"role": "user", "content": [{"type": "video", "value": "v.mp4"}]}]}),
    )
    .unwrap_err();
    assert!(err.contains("`video` is not supported"), "{err}");
}

#[test]
fn images_column_and_kto_label() {
    let out = row_of(
        &MESSAGES,
        json!({"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane"}], "images": ["mllm_demo_data/1.jpg"]}),
    );
    assert_eq!(out.images, vec!["mllm_demo_data/1.jpg".to_string()]);
    let out = row_of(
        &KTO,
        json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": true}),
    );
    assert_eq!(out.label, Some(true));
    assert!(run(
        &KTO,
        json!({"messages": [{"role": "user", "content": "q"}], "label": null})
    )
    .unwrap_err()
    .contains("label"));
}

#[test]
fn empty_conversations_are_skipped() {
    assert_eq!(
        run(&MESSAGES, json!({"messages": []})).unwrap(),
        PreprocessOutcome::Skip
    );
    assert!(run(&MESSAGES, json!({"messages": "not a list"}))
        .unwrap_err()
        .contains("list of messages"));
}

/// The shape of `dpo_en_demo.json`: sharegpt conversation, chosen/rejected single messages.
#[test]
fn sharegpt_ranking_pairs() {
    let out = row_of(
        &Preference,
        json!({
        "conversations": [{"from": "system", "value": "You are a teacher."}, {"from": "human", "value": "Q: tag {{ the }}"}],
        "chosen": {"from": "gpt", "value": "DET"},
        "rejected": {"from": "gpt", "value": "NOUN"}}),
    );
    assert_eq!(
        out.messages,
        vec![
            m("system", "You are a teacher."),
            m("user", "Q: tag {{ the }}"),
            m("assistant", "DET")
        ]
    );
    assert_eq!(out.rejected_response.as_deref(), Some("NOUN"));
    assert_eq!(out.rejected_messages, None);
    // Multi-turn prompt.
    let out = row_of(
        &Preference,
        json!({
        "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}],
        "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}),
    );
    assert_eq!(out.messages.len(), 4);
}

#[test]
fn text_pairs_message_lists_and_v1_pairs() {
    let out = row_of(
        &Preference,
        json!({"prompt": "Q", "chosen": "good", "rejected": "bad", "system": "S"}),
    );
    assert_eq!(
        out.messages,
        vec![m("system", "S"), m("user", "Q"), m("assistant", "good")]
    );
    assert_eq!(out.rejected_response.as_deref(), Some("bad"));
    // TRL implicit prompt: whole conversations.
    let out = row_of(
        &Preference,
        json!({
        "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]}),
    );
    assert_eq!(out.messages, vec![m("user", "Q"), m("assistant", "good")]);
    assert_eq!(out.rejected_response.as_deref(), Some("bad"));
    // Different prompts: the whole rejected conversation is kept.
    let out = row_of(
        &Preference,
        json!({
        "chosen_messages": [{"role": "user", "content": [{"type": "text", "value": "Q"}]}, {"role": "assistant", "content": [{"type": "text", "value": "good"}]}],
        "rejected_messages": [{"role": "user", "content": [{"type": "text", "value": "Q2"}]}, {"role": "assistant", "content": [{"type": "text", "value": "bad"}]}]}),
    );
    assert_eq!(out.rejected_response, None);
    assert_eq!(
        out.rejected_messages,
        Some(vec![m("user", "Q2"), m("assistant", "bad")])
    );
}

#[test]
fn preference_errors() {
    let err = run(
        &Preference,
        json!({"prompt": "Q", "chosen": "same", "rejected": "same"}),
    )
    .unwrap_err();
    assert!(err.contains("same as the chosen"), "{err}");
    let err = run(&Preference, json!({"chosen": "good", "rejected": "bad"})).unwrap_err();
    assert!(err.contains("no prompt"), "{err}");
}
