//! Benchmark of the whole data path up to token ids: generates JSONL files (100k and 1M rows by
//! default; a mix of alpaca, OpenAI messages with tool calls, and ShareGPT rows), then in a fresh
//! child process per file reads, preprocesses (swift-data, `auto`) and encodes every row with the
//! `qwen3` template and the real Qwen3 tokenizer, printing rows/s, tokens/s and peak resident
//! memory (VmHWM), so one sees that memory stays flat as the file grows 10×.
//!
//! ```text
//! cargo run --release -p swift-template --example encode_bench [-- --rows 100000,1000000 --dir /tmp/x]
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use swift_plugin_datasets as _;
use swift_plugin_templates as _;
use swift_template::{EncodeOptions, Encoder, Template, Tokenizer};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn generate(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..rows {
        match i % 3 {
            0 => writeln!(
                w,
                r#"{{"instruction": "Summarise document {i} in one sentence.", "input": "Document {i} talks about streaming data loaders, bounded memory and throughput.", "output": "Document {i} explains how to load data in bounded memory."}}"#
            )?,
            1 => writeln!(
                w,
                r#"{{"messages": [{{"role": "system", "content": "You are terse."}}, {{"role": "user", "content": "Weather in city {i}?"}}, {{"role": "assistant", "content": "", "tool_calls": [{{"type": "function", "function": {{"name": "get_weather", "arguments": {{"city": "c{i}"}}}}}}]}}, {{"role": "tool", "content": "{{\"temp\": {t}}}"}}, {{"role": "assistant", "content": "It is {t} degrees in city {i}."}}], "tools": [{{"type": "function", "function": {{"name": "get_weather", "description": "Weather of a city", "parameters": {{"type": "object", "properties": {{"city": {{"type": "string"}}}}}}}}}}]}}"#,
                t = i % 40
            )?,
            _ => writeln!(
                w,
                r#"{{"conversations": [{{"from": "human", "value": "Count to {n}."}}, {{"from": "gpt", "value": "1 2 3 ... {n}"}}, {{"from": "human", "value": "And back?"}}, {{"from": "gpt", "value": "{n} ... 3 2 1"}}]}}"#,
                n = i % 100 + 3
            )?,
        }
    }
    w.flush()
}

fn child(file: &Path, tokenizer: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let regs = swift_registry::PluginLoader::new(Vec::<String>::new())
        .load(&[])?
        .registries;
    let record = &regs.templates.resolve("qwen3")?.record;
    let enc = Encoder::new(
        Template::from_record(record)?,
        Tokenizer::from_file(tokenizer)?,
        EncodeOptions::default(),
    )?;
    let start = Instant::now();
    let (mut rows, mut tokens, mut trained) = (0u64, 0u64, 0u64);
    let path = file.to_str().ok_or("path is not UTF-8")?;
    for row in swift_data::open_dataset(path, &regs, &swift_data::DatasetOptions::default())? {
        let e = enc.encode(&row?.row)?.ok_or("no truncation configured")?;
        rows += 1;
        tokens += e.input_ids.len() as u64;
        trained += e.trained_tokens() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rows:>9} rows  {tokens:>11} tokens ({trained} trained)  {:>8.0} rows/s  {:>9.0} tokens/s  peak RSS {:.1} MiB",
        rows as f64 / secs,
        tokens as f64 / secs,
        vm_hwm_kib() as f64 / 1024.0
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cache = std::env::var_os("SWIFT_RS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/swift-rs")
        });
    let tokenizer = cache.join("assets/tokenizers/qwen3/tokenizer.json");
    if !tokenizer.is_file() {
        println!(
            "skipped: {} is missing (run `make setup`)",
            tokenizer.display()
        );
        return Ok(());
    }
    if let Some(file) = flag("--child") {
        return child(Path::new(&file), &tokenizer);
    }
    let sizes: Vec<u64> = flag("--rows")
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let dir = flag("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir)?;
    for n in sizes {
        let file = dir.join(format!("encode_bench_{n}.jsonl"));
        generate(&file, n)?;
        let status = Command::new(std::env::current_exe()?)
            .args(["--child", file.to_str().unwrap_or("")])
            .status()?;
        std::fs::remove_file(&file).ok();
        if !status.success() {
            return Err(format!("the run on {n} rows failed").into());
        }
    }
    Ok(())
}
