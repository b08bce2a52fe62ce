//! Tuners on the tuner contract beyond the LoRA family (issue 16), each against PEFT: the
//! forward pass and gradients in-process on the tiny llama holding PEFT's tensors (references
//! recorded by `tests/reference/<tuner>_reference.py`), and end to end: a `swift sft`
//! checkpoint that Python peft loads with no missing or unexpected keys and whose logits equal
//! `swift infer --adapters`'s, and merged logits equal to unmerged ones.

use crate::common::*;
use serde_json::{json, Value};
use swift_train::AttachedAdapter;
use tch::{Kind, Tensor};

/// The mean next-token negative log-likelihood of `ids` (what the reference scripts compute).
pub(crate) fn nll(model: &swift_model::LoadedModel, ids: &[i64]) -> (Tensor, Vec<f64>) {
    let t = ids.len() as i64;
    let ids = Tensor::from_slice(ids).view([1, t]);
    let hidden = model.forward_train(&ids, None).unwrap();
    let logits = model.logits_train(&hidden).unwrap();
    let last: Vec<f64> = logits
        .get(0)
        .get(t - 1)
        .to_kind(Kind::Double)
        .try_into()
        .unwrap();
    let logp = logits
        .get(0)
        .narrow(0, 0, t - 1)
        .log_softmax(-1, Kind::Float);
    let target = ids.get(0).narrow(0, 1, t - 1).unsqueeze(-1);
    let loss = -logp.gather(-1, &target, false).mean(Kind::Float);
    (loss, last)
}

/// Attaches `tuner` with `options` on the slots ending in `suffixes`; the tensors named in
/// `seeded` must already equal the reference's (drawn from the same seed as PEFT draws them);
/// then sets every tensor to the reference's (by PEFT key) and compares loss, logits and every
/// recorded gradient with it.
pub(crate) fn matches_reference(
    tuner: &str,
    options: Value,
    suffixes: &[&str],
    reference: &str,
    seeded: &[&str],
) {
    let _turn = torch_rng();
    let r = read_json(&workspace_root().join("tests/reference").join(reference));
    let mut model = load_tiny("llama");
    let targets: Vec<String> = model
        .layout()
        .slots
        .iter()
        .filter(|s| suffixes.iter().any(|x| s.name.ends_with(x)))
        .map(|s| s.name.clone())
        .collect();
    let adapter =
        AttachedAdapter::attach(&mut model, &builtin_tuner(tuner), options, &targets).unwrap();
    adapter.set_training(false);
    let all: std::collections::BTreeMap<String, Tensor> =
        adapter.all_tensors().into_iter().collect();
    let want = r["tensors"].as_object().unwrap();
    assert_eq!(
        all.keys().collect::<std::collections::BTreeSet<_>>(),
        want.keys().collect(),
        "the tensors and their PEFT names"
    );
    let values = |name: &str| floats(&want[name]["values"]);
    for name in seeded {
        let got: Vec<f64> = all[*name]
            .to_kind(Kind::Double)
            .view([-1])
            .try_into()
            .unwrap();
        assert!(
            max_abs_diff(&got, &values(name)) < 1e-6,
            "{name} is not PEFT's draw"
        );
    }
    tch::no_grad(|| {
        for (name, t) in &all {
            let shape: Vec<i64> = want[name]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            assert_eq!(t.size(), shape, "{name}");
            let mut t = t.shallow_clone();
            t.copy_(
                &Tensor::from_slice(&values(name))
                    .to_kind(Kind::Float)
                    .view(shape.as_slice()),
            );
        }
    });
    let ids: Vec<i64> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let (loss, last) = nll(&model, &ids);
    loss.backward();
    let l = f64::try_from(&loss).unwrap();
    assert!(
        (l - r["loss"].as_f64().unwrap()).abs() < 1e-5,
        "loss {l} vs {}",
        r["loss"]
    );
    assert_close(&last, &floats(&r["last_logits"]), 1e-4, "last logits");
    let grads = r["grads"].as_object().unwrap();
    assert_eq!(
        adapter.named_tensors().len(),
        grads.len(),
        "the trained tensors are those PEFT trains"
    );
    for (name, want) in grads {
        let got: Vec<f64> = all[name]
            .grad()
            .to_kind(Kind::Double)
            .view([-1])
            .try_into()
            .unwrap();
        let want = floats(want);
        let scale = max_abs(&want).max(1e-3);
        assert!(
            max_abs_diff(&got, &want) <= 1e-4 * scale,
            "{name}: gradients differ by {} (scale {scale})",
            max_abs_diff(&got, &want)
        );
    }
}

/// `swift sft --tuner_type TUNER ARGS` for 3 steps on the tiny llama; peft loads the checkpoint
/// (no missing or unexpected keys, the same logits as `swift infer --adapters`), and
/// `--merge_lora true` gives the unmerged logits.
pub(crate) fn trains_and_peft_agrees(tuner: &str, args: &[&str]) {
    let python = reference_python(&["transformers", "peft"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = ten_chat_rows(tmp.path());
    let run = tmp.path().join("run");
    let base = tiny();
    let mut all = vec![
        "sft",
        "--model",
        base.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--output_dir",
        run.to_str().unwrap(),
        "--tuner_type",
        tuner,
        "--max_steps",
        "3",
        "--learning_rate",
        "5e-2",
    ];
    all.extend_from_slice(args);
    ok(swift1(&all));
    let ck = run_folder(&run).join("checkpoint-3");
    crate::train_lora::check_peft(&python, &tiny(), &ck, "1,2,3,4,5", 3);
    let c = ck.to_str().unwrap();
    let (hooked, _) = infer_logits(&["--adapters", c], "1,2,3,4", 1);
    let (merged, _) = infer_logits(&["--adapters", c, "--merge_lora", "true"], "1,2,3,4", 1);
    assert!(
        max_abs_diff(&hooked, &merged) < 1e-4,
        "{}",
        max_abs_diff(&hooked, &merged)
    );
}

#[test]
fn ia3_matches_peft_and_peft_loads_its_checkpoint() {
    matches_reference(
        "ia3",
        json!({"feedforward_modules": ["down_proj"]}),
        &["q_proj", "v_proj", "down_proj"],
        "ia3_reference.json",
        &[],
    );
    trains_and_peft_agrees(
        "ia3",
        &[
            "--target_modules",
            "q_proj",
            "v_proj",
            "down_proj",
            "--feedforward_modules",
            "down_proj",
        ],
    );
}

#[test]
fn vera_matches_peft_and_peft_loads_its_checkpoint() {
    // vera_A / vera_B drawn from projection_prng_key 0 as PEFT draws them.
    matches_reference(
        "vera",
        json!({"vera_rank": 8, "vera_projection_prng_key": 0, "vera_d_initial": 0.1}),
        &["q_proj", "v_proj", "down_proj"],
        "vera_reference.json",
        &["base_model.vera_A", "base_model.vera_B"],
    );
    trains_and_peft_agrees(
        "vera",
        &[
            "--target_modules",
            "q_proj",
            "v_proj",
            "--vera_rank",
            "8",
            "--vera_projection_prng_key",
            "3",
            "--vera_d_initial",
            "0.2",
            "--vera_dropout",
            "0.1",
        ],
    );
}
