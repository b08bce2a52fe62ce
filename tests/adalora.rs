//! AdaLoRA against PEFT 0.21 (references recorded by `tests/reference/adalora_reference.py`):
//! in-process on the tiny llama holding PEFT's tensors, the forward pass, the orthogonal
//! regularisation and the gradients, then six deterministic SGD steps replayed through the
//! adapter's hooks (`extra_loss` before the backward pass, `after_backward` after the update)
//! giving PEFT's `rank_pattern` after every step, its tensors and its saved (pruned) checkpoint;
//! end to end, `swift sft --tuner_type adalora` whose checkpoint peft loads with the logits of
//! `swift infer --adapters`, merged equal to unmerged, and the flags' refusals.

use std::collections::BTreeMap;

use crate::common::*;
use crate::tuners::{nll, trains_and_peft_agrees};
use serde_json::{json, Value};
use swift_train::AttachedAdapter;
use tch::{Kind, Tensor};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_kind(Kind::Double).view([-1]).try_into().unwrap()
}

/// Every tensor within `tol` of the reference's (relative to its largest entry, at least 1).
fn assert_tensors(got: &BTreeMap<String, Tensor>, want: &Value, tol: f64, what: &str) {
    let want = want.as_object().unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "{what}: the tensors and their PEFT names"
    );
    for (name, w) in want {
        let shape: Vec<i64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(got[name].size(), shape, "{what}: {name}");
        let w = floats(&w["values"]);
        let scale = max_abs(&w).max(1.0);
        let d = max_abs_diff(&values(&got[name]), &w);
        assert!(d <= tol * scale, "{what}: {name} differs by {d}");
    }
}

#[test]
fn adalora_matches_peft_and_allocates_its_ranks_as_peft_does() {
    let _turn = torch_rng();
    let r = read_json(&workspace_root().join("tests/reference/adalora_reference.json"));
    let mut model = load_tiny("llama");
    let targets: Vec<String> = model
        .layout()
        .slots
        .iter()
        .filter(|s| {
            ["q_proj", "v_proj", "down_proj"]
                .iter()
                .any(|x| s.name.ends_with(x))
        })
        .map(|s| s.name.clone())
        .collect();
    // The reference's AdaLoraConfig, as the flags name it.
    let options = json!({
        "adalora_init_r": 4, "adalora_target_r": 2, "adalora_tinit": 1, "adalora_tfinal": 2,
        "adalora_deltaT": 2, "adalora_beta1": 0.8, "adalora_beta2": 0.9,
        "adalora_orth_reg_weight": 0.3, "lora_alpha": 8.0, "lora_dropout": 0.0
    });
    let adapter =
        AttachedAdapter::attach(&mut model, &builtin_tuner("adalora"), options, &targets).unwrap();
    adapter.set_training(false);
    let all: BTreeMap<String, Tensor> = adapter.all_tensors().into_iter().collect();
    tch::no_grad(|| {
        for (name, t) in &all {
            let w = &r["tensors"][name];
            let shape: Vec<i64> = w["shape"]
                .as_array()
                .unwrap_or_else(|| panic!("PEFT has no `{name}`"))
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            let mut t = t.shallow_clone();
            t.copy_(
                &Tensor::from_slice(&floats(&w["values"]))
                    .to_kind(Kind::Float)
                    .view(shape.as_slice()),
            );
        }
    });
    assert_tensors(&all, &r["tensors"], 1e-7, "the starting tensors");
    let ids: Vec<i64> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let lr = r["lr"].as_f64().unwrap();
    let steps = r["steps"].as_array().unwrap();
    let total = steps.len() as u64;
    let trained = adapter.named_tensors();
    assert_eq!(trained.len(), all.len(), "A, B and E of every slot train");
    let dir = tempfile::tempdir().unwrap();
    for (i, want) in steps.iter().enumerate() {
        let step = i as u64 + 1;
        let (nll_loss, last) = nll(&model, &ids);
        let extra = adapter
            .extra_loss(step, total)
            .unwrap()
            .expect("AdaLoRA adds its orthogonal regularisation");
        let loss = &nll_loss + &extra;
        loss.backward();
        let l = f64::try_from(&loss).unwrap();
        assert!(
            (l - want["loss"].as_f64().unwrap()).abs() < 1e-4,
            "step {step}: loss {l} vs PEFT's {}",
            want["loss"]
        );
        if step == 1 {
            let n = f64::try_from(&nll_loss).unwrap();
            assert!((n - r["nll"].as_f64().unwrap()).abs() < 1e-5, "nll {n}");
            assert!(
                (l - r["loss"].as_f64().unwrap()).abs() < 1e-5,
                "nll + orthogonal regularisation {l} vs {}",
                r["loss"]
            );
            assert_close(&last, &floats(&r["last_logits"]), 1e-4, "last logits");
            for (name, g) in r["grads"].as_object().unwrap() {
                let want = floats(g);
                let scale = max_abs(&want).max(1e-3);
                let d = max_abs_diff(&values(&all[name].grad()), &want);
                assert!(
                    d <= 1e-4 * scale,
                    "{name}: gradients differ by {d} (scale {scale})"
                );
            }
        }
        // SGD as torch.optim.SGD, then the hook where PEFT's loop calls update_and_allocate.
        tch::no_grad(|| {
            for (_, t) in &trained {
                let mut t = t.shallow_clone();
                let _ = t.f_add_(&t.grad().f_mul_scalar(-lr).unwrap()).unwrap();
            }
        });
        adapter.after_backward(step, total).unwrap();
        for (_, t) in &trained {
            let mut t = t.shallow_clone();
            t.zero_grad();
        }
        adapter.save(dir.path(), "tiny").unwrap();
        let config = read_json(&dir.path().join("adapter_config.json"));
        assert_eq!(
            config["rank_pattern"], want["rank_pattern"],
            "step {step}: the rank pattern"
        );
    }
    assert_tensors(&all, &r["final"], 1e-5, "after the steps");
    // The checkpoint keeps the triplets the pattern keeps (one slot pruned to rank 0).
    let saved =
        swift_model::weights::Checkpoint::open(&[dir.path().join("adapter_model.safetensors")])
            .unwrap();
    let saved: BTreeMap<String, Tensor> = saved
        .names()
        .map(|n| {
            let t = saved.load(n, Kind::Float, tch::Device::Cpu).unwrap();
            (n.to_string(), t.tensor.copy())
        })
        .collect();
    assert_tensors(&saved, &r["saved"], 1e-5, "the saved checkpoint");
    let config = read_json(&dir.path().join("adapter_config.json"));
    for (k, v) in [
        ("peft_type", json!("ADALORA")),
        ("init_r", json!(4)),
        ("target_r", json!(2)),
        ("tinit", json!(1)),
        ("tfinal", json!(2)),
        ("deltaT", json!(2)),
        ("beta1", json!(0.8)),
        ("beta2", json!(0.9)),
        ("orth_reg_weight", json!(0.3)),
        ("total_step", json!(6)),
    ] {
        assert_eq!(config[k], v, "adapter_config.json {k}");
    }
}

