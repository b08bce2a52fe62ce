//! `--packing`: rows laid end to end in one sequence compute exactly what they compute alone.
//!
//! * On the tiny random llama of tests/fixtures/models (every parameter trainable): a packed
//!   sequence A|B|C (positions restarting per row, block-diagonal causal attention through
//!   `LoadedModel::forward_train_packed`) gives the per-token logits of A, B and C run alone,
//!   the same summed loss over their labelled tokens, and the same gradient for every parameter;
//!   so do the rows laid end to end without padding, as a training pass of several rows lays
//!   them (`Collator::concat`).
//! * End to end: `swift sft --packing true` and `swift pt --packing true` log the losses and
//!   token accuracies of the unpacked runs over the same rows (the loss normalised over the
//!   labelled tokens of the step either way; a row's first token is never a target, not even of
//!   the row packed before it), and pack rows into fewer sequences than rows.

use std::path::{Path, PathBuf};

use crate::common::*;
use swift_model::LoadedModel;
use swift_train::loss::token_loss;
use swift_train::{Batch, Collator, EncodedRow, PackingStrategy};
use tch::{Kind, Tensor};

/// A row of `len` pseudo-random tokens, trained from `trained_from` on.
fn row(len: usize, salt: u32, trained_from: usize) -> EncodedRow {
    let ids: Vec<u32> = (0..len as u32)
        .map(|i| (i * 37 + salt * 101) % 300 + 3)
        .collect();
    EncodedRow {
        labels: ids
            .iter()
            .enumerate()
            .map(|(i, &t)| if i >= trained_from { t as i64 } else { -100 })
            .collect(),
        loss_scale: (0..len).map(|i| 1.0 + (i % 3) as f32 * 0.5).collect(),
        input_ids: ids,
        images: Vec::new(),
    }
}

fn tensor2(v: &[i64], b: &Batch) -> Tensor {
    Tensor::from_slice(v).view([b.batch as i64, b.seq_len as i64])
}

