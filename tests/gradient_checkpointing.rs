//! Gradient checkpointing (`LoadedModel::backward_checkpointed`, `--gradient_checkpointing`):
//! the gradients of every trainable tensor (LoRA with dropout on, DoRA, full fine-tuning) equal
//! those of the same pass without recomputation, on every tiny fixture family, the example
//! plugin's GPT-2 included; `swift sft --gradient_checkpointing true` trains end to end with the
//! losses of a run without it (dropout off) and resumes with dropout on to the uninterrupted
//! run's losses; `swift rlhf --rlhf_type dpo` with it has the same losses and gradient norms.
//!
//! The references are computed in-process by plain autograd: the family's own `forward` (no
//! per-block entry points involved) when dropout is off, and the same per-block pass keeping
//! every block's graph when dropout is on (the only way to draw the same dropout masks as the
//! recomputation, which re-seeds the generator per block).

use crate::common::*;
use swift_model::LoadedModel;
use swift_train::AttachedAdapter;
use tch::{Device, Kind, Tensor};

const FAMILIES: &[&str] = &["llama", "qwen2", "qwen3", "mistral", "gpt2"];
const TOL: f64 = 1e-5;

/// Two rows of unequal length (the second right-padded) and their mask.
fn batch(vocab: i64) -> (Tensor, Tensor) {
    let rows: [&[i64]; 2] = [&[5, 17, 42, 7, 99, 3, 61, 12, 8], &[11, 23, 4, 87, 30, 2]];
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for r in rows {
        for k in 0..t {
            ids.push(r.get(k).map_or(0, |&v| v % vocab));
            mask.push(i64::from(k < r.len()));
        }
    }
    (
        Tensor::from_slice(&ids).view([2, t as i64]),
        Tensor::from_slice(&mask).view([2, t as i64]),
    )
}

/// A loss of the final hidden states that reaches every position: next-token cross-entropy on
/// the real tokens, each position weighted differently.
fn loss_of(model: &LoadedModel, hidden: &Tensor, ids: &Tensor, mask: &Tensor) -> Tensor {
    let t = hidden.size()[1];
    let logits = model.logits_train(&hidden.narrow(1, 0, t - 1)).unwrap();
    let logp = logits.log_softmax(-1, Kind::Float);
    let target = ids.narrow(1, 1, t - 1).unsqueeze(-1);
    let picked = logp.gather(-1, &target, false).squeeze_dim(-1);
    let weight = mask.narrow(1, 1, t - 1).to_kind(Kind::Float)
        * Tensor::arange(t - 1, (Kind::Float, Device::Cpu))
            .f_add_scalar(1.0)
            .unwrap();
    -(picked * weight).sum(Kind::Float) / 10.0
}

/// The gradients accumulated in `params` (copied), then cleared.
fn take_grads(params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, t)| {
            let g = t.grad();
            let copy = if g.defined() {
                g.copy()
            } else {
                t.zeros_like()
            };
            let mut t = t.shallow_clone();
            t.zero_grad();
            (n.clone(), copy)
        })
        .collect()
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for ((n, x), (_, y)) in a.iter().zip(b) {
        let d = f64::try_from((x - y).abs().max()).unwrap();
        if d > worst.0 {
            worst = (d, n.clone());
        }
    }
    worst
}

fn max_abs(a: &[(String, Tensor)]) -> f64 {
    a.iter()
        .map(|(_, t)| f64::try_from(t.abs().max()).unwrap())
        .fold(0.0, f64::max)
}

enum Pass {
    /// The family's own forward, one backward.
    Plain,
    /// Block by block keeping every graph (same per-block seeds as the checkpointed pass).
    Blocks,
    /// Block by block, recomputing each block in the backward pass.
    Checkpointed,
}

fn grads(
    model: &LoadedModel,
    params: &[(String, Tensor)],
    pass: Pass,
    seed: i64,
) -> (f64, Vec<(String, Tensor)>) {
    let (ids, mask) = batch(model.layout().vocab_size);
    tch::manual_seed(seed);
    let loss = match pass {
        Pass::Plain => {
            let hidden = model.forward_train(&ids, Some(&mask)).unwrap();
            let loss = loss_of(model, &hidden, &ids, &mask);
            loss.backward();
            loss
        }
        Pass::Blocks | Pass::Checkpointed => model
            .backward_by_blocks(&ids, Some(&mask), matches!(pass, Pass::Checkpointed), |h| {
                Ok::<_, swift_model::ModelError>(loss_of(model, h, &ids, &mask))
            })
            .unwrap(),
    };
    (f64::try_from(&loss).unwrap(), take_grads(params))
}

