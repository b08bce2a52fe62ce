//! The built-in optimizers through their FFI objects (as the host calls them): GaLore against
//! `galore_torch.GaLoreAdamW` and Q-GaLore against the Python transcription, per-step losses and
//! final weights recorded by `tests/reference/galore_reference.py`
//! (`tests/reference/galore_reference.json`); AdamW against hand-computed values; state saved
//! and restored mid-run equals the uninterrupted run.

use serde_json::{json, Value};
use swift_plugin_tensors::optimizer::{OptimizerRequest, OptimizerTensor};
use swift_plugin_tensors::tch::{Kind, Tensor};
use swift_plugin_tensors::OptimizerHandleExt;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/reference/galore_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the recorded reference"))
        .expect("JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn shapes(r: &Value) -> Vec<Vec<i64>> {
    r["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn request(r: &Value, options: Value) -> OptimizerRequest {
    let names = r["names"].as_array().unwrap();
    OptimizerRequest {
        tensors: names
            .iter()
            .zip(shapes(r))
            .map(|(n, shape)| OptimizerTensor {
                name: n.as_str().unwrap().into(),
                shape,
            })
            .collect(),
        options,
    }
}

fn options(base: Value, extra: Value) -> Value {
    let mut o = base;
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

fn defaults(name: &str) -> Value {
    let rec = crate::records::all()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap();
    Value::Object(
        rec.options
            .into_iter()
            .map(|o| (o.name, o.default))
            .collect(),
    )
}

/// Runs `steps` steps of the tiny model from `tensors`; returns the losses. Seeds libtorch with
/// 1000 + step before each update, as the reference does.
/// libtorch's generator is global (stochastic rounding draws from it): one run at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(
    opt: &mut swift_plugin_tensors::OptimizerHandle,
    ws: &[Tensor],
    x: &Tensor,
    t: &Tensor,
    steps: std::ops::Range<usize>,
    lr: f64,
) -> Vec<f64> {
    let _one = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let mut losses = Vec::new();
    for step in steps {
        for w in ws {
            w.shallow_clone().zero_grad();
        }
        let out = (x.matmul(&ws[0].tr()) + &ws[3])
            .tanh()
            .matmul(&ws[1].tr())
            .matmul(&ws[2].tr());
        let loss = (out - t).square().mean(Kind::Float);
        loss.backward();
        losses.push(loss.double_value(&[]));
        swift_plugin_tensors::tch::manual_seed(1000 + step as i64);
        opt.step(ws, &vec![lr; ws.len()]).unwrap();
    }
    losses
}

fn model(r: &Value) -> (Vec<Tensor>, Tensor, Tensor) {
    let ws = r["init"]
        .as_array()
        .unwrap()
        .iter()
        .zip(shapes(r))
        .map(|(v, s)| {
            Tensor::from_slice(&floats(v))
                .reshape(s.as_slice())
                .set_requires_grad(true)
        })
        .collect();
    let x = Tensor::from_slice(&floats(&r["x"])).reshape([6, 8]);
    let t = Tensor::from_slice(&floats(&r["t"])).reshape([6, 4]);
    (ws, x, t)
}

fn galore_options(kind: &str) -> Value {
    let common = json!({"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-6,
        "weight_decay": 0.1, "galore_rank": 2, "galore_scale": 0.5});
    if kind == "galore" {
        options(
            defaults("galore"),
            options(common, json!({"galore_update_proj_gap": 3})),
        )
    } else {
        options(
            defaults("q_galore"),
            options(
                common,
                json!({"galore_update_proj_gap": 2, "galore_proj_group_size": 8,
                    "galore_cos_threshold": -1.0, "galore_queue_size": 2,
                    "galore_weight_group_size": 32, "galore_stochastic_round": true}),
            ),
        )
    }
}

fn check_against_reference(kind: &str) {
    let r = reference();
    let want = &r[kind];
    let (ws, x, t) = model(&r);
    let handle = crate::kind(kind).unwrap();
    let mut opt = handle.create(&request(&r, galore_options(kind))).unwrap();
    let want_losses = floats(&want["losses"]);
    let got = run(&mut opt, &ws, &x, &t, 0..want_losses.len(), 0.01);
    for (i, (g, w)) in got.iter().zip(&want_losses).enumerate() {
        assert!(
            (g - *w as f64).abs() < 1e-5,
            "{kind} step {}: loss {g} vs the reference's {w}\n{got:?}\n{want_losses:?}",
            i + 1
        );
    }
    for (i, (w, v)) in ws.iter().zip(want["final"].as_array().unwrap()).enumerate() {
        let got: Vec<f32> = w.detach().flatten(0, -1).try_into().unwrap();
        let d = got
            .iter()
            .zip(floats(v))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "{kind}: tensor {i} differs by {d} after the run");
    }
}

#[test]
fn galore_equals_galore_torch_for_three_projections() {
    check_against_reference("galore");
}