fn tensor_floats(t: &Tensor) -> Vec<f64> {
    t.to_kind(Kind::Double).view([-1]).try_into().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Summed weighted loss of `b` (packed or one padded row) and its logits `[b, t, v]`.
fn loss_and_logits(model: &LoadedModel, b: &Batch) -> (Tensor, Tensor) {
    let ids = tensor2(&b.input_ids, b);
    let hidden = if b.packed {
        model
            .forward_train_packed(&ids, &tensor2(&b.position_ids, b), &tensor2(&b.seq_ids, b))
            .unwrap()
    } else {
        model.forward_train(&ids, None).unwrap()
    };
    let logits = model.logits_train(&hidden).unwrap();
    let scale = Tensor::from_slice(&b.loss_scale).view([b.batch as i64, b.seq_len as i64]);
    let l = token_loss(&logits, &tensor2(&b.labels, b), &scale).unwrap();
    (l.sum, logits)
}

fn grads(trainable: &[(String, Tensor)]) -> Vec<Tensor> {
    trainable
        .iter()
        .map(|(_, t)| {
            let g = t.grad();
            if g.defined() {
                g.copy()
            } else {
                t.zeros_like()
            }
        })
        .collect()
}

fn zero_grads(trainable: &[(String, Tensor)]) {
    for (_, t) in trainable {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[test]
fn a_packed_sequence_computes_what_its_rows_compute_alone() {
    let mut model = load_tiny("llama");
    let trainable = model.make_trainable(&|_| true).unwrap();
    assert!(!trainable.is_empty());
    let rows = [row(7, 1, 2), row(11, 2, 0), row(5, 3, 1)];
    // All three in one sequence of 32 (9 padding tokens at the end).
    let packer = Collator {
        pad_id: 0,
        packing: true,
        max_length: 32,
    };
    let packs = packer
        .pack_with(&rows, PackingStrategy::Sequential)
        .unwrap();
    assert_eq!(packs.len(), 1);
    let packed = &packs[0];

    let (packed_loss, packed_logits) = loss_and_logits(&model, packed);
    packed_loss.backward();
    let packed_grads = grads(&trainable);
    zero_grads(&trainable);

    let mut alone_loss = 0.0f64;
    let mut offset = 0i64;
    for r in &rows {
        let b = Collator {
            pad_id: 0,
            packing: false,
            max_length: usize::MAX,
        }
        .pad(std::slice::from_ref(r));
        let (l, logits) = loss_and_logits(&model, &b);
        // Accumulate the gradient over the rows (the sum of their losses).
        l.backward();
        alone_loss += l.double_value(&[]);
        let n = r.input_ids.len() as i64;
        let slice = packed_logits.narrow(1, offset, n);
        let d = max_diff(&slice, &logits);
        assert!(d < 1e-5, "logits of a row packed at {offset} differ by {d}");
        offset += n;
    }
    let alone_grads = grads(&trainable);

    let p = packed_loss.double_value(&[]);
    assert!(
        (p - alone_loss).abs() < 1e-5 * alone_loss.abs().max(1.0),
        "packed loss {p} vs rows alone {alone_loss}"
    );
    for ((name, _), (g1, g2)) in trainable.iter().zip(packed_grads.iter().zip(&alone_grads)) {
        let scale = tensor_floats(&g2.abs().max())
            .first()
            .copied()
            .unwrap_or(0.0)
            .max(1e-3);
        let d = max_diff(g1, g2);
        assert!(
            d < 1e-5 * scale.max(1.0),
            "gradient of {name} differs by {d}"
        );
    }
    // The gradient is not trivially zero (the comparison means something).
    let total: f64 = alone_grads
        .iter()
        .map(|g| g.abs().sum(Kind::Double).double_value(&[]))
        .sum();
    assert!(total > 1e-3, "{total}");

    // A training pass of several rows lays them end to end without padding
    // (`Collator::concat`): the packed sequence's logits and loss.
    {
        let _g = tch::no_grad_guard();
        let concat = Collator {
            pad_id: 0,
            packing: false,
            max_length: usize::MAX,
        }
        .concat(&rows);
        assert_eq!((concat.batch, concat.seq_len), (1, 23));
        let (l, logits) = loss_and_logits(&model, &concat);
        let d = max_diff(&logits, &packed_logits.narrow(1, 0, 23));
        assert!(d < 1e-5, "logits of the rows end to end differ by {d}");
        let l = l.double_value(&[]);
        assert!(
            (l - alone_loss).abs() < 1e-5 * alone_loss.abs().max(1.0),
            "loss of the rows end to end {l} vs rows alone {alone_loss}"
        );
    }

    // Without the block-diagonal mask (one causal sequence), rows B and C see the rows before
    // them and their logits change: the mask is what makes packing exact.
    let ids = tensor2(&packed.input_ids, packed);
    let _g = tch::no_grad_guard();
    let plain = model
        .logits_train(&model.forward_train(&ids, None).unwrap())
        .unwrap();
    let n0 = rows[0].input_ids.len() as i64;
    let n1 = rows[1].input_ids.len() as i64;
    assert!(max_diff(&plain.narrow(1, n0, n1), &packed_logits.narrow(1, n0, n1)) > 1e-3);
}

/// Ten chat rows of unequal lengths: [`CHAT_QA`], then the same with " again" after each query.
fn dataset(dir: &Path) -> PathBuf {
    let again: Vec<String> = CHAT_QA.iter().map(|(q, _)| format!("{q} again")).collect();
    write_jsonl(
        &dir.join("chat.jsonl"),
        CHAT_QA
            .iter()
            .map(|(q, a)| chat_row(q, a))
            .chain(again.iter().zip(CHAT_QA).map(|(q, (_, a))| chat_row(q, a))),
    )
}

/// Trains 2 steps in which every row (or every packed sequence) is in the one batch.
fn run(cmd: &str, tmp: &Path, name: &str, extra: &[&str]) -> (PathBuf, String) {
    let data = dataset(tmp);
    let run = tmp.join(name);
    let model = tiny();
    let mut args = vec![
        cmd,
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "1e-2",
        "--lora_dropout",
        "0",
        "--logging_steps",
        "1",
        "--max_length",
        "256",
    ];
    args.extend_from_slice(extra);
    let o = swift1(&args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    (run_folder(&run), err)
}

#[test]
fn sft_and_pt_with_packing_log_the_losses_of_unpacked_training() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["sft", "pt"] {
        let (plain, _) = run(cmd, tmp.path(), &format!("{cmd}-plain"), &[]);
        let (packed, log) = run(
            cmd,
            tmp.path(),
            &format!("{cmd}-packed"),
            &["--packing", "true"],
        );
        assert!(log.contains("packing: 10 rows into"), "{log}");
        let (a, b) = (loss_steps(&plain), loss_steps(&packed));
        assert_eq!((a.len(), b.len()), (2, 2));
        for (x, y) in a.iter().zip(&b) {
            let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            assert!(
                (lx - ly).abs() < 1e-5 * lx.abs().max(1.0),
                "{cmd} step {}: loss {lx} unpacked vs {ly} packed",
                x["step"]
            );
            assert_eq!(x["token_acc"], y["token_acc"], "{cmd}");
        }
        // Fewer tokens pass through the packed run's forward (no padding), the same trained.
        assert!(packed
            .join("checkpoint-2/adapter_model.safetensors")
            .is_file());
    }
    // The sequential strategy and a bad one.
    let (_, log) = run(
        "sft",
        tmp.path(),
        "sequential",
        &["--packing", "--packing_strategy", "sequential"],
    );
    assert!(log.contains("packing: 10 rows into"), "{log}");
    let o = swift1(&[
        "sft",
        "--model",
        tiny().to_str().unwrap(),
        "--dataset",
        dataset(tmp.path()).to_str().unwrap(),
        "--packing",
        "--packing_strategy",
        "tight",
        "--output_dir",
        tmp.path().join("never").to_str().unwrap(),
    ]);
    assert_fails(o, &["binpack, sequential"]);
    assert!(
        !tmp.path().join("never").exists(),
        "refused before the run folder"
    );
}
