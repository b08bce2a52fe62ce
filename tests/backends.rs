//! Inference backends through the contract (ARCHITECTURE.md §3.8), with the example plugin's
//! `example-echo` (out of tree, `--plugin-dir`): a toy that answers a prompt with its last turn
//! (after the second-to-last occurrence of its first token) and chooses its tokens itself (backend sampling, greedy only, no logprobs), so its
//! answers are known without a model. `swift infer` and `swift deploy` both generate through it;
//! what it does not support is refused by flag (infer) or by request parameter (deploy, 400);
//! `swift list backends` shows its capabilities beside `pt`'s.

use serde_json::{json, Value};

use crate::common::*;

/// The answer `example-echo` gives: the prompt's last turn (written here independently of the
/// plugin's code), up to the first EOS (`eos`) or `max_new` tokens.
fn echoed(prompt: &[i64], eos: &[i64], max_new: usize) -> Vec<i64> {
    let starts: Vec<usize> = prompt
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == prompt[0])
        .map(|(i, _)| i)
        .collect();
    let from = if starts.len() >= 2 {
        starts[starts.len() - 2] + 1
    } else {
        0
    };
    prompt[from..]
        .iter()
        .copied()
        .take_while(|t| !eos.contains(t))
        .take(max_new)
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_i64().expect("an id"))
        .collect()
}

#[test]
fn the_example_backend_generates_for_infer_and_deploy() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let pdir = plugins.path().to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny();
    let m = model.to_str().unwrap();

    // swift list backends: both, with what each supports.
    let listed = ok(swift(&["--plugin-dir", &pdir, "list", "backends"]));
    assert!(listed.contains("example-echo"), "{listed}");
    assert!(
        listed.contains("sampling: backend (greedy only)") && listed.contains("batch: up to 4"),
        "{listed}"
    );
    assert!(listed.contains("adapters: per_row"), "pt's line: {listed}");
    // Which backends read images (issue 21): pt does, the example's echo does not.
    let pt_line = listed
        .lines()
        .find(|l| l.contains("adapters: per_row"))
        .unwrap_or_default();
    assert!(pt_line.ends_with("; images"), "pt's line: {pt_line}");
    let echo_line = listed
        .lines()
        .find(|l| l.contains("greedy only"))
        .unwrap_or_default();
    assert!(!echo_line.contains("images"), "echo's line: {echo_line}");

    // swift infer over a dataset: each answer is its prompt echoed (5 rows, batches of 4: rows
    // join and leave the backend's batch).
    let rows = write_jsonl(
        &tmp.path().join("rows.jsonl"),
        [
            "hi",
            "name a color",
            "a longer question than the others",
            "x",
            "two",
        ]
        .iter()
        .map(|q| user_row(q)),
    );
    let out = tmp.path().join("out.jsonl");
    ok(swift1(&[
        "--plugin-dir",
        &pdir,
        "infer",
        "--model",
        m,
        "--infer_backend",
        "example-echo",
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--max_new_tokens",
        "6",
        "--max_batch_size",
        "4",
    ]));
    let results = read_jsonl(&out);
    assert_eq!(results.len(), 5);
    let eos = [2i64, 0];
    for r in &results {
        let prompt = ids(&r["prompt_ids"]);
        let want = echoed(&prompt, &eos, 6);
        assert_eq!(want.len(), 6, "the answers are longer than 6 tokens: {r}");
        assert_eq!(ids(&r["response_ids"]), want, "{r}");
        assert_eq!(r["completion_tokens"], json!(6), "{r}");
    }

    // What it does not support is refused by flag.
    let base = [
        "--plugin-dir",
        &pdir,
        "infer",
        "--model",
        m,
        "--infer_backend",
        "example-echo",
        "--val_dataset",
        rows.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
    ];
    assert_fails(
        swift(&[&base[..], &["--temperature", "0.7"]].concat()),
        &[
            "--temperature",
            "not supported by this backend",
            "greedy only",
        ],
    );
    assert_fails(
        swift(&[&base[..], &["--torch_dtype", "float16"]].concat()),
        &["--torch_dtype does not apply to --infer_backend example-echo"],
    );
    assert_fails(
        swift(&[&base[..], &["--device", "cuda"]].concat()),
        &["--device cuda", "example-echo runs on cpu only"],
    );

    // swift deploy through it: the same answer as swift infer; refusals name the parameter.
    let server = Server::start(&[
        "--plugin-dir",
        &pdir,
        "--model",
        m,
        "--infer_backend",
        "example-echo",
        "--served_model_name",
        "echo",
    ]);
    let chat = |extra: Value| {
        let mut body = json!({"model": "echo", "max_tokens": 6, "temperature": 0,
                              "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, text) = server.post("/v1/chat/completions", &body.to_string());
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(json!(text)),
        )
    };
    let (status, r) = chat(json!({}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["choices"][0]["message"]["content"], results[0]["response"],
        "{r}"
    );
    assert_eq!(r["usage"]["completion_tokens"], json!(6), "{r}");
    let (status, r) = chat(json!({"temperature": 0.5}));
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["param"], "temperature", "{r}");
    let (status, r) = chat(json!({"logprobs": true}));
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["param"], "logprobs", "{r}");
    // n > 1 is the host's (one row per choice): both choices echo.
    let (status, r) = chat(json!({"n": 2}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["choices"][1]["message"]["content"],
        results[0]["response"]
    );
    // It scores no prompts: `echo` is refused naming it, and so is a log-likelihood benchmark
    // through `swift eval --eval_url`.
    let (status, text) = server.post(
        "/v1/completions",
        r#"{"prompt": "hi", "echo": true, "logprobs": 1, "max_tokens": 0}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"param\":\"echo\"") && text.contains("example-echo"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let quiz = dir.path().join("quiz.csv");
    std::fs::write(&quiz, "question,A,B,C,D,answer\nq?,a,b,c,d,A\n").unwrap();
    assert_fails(
        swift(&[
            "eval",
            "--eval_url",
            &server.base_url,
            "--eval_dataset",
            &quiz.display().to_string(),
            "--output_dir",
            &dir.path().join("out").display().to_string(),
        ]),
        &["benchmark `quiz`", "echo", "example-echo"],
    );
}

/// A streamed answer with a tool call arrives as `tool_calls` deltas that the official `openai`
/// client assembles into the call of the non-streamed answer. The echo backend answers with the
/// user's turn as the template renders it (`user\n` and its text), so a user message holding text
/// and a hermes call makes the answer hold them, after `user\nSure.`.
#[test]
fn streamed_tool_calls_arrive_as_tool_call_deltas() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    tool_stream_scenario(
        &[
            "--plugin-dir",
            plugins.path().to_str().unwrap(),
            "--model",
            tiny().to_str().unwrap(),
            "--infer_backend",
            "example-echo",
            "--template",
            "qwen2_5",
            "--max_model_len",
            "2048",
        ],
        "Sure. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        2,
        "user\nSure.",
    );
}
