//! An out-of-tree-style plugin, written exactly as a third party would write one: it depends only
//! on `swift-plugin-tensors` (swift-plugin-api with the tensor side, the SDK and the `tch` it
//! re-exports), builds as a `cdylib`, and is never linked into the host. Tests build it and load it with `--plugin-dir`, which proves the
//! third-party path on every run.
//!
//! It registers a chat template, a dataset preprocessor, a model-family alias, a complete
//! GPT-2 style model family (`gpt2.rs`) that runs through the model interface, two tuners
//! (`example-attn-dora`: DoRA on the attention's query and value projections only, its slot
//! choice made here, its math the built-in `lora` tuner's; and `example-gain`, `gain.rs`, with
//! its own math on the tuner contract), a preference loss, a benchmark (`example-quiz`, data in
//! `data/`, scored by log-likelihood), an inference backend (`example-echo`, `echo.rs`: a toy
//! that chooses its own tokens), an optimizer (`example-sign-sgd`, `sign_sgd.rs`: signSGD
//! on the optimizer contract), and a quantizer (`example-int8`, `int8row.rs`: per-row int8 with
//! its own packing and forward, on the quantizer contract).

mod echo;
mod gain;
mod gpt2;
mod gpt2_vision;
mod int8row;
mod sign_sgd;

use serde_json::{Map, Value};
use swift_plugin_tensors::prelude::*;

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
    r.backend(echo::record(), echo::Echo)?;
    r.quant_method(int8row::record(), int8row::Int8Row)?;

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
    r.model_family(gpt2_vision::record(), gpt2_vision::Gpt2VisionFamily)?;
    r.tuner(
        TunerRecord::new(
            "example-attn-dora",
            "DoRA on the attention's query and value projections (the example plugin's tuner)",
        )
        .with_adapter("lora", [("use_dora", Value::Bool(true))]),
        AttentionQv,
    )?;
    r.adapter_tuner(gain::record(), gain::Gain)?;
    let mut apo = PreferenceLossRecord::new(
        "example-apo-zero",
        "APO-zero (the example plugin's preference loss): 1 − σ(β·chosen log-ratio) + σ(β·rejected log-ratio)",
    );
    apo.reference = true;
    r.preference_loss(apo, ApoZero)?;
    r.optimizer(sign_sgd::record(), sign_sgd::SignSgdKind)?;
    r.benchmark(BenchmarkRecord {
        name: "example-quiz".into(),
        aliases: vec![],
        description: "four general-knowledge questions (the example plugin's benchmark; the first is the few-shot pool)".into(),
        // A compiled plugin names its data by absolute path (here: where the crate was built).
        path: concat!(env!("CARGO_MANIFEST_DIR"), "/data/example-quiz.csv").into(),
        format: BenchmarkFormat::Mcq,
        scoring: BenchmarkScoring::Loglikelihood,
        prompt: BenchmarkPrompt::Plain,
        header: "Example quiz.\n\n".into(),
        few_shot: 1,
        holdout: 1,
        metrics: vec!["acc".into(), "acc_norm".into()],
    })?;
    plugin_info!("example plugin registered its template, preprocessor and model alias");
    Ok(())
}

/// A preference loss written outside swift-rs (TRL's `apo_zero`), to show that `swift rlhf
/// --loss_type NAME` uses a plugin's loss exactly as it uses the built-in ones.
struct ApoZero;

impl PreferenceLoss for ApoZero {
    fn loss(
        &self,
        x: &PreferenceInputs,
        params: &serde_json::Value,
    ) -> Result<PreferenceOutput, String> {
        let beta = params.get("beta").and_then(|b| b.as_f64()).unwrap_or(0.1);
        let e = |err: swift_plugin_tensors::tch::TchError| err.to_string();
        let (Some(rc), Some(rr)) = (&x.ref_chosen_logps, &x.ref_rejected_logps) else {
            return Err("apo_zero needs the reference log-probabilities".into());
        };
        let cr = x.chosen_logps.f_sub(rc).map_err(e)?;
        let rjr = x.rejected_logps.f_sub(rr).map_err(e)?;
        let losses = cr
            .f_mul_scalar(beta)
            .and_then(|t| t.f_sigmoid())
            .and_then(|t| t.f_neg())
            .and_then(|t| t.f_add_scalar(1.0))
            .and_then(|t| t.f_add(&rjr.f_mul_scalar(beta)?.f_sigmoid()?))
            .map_err(e)?;
        Ok(PreferenceOutput {
            loss: losses
                .f_mean(swift_plugin_tensors::tch::Kind::Float)
                .map_err(e)?,
            chosen_rewards: cr.f_mul_scalar(beta).map_err(e)?.f_detach().map_err(e)?,
            rejected_rewards: rjr.f_mul_scalar(beta).map_err(e)?.f_detach().map_err(e)?,
        })
    }
}

swift_plugin_tensors::export_plugin!(register);