/// LoRA (or DoRA) on every linear slot, dropout 0.1, with B drawn at random so that every
/// factor gets a gradient.
fn attach_lora(model: &mut LoadedModel, dora: bool) -> (AttachedAdapter, Vec<(String, Tensor)>) {
    let linear: Vec<String> = model
        .layout()
        .slots
        .iter()
        .filter(|s| s.kind == swift_plugin_api::model::SlotKind::Linear)
        .filter(|s| s.name != model.layout().output_slot)
        .map(|s| s.name.clone())
        .collect();
    tch::manual_seed(7);
    let options = serde_json::json!({
        "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.1, "use_dora": dora
    });
    let lora = AttachedAdapter::attach(model, &builtin_tuner("lora"), options, &linear).unwrap();
    {
        let _g = tch::no_grad_guard();
        for (_, b) in lora
            .named_tensors()
            .iter()
            .filter(|(n, _)| n.contains(".lora_B."))
        {
            let mut b = b.shallow_clone();
            let r = Tensor::randn(b.size(), (Kind::Float, Device::Cpu)) * 0.05;
            b.copy_(&r);
        }
    }
    lora.set_training(true);
    let params = lora.named_tensors();
    (lora, params)
}

/// Losses agree within float32 rounding, relative to the loss: 1e-6 is about ten units in the last
/// place (one ulp of a loss near 37 is 3.8e-6; the passes add the same terms in different orders).
const LOSS_TOL: f64 = 1e-6;

fn check(what: &str, a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let (d, name) = max_diff(a, b);
    assert!(
        d <= TOL,
        "{what}: gradients differ by {d:e} (at {name}; largest gradient {:e})",
        max_abs(a)
    );
}

#[test]
fn lora_gradients_with_checkpointing_equal_those_without_dropout_on() {
    let _turn = torch_rng();
    for family in FAMILIES {
        for dora in [false, true] {
            let what = format!("{family} {}", if dora { "DoRA" } else { "LoRA" });
            let mut model = load_tiny(family);
            assert!(model.supports_checkpointing(), "{family} offers blocks");
            let (lora, params) = attach_lora(&mut model, dora);
            assert!(!params.is_empty());

            // Dropout on: the recomputed blocks draw the masks of the first pass.
            let (l_ref, g_ref) = grads(&model, &params, Pass::Blocks, 11);
            let (l_ck, g_ck) = grads(&model, &params, Pass::Checkpointed, 11);
            assert!(
                (l_ref - l_ck).abs() <= LOSS_TOL * l_ref.abs().max(1.0),
                "{what}: loss {l_ref} vs {l_ck}"
            );
            assert!(
                max_abs(&g_ref) > 1e-3,
                "{what}: the gradients are not trivial"
            );
            check(&format!("{what}, dropout on"), &g_ref, &g_ck);

            // Dropout off: the checkpointed pass equals the family's own forward.
            lora.set_training(false);
            let (l_plain, g_plain) = grads(&model, &params, Pass::Plain, 11);
            let (l_off, g_off) = grads(&model, &params, Pass::Checkpointed, 11);
            assert!(
                (l_plain - l_off).abs() <= LOSS_TOL * l_plain.abs().max(1.0),
                "{what}: loss {l_plain} vs {l_off}"
            );
            check(&format!("{what}, dropout off"), &g_plain, &g_off);

            // Not vacuous: dropout changed the gradients that the checkpointed pass reproduced.
            let (d, _) = max_diff(&g_ck, &g_off);
            assert!(
                d > 1e-4,
                "{what}: dropout should change the gradients ({d:e})"
            );
        }
    }
}

#[test]
fn full_fine_tuning_gradients_with_checkpointing_equal_those_without() {
    let _turn = torch_rng();
    for family in FAMILIES {
        let mut model = load_tiny(family);
        let params = model.make_trainable(&|_| true).unwrap();
        // Every parameter trains: embeddings (tied to the output head in GPT-2), norms, biases.
        assert!(params
            .iter()
            .any(|(n, _)| n.contains("embed") || n.contains("wte")));
        let (l_plain, g_plain) = grads(&model, &params, Pass::Plain, 3);
        let (l_ck, g_ck) = grads(&model, &params, Pass::Checkpointed, 3);
        assert!(
            (l_plain - l_ck).abs() < 1e-6,
            "{family}: loss {l_plain} vs {l_ck}"
        );
        for (n, g) in &g_ck {
            assert!(
                f64::try_from(g.abs().sum(Kind::Double)).unwrap() > 0.0,
                "{family}: {n} got no gradient"
            );
        }
        check(&format!("{family} full"), &g_plain, &g_ck);
    }
}

