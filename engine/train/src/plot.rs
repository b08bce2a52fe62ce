//! The run's charts, as ms-swift draws them: one PNG per logged metric under `images/`
//! (`train_loss.png`, `train_learning_rate.png`, `eval_loss.png`, every other `eval_*` metric
//! such as a benchmark's `eval_mmlu_acc.png`, ...), the metric against the
//! optimiser step, read back from `logging.jsonl`. Text is drawn with the DejaVu font that the
//! binary carries, so no system fonts are needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use serde_json::Value;

use crate::checkpoint::TrainError;

/// Metrics drawn when present, with the record key that marks the series (training records
/// carry `loss`, evaluation records `eval_loss`).
const METRICS: [&str; 11] = [
    "loss",
    "grad_norm",
    "learning_rate",
    "token_acc",
    "eval_loss",
    "eval_token_acc",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "nll_loss",
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The file a metric is drawn into: `train_loss.png`, `eval_loss.png`, `train_rewards_margins.png`.
fn file_name(metric: &str) -> String {
    let base = metric.replace('/', "_");
    if base.starts_with("eval_") {
        format!("{base}.png")
    } else {
        format!("train_{base}.png")
    }
}

/// Reads `logging.jsonl` in `run` and draws every metric with at least one point into
/// `run/images/`; returns the files written.
pub fn plot_run(run: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let log = run.join("logging.jsonl");
    let text = std::fs::read_to_string(&log).map_err(|e| TrainError::io(&log, e))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(step) = rec.get("step").and_then(Value::as_f64) else {
            continue;
        };
        // The fixed metrics, and every evaluation metric (benchmarks during training among
        // them: `eval_<benchmark>_<metric>`).
        let Some(obj) = rec.as_object() else {
            continue;
        };
        for (k, v) in obj {
            if !(METRICS.contains(&k.as_str()) || k.starts_with("eval_")) {
                continue;
            }
            if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                series.entry(k.clone()).or_default().push((step, v));
            }
        }
    }
    let dir = run.join("images");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let mut written = Vec::new();
    for (metric, points) in series {
        let path = dir.join(file_name(&metric));
        draw(&path, &metric, &points)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(path: &Path, metric: &str, points: &[(f64, f64)]) -> Result<(), String> {
    register_font();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    // Room around flat or single-point series.
    let pad = ((y1 - y0).abs() * 0.05).max(y1.abs() * 0.01).max(1e-12);
    let (x1, y0, y1) = (if x1 > x0 { x1 } else { x0 + 1.0 }, y0 - pad, y1 + pad);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(metric, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(metric)
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    if points.len() == 1 {
        chart
            .draw_series(std::iter::once(Circle::new(points[0], 3, BLUE.filled())))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_png_per_logged_metric() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"loss": 2.0, "learning_rate": 1e-4, "step": 1}"#,
            r#"{"loss": 1.5, "learning_rate": 5e-5, "step": 2}"#,
            r#"{"eval_loss": 1.7, "step": 2}"#,
            r#"{"train_runtime": 3.0}"#,
        ];
        std::fs::write(dir.path().join("logging.jsonl"), lines.join("\n")).unwrap();
        let files = plot_run(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["eval_loss.png", "train_learning_rate.png", "train_loss.png"]
        );
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            assert!(
                bytes.len() > 5000,
                "{} is {} bytes",
                f.display(),
                bytes.len()
            );
        }
    }
}
