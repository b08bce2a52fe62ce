//! An out-of-tree-style plugin, written exactly as a third party would write one: it depends only
//! on `swift-plugin-api` (and `tch` for its model family), builds as a `cdylib`, and is never
//! linked into the host. Tests build it and load it with `--plugin-dir`, which proves the
//! third-party path on every run.
//!
//! It registers a chat template, a dataset preprocessor, a model-family alias, a complete
//! GPT-2 style model family (`gpt2.rs`) that runs through the model interface, and a tuner
//! (`example-attn-dora`: DoRA on the attention's query and value projections only, its slot
//! choice made here, its tensors held by the host's `lora` adapter like the built-in tuners').

mod gpt2;

use serde_json::{Map, Value};
use swift_plugin_api::prelude::*;

/// Rows shaped like `{"q": ..., "a": ...}` (a made-up FAQ export format).
struct FaqPreprocessor;

impl DatasetPreprocessor for FaqPreprocessor {
    fn preprocess(&self, row: Map<String, Value>) -> Result<PreprocessOutcome, String> {
        let get = |k: &str| {
            row.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("example-faq rows need a string `{k}` column"))
        };
        let messages = vec![
            Message::new("user", get("q")?),
            Message::new("assistant", get("a")?),
        ];
        Ok(PreprocessOutcome::Row(StandardRow {
            messages,
            ..Default::default()
        }))
    }
}

/// Picks the query and value projections of every attention block (`…q_proj`, `…v_proj`, or
/// GPT-2's fused `…c_attn`), whatever `--target_modules` says.
struct AttentionQv;

impl Tuner for AttentionQv {
    fn targets(&self, _args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        let picked: Vec<String> = slots
            .iter()
            .filter(|s| s.ends_with(".q_proj") || s.ends_with(".v_proj") || s.ends_with(".c_attn"))
            .cloned()
            .collect();
        if picked.is_empty() {
            return Err(
                "example-attn-dora found no q_proj/v_proj/c_attn slot in this model".into(),
            );
        }
        Ok(picked)
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    let mut t = TemplateRecord::new(
        "example-chat",
        "<|user|>\n{{QUERY}}<|end|>\n<|assistant|>\n",
    );
    t.description = "the example plugin's chat format".into();
    t.system_prefix = Some("<|system|>\n{{SYSTEM}}<|end|>\n".into());
    t.chat_sep = Some("<|end|>\n".into());
    t.suffix = "<|end|>".into();
    t.stop_words = vec!["<|end|>".into()];
    r.template(t)?;

    r.preprocessor(
        PreprocessorRecord {
            name: "example-faq".into(),
            aliases: vec![],
            description: "q/a FAQ rows".into(),
            detect_columns: vec!["q".into(), "a".into()],
            priority: 0,
        },
        FaqPreprocessor,
    )?;

    r.model_family_alias(ModelFamilyRecord {
        name: "example-smollm".into(),
        aliases: vec![],
        description: "SmolLM checkpoints run by the llama family with the example template".into(),
        architectures: vec![],
        model_types: vec!["example-smollm".into()],
        default_template: Some("example-chat".into()),
        alias_of: Some("llama".into()),
    })?;
    r.model_family(gpt2::record(), gpt2::Gpt2Family)?;
    r.tuner(
        TunerRecord::new(
            "example-attn-dora",
            "DoRA on the attention's query and value projections (the example plugin's tuner)",
        )
        .with_adapter("lora", [("use_dora", Value::Bool(true))]),
        AttentionQv,
    )?;
    plugin_info!("example plugin registered its template, preprocessor and model alias");
    Ok(())
}

swift_plugin_api::export_plugin!(register);
