//! The built-in chat templates, as declarative records registered through the plugin contract
//! (the same `register` path a third-party plugin uses).

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

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.template(chatml("chatml", "ChatML (<|im_start|>role ... <|im_end|>), no default system"))?;
    let mut qwen = chatml("qwen2_5", "Qwen2.5 chat: ChatML with Qwen's default system, hermes tools");
    qwen.aliases = vec!["qwen2".into()];
    qwen.default_system =
        Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into());
    qwen.tool_format = Some("hermes".into());
    r.template(qwen)?;
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);