#[test]
fn adalora_trains_and_peft_loads_its_checkpoint() {
    // 3 steps: step 1 warms up (tinit 1), step 2 = total_step − tfinal fixes the final pattern,
    // step 3 re-applies it; the checkpoint is cut to it.
    trains_and_peft_agrees(
        "adalora",
        &[
            "--target_modules",
            "q_proj",
            "v_proj",
            "down_proj",
            "--adalora_init_r",
            "6",
            "--adalora_target_r",
            "3",
            "--adalora_tinit",
            "1",
            "--adalora_tfinal",
            "1",
            "--adalora_deltaT",
            "2",
            "--adalora_beta1",
            "0.8",
            "--adalora_beta2",
            "0.9",
            "--adalora_orth_reg_weight",
            "0.2",
            "--lora_alpha",
            "16",
            "--lora_dropout",
            "0.1",
        ],
    );
}

#[test]
fn adalora_refuses_a_schedule_it_cannot_run_and_other_tuners_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    let base = tiny();
    let sft = |extra: &[&str]| {
        let mut a = vec![
            "sft",
            "--model",
            base.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--output_dir",
            run.to_str().unwrap(),
            "--tuner_type",
            "adalora",
            "--max_steps",
            "3",
        ];
        a.extend_from_slice(extra);
        swift1(&a)
    };
    assert_fails(
        sft(&["--adalora_init_r", "4", "--adalora_target_r", "4"]),
        &["--adalora_target_r (4) must be below --adalora_init_r (4)"],
    );
    assert_fails(
        sft(&["--adalora_tinit", "2", "--adalora_tfinal", "1"]),
        &["--adalora_tinit 2 + --adalora_tfinal 1 must be below the run's 3 steps"],
    );
    assert_fails(sft(&["--lora_rank", "4"]), &["--lora_rank", "adalora"]);
    assert_fails(
        sft(&["--adalora_beta1", "1"]),
        &["--adalora-beta1", "must be a finite number in (0, 1)"],
    );
}
