//! Label masks and loss scales against hand-built expectations: single-turn, multi-turn, system,
//! tools (hermes and react), loss-scale strategies and agent tables, Qwen3 thinking, truncation.
//!
//! They use a tiny byte-level tokenizer written by the test (every byte one token, the chat
//! templates' special tokens one token each), so they need no downloaded asset and token counts
//! follow from the text.

mod common;

use serde_json::json;
use swift_plugin_api::{FunctionCall, Message, StandardRow, ToolCall};
use swift_template::{
    EncodeOptions, Encoder, LossScale, RenderOptions, Template, Tokenizer, Truncation, IGNORE_INDEX,
};

const SPECIALS: [&str; 12] = [
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<s>",
    "</s>",
];

/// GPT-2's byte -> printable char table.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// Writes a byte-level tokenizer (no merges) and its tokenizer_config.json into a fresh folder.
fn tiny_tokenizer() -> Tokenizer {
    let dir = std::env::temp_dir().join(format!(
        "swift-template-tiny-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = byte_chars()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let added: Vec<_> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": 256 + i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": "</s>"}).to_string(),
    )
    .unwrap();
    let t = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    t
}

fn encoder(template: &str, loss_scale: &str, render: RenderOptions) -> Encoder {
    let options = EncodeOptions {
        render,
        loss_scale: LossScale::parse(loss_scale).unwrap(),
        ..Default::default()
    };
    Encoder::new(
        Template::from_record(&common::record(template)).unwrap(),
        tiny_tokenizer(),
        options,
    )
    .unwrap()
}

fn row(msgs: &[(&str, &str)]) -> StandardRow {
    StandardRow {
        messages: msgs.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
        ..Default::default()
    }
}

fn spans(enc: &Encoder, row: &StandardRow) -> Vec<(String, f32)> {
    enc.spans(row).unwrap()
}

fn s(text: &str, w: f32) -> (String, f32) {
    (text.to_string(), w)
}

/// Token-level invariants: labels are the ids exactly where the loss scale is positive, and the
/// trained tokens decode to the trained text.
fn check_tokens(enc: &Encoder, row: &StandardRow) {
    let e = enc.encode(row).unwrap().unwrap();
    assert_eq!(e.input_ids.len(), e.labels.len());
    assert_eq!(e.input_ids.len(), e.loss_scale.len());
    for ((&id, &l), &w) in e.input_ids.iter().zip(&e.labels).zip(&e.loss_scale) {
        if w > 0.0 {
            assert_eq!(l, i64::from(id));
        } else {
            assert_eq!(l, IGNORE_INDEX);
        }
    }
    let trained: String = spans(enc, row)
        .into_iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(t, _)| t)
        .collect();
    let ids: Vec<u32> = e
        .labels
        .iter()
        .filter(|&&l| l >= 0)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(enc.tokenizer.decode(&ids).unwrap(), trained);
}

#[test]
fn single_turn() {
    let enc = encoder("chatml", "default", RenderOptions::default());
    let r = row(&[("user", "Hi"), ("assistant", "Hello")]);
    assert_eq!(
        spans(&enc, &r),
        vec![
            s(
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                0.0
            ),
            s("Hello<|im_end|>", 1.0)
        ]
    );
    let e = enc.encode(&r).unwrap().unwrap();
    // 5 bytes of "Hello" + <|im_end|>; the prompt: 2 specials + "user\nHi" (7) + "\n" + "assistant\n" (10).
    let n_prompt = 1 + 5 + 2 + 1 + 1 + 1 + 10;
    assert_eq!(e.input_ids.len(), n_prompt + 6);
    assert!(e.labels[..n_prompt].iter().all(|&l| l == IGNORE_INDEX));
    assert!(e.labels[n_prompt..].iter().all(|&l| l >= 0));
    assert_eq!(e.loss_scale[n_prompt..], [1.0; 6]);
    check_tokens(&enc, &r);
}