#[test]
fn q_galore_equals_its_transcription_with_stochastic_rounding_and_a_growing_gap() {
    check_against_reference("q_galore");
}

#[test]
fn galore_state_saved_mid_run_resumes_to_the_same_weights() {
    for kind in ["galore", "q_galore", "adamw"] {
        let r = reference();
        let opts = if kind == "adamw" {
            defaults("adamw")
        } else {
            galore_options(kind)
        };
        // Uninterrupted: 7 steps.
        let (ws, x, t) = model(&r);
        let handle = crate::kind(kind).unwrap();
        let mut opt = handle.create(&request(&r, opts.clone())).unwrap();
        let full = run(&mut opt, &ws, &x, &t, 0..7, 0.01);
        // 4 steps, state out, a fresh optimizer loads it, 3 more.
        let (ws2, ..) = model(&r);
        let mut a = handle.create(&request(&r, opts.clone())).unwrap();
        let mut losses = run(&mut a, &ws2, &x, &t, 0..4, 0.01);
        let state: Vec<(String, Tensor)> = a
            .state()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        drop(a);
        let mut b = handle.create(&request(&r, opts.clone())).unwrap();
        b.load_state(&state).unwrap();
        losses.extend(run(&mut b, &ws2, &x, &t, 4..7, 0.01));
        assert_eq!(losses, full, "{kind}: a resumed run differs");
        // A state without an entry is refused by name.
        let mut c = handle.create(&request(&r, opts)).unwrap();
        let err = c.load_state(&state[1..]).unwrap_err();
        assert!(
            err.contains("has no `") && err.contains(".model.layers.0.mlp.up_proj.weight`"),
            "{err}"
        );
    }
}

#[test]
fn galore_refuses_targets_that_match_nothing() {
    let r = reference();
    let o = options(
        galore_options("galore"),
        json!({"galore_target_modules": ["q_proj"]}),
    );
    let err = match crate::kind("galore").unwrap().create(&request(&r, o)) {
        Err(e) => e,
        Ok(_) => panic!("created"),
    };
    assert!(err.contains("galore_target_modules"), "{err}");
}

fn adamw(tensors: &[(&str, &Tensor)], o: Value) -> swift_plugin_tensors::OptimizerHandle {
    let req = OptimizerRequest {
        tensors: tensors
            .iter()
            .map(|(n, t)| OptimizerTensor {
                name: n.to_string(),
                shape: t.size(),
            })
            .collect(),
        options: options(defaults("adamw"), o),
    };
    crate::kind("adamw").unwrap().create(&req).unwrap()
}

#[test]
fn adamw_matches_torch_adamw_by_hand() {
    // One parameter w = [1, -2] (decayed: make it 2-D), grad = 2w (loss = sum w²).
    let w = Tensor::from_slice(&[1.0f64, -2.0])
        .view([1, 2])
        .set_requires_grad(true);
    let mut opt = adamw(
        &[("w", &w)],
        json!({"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "weight_decay": 0.1}),
    );
    (&w * &w).sum(Kind::Double).backward();
    opt.step(std::slice::from_ref(&w), &[0.1]).unwrap();
    // Step 1: p ← p(1 − lr·wd); m̂ = g, v̂ = g², so the update is lr · g/(|g| + eps) ≈ lr·sign(g).
    let got: Vec<f64> = w.view([-1]).try_into().unwrap();
    let want = [1.0 * (1.0 - 0.01) - 0.1, -2.0 * (1.0 - 0.01) + 0.1];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-7, "{got:?} vs {want:?}");
    }
}

#[test]
fn adamw_per_tensor_rates_and_sleeping_tensors() {
    // The same gradient: `fast` at 4× the rate; `asleep` stops requiring gradients after the
    // first step and must not move again (no momentum drift).
    let fast = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
    let slow = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
    let asleep = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
    let mut opt = adamw(
        &[("fast", &fast), ("slow", &slow), ("asleep", &asleep)],
        json!({"adam_beta2": 0.999}),
    );
    let all = [
        fast.shallow_clone(),
        slow.shallow_clone(),
        asleep.shallow_clone(),
    ];
    let lrs = [0.04, 0.01, 0.01];
    let loss = || (&fast + &slow + &asleep).sum(Kind::Double);
    loss().backward();
    opt.step(&all, &lrs).unwrap();
    for t in &all {
        t.shallow_clone().zero_grad();
    }
    let v = |t: &Tensor| t.double_value(&[]);
    assert!((v(&fast) - 0.96).abs() < 1e-9 && (v(&slow) - 0.99).abs() < 1e-9);
    assert!((v(&asleep) - 0.99).abs() < 1e-9);
    let _ = asleep.set_requires_grad(false);
    let before = v(&asleep);
    loss().backward();
    opt.step(&all, &lrs).unwrap();
    assert_eq!(v(&asleep), before, "a sleeping tensor moved");
    assert!(v(&slow) < 0.99 - 1e-3);
}
