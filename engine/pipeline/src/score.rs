//! `swift infer` with a reward model: it scores conversations instead of generating.
//!
//! A reward model is recognised from its files, so checkpoints made by peft work too:
//! `--adapters CKPT` whose `adapter_config.json` keeps `score` in `modules_to_save` (what
//! `swift rlhf --rlhf_type rm` writes with LoRA), or `--model DIR` whose config.json names a
//! `*ForSequenceClassification` architecture with one label and holds `score.weight` (full
//! training). The score is the value head on the last token of the conversation rendered by
//! the training template, answer included (`swift rlhf`'s encoding).
//!
//! * `--val_dataset SPEC --result_path FILE`: one JSON line per row. Preference rows (chosen and
//!   rejected answers) give `chosen_score`, `rejected_score` and `chosen_better`; other rows
//!   give the `score` of their final assistant answer. The summary (pairs, accuracy, mean
//!   margin) is logged.
//! * Interactive: a prompt, then an answer, and the answer's score is printed.
//! * `--debug_input_ids 1,2,3;4,5` (hidden, for the tests): the scores of raw token sequences,
//!   scored together in one padded batch.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use swift_data::{open_datasets, DatasetOptions};
use swift_model::weights::{checkpoint_files, Checkpoint};
use swift_model::LoadedModel;
use swift_plugin_tensors::{Message, StandardRow};
use swift_registry::Registries;
use swift_template::{EncodeOptions, Encoder, RenderOptions, Template, Truncation};
use swift_train::reward::{is_reward_config, num_labels, PEFT_SCORE_WEIGHT, SCORE_WEIGHT};
use swift_train::ValueHead;

use swift_spec::InferSpec;

use crate::bundle::ModelBundle;

