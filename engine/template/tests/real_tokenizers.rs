//! The Must-show comparisons on real files: the built-in `qwen3` and `llama3` templates and the
//! `jinja` engine against the Qwen3 and Llama-3 tokenizers' own chat templates, on every row of
//! the LLaMA-Factory demo sets. Skipped (with a message) when `make setup` has not fetched them.

mod common;

use swift_plugin_api::{Message, StandardRow};
use swift_template::jinja::JinjaTemplate;
use swift_template::{
    EncodeOptions, Encoder, RenderOptions, Template, Tokenizer, ToolFormat, IGNORE_INDEX,
};

fn encoder(template: Template, tok: &std::path::Path, generation_prompt: bool) -> Encoder {
    let tok = Tokenizer::from_file(tok).expect("tokenizer loads");
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt,
            ..Default::default()
        },
        ..Default::default()
    };
    Encoder::new(template, tok, options).expect("template binds")
}

/// Ids of the tokenizer's own chat_template, encoded as transformers does (whole string).
fn reference_ids(
    enc: &Encoder,
    j: &JinjaTemplate,
    msgs: &[Message],
    row: &StandardRow,
    gen: bool,
) -> Vec<u32> {
    let text = j
        .render(msgs, row.tools.as_deref(), gen, None, &enc.tokenizer)
        .expect("chat_template renders");
    enc.tokenizer.encode(&text).expect("encodes")
}

#[test]
fn qwen3_builtin_and_jinja_match_the_chat_template_on_whole_conversations() {
    let (tok, sets) = (common::tokenizer("qwen3"), common::must_show_rows());
    let builtin = encoder(
        Template::from_record(&common::record("qwen3")).unwrap(),
        &tok,
        false,
    );
    let jinja = encoder(
        Template::from_record(&common::record("jinja")).unwrap(),
        &tok,
        false,
    );
    let mut jinja_off = encoder(
        Template::from_record(&common::record("jinja")).unwrap(),
        &tok,
        false,
    );
    jinja_off.options.render.enable_thinking = Some(false);
    let source = builtin
        .tokenizer
        .chat_template
        .clone()
        .expect("qwen3 has a chat_template");
    let j = JinjaTemplate::new(&source).unwrap();
    let think = builtin.tokenizer.encode("<think>\n\n</think>\n\n").unwrap();
    let mut total = 0;
    for (name, rows) in sets {
        assert!(!rows.is_empty(), "{name}");
        for (i, row) in rows.iter().enumerate() {
            let want = reference_ids(&builtin, &j, &row.messages, row, false);
            let got = builtin.encode(row).unwrap().expect("no truncation");
            assert_eq!(
                got.input_ids, want,
                "{name} row {i}: built-in qwen3 differs from the chat_template"
            );
            let got_j = jinja.encode(row).unwrap().unwrap();
            assert_eq!(
                got_j.input_ids, want,
                "{name} row {i}: jinja differs from the chat_template"
            );
            assert_eq!(
                got_j.labels, got.labels,
                "{name} row {i}: jinja labels differ from qwen3's"
            );
            assert_eq!(got_j.loss_scale, got.loss_scale, "{name} row {i}");
            // With thinking off the whole conversation renders the same; labels still line up.
            let got_off = jinja_off.encode(row).unwrap().unwrap();
            assert_eq!(
                got_off.input_ids, want,
                "{name} row {i}: jinja (thinking off)"
            );
            assert_eq!(
                got_off.labels, got.labels,
                "{name} row {i}: jinja (thinking off)"
            );
            // The empty think block before the final answer is there and not trained.
            let pos = want
                .windows(think.len())
                .rposition(|w| w == think.as_slice())
                .expect("empty think block");
            assert!(
                got.labels[pos..pos + think.len()]
                    .iter()
                    .all(|&l| l == IGNORE_INDEX),
                "{name} row {i}"
            );
            // The final answer is trained through <|im_end|>.
            let last_answer = &row.messages.last().unwrap().content;
            let trained: Vec<u32> = got.labels[pos..]
                .iter()
                .filter(|&&l| l >= 0)
                .map(|&l| l as u32)
                .collect();
            let text = builtin.tokenizer.decode(&trained).unwrap();
            assert_eq!(text, format!("{last_answer}<|im_end|>\n"), "{name} row {i}");
            total += 1;
        }
    }
    println!("qwen3: {total} whole conversations match the chat_template (built-in and jinja)");
    assert_eq!(total, 999 + 300 + 186);
}

