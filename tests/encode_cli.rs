//! End-to-end tests of `swift encode` through the real binary, on the real Qwen3 and Llama-3
//! tokenizers and LLaMA-Factory demo sets (which `make setup` fetches; a test fails saying so
//! when they are missing): generation prompts match the tokenizer's own chat template, `--json` and
//! `--show` outputs, truncation counts, and errors that say what to do.

use std::path::PathBuf;

use crate::common::*;
use serde_json::Value;
use swift_plugin_api::{Message, StandardRow};
use swift_template::jinja::JinjaTemplate;
use swift_template::{Tokenizer, IGNORE_INDEX};
// Link the built-in plugins so the registries this test loads hold the demo datasets.
use swift_plugin_datasets as _;
use swift_plugin_templates as _;

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn ids(v: &Value, key: &str) -> Vec<i64> {
    v[key]
        .as_array()
        .expect(key)
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

/// Rows written as a messages JSONL file: a multi-turn chat and a tool-calling one.
fn rows_file(dir: &std::path::Path) -> (PathBuf, Vec<StandardRow>) {
    let text = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
{"messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, {"role": "tool", "content": "{\"temp\": 20}"}, {"role": "assistant", "content": "It is 20 degrees."}], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]}
"#;
    let path = dir.join("chat.jsonl");
    std::fs::write(&path, text).unwrap();
    let rows = text
        .lines()
        .map(|l| serde_json::from_str::<StandardRow>(l).unwrap())
        .collect();
    (path, rows)
}

#[test]
fn generation_prompts_match_the_chat_template_end_to_end() {
    let tok_path = tokenizer("qwen3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (file, rows) = rows_file(dir);
    let tok = Tokenizer::from_file(&tok_path).unwrap();
    let chat = JinjaTemplate::new(tok.chat_template.as_deref().unwrap()).unwrap();
    for (template, thinking) in [
        ("qwen3", None),
        ("qwen3", Some(false)),
        ("jinja", None),
        ("jinja", Some(false)),
    ] {
        let mut args = vec![
            "encode",
            "--tokenizer",
            tok_path.to_str().unwrap(),
            "--template",
            template,
            "--dataset",
            file.to_str().unwrap(),
            "--generation_prompt",
            "--json",
        ];
        if thinking == Some(false) {
            args.extend(["--enable_thinking", "false"]);
        }
        let lines = json_lines(&ok(swift(&args)));
        assert_eq!(lines.len(), rows.len());
        for (line, row) in lines.iter().zip(&rows) {
            let mut prompt: Vec<Message> = row.messages.clone();
            prompt.pop();
            let text = chat
                .render(&prompt, row.tools.as_deref(), true, thinking, &tok)
                .unwrap();
            let want: Vec<i64> = tok
                .encode(&text)
                .unwrap()
                .into_iter()
                .map(i64::from)
                .collect();
            assert_eq!(ids(line, "input_ids"), want, "{template} {thinking:?}");
            let labels = ids(line, "labels");
            assert_eq!(labels.len(), want.len());
            // The prompt ends untrained (the assistant header, and the empty think block when off).
            let tail = if thinking == Some(false) {
                "<|im_start|>assistant\n<think>\n\n</think>\n\n"
            } else {
                "<|im_start|>assistant\n"
            };
            let n = tok.encode(tail).unwrap().len();
            assert!(text.ends_with(tail));
            assert!(labels[labels.len() - n..]
                .iter()
                .all(|&l| l == IGNORE_INDEX));
            assert_eq!(
                line["loss_scale"].as_array().map(Vec::len),
                Some(want.len())
            );
        }
    }
}

#[test]
fn registered_datasets_encode_as_llama3_inference_prompts() {
    let tok_path = tokenizer("llama3");
    let tok = Tokenizer::from_file(&tok_path).unwrap();
    let header = tok
        .encode("<|start_header_id|>assistant<|end_header_id|>\n\n")
        .unwrap();
    let out = swift(&[
        "encode",
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--template",
        "llama3",
        "--dataset",
        demo("alpaca-en-demo#5"),
        "--generation-prompt",
        "true",
        "--json",
    ]);
    let stderr = stderr(&out);
    let lines = json_lines(&ok(out));
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let input: Vec<u32> = ids(line, "input_ids")
            .into_iter()
            .map(|x| x as u32)
            .collect();
        assert_eq!(input[0], tok.token_to_id("<|begin_of_text|>").unwrap());
        assert!(input.ends_with(&header), "ends with the assistant header");
        // A single-turn prompt has nothing to train.
        assert!(ids(line, "labels").iter().all(|&l| l == IGNORE_INDEX));
    }
    assert!(
        stderr.contains("encoded 5 rows with template `llama3`"),
        "{stderr}"
    );
}

