//! Every built-in loss against the values `tests/reference/preference_losses.py` computed once
//! from TRL's formulas in numpy (recorded in `tests/reference/preference_losses.json`).

use super::*;
use serde_json::Value;

fn tensor(v: &Value) -> Tensor {
    let xs: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Tensor::from_slice(&xs).to_kind(Kind::Float)
}

fn inputs(x: &Value, grad: bool) -> PreferenceInputs {
    PreferenceInputs {
        chosen_logps: tensor(&x["chosen_logps"]).set_requires_grad(grad),
        rejected_logps: tensor(&x["rejected_logps"]).set_requires_grad(grad),
        chosen_tokens: tensor(&x["chosen_tokens"]),
        rejected_tokens: tensor(&x["rejected_tokens"]),
        ref_chosen_logps: Some(tensor(&x["ref_chosen_logps"])),
        ref_rejected_logps: Some(tensor(&x["ref_rejected_logps"])),
        kl: x
            .get("kl")
            .and_then(Value::as_f64)
            .map(|k| Tensor::from(k as f32)),
    }
}

fn loss_by_name(name: &str) -> Box<dyn PreferenceLoss> {
    match name {
        "sigmoid" => Box::new(Dpo::Sigmoid),
        "ipo" => Box::new(Dpo::Ipo),
        "hinge" => Box::new(Dpo::Hinge),
        "robust" => Box::new(Dpo::Robust),
        "orpo" => Box::new(Orpo),
        "simpo" => Box::new(Cpo::Simpo),
        "cpo" => Box::new(Cpo::Cpo),
        "kto" => Box::new(Kto),
        "bradley_terry" => Box::new(BradleyTerry),
        other => panic!("no loss {other}"),
    }
}

fn close(got: &Tensor, want: &Value, what: &str) {
    let got: Vec<f64> = got.to_kind(Kind::Double).view([-1]).try_into().unwrap();
    let want: Vec<f64> = match want {
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap()).collect(),
        x => vec![x.as_f64().unwrap()],
    };
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn every_loss_matches_the_recorded_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/reference/preference_losses.json"
    );
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for c in &cases {
        let name = c["loss"].as_str().unwrap();
        seen.insert(name.to_string());
        let what = format!("{name} {}", c["params"]);
        let x = inputs(&c["inputs"], true);
        let out = loss_by_name(name).loss(&x, &c["params"]).unwrap();
        close(&out.loss, &c["expected"]["loss"], &format!("{what}: loss"));
        close(
            &out.chosen_rewards,
            &c["expected"]["chosen_rewards"],
            &format!("{what}: chosen rewards"),
        );
        close(
            &out.rejected_rewards,
            &c["expected"]["rejected_rewards"],
            &format!("{what}: rejected rewards"),
        );
        // The loss carries the policy's graph back to the log-probabilities; rewards do not.
        out.loss.backward();
        assert!(x.chosen_logps.grad().defined(), "{what}: no gradient");
        assert!(
            !out.chosen_rewards.requires_grad(),
            "{what}: rewards detached"
        );
    }
    for name in [
        "sigmoid",
        "ipo",
        "hinge",
        "robust",
        "orpo",
        "simpo",
        "cpo",
        "kto",
        "bradley_terry",
    ] {
        assert!(seen.contains(name), "no reference case for {name}");
    }
}

#[test]
fn hand_computed_sigmoid_dpo() {
    // One pair: chosen log-ratio +1, rejected log-ratio −1, β = 0.5: z = 0.5·2 = 1,
    // loss = −log σ(1) = log(1 + e^−1).
    let x = PreferenceInputs {
        chosen_logps: Tensor::from_slice(&[-4.0f32]),
        rejected_logps: Tensor::from_slice(&[-6.0f32]),
        chosen_tokens: Tensor::from_slice(&[2.0f32]),
        rejected_tokens: Tensor::from_slice(&[2.0f32]),
        ref_chosen_logps: Some(Tensor::from_slice(&[-5.0f32])),
        ref_rejected_logps: Some(Tensor::from_slice(&[-5.0f32])),
        kl: None,
    };
    let out = Dpo::Sigmoid
        .loss(&x, &serde_json::json!({"beta": 0.5}))
        .unwrap();
    let want = (1.0 + (-1.0f64).exp()).ln();
    assert!((f64::try_from(&out.loss).unwrap() - want).abs() < 1e-6);
    assert_eq!(
        f64::try_from(&out.chosen_rewards.view([-1]).get(0)).unwrap(),
        0.5
    );
    assert_eq!(
        f64::try_from(&out.rejected_rewards.view([-1]).get(0)).unwrap(),
        -0.5
    );
}

#[test]
fn bad_parameters_and_missing_reference_are_errors() {
    let x = PreferenceInputs {
        chosen_logps: Tensor::from_slice(&[-4.0f32]),
        rejected_logps: Tensor::from_slice(&[-6.0f32]),
        chosen_tokens: Tensor::from_slice(&[2.0f32]),
        rejected_tokens: Tensor::from_slice(&[2.0f32]),
        ref_chosen_logps: None,
        ref_rejected_logps: None,
        kl: None,
    };
    let err = Dpo::Sigmoid.loss(&x, &serde_json::json!({})).err().unwrap();
    assert!(err.contains("reference"), "{err}");
    let err = Orpo
        .loss(&x, &serde_json::json!({"beta": -1}))
        .err()
        .unwrap();
    assert!(err.contains("--beta"), "{err}");
    // Reference-free losses run without it.
    assert!(Cpo::Cpo.loss(&x, &serde_json::json!({})).is_ok());
}

#[test]
fn hand_computed_bradley_terry() {
    // Scores 2 and 0: −log σ(2) = log(1 + e^−2); centring adds 0.1·(2 + 0)² = 0.4.
    let x = PreferenceInputs {
        chosen_logps: Tensor::from_slice(&[2.0f32]),
        rejected_logps: Tensor::from_slice(&[0.0f32]),
        chosen_tokens: Tensor::from_slice(&[3.0f32]),
        rejected_tokens: Tensor::from_slice(&[4.0f32]),
        ref_chosen_logps: None,
        ref_rejected_logps: None,
        kl: None,
    };
    let plain = (1.0 + (-2.0f64).exp()).ln();
    let out = BradleyTerry.loss(&x, &serde_json::json!({})).unwrap();
    assert!((f64::try_from(&out.loss).unwrap() - plain).abs() < 1e-6);
    let out = BradleyTerry
        .loss(&x, &serde_json::json!({"center_rewards_coefficient": 0.1}))
        .unwrap();
    assert!((f64::try_from(&out.loss).unwrap() - plain - 0.4).abs() < 1e-6);
    assert_eq!(
        f64::try_from(&out.chosen_rewards.view([-1]).get(0)).unwrap(),
        2.0
    );
    let err = BradleyTerry
        .loss(&x, &serde_json::json!({"center_rewards_coefficient": -1}))
        .err()
        .unwrap();
    assert!(err.contains("--center_rewards_coefficient"), "{err}");
}

#[test]
fn the_records_name_this_plugin() {
    // The host lists these records under this name without loading this crate.
    assert_eq!(records::PLUGIN, env!("CARGO_PKG_NAME"));
}
