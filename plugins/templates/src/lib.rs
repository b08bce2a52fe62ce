//! The built-in chat templates, as declarative records registered through the plugin contract
//! (the same `register` path a third-party plugin uses). Behaviour that is not declarative
//! (Qwen3 thinking blocks, tool formats, rendering a tokenizer's own chat_template) is selected
//! by `tool_format` and `options`, which the template engine (`swift-template`) documents.
//!
//! Every template here is written from the model family's documented format, independently of
//! any tokenizer's chat_template; the tests in `tests/encode_*.rs` check them against the real
//! tokenizers' templates.

use serde_json::json;
use swift_plugin_api::prelude::*;

const CHATML_SYSTEM: &str = "<|im_start|>system\n{{SYSTEM}}<|im_end|>\n";
const CHATML_PROMPT: &str = "<|im_start|>user\n{{QUERY}}<|im_end|>\n<|im_start|>assistant\n";

fn chatml(name: &str, description: &str) -> TemplateRecord {
    let mut t = TemplateRecord::new(name, CHATML_PROMPT);
    t.description = description.into();
    t.system_prefix = Some(CHATML_SYSTEM.into());
    t.chat_sep = Some("<|im_end|>\n".into());
    t.suffix = "<|im_end|>".into();
    t.stop_words = vec!["<|im_end|>".into()];
    t
}

const LLAMA3_SYSTEM: &str = "<|start_header_id|>system<|end_header_id|>\n\n{{SYSTEM}}<|eot_id|>";
const LLAMA3_PROMPT: &str =
    "<|start_header_id|>user<|end_header_id|>\n\n{{QUERY}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
const LLAMA3_TOOL: &str =
    "<|start_header_id|>tool<|end_header_id|>\n\n{{QUERY}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

fn llama3(name: &str, description: &str) -> TemplateRecord {
    let mut t = TemplateRecord::new(name, LLAMA3_PROMPT);
    t.description = description.into();
    t.prefix = "<|begin_of_text|>".into();
    t.system_prefix = Some(format!("<|begin_of_text|>{LLAMA3_SYSTEM}"));
    t.chat_sep = Some("<|eot_id|>".into());
    t.suffix = "<|eot_id|>".into();
    t.stop_words = vec!["<|eot_id|>".into()];
    t.options.insert("tool_prompt".into(), json!(LLAMA3_TOOL));
    // Llama-3 templates `trim` every message.
    t.options.insert("strip_content".into(), json!(true));
    t
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.template(chatml(
        "chatml",
        "ChatML (<|im_start|>role ... <|im_end|>), no default system",
    ))?;

    let mut qwen = chatml(
        "qwen2_5",
        "Qwen2.5 chat: ChatML with Qwen's default system, hermes tools",
    );
    qwen.aliases = vec!["qwen2".into()];
    qwen.default_system =
        Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into());
    qwen.tool_format = Some("hermes".into());
    r.template(qwen)?;

    let mut qwen3 = chatml(
        "qwen3",
        "Qwen3: ChatML, hermes tools, <think> blocks (empty one before the final answer, not trained); \
         option enable_thinking",
    );
    qwen3.tool_format = Some("hermes".into());
    // Qwen3's template ends every turn, the last one included, with "<|im_end|>\n".
    qwen3.suffix = "<|im_end|>\n".into();
    qwen3.options.insert("thinking".into(), json!("qwen3"));
    let mut nothink = qwen3.clone();
    nothink.name = "qwen3_nothinking".into();
    nothink.description =
        "Qwen3 with thinking off: the generation prompt ends with an empty think block".into();
    nothink
        .options
        .insert("enable_thinking".into(), json!(false));
    r.template(qwen3)?;
    r.template(nothink)?;

    r.template(llama3(
        "llama3",
        "Llama-3 / 3.1 instruct (<|start_header_id|>role<|end_header_id|>), react tools",
    ))?;

    let mut l32 = llama3(
        "llama3_2",
        "Llama-3.2 instruct: Llama-3 with the knowledge-cutoff/today system preamble",
    );
    l32.options.insert(
        "system_preamble".into(),
        json!("Cutting Knowledge Date: December 2023\nToday Date: {{DATE}}"),
    );
    // Llama-3.1+ answer tool results in the `ipython` role.
    l32.options.insert(
        "tool_prompt".into(),
        json!(LLAMA3_TOOL.replace("<|start_header_id|>tool<", "<|start_header_id|>ipython<")),
    );
    r.template(l32)?;

    let mut llama = TemplateRecord::new("llama", "{{QUERY}} [/INST]");
    llama.description = "Llama-2 / Mistral instruct ([INST] ... [/INST])".into();
    llama.aliases = vec!["llama2".into(), "mistral".into()];
    llama.prefix = "{{BOS}}[INST] ".into();
    llama.system_prefix = Some("{{BOS}}[INST] <<SYS>>\n{{SYSTEM}}\n<</SYS>>\n\n".into());
    llama.chat_sep = Some("{{EOS}}{{BOS}}[INST] ".into());
    llama.suffix = "{{EOS}}".into();
    r.template(llama)?;

    let mut default = TemplateRecord::new("default", "### Human:\n{{QUERY}}\n\n### Assistant:\n");
    default.description = "Plain-text template for models without a chat format".into();
    default.system_prefix = Some("{{SYSTEM}}\n\n".into());
    default.chat_sep = Some("\n\n".into());
    default.suffix = "{{EOS}}".into();
    r.template(default)?;

    // ms-swift's `llava1_5_hf` (swift/template/templates/llava.py): an image is `<image>\n`.
    let mut llava = TemplateRecord::new("llava1_5_hf", "USER: {{QUERY}}\nASSISTANT:");
    llava.description = "LLaVA-1.5 (llava-hf): USER: ... ASSISTANT:, images as <image>".into();
    llava.prefix = "{{BOS}}".into();
    llava.system_prefix = Some("{{BOS}}{{SYSTEM}}\n".into());
    llava.chat_sep = Some("{{EOS}}".into());
    llava.suffix = "{{EOS}}".into();
    llava.options.insert("image".into(), json!("<image>\n"));
    r.template(llava)?;

    // ms-swift's `qwen2_vl` (QwenTemplateMeta: ChatML, Qwen's short default system, hermes
    // tools); an image is `<|vision_start|><|image_pad|><|vision_end|>`.
    let mut qwen2_vl = chatml(
        "qwen2_vl",
        "Qwen2-VL: ChatML with Qwen's default system, hermes tools, images as <|image_pad|>",
    );
    qwen2_vl.default_system = Some("You are a helpful assistant.".into());
    qwen2_vl.tool_format = Some("hermes".into());
    qwen2_vl.stop_words = vec!["<|im_end|>".into(), "<|endoftext|>".into()];
    // Its grounding tokens (ms-swift's Qwen2VLTemplate replace_ref / replace_bbox), boxes on
    // the 0–1000 grid.
    for (k, v) in [
        ("image", "<|vision_start|><|image_pad|><|vision_end|>"),
        ("ref_format", "<|object_ref_start|>{ref}<|object_ref_end|>"),
        ("bbox_format", "<|box_start|>{points}<|box_end|>"),
        ("norm_bbox", "norm1000"),
    ] {
        qwen2_vl.options.insert(k.into(), json!(v));
    }
    r.template(qwen2_vl)?;

    let mut jinja = TemplateRecord::new("jinja", "{{QUERY}}");
    jinja.description =
        "The tokenizer's own chat_template (tokenizer_config.json), rendered with minijinja; labels on assistant turns"
            .into();
    jinja.options.insert("engine".into(), json!("jinja"));
    r.template(jinja)?;
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);