#[test]
fn show_marks_trained_spans_and_truncation_is_counted() {
    let tok_path = tokenizer("qwen3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (file, _) = rows_file(dir);
    let out = swift(&[
        "encode",
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--template",
        "qwen3",
        "--dataset",
        file.to_str().unwrap(),
        "--show",
        "--loss_scale",
        "hermes",
    ]);
    let text = ok(out);
    assert!(text.contains("[[Hello!<|im_end|>\n]]{1.0}"), "{text}");
    assert!(
        text.contains("[[<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>]]{2.0}"),
        "{text}"
    );
    // The empty think block before the final answer is shown untrained.
    assert!(
        text.contains(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n[[It is 20 degrees.<|im_end|>\n]]{1.0}"
        ),
        "{text}"
    );

    let out = swift(&[
        "encode",
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--template",
        "qwen3",
        "--dataset",
        file.to_str().unwrap(),
        "--json",
        "--max_length",
        "60",
    ]);
    let stderr = stderr(&out);
    let lines = json_lines(&ok(out));
    assert_eq!(lines.len(), 1, "the long tool row is deleted");
    assert!(
        stderr.contains("1 rows longer than --max_length 60 deleted"),
        "{stderr}"
    );
    let out = swift(&[
        "encode",
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--template",
        "qwen3",
        "--dataset",
        file.to_str().unwrap(),
        "--json",
        "--max_length",
        "60",
        "--truncation_strategy",
        "left",
    ]);
    let lines = json_lines(&ok(out));
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| ids(l, "input_ids").len() <= 60));
}

#[test]
fn errors_say_what_to_do() {
    let tok_path = tokenizer("qwen3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (file, _) = rows_file(dir);
    let tok = tok_path.to_str().unwrap();
    let f = file.to_str().unwrap();
    let err = |args: &[&str]| assert_fails(swift(args), &[]);
    let e = err(&[
        "encode",
        "--tokenizer",
        tok,
        "--template",
        "qwen33",
        "--dataset",
        f,
    ]);
    assert!(
        e.contains("unknown template `qwen33`") && e.contains("qwen3"),
        "{e}"
    );
    let e = err(&["encode", "--template", "qwen3", "--dataset", f]);
    assert!(
        e.contains("--model DIR") && e.contains("--tokenizer FILE"),
        "{e}"
    );
    let e = err(&[
        "encode",
        "--tokenizer",
        tok,
        "--template",
        "qwen3",
        "--dataset",
        f,
        "--loss_scale",
        "default+nope",
    ]);
    assert!(e.contains("unknown loss scale `nope`"), "{e}");
    let e = err(&[
        "encode",
        "--tokenizer",
        tok,
        "--template",
        "qwen3",
        "--dataset",
        f,
        "--truncation_strategy",
        "middle",
    ]);
    assert!(e.contains("delete, left, right"), "{e}");
    // A tokenizer without chat_template and no --template.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(&tok_path, bare.join("tokenizer.json")).unwrap();
    let e = err(&["encode", "--model", bare.to_str().unwrap(), "--dataset", f]);
    assert!(
        e.contains("no chat_template") && e.contains("--template"),
        "{e}"
    );
    // A row with images is refused by file and line (its placeholders need the vision tower).
    let imgs = write_jsonl(
        &dir.join("imgs.jsonl"),
        [
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
            serde_json::json!({"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane"}], "images": ["1.jpg"]}),
        ],
    );
    let e = err(&[
        "encode",
        "--tokenizer",
        tok,
        "--template",
        "qwen3",
        "--dataset",
        imgs.to_str().unwrap(),
    ]);
    assert!(
        e.contains("imgs.jsonl:2") && e.contains("images") && e.contains("swift infer"),
        "{e}"
    );
}

/// The Must-show comparison through the real data path: rows as the dataset crate reads and
/// preprocesses the registered demo sets, encoded by the binary, against the tokenizer's own
/// chat template rendered on the same rows.
fn dataset_rows(name: &str) -> Vec<StandardRow> {
    let regs = swift_registry::PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-ins load")
        .registries;
    swift_data::open_dataset(name, &regs, &swift_data::DatasetOptions::default())
        .expect("dataset opens")
        .map(|r| r.expect("row reads").row)
        .collect()
}