/// The value head of the loaded model or of one of `adapters`, or `None` for a language model.
pub fn find_head(bundle: &ModelBundle, adapters: &[PathBuf]) -> Result<Option<ValueHead>> {
    let model = &bundle.model;
    let hidden = ValueHead::hidden_size(model)?;
    let mut found: Vec<(PathBuf, ValueHead)> = Vec::new();
    for dir in adapters {
        let cfg: Value = std::fs::read_to_string(dir.join("adapter_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let keeps_score = cfg["modules_to_save"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "score"));
        if !keeps_score {
            continue;
        }
        let file = dir.join("adapter_model.safetensors");
        let ckpt = Checkpoint::open(std::slice::from_ref(&file))?;
        if !ckpt.contains(PEFT_SCORE_WEIGHT) {
            bail!(
                "{}: modules_to_save names `score`, but the file has no `{PEFT_SCORE_WEIGHT}`",
                file.display()
            );
        }
        let head = ValueHead::read(
            &ckpt,
            PEFT_SCORE_WEIGHT,
            hidden,
            model.kind(),
            model.device(),
        )
        .with_context(|| format!("the value head of {}", dir.display()))?;
        found.push((dir.clone(), head));
    }
    if found.len() > 1 {
        bail!(
            "more than one adapter carries a value head ({}); pass one reward model",
            found
                .iter()
                .map(|(d, _)| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some((_, head)) = found.pop() {
        return Ok(Some(head));
    }
    if !is_reward_config(&bundle.config) {
        return Ok(None);
    }
    let labels = num_labels(&bundle.config);
    if labels != 1 {
        bail!(
            "{} is a sequence classifier with {labels} labels: swift infer scores reward models (one label)",
            bundle.dir.display()
        );
    }
    let ckpt = Checkpoint::open(&checkpoint_files(&bundle.dir)?)?;
    if !ckpt.contains(SCORE_WEIGHT) {
        bail!(
            "{} says it is a sequence classifier but holds no `{SCORE_WEIGHT}`",
            bundle.dir.display()
        );
    }
    Ok(Some(ValueHead::read(
        &ckpt,
        SCORE_WEIGHT,
        hidden,
        model.kind(),
        model.device(),
    )?))
}

/// Scoring what `swift infer` was asked, with the value head instead of generation.
pub fn run(
    args: &InferSpec,
    bundle: ModelBundle,
    template: Template,
    head: ValueHead,
    regs: &Registries,
) -> Result<()> {
    tracing::info!("reward model: scoring instead of generating");
    if let Some(ids) = &args.debug_input_ids {
        return debug_scores(&bundle.model, &head, ids);
    }
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: false,
            system: args.template.system.clone(),
            enable_thinking: args.template.enable_thinking,
        },
        max_length: args.max_length,
        truncation: Truncation::Left,
        ..Default::default()
    };
    let scorer = Scorer {
        model: &bundle.model,
        head: &head,
        encoder: Encoder::new(template, bundle.tokenizer, options)?,
        batch: args.max_batch_size,
    };
    if args.val_dataset.is_empty() {
        if args.result_path.is_some() {
            bail!("--result_path needs --val_dataset (without a dataset, swift infer scores what you type)");
        }
        return interactive(&scorer);
    }
    let Some(out) = &args.result_path else {
        bail!("--val_dataset needs --result_path FILE (one JSON line of scores per row is written there)");
    };
    score_dataset(&scorer, regs, &args.val_dataset, out)
}

struct Scorer<'a> {
    model: &'a LoadedModel,
    head: &'a ValueHead,
    encoder: Encoder,
    batch: usize,
}

impl Scorer<'_> {
    fn ids(e: Option<swift_template::Encoded>) -> Result<Vec<i64>> {
        let e = e.ok_or_else(|| anyhow!("the conversation could not be encoded"))?;
        Ok(e.input_ids.iter().map(|&i| i64::from(i)).collect())
    }

    fn score(&self, seqs: &[Vec<i64>]) -> Result<Vec<f64>> {
        Ok(self.head.score_ids(self.model, seqs, self.batch)?)
    }
}

/// One row to score: the prompt, the answers, and their token sequences.
struct Pending {
    prompt: Vec<Message>,
    chosen: String,
    rejected: Option<String>,
    seqs: Vec<Vec<i64>>,
}

fn score_dataset(scorer: &Scorer, regs: &Registries, specs: &[String], out: &Path) -> Result<()> {
    let dataset = open_datasets(specs, regs, &DatasetOptions::default())?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::new(file);
    let (mut rows, mut pairs, mut wins, mut margin) = (0usize, 0usize, 0usize, 0.0f64);
    let mut pending: Vec<Pending> = Vec::new();
    let mut flush = |pending: &mut Vec<Pending>, w: &mut BufWriter<std::fs::File>| -> Result<()> {
        let seqs: Vec<Vec<i64>> = pending.iter().flat_map(|p| p.seqs.clone()).collect();
        let mut scores = scorer.score(&seqs)?.into_iter();
        for p in pending.drain(..) {
            let first = scores.next().unwrap_or(f64::NAN);
            let line = match p.rejected {
                Some(rejected) => {
                    let second = scores.next().unwrap_or(f64::NAN);
                    pairs += 1;
                    wins += usize::from(first > second);
                    margin += first - second;
                    json!({
                        "messages": p.prompt,
                        "chosen": p.chosen,
                        "rejected": rejected,
                        "chosen_score": first,
                        "rejected_score": second,
                        "chosen_better": first > second,
                    })
                }
                None => json!({"messages": p.prompt, "response": p.chosen, "score": first}),
            };
            rows += 1;
            serde_json::to_writer(&mut *w, &line)?;
            writeln!(w)?;
        }
        w.flush()?;
        Ok(())
    };
    for item in dataset {
        let item = item?;
        let at = || format!("row at {}:{}", item.file.display(), item.line);
        let row = &item.row;
        let Some(answer) = row.messages.last().filter(|m| m.role == "assistant") else {
            bail!(
                "{}: a reward model scores answers, and this row does not end with an assistant answer",
                at()
            );
        };
        let prompt = row.messages[..row.messages.len() - 1].to_vec();
        let mut seqs =
            vec![Scorer::ids(scorer.encoder.encode(row).with_context(at)?).with_context(at)?];
        let rejected = match (&row.rejected_messages, &row.rejected_response) {
            (None, None) => None,
            (m, r) => {
                seqs.push(
                    Scorer::ids(scorer.encoder.encode_rejected(row).with_context(at)?)
                        .with_context(at)?,
                );
                Some(match (m, r) {
                    (Some(m), _) => m.last().map(|x| x.content.clone()).unwrap_or_default(),
                    (None, Some(r)) => r.clone(),
                    (None, None) => String::new(),
                })
            }
        };
        pending.push(Pending {
            prompt,
            chosen: answer.content.clone(),
            rejected,
            seqs,
        });
        if pending.len() * 2 >= scorer.batch {
            flush(&mut pending, &mut w)?;
        }
    }
    flush(&mut pending, &mut w)?;
    let summary = json!({
        "rows": rows,
        "pairs": pairs,
        "accuracy": if pairs > 0 { json!(wins as f64 / pairs as f64) } else { Value::Null },
        "mean_margin": if pairs > 0 { json!(margin / pairs as f64) } else { Value::Null },
    });
    tracing::info!(
        "scored {rows} rows; results in {}; {summary}",
        out.display()
    );
    Ok(())
}

fn interactive(scorer: &Scorer) -> Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("score answers with the reward model: type a prompt, then an answer; /exit (or end of input) leaves");
    let mut lines = stdin.lock().lines();
    loop {
        write!(stdout, "prompt> ")?;
        stdout.flush()?;
        let Some(prompt) = lines.next() else { break };
        let prompt = prompt?;
        match prompt.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            _ => {}
        }
        write!(stdout, "answer> ")?;
        stdout.flush()?;
        let Some(answer) = lines.next() else { break };
        let row = StandardRow {
            messages: vec![
                Message::new("user", prompt.trim()),
                Message::new("assistant", answer?.trim()),
            ],
            ..Default::default()
        };
        let ids = Scorer::ids(scorer.encoder.encode(&row)?)?;
        let score = scorer.score(&[ids])?;
        writeln!(
            stdout,
            "score: {:.6}",
            score.first().copied().unwrap_or(f64::NAN)
        )?;
    }
    Ok(())
}

/// `--debug_input_ids 1,2,3;4,5`: the scores of raw sequences (one padded batch), as JSON.
fn debug_scores(model: &LoadedModel, head: &ValueHead, ids: &str) -> Result<()> {
    let seqs: Vec<Vec<i64>> = ids
        .split(';')
        .map(|seq| {
            seq.split(',')
                .map(|s| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|e| anyhow!("--debug_input_ids: `{s}`: {e}"))
                })
                .collect::<Result<Vec<i64>>>()
        })
        .collect::<Result<_>>()?;
    let scores = head.score_ids(model, &seqs, seqs.len())?;
    println!("{}", json!({ "scores": scores }));
    Ok(())
}