/// The row as plain text messages, tools written in react form, as the Llama-3.0 template (which
/// has no tool support) then renders them.
fn react_text_messages(row: &StandardRow) -> Vec<Message> {
    let mut out = Vec::new();
    let mut msgs = row.messages.clone();
    let mut system = None;
    if msgs.first().is_some_and(|m| m.role == "system") {
        system = Some(msgs.remove(0).content);
    }
    if let Some(tools) = row.tools.as_ref().filter(|t| !t.is_empty()) {
        system = Some(ToolFormat::React.system_text(system.as_deref(), tools));
    }
    if let Some(s) = system {
        out.push(Message::new("system", s));
    }
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
fn llama3_builtin_and_jinja_match_the_chat_template_on_generation_prompts() {
    let (tok, sets) = (common::tokenizer("llama3"), common::must_show_rows());
    let builtin = encoder(
        Template::from_record(&common::record("llama3")).unwrap(),
        &tok,
        true,
    );
    let jinja = encoder(
        Template::from_record(&common::record("jinja")).unwrap(),
        &tok,
        true,
    );
    let source = builtin
        .tokenizer
        .chat_template
        .clone()
        .expect("llama3 has a chat_template");
    let j = JinjaTemplate::new(&source).unwrap();
    let mut total = 0;
    for (name, rows) in sets {
        for (i, row) in rows.iter().enumerate() {
            let mut prompt = react_text_messages(row);
            assert_eq!(prompt.pop().map(|m| m.role), Some("assistant".to_string()));
            let want = reference_ids(&builtin, &j, &prompt, row, true);
            let got = builtin.encode(row).unwrap().unwrap();
            assert_eq!(
                got.input_ids, want,
                "{name} row {i}: built-in llama3 differs from the chat_template"
            );
            // jinja on the same plain-text prompt.
            let plain = StandardRow {
                messages: prompt.clone(),
                ..Default::default()
            };
            let got_j = jinja.encode(&plain).unwrap().unwrap();
            assert_eq!(
                got_j.input_ids, want,
                "{name} row {i}: jinja differs from the chat_template"
            );
            assert_eq!(
                got_j.labels, got.labels,
                "{name} row {i}: jinja labels differ from llama3's"
            );
            total += 1;
        }
    }
    println!("llama3: {total} generation prompts match the chat_template (built-in and jinja)");
    assert_eq!(total, 999 + 300 + 186);
}

#[test]
fn jinja_labels_cover_every_assistant_turn_of_whole_llama3_conversations() {
    let (tok, sets) = (common::tokenizer("llama3"), common::must_show_rows());
    let jinja = encoder(
        Template::from_record(&common::record("jinja")).unwrap(),
        &tok,
        false,
    );
    for (name, rows) in sets {
        for (i, row) in rows.iter().enumerate() {
            let plain = StandardRow {
                messages: react_text_messages(row),
                ..Default::default()
            };
            let got = jinja.encode(&plain).unwrap().unwrap();
            // Trained text = every assistant content (trimmed, as the template does) + <|eot_id|>.
            let want: String = plain
                .messages
                .iter()
                .filter(|m| m.role == "assistant")
                .map(|m| format!("{}<|eot_id|>", m.content.trim()))
                .collect();
            let trained: Vec<u32> = got
                .labels
                .iter()
                .filter(|&&l| l >= 0)
                .map(|&l| l as u32)
                .collect();
            assert_eq!(
                jinja.tokenizer.decode(&trained).unwrap(),
                want,
                "{name} row {i}"
            );
        }
    }
}

#[test]
fn builtin_templates_need_no_chat_template() {
    let tok = common::tokenizer("qwen3");
    let dir = std::env::temp_dir().join(format!("swift-template-nochat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&tok, dir.join("tokenizer.json")).unwrap();
    let bare = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert!(bare.chat_template.is_none());
    let row = StandardRow {
        messages: vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
        ],
        ..Default::default()
    };
    let enc = Encoder::new(
        Template::from_record(&common::record("qwen3")).unwrap(),
        bare,
        EncodeOptions::default(),
    )
    .unwrap();
    let got = enc.encode(&row).unwrap().unwrap();
    assert_eq!(
        enc.tokenizer.decode(&got.input_ids).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n"
    );
    let bare = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let err = Encoder::new(
        Template::from_record(&common::record("jinja")).unwrap(),
        bare,
        EncodeOptions::default(),
    )
    .err()
    .expect("jinja needs a chat_template");
    assert!(err.to_string().contains("--template"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn digest(ids: &[u32]) -> String {
    use sha2::{Digest, Sha256};
    let text: Vec<String> = ids.iter().map(u32::to_string).collect();
    Sha256::digest(text.join(",").as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The same comparisons against ids that transformers (Jinja2) produced, recorded by
/// tests/encode_reference.py: this also proves minijinja renders the templates as Jinja2 does.
#[test]
fn builtin_templates_match_ids_recorded_with_transformers() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encode_reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("fixture present"))
            .expect("json");
    let sets = common::must_show_rows();
    for (tok_name, template, gen) in [("qwen3", "qwen3", false), ("llama3", "llama3", true)] {
        let tok = common::tokenizer(tok_name);
        let builtin = encoder(
            Template::from_record(&common::record(template)).unwrap(),
            &tok,
            gen,
        );
        let jinja = encoder(
            Template::from_record(&common::record("jinja")).unwrap(),
            &tok,
            gen,
        );
        for ((name, rows), key) in sets.iter().zip([
            "alpaca-en-demo",
            "glaive-toolcall-en-demo",
            "dpo-en-demo-multi",
        ]) {
            let want = &reference[format!("{tok_name}/{key}")]["sha"];
            let want = want.as_array().expect("recorded hashes");
            assert_eq!(want.len(), rows.len(), "{tok_name} {name}");
            for (i, (row, want)) in rows.iter().zip(want).enumerate() {
                let got = builtin.encode(row).unwrap().unwrap();
                assert_eq!(
                    digest(&got.input_ids),
                    want.as_str().unwrap(),
                    "{tok_name} {name} row {i} (built-in)"
                );
                let jrow = if tok_name == "llama3" {
                    StandardRow {
                        messages: react_text_messages(row),
                        ..Default::default()
                    }
                } else {
                    row.clone()
                };
                let got = jinja.encode(&jrow).unwrap().unwrap();
                assert_eq!(
                    digest(&got.input_ids),
                    want.as_str().unwrap(),
                    "{tok_name} {name} row {i} (jinja)"
                );
            }
        }
    }
}

/// A chat template from llama.cpp's collection inside the llama-cpp-python sdist that
/// `make setup` downloads (read with `tar`).
fn llama_cpp_template(name: &str) -> String {
    let sdist = common::asset("downloads/llama_cpp_python-0.3.36.tar.gz");
    let member = format!("llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/{name}.jinja");
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&sdist)
        .arg(&member)
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "cannot read {member} from {}: {}",
        sdist.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the template is UTF-8")
}

/// Generation prompts of the built-in `template` against a real model's chat template:
/// same text and same ids.
fn compare_generation_prompts(
    template: &str,
    chat_template: &str,
    tok: &std::path::Path,
    with_tools: bool,
) -> usize {
    let enc = encoder(
        Template::from_record(&common::record(template)).unwrap(),
        tok,
        true,
    );
    let j = JinjaTemplate::new(chat_template).unwrap();
    let mut n = 0;
    for (name, rows) in common::must_show_rows() {
        for (i, row) in rows.iter().enumerate() {
            if row.tools.is_some() && !with_tools {
                continue;
            }
            let mut prompt = row.messages.clone();
            prompt.pop();
            let want = j
                .render(&prompt, row.tools.as_deref(), true, None, &enc.tokenizer)
                .unwrap();
            let got: String = enc
                .spans(row)
                .unwrap()
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            assert_eq!(got, want, "{template} {name} row {i}");
            let ids = enc.encode(row).unwrap().unwrap().input_ids;
            assert_eq!(
                ids,
                enc.tokenizer.encode(&want).unwrap(),
                "{template} {name} row {i}"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn qwen2_5_matches_qwen2_5_instruct_template_with_tools() {
    let (tok, source) = (
        common::tokenizer("qwen3"),
        llama_cpp_template("Qwen-Qwen2.5-7B-Instruct"),
    );
    let n = compare_generation_prompts("qwen2_5", &source, &tok, true);
    println!("qwen2_5: {n} generation prompts match Qwen2.5-7B-Instruct's template");
    assert_eq!(n, 999 + 300 + 186);
}

#[test]
fn llama3_2_matches_llama_3_2_instruct_template() {
    let (tok, source) = (
        common::tokenizer("llama3"),
        llama_cpp_template("meta-llama-Llama-3.2-3B-Instruct"),
    );
    // Llama-3.2's own tool format is not react; rows with tools are left out.
    let n = compare_generation_prompts("llama3_2", &source, &tok, false);
    println!("llama3_2: {n} generation prompts match Llama-3.2-3B-Instruct's template");
    assert_eq!(n, 999 + 186);
}