#[test]
fn sft_with_gradient_checkpointing_trains_with_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_chat(
        &tmp.path().join("chat.jsonl"),
        &[
            ("hi", "hello there"),
            ("what is two plus two", "four"),
            (
                "say something about the weather",
                "it is sunny and warm today",
            ),
            ("ok", "fine"),
        ],
    );
    let model = tiny();
    let run_with = |gc: &str, dropout: &str, name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "sft",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            out.to_str().unwrap(),
            "--max_steps",
            "3",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--learning_rate",
            "1e-2",
            "--lora_dropout",
            dropout,
            "--gradient_checkpointing",
            gc,
        ];
        args.extend_from_slice(extra);
        ok(swift1(&args));
        let out = run_folder(&out);
        (step_losses(&out), args_json(&out))
    };
    let run = |gc: &str, dropout: &str| run_with(gc, dropout, &format!("run-{gc}-{dropout}"), &[]);
    let (plain, _) = run("false", "0");
    let (ckpt, args) = run("true", "0");
    assert_eq!(plain.len(), 3);
    assert_eq!(ckpt.len(), 3);
    for (a, b) in plain.iter().zip(&ckpt) {
        assert!((a - b).abs() < 1e-5, "losses {plain:?} vs {ckpt:?}");
    }
    assert!(
        args.to_string().contains("\"gradient_checkpointing\":true"),
        "args.json records the flag: {args}"
    );
    // With dropout on it is reproducible (per-block seeds drawn from the step's seeded
    // generator), and resuming from step 1 repeats the uninterrupted run's later losses.
    let (d1, _) = run_with("true", "0.1", "whole", &["--save_steps", "1"]);
    let ck1 = run_folder(&tmp.path().join("whole")).join("checkpoint-1");
    let (d2, _) = run_with(
        "true",
        "0.1",
        "resumed",
        &["--resume_from_checkpoint", ck1.to_str().unwrap()],
    );
    assert_eq!(d1.len(), 3);
    assert_eq!(d2.len(), 2, "{d2:?}");
    for (a, b) in d1[1..].iter().zip(&d2) {
        assert!((a - b).abs() < 1e-6, "resumed {d2:?} vs {d1:?}");
    }
    // Dropout was really on.
    assert!((d1[2] - ckpt[2]).abs() > 1e-6, "{d1:?} vs {ckpt:?}");
}

/// `swift rlhf --gradient_checkpointing true`: the per-sequence re-run recomputes one block at a
/// time; the losses and gradient norms equal those without it (dropout off), with the default
/// one sequence per pass and with `--rlhf_chunk_size 0` (then one chunk of the whole
/// micro-batch, still in two passes).
#[test]
fn dpo_with_gradient_checkpointing_has_the_same_losses_and_gradient_norms() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let mut runs = Vec::new();
    for (chunk, gc) in [("1", "false"), ("1", "true"), ("0", "true")] {
        let out = dir.path().join(format!("c{chunk}-{gc}"));
        ok(swift1(&[
            "rlhf",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            demo("dpo-en-demo#8"),
            "--max_length",
            "96",
            "--truncation_strategy",
            "left",
            "--lora_dropout",
            "0",
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "2",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-2",
            "--logging_steps",
            "1",
            "--rlhf_chunk_size",
            chunk,
            "--gradient_checkpointing",
            gc,
            "--output_dir",
            out.to_str().unwrap(),
        ]));
        let out = run_folder(&out);
        let recs = loss_steps(&out);
        assert_eq!(recs.len(), 2);
        runs.push(recs);
    }
    for other in &runs[1..] {
        for (a, b) in runs[0].iter().zip(other) {
            for k in ["loss", "grad_norm", "rewards/margins", "logps/chosen"] {
                let (x, y) = (num(a, k), num(b, k));
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{k}: {x} vs {y}");
            }
        }
    }
    assert!(num(&runs[0][1], "rewards/margins").abs() > 1e-4);
}