/// The row with tools written in react form, as plain messages (Llama-3.0's template has no tools).
fn react_text(row: &StandardRow) -> Vec<Message> {
    use swift_template::ToolFormat;
    let mut msgs = row.messages.clone();
    let mut system = None;
    if msgs.first().is_some_and(|m| m.role == "system") {
        system = Some(msgs.remove(0).content);
    }
    if let Some(tools) = row.tools.as_ref().filter(|t| !t.is_empty()) {
        system = Some(ToolFormat::React.system_text(system.as_deref(), tools));
    }
    let mut out: Vec<Message> = system
        .map(|s| Message::new("system", s))
        .into_iter()
        .collect();
    for m in msgs {
        let content = match m.role.as_str() {
            "assistant" => {
                ToolFormat::React.assistant_text(&m.content, m.tool_calls.as_deref().unwrap_or(&[]))
            }
            "tool" => ToolFormat::React.tool_results_text(&[&m]),
            _ => m.content.clone(),
        };
        out.push(Message::new(m.role, content));
    }
    out
}

#[test]
fn registered_demo_sets_match_the_chat_templates_through_the_binary() {
    let (qwen3, llama3) = (tokenizer("qwen3"), tokenizer("llama3"));
    // (tokenizer, template, generation prompt, tools written as react text for the reference)
    let cases = [
        (&qwen3, "qwen3", false, false),
        (&qwen3, "jinja", false, false),
        (&llama3, "llama3", true, true),
        (&llama3, "jinja", true, false),
    ];
    for (tok_path, template, gen, react) in cases {
        let tok = Tokenizer::from_file(tok_path).unwrap();
        let chat = JinjaTemplate::new(tok.chat_template.as_deref().unwrap()).unwrap();
        for name in [
            demo("alpaca-en-demo"),
            demo("glaive-toolcall-en-demo"),
            demo("dpo-en-demo"),
        ] {
            let rows = dataset_rows(name);
            let mut args = vec![
                "encode",
                "--tokenizer",
                tok_path.to_str().unwrap(),
                "--template",
                template,
                "--dataset",
                name,
                "--json",
            ];
            if gen {
                args.push("--generation_prompt");
            }
            let lines = json_lines(&ok(swift(&args)));
            assert_eq!(lines.len(), rows.len(), "{template} {name}");
            for (i, (line, row)) in lines.iter().zip(&rows).enumerate() {
                let text = if gen {
                    let mut prompt = if react {
                        react_text(row)
                    } else {
                        row.messages.clone()
                    };
                    assert_eq!(prompt.pop().map(|m| m.role), Some("assistant".into()));
                    let tools = if react { None } else { row.tools.as_deref() };
                    chat.render(&prompt, tools, true, None, &tok).unwrap()
                } else {
                    chat.render(&row.messages, row.tools.as_deref(), false, None, &tok)
                        .unwrap()
                };
                let want: Vec<i64> = tok
                    .encode(&text)
                    .unwrap()
                    .into_iter()
                    .map(i64::from)
                    .collect();
                assert_eq!(ids(line, "input_ids"), want, "{template} {name} row {i}");
            }
            println!(
                "{template}: {} rows of {name} match the chat template",
                rows.len()
            );
        }
    }
}

#[test]
fn a_text_plugin_template_encodes_with_bos_eos_placeholders() {
    let tok_path = tokenizer("llama3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (file, _) = rows_file(dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("acme.toml"),
        r#"[[template]]
name = "acme"
description = "ACME's private format"
prefix = "{{BOS}}"
system_prefix = "{{BOS}}<sys>{{SYSTEM}}</sys>"
prompt = "<user>{{QUERY}}</user><bot>"
chat_sep = "{{EOS}}"
suffix = "{{EOS}}"
"#,
    )
    .unwrap();
    let out = swift(&[
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "encode",
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--template",
        "acme",
        "--dataset",
        file.to_str().unwrap(),
        "--show",
    ]);
    let text = ok(out);
    assert!(
        text.contains("<|begin_of_text|><sys>Be brief.</sys><user>Hi</user><bot>[[Hello!<|end_of_text|>]]{1.0}"),
        "{text}"
    );
}