#[test]
fn multi_turn_with_default_and_explicit_system() {
    let enc = encoder("qwen2_5", "default", RenderOptions::default());
    let r = row(&[
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
    ]);
    let sys = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
    assert_eq!(
        spans(&enc, &r),
        vec![
            s(
                &format!("{sys}<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"),
                0.0
            ),
            s("A1<|im_end|>\n", 1.0),
            s(
                "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n",
                0.0
            ),
            s("A2<|im_end|>", 1.0),
        ]
    );
    check_tokens(&enc, &r);
    // The row's own system replaces the default; --system replaces both.
    let mut r2 = r.clone();
    r2.messages.insert(0, Message::new("system", "Be brief."));
    assert!(spans(&enc, &r2)[0]
        .0
        .starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    let enc = encoder(
        "qwen2_5",
        "default",
        RenderOptions {
            system: Some("Custom.".into()),
            ..Default::default()
        },
    );
    assert!(spans(&enc, &r2)[0]
        .0
        .starts_with("<|im_start|>system\nCustom.<|im_end|>\n"));
}

#[test]
fn last_round_and_all() {
    let r = row(&[
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
    ]);
    let enc = encoder("chatml", "last_round", RenderOptions::default());
    assert_eq!(
        spans(&enc, &r),
        vec![
            s("<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n", 0.0),
            s("A2<|im_end|>", 1.0),
        ]
    );
    check_tokens(&enc, &r);
    let enc = encoder("chatml", "all", RenderOptions::default());
    let sp = spans(&enc, &r);
    assert_eq!(sp.len(), 1);
    assert_eq!(sp[0].1, 1.0);
    let e = enc.encode(&r).unwrap().unwrap();
    assert!(e.labels.iter().all(|&l| l >= 0));
}

fn tool_row() -> StandardRow {
    let mut call = Message::new("assistant", "");
    call.tool_calls = Some(vec![ToolCall {
        id: None,
        kind: "function".into(),
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
        },
    }]);
    StandardRow {
        messages: vec![
            Message::new("user", "Weather?"),
            call,
            Message::new("tool", "{\"temp\": 20}"),
            Message::new("assistant", "It is 20."),
        ],
        tools: Some(vec![
            json!({"name": "get_weather", "description": "Weather of a city",
                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}),
        ]),
        ..Default::default()
    }
}

