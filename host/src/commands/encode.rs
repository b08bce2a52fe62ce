//! `swift encode`: encodes dataset rows with a template and prints them, for people debugging a
//! template or a dataset (`--show`: the rendered text with trained spans marked as
//! `[[text]]{loss_scale}`) or for scripts (`--json`: one line per row with `input_ids`, `labels`,
//! `loss_scale`).
//!
//! The tokenizer comes from `--model DIR` (its tokenizer.json and tokenizer_config.json) or
//! `--tokenizer FILE`; the template from `--template NAME`, else the tokenizer's own
//! chat_template (the `jinja` template).
//!
//! Rows with images are refused, naming their file and line: expanding an `<image>`
//! placeholder needs the model's vision tower (how many positions an image takes), which only
//! the tensor engine loads.

use std::io::{BufWriter, Write};

use anyhow::{bail, Context, Result};
use swift_data::{open_datasets, DatasetOptions};
use swift_template::{EncodeOptions, Encoder, LossScale, RenderOptions, Template, Tokenizer};

use swift_spec::EncodeSpec;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let args: &EncodeSpec = &ctx.spec()?;
    if args.model.is_some() && args.tokenizer.is_some() {
        bail!("--model does not apply with --tokenizer: pass --model DIR or --tokenizer FILE, not both");
    }
    let tokenizer = match (&args.model, &args.tokenizer) {
        (_, Some(file)) => Tokenizer::from_file(file)?,
        (Some(dir), None) => Tokenizer::from_dir(dir)?,
        (None, None) => {
            bail!("pass --model DIR (a model folder with tokenizer.json) or --tokenizer FILE")
        }
    };
    if args.data.dataset.is_empty() {
        bail!("pass --dataset SPEC (a file or a registered dataset name, optionally NAME#N; `swift list datasets`)");
    }
    let report = ctx.settings.plugins().load()?;
    let regs = &report.registries;
    let template_name = match &args.template.template {
        Some(t) => t.clone(),
        None if tokenizer.chat_template.is_some() => "jinja".to_string(),
        None => bail!(
            "{} has no chat_template; pass --template NAME (`swift list templates`)",
            tokenizer.path.display()
        ),
    };
    let record = &regs.templates.resolve(&template_name)?.record;
    let template = Template::from_record(record)?;
    let loss_scale = LossScale::parse(args.encoding.loss_scale.as_deref().unwrap_or("default"))?;
    let truncation = args.encoding.truncation_strategy.parse()?;
    let options = EncodeOptions {
        render: RenderOptions {
            generation_prompt: args.generation_prompt,
            system: args.template.system.clone(),
            enable_thinking: args.template.enable_thinking,
        },
        max_length: args.encoding.max_length,
        truncation,
        loss_scale,
    };
    let encoder = Encoder::new(template, tokenizer, options)?;

    let data_opts = DatasetOptions::from_spec(&args.data)?;
    let mut dataset = open_datasets(&args.data.dataset, regs, &data_opts)?;

    let json = args.json.unwrap_or(false);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (mut encoded, mut deleted, mut failed, mut tokens, mut trained) =
        (0u64, 0u64, 0u64, 0usize, 0usize);
    for (n, item) in (&mut dataset).enumerate() {
        let item = item?;
        if !item.row.images.is_empty() {
            bail!(
                "{}:{}: the row has images; swift encode encodes text only (an image's placeholder expands to as many positions as the model's vision tower gives it): see the row's tokens with `swift infer --val_dataset`, which writes its prompt_ids",
                item.file.display(),
                item.line
            );
        }
        let enc = match encoder.encode(&item.row) {
            Ok(Some(e)) => e,
            Ok(None) => {
                deleted += 1;
                continue;
            }
            Err(e) if data_opts.skip_bad_rows => {
                tracing::warn!("skipped row at {}:{}: {e}", item.file.display(), item.line);
                failed += 1;
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("row at {}:{}", item.file.display(), item.line));
            }
        };
        encoded += 1;
        tokens += enc.input_ids.len();
        trained += enc.trained_tokens();
        let written = if json {
            serde_json::to_writer(&mut out, &enc)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            writeln!(
                out,
                "--- row {n} ({}:{}): {} tokens, {} trained{} ---\n{}",
                item.file.display(),
                item.line,
                enc.input_ids.len(),
                enc.trained_tokens(),
                if enc.truncated > 0 {
                    format!(", {} truncated", enc.truncated)
                } else {
                    String::new()
                },
                encoder.show(&enc)
            )
        };
        match written {
            Ok(()) => {}
            // `swift encode ... | head`: the reader has seen enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to stdout")
        }
        _ => {}
    }
    let stats = dataset.stats();
    let mut summary = format!(
        "encoded {encoded} rows with template `{}` ({tokens} tokens, {trained} trained)",
        encoder.template.name
    );
    if deleted > 0 {
        summary.push_str(&format!(
            "; {deleted} rows longer than --max_length {} deleted (use --truncation_strategy left|right to keep them)",
            args.encoding.max_length.unwrap_or(0)
        ));
    }
    if failed > 0 {
        summary.push_str(&format!(
            "; {failed} rows failed to encode and were skipped"
        ));
    }
    if stats.rows_bad > 0 {
        summary.push_str(&format!("; {} bad rows skipped", stats.rows_bad));
    }
    tracing::info!("{summary}");
    Ok(())
}
