//! Streaming benchmark of dataset loading: generates JSONL files of 100k and 1M rows (a mix of
//! alpaca, OpenAI messages and ShareGPT tool-call rows), preprocesses each through `auto` in a
//! fresh process, and prints rows/s and peak resident memory (VmHWM from /proc/self/status) for
//! both, showing that peak memory stays flat as the file grows 10×.
//!
//! ```text
//! cargo run --release -p swift-data --example stream_bench [-- --rows 100000,1000000 --dir /tmp/x]
//! ```
//!
//! Each size runs in a child process (the same binary with `--child FILE`), because VmHWM is the
//! peak over a process's whole life.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use swift_data::{open_dataset, DatasetOptions};
use swift_plugin_datasets as _;

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn generate(path: &Path, rows: u64, json_array: bool) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    if json_array {
        writeln!(w, "[")?;
    }
    for i in 0..rows {
        if json_array && i > 0 {
            writeln!(w, ",")?;
        }
        match i % 3 {
            0 => writeln!(
                w,
                r#"{{"instruction": "Summarise document {i} in one sentence.", "input": "Document {i} talks about streaming data loaders, bounded memory and throughput.", "output": "Document {i} explains how to load data in bounded memory."}}"#
            )?,
            1 => writeln!(
                w,
                r#"{{"messages": [{{"role": "system", "content": "You are a helpful assistant."}}, {{"role": "user", "content": "What is {i} plus one?"}}, {{"role": "assistant", "content": "It is {}."}}]}}"#,
                i + 1
            )?,
            _ => writeln!(
                w,
                r#"{{"conversations": [{{"from": "human", "value": "Weather in city {i}?"}}, {{"from": "function_call", "value": "{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"c{i}\"}}}}"}}, {{"from": "observation", "value": "{{\"temp\": 21}}"}}, {{"from": "gpt", "value": "It is 21 degrees in city {i}."}}], "tools": "[{{\"name\": \"get_weather\", \"description\": \"Current weather\", \"parameters\": {{\"type\": \"object\", \"properties\": {{\"city\": {{\"type\": \"string\"}}}}}}}}]"}}"#
            )?,
        }
    }
    if json_array {
        writeln!(w, "]")?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// The child: preprocess every row of `file`, print one JSON line of figures.
fn child(file: &str) -> Result<(), Box<dyn std::error::Error>> {
    let regs = swift_registry::PluginLoader::new(vec![])
        .load(&[])?
        .registries;
    let before = vm_hwm_kib().unwrap_or(0);
    let start = Instant::now();
    let mut ds = open_dataset(file, &regs, &DatasetOptions::default())?;
    let (mut rows, mut messages) = (0u64, 0u64);
    for row in &mut ds {
        let row = row?;
        rows += 1;
        messages += row.row.messages.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = ds.stats();
    println!(
        "{}",
        serde_json::json!({
            "rows": rows, "messages": messages, "secs": secs, "rows_per_s": rows as f64 / secs,
            "vm_hwm_kib_before": before, "vm_hwm_kib": vm_hwm_kib().unwrap_or(0),
            "rows_bad": stats.rows_bad, "rows_dropped": stats.rows_dropped,
        })
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let file = args.get(i + 1).ok_or("--child FILE")?;
        return child(file);
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<u64> = arg("--rows")
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<Result<_, _>>()?;
    let formats: Vec<String> = arg("--formats")
        .unwrap_or_else(|| "jsonl,json".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let dir = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("swift-data-bench"));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>9} {:>14} {:>14}",
        "format", "rows", "file MiB", "rows/s", "secs", "peak RSS MiB", "base RSS MiB"
    );
    let mut flat = true;
    for format in &formats {
        let mut peaks = Vec::new();
        for &n in &sizes {
            let path = dir.join(format!("bench-{n}.{format}"));
            let bytes = generate(&path, n, format == "json")?;
            let out = Command::new(&exe).arg("--child").arg(&path).output()?;
            let _ = std::fs::remove_file(&path);
            if !out.status.success() {
                return Err(format!(
                    "child for {n} rows failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let mib = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1024.0;
            println!(
                "{:>6} {:>10} {:>10.1} {:>12.0} {:>9.2} {:>14.1} {:>14.1}",
                format,
                v["rows"].as_u64().unwrap_or(0),
                bytes as f64 / (1 << 20) as f64,
                v["rows_per_s"].as_f64().unwrap_or(0.0),
                v["secs"].as_f64().unwrap_or(0.0),
                mib("vm_hwm_kib"),
                mib("vm_hwm_kib_before"),
            );
            if v["rows"].as_u64() != Some(n) {
                return Err(format!("expected {n} rows, got {}", v["rows"]).into());
            }
            peaks.push((n, mib("vm_hwm_kib")));
        }
        if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
            if last.0 > first.0 {
                let ratio = last.1 / first.1.max(1e-9);
                let ok = ratio < 1.25;
                flat &= ok;
                println!(
                    "{format}: peak RSS grows {ratio:.2}x while rows grow {}x: {}",
                    last.0 / first.0.max(1),
                    if ok {
                        "flat (bounded memory)"
                    } else {
                        "NOT flat"
                    }
                );
            }
        }
    }
    if !flat {
        return Err("peak memory grew with the file".into());
    }
    Ok(())
}