#[test]
fn tools_in_hermes_format_with_hermes_loss_scale() {
    let r = tool_row();
    let enc = encoder("qwen2_5", "default", RenderOptions::default());
    let sys = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n\
You may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within \
<tools></tools> XML tags:\n<tools>\n{\"name\": \"get_weather\", \"description\": \"Weather of a city\", \"parameters\": \
{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}\n</tools>\n\nFor each function call, return \
a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": \
<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    assert_eq!(
        spans(&enc, &r),
        vec![
            s(&format!("{sys}<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"), 0.0),
            s(&format!("{call}<|im_end|>\n"), 1.0),
            s("<|im_start|>user\n<tool_response>\n{\"temp\": 20}\n</tool_response><|im_end|>\n<|im_start|>assistant\n", 0.0),
            s("It is 20.<|im_end|>", 1.0),
        ]
    );
    check_tokens(&enc, &r);
    let enc = encoder("qwen2_5", "hermes", RenderOptions::default());
    let sp = spans(&enc, &r);
    assert_eq!(sp[1], s(call, 2.0));
    assert_eq!(sp[2], s("<|im_end|>\n", 1.0));
    assert_eq!(sp[4], s("It is 20.<|im_end|>", 1.0));
    check_tokens(&enc, &r);
}

#[test]
fn tools_in_react_format_with_react_loss_scale() {
    let mut r = tool_row();
    r.messages[1].content = "Thought: I need the weather.".into();
    let enc = encoder("llama3", "react", RenderOptions::default());
    let sp = spans(&enc, &r);
    assert!(sp[0].0.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer the following questions"));
    assert!(sp[0].0.contains("get_weather: Call this tool"));
    assert_eq!(
        sp[1..].to_vec(),
        vec![
            s("Thought:", 1.0),
            s(" I need the weather.\n", 1.0),
            s("Action:", 2.0),
            s(" get_weather\n", 2.0),
            s("Action Input:", 2.0),
            s(" {\"city\": \"Paris\"}", 2.0),
            s("<|eot_id|>", 1.0),
            s("<|start_header_id|>tool<|end_header_id|>\n\nObservation: {\"temp\": 20}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", 0.0),
            s("It is 20.<|eot_id|>", 1.0),
        ]
        .into_iter()
        .fold(Vec::<(String, f32)>::new(), |mut acc, (t, w)| {
            // Neighbours with the same weight are joined before tokenizing.
            match acc.last_mut() {
                Some((lt, lw)) if *lw == w => lt.push_str(&t),
                _ => acc.push((t, w)),
            }
            acc
        })
    );
    check_tokens(&enc, &r);
}

#[test]
fn qwen3_empty_think_is_not_trained_and_history_thinking_is_dropped() {
    let enc = encoder("qwen3", "default", RenderOptions::default());
    let r = row(&[
        ("user", "Q1"),
        ("assistant", "<think>\nold\n</think>\n\nA1"),
        ("user", "Q2"),
        ("assistant", "A2"),
    ]);
    assert_eq!(
        spans(&enc, &r),
        vec![
            s(
                "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n",
                0.0
            ),
            s("A1<|im_end|>\n", 1.0),
            s(
                "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
                0.0
            ),
            s("A2<|im_end|>\n", 1.0),
        ]
    );
    check_tokens(&enc, &r);
    // Reasoning of the final answer is trained.
    let r = row(&[("user", "Q"), ("assistant", "<think>\nwhy\n</think>\n\nA")]);
    assert_eq!(
        spans(&enc, &r)[1],
        s("<think>\nwhy\n</think>\n\nA<|im_end|>\n", 1.0)
    );
    // Generation prompt: with thinking off it ends with the empty block.
    let r = row(&[("user", "Q"), ("assistant", "A")]);
    let on = encoder(
        "qwen3",
        "default",
        RenderOptions {
            generation_prompt: true,
            ..Default::default()
        },
    );
    assert_eq!(
        spans(&on, &r),
        vec![s(
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
            0.0
        )]
    );
    let off = encoder(
        "qwen3",
        "default",
        RenderOptions {
            generation_prompt: true,
            enable_thinking: Some(false),
            ..Default::default()
        },
    );
    assert_eq!(
        spans(&off, &r),
        vec![s(
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            0.0
        )]
    );
}

#[test]
fn bos_and_eos_placeholders() {
    let enc = encoder("llama", "default", RenderOptions::default());
    let r = row(&[
        ("system", "S"),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
    ]);
    assert_eq!(
        spans(&enc, &r),
        vec![
            s("<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST]", 0.0),
            s("A1</s><s>[INST] ", 1.0),
            s("Q2 [/INST]", 0.0),
            s("A2</s>", 1.0),
        ]
    );
    let enc = encoder("default", "default", RenderOptions::default());
    let r = row(&[("user", "Q"), ("assistant", "A")]);
    assert_eq!(
        spans(&enc, &r),
        vec![s("### Human:\nQ\n\n### Assistant:\n", 0.0), s("A</s>", 1.0)]
    );
}

#[test]
fn truncation_strategies() {
    let r = row(&[("user", "Hi"), ("assistant", "Hello")]);
    let full = encoder("chatml", "default", RenderOptions::default())
        .encode(&r)
        .unwrap()
        .unwrap();
    let mk = |t: Truncation| {
        let mut enc = encoder("chatml", "default", RenderOptions::default());
        enc.options.max_length = Some(10);
        enc.options.truncation = t;
        enc.encode(&r).unwrap()
    };
    assert_eq!(mk(Truncation::Delete), None);
    let left = mk(Truncation::Left).unwrap();
    assert_eq!(left.input_ids, full.input_ids[full.input_ids.len() - 10..]);
    assert_eq!(left.labels, full.labels[full.labels.len() - 10..]);
    let right = mk(Truncation::Right).unwrap();
    assert_eq!(right.input_ids, full.input_ids[..10]);
    assert_eq!(right.truncated, full.input_ids.len() - 10);
    assert!("middle"
        .parse::<Truncation>()
        .unwrap_err()
        .to_string()
        .contains("delete, left, right"));
}

#[test]
fn bad_conversations_say_which_message() {
    let enc = encoder("chatml", "default", RenderOptions::default());
    let err = enc
        .encode(&row(&[("user", "a"), ("user", "b"), ("assistant", "c")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("message 1") && err.contains("merge"), "{err}");
    let err = enc
        .encode(&row(&[("user", "a"), ("robot", "b")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown role `robot`"), "{err}");
    assert!(enc
        .encode(&StandardRow::default())
        .unwrap_err()
        .to_string()
        .contains("no messages"));
}

#[test]
fn rejected_answers_encode_with_the_same_prompt() {
    let enc = encoder("chatml", "default", RenderOptions::default());
    let mut r = row(&[("user", "Q"), ("assistant", "good")]);
    assert_eq!(enc.encode_rejected(&r).unwrap(), None);
    r.rejected_response = Some("bad".into());
    let chosen = enc.encode(&r).unwrap().unwrap();
    let rejected = enc.encode_rejected(&r).unwrap().unwrap();
    let prompt = chosen.labels.iter().position(|&l| l >= 0).unwrap();
    assert_eq!(chosen.input_ids[..prompt], rejected.input_ids[..prompt]);
    let trained: Vec<u32> = rejected
        .labels
        .iter()
        .filter(|&&l| l >= 0)
        .map(|&l| l as u32)
        .collect();
    assert_eq!(enc.tokenizer.decode(&trained).unwrap(), "bad<|im_end|>");
}
