//! The slot choice, and the LoRA family's math against hand-computed values; the crate's test
//! lock on libtorch's one random generator ([`global_rng`]).

use serde_json::json;
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Kind, Tensor};

use crate::lora::{init_factors, lora_forward, merge_weight, LoraConfig, LoraInit, LoraTuner};
use crate::select_targets;

/// Every test of this crate holds this while it runs: libtorch's default generator is one per
/// process, and tests that seed it (`manual_seed`) and then compare draws fail when a test on
/// another thread draws in between. The crate's tests take a fraction of a second in all.
pub(crate) fn global_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding it leaves nothing to repair.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn slots() -> Vec<String> {
    [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.0.mlp.down_proj",
        "lm_head",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn all_linear_skips_the_output_projection() {
    let _rng = crate::tests::global_rng();
    let t = select_targets(&json!({"output_slot": "lm_head"}), &slots()).unwrap();
    assert_eq!(t.len(), 3);
    assert!(!t.contains(&"lm_head".to_string()));
}

#[test]
fn names_match_by_suffix_and_unknown_names_are_errors() {
    let _rng = crate::tests::global_rng();
    let t = select_targets(&json!({"target_modules": ["v_proj", "q_proj"]}), &slots()).unwrap();
    assert_eq!(
        t,
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj"
        ]
    );
    let e = select_targets(&json!({"target_modules": "qkv"}), &slots()).unwrap_err();
    assert!(e.contains("q_proj") && e.contains("all-linear"), "{e}");
}

fn floats(t: &Tensor) -> Vec<f64> {
    t.to_kind(Kind::Double).view([-1]).try_into().unwrap()
}

fn config(r: i64, alpha: f64, use_rslora: bool) -> LoraConfig {
    LoraConfig {
        r,
        alpha,
        dropout: 0.0,
        use_rslora,
        use_dora: false,
        init: LoraInit::Kaiming,
        lr_ratio: None,
    }
}

#[test]
fn the_slot_output_adds_the_scaled_low_rank_product() {
    let _rng = crate::tests::global_rng();
    // x [1, 3], A [2, 3], B [2, 2]: hand-computed.
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
    let a = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, -1.0]).view([2, 3]);
    let b = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
    // x Aᵀ = [4, -1]; (x Aᵀ) Bᵀ = [4 - 2, 12 - 4] = [2, 8]; alpha/r = 16/2 = 8.
    let scale = config(2, 16.0, false).scale();
    let base = Tensor::from_slice(&[0.5f32, -0.5]).view([1, 2]);
    let y = lora_forward(&x, base, &a, &b, scale, 0.0, true, None).unwrap();
    let got: Vec<f32> = y.view([-1]).try_into().unwrap();
    assert_eq!(got, [16.5, 63.5]);
}

#[test]
fn dropout_only_while_training() {
    let _rng = crate::tests::global_rng();
    // A and B are identities, so the adapter's output is dropout(x) element by element: each of
    // the 64 inputs is either dropped (0) or kept and rescaled (1 / (1 - p) = 2). All 64
    // agreeing has probability 2^-63.
    tch::manual_seed(7);
    let eye = || Tensor::eye(64, (Kind::Float, tch::Device::Cpu));
    let x = Tensor::ones([1, 64], (Kind::Float, tch::Device::Cpu));
    let zero = || Tensor::zeros([1, 64], (Kind::Float, tch::Device::Cpu));
    let eval = floats(&lora_forward(&x, zero(), &eye(), &eye(), 1.0, 0.5, false, None).unwrap());
    assert!(eval.iter().all(|&v| v == 1.0), "no dropout in evaluation");
    let train = floats(&lora_forward(&x, zero(), &eye(), &eye(), 1.0, 0.5, true, None).unwrap());
    assert!(train.iter().all(|&v| v == 0.0 || v == 2.0), "{train:?}");
    assert!(
        train.contains(&0.0),
        "dropout drops some inputs while training"
    );
    assert!(
        train.contains(&2.0),
        "dropout keeps and rescales the others"
    );
}

#[test]
fn dora_rescales_each_output_row_to_its_magnitude() {
    let _rng = crate::tests::global_rng();
    // W = [[3, 4], [0, 1]], bias [1, 1], A = [[1, 0]], B = [[1], [0]], s = 1, m = [10, 2],
    // x = [1, 1]. W + s·B·A = [[4, 4], [0, 1]], row norms [√32, 1], so m/‖·‖ = [10/√32, 2].
    // x·(W + s·B·A)ᵀ = [8, 1]; DoRA gives (m/‖·‖) ⊙ [8, 1] + bias = [10√2 + 1, 3].
    let w = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
    let bias = Tensor::from_slice(&[1.0f32, 1.0]);
    let a = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
    let b = Tensor::from_slice(&[1.0f32, 0.0]).view([2, 1]);
    let m = Tensor::from_slice(&[10.0f32, 2.0]);
    let x = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
    let base = x.matmul(&w.tr()) + &bias;
    let got = floats(
        &lora_forward(
            &x,
            base,
            &a,
            &b,
            1.0,
            0.0,
            false,
            Some((&m, &w, Some(&bias))),
        )
        .unwrap(),
    );
    let want = [10.0 * 2f64.sqrt() + 1.0, 3.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn dora_at_its_initial_magnitude_leaves_the_output_unchanged() {
    let _rng = crate::tests::global_rng();
    // m = ‖W‖ per row and B = 0: the slot computes exactly x·Wᵀ + b.
    tch::manual_seed(3);
    let w = Tensor::randn([5, 4], (Kind::Float, tch::Device::Cpu));
    let bias = Tensor::randn([5], (Kind::Float, tch::Device::Cpu));
    let a = Tensor::randn([2, 4], (Kind::Float, tch::Device::Cpu));
    let b = Tensor::zeros([5, 2], (Kind::Float, tch::Device::Cpu));
    let m = w.norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
    let x = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu));
    let base = x.matmul(&w.tr()) + &bias;
    let got = lora_forward(
        &x,
        base.shallow_clone(),
        &a,
        &b,
        4.0,
        0.0,
        false,
        Some((&m, &w, Some(&bias))),
    )
    .unwrap();
    let d = (got - base).abs().max().double_value(&[]);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn pissa_and_olora_start_from_the_weight_and_leave_the_model_unchanged() {
    let _rng = crate::tests::global_rng();
    tch::manual_seed(5);
    let w = Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu));
    let cfg = config(2, 8.0, false);
    let s = cfg.scale();
    for init in [LoraInit::Pissa, LoraInit::Olora] {
        let (a, b, residual) = init_factors(init, &w, &cfg).unwrap();
        assert_eq!((a.size(), b.size()), (vec![2, 4], vec![6, 2]));
        // W_res + s·B·A = W: the model starts where it was.
        let back = &residual + b.matmul(&a) * s;
        let d = (back - &w).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{init:?}: {d}");
    }
    // PiSSA's s·B·A is the best rank-2 approximation: its singular values are W's top two.
    let (a, b, _) = init_factors(LoraInit::Pissa, &w, &cfg).unwrap();
    let (_, sv, _) = w.svd(true, true);
    let (_, sv_ba, _) = (b.matmul(&a) * s).svd(true, true);
    let (top, got) = (floats(&sv.narrow(0, 0, 2)), floats(&sv_ba.narrow(0, 0, 2)));
    for (t, g) in top.iter().zip(&got) {
        assert!((t - g).abs() < 1e-4, "{top:?} vs {got:?}");
    }
    // OLoRA: B has orthonormal columns (Q of W's QR).
    let (_, b, _) = init_factors(LoraInit::Olora, &w, &cfg).unwrap();
    let eye = b.tr().matmul(&b) - Tensor::eye(2, (Kind::Float, tch::Device::Cpu));
    assert!(eye.abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn a_mutated_start_is_saved_as_a_plain_lora_of_twice_the_rank() {
    let _rng = crate::tests::global_rng();
    // Through the contract: a PiSSA plan, its init on W, training moves A, B away from A₀, B₀;
    // the saved rank-2r adapter applied to the original W gives W_res + s·B·A.
    tch::manual_seed(9);
    let w = Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu));
    let request = AttachRequest {
        mode: AttachMode::Train,
        options: json!({"lora_rank": 2, "lora_alpha": 8.0, "init_weights": "pissa"}),
        slots: vec![SlotInfo {
            name: "q".into(),
            kind: SlotKind::Linear,
            shape: vec![6, 4],
            has_bias: false,
            quantized: false,
            layer: None,
        }],
        linear_slots: vec!["q".into()],
        dtype: "float32".into(),
        stored: Default::default(),
        config_file: String::new(),
        weights_file: String::new(),
    };
    let adapter = LoraTuner.attach(&request).unwrap();
    let plan = adapter.plan();
    let names: Vec<&str> = plan.slots[0]
        .tensors
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, ["lora_A", "lora_B", "lora_A0", "lora_B0"]);
    let (init, residual) = adapter.init(Some(0), Some(&w)).unwrap();
    let residual = residual.expect("PiSSA changes the base");
    let a = &init[0] + Tensor::randn([2, 4], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let b = &init[1] + Tensor::randn([6, 2], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let tensors = vec![vec![
        a.shallow_clone(),
        b.shallow_clone(),
        init[2].copy(),
        init[3].copy(),
    ]];
    let saved = adapter.save(&tensors, &[]).unwrap();
    assert_eq!(
        (
            saved.config["r"].as_i64(),
            saved.config["lora_alpha"].as_f64()
        ),
        (Some(4), Some(16.0))
    );
    let (a2, b2) = (&saved.tensors[0].1, &saved.tensors[1].1);
    assert_eq!((a2.size(), b2.size()), (vec![4, 4], vec![6, 4]));
    let trained = &residual + b.matmul(&a) * 4.0;
    let applied = &w + b2.matmul(a2) * (16.0 / 4.0);
    let d = (trained - applied).abs().max().double_value(&[]);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn merge_weight_adds_scaled_b_times_a() {
    let _rng = crate::tests::global_rng();
    // W = 0 [2, 3], A [1, 3] = [1, 2, 3], B [2, 1] = [1, -1], scale 2:
    // W' = 2 * [[1, 2, 3], [-1, -2, -3]].
    let w = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
    let b = Tensor::from_slice(&[1.0f32, -1.0]).view([2, 1]);
    let m: Vec<f32> = merge_weight(&w, &a, &b, 2.0)
        .unwrap()
        .view([-1])
        .try_into()
        .unwrap();
    assert_eq!(m, [2.0, 4.0, 6.0, -2.0, -4.0, -6.0]);
    assert!(merge_weight(&w, &b, &a, 2.0).is_err(), "shapes are checked");
}

#[test]
fn rslora_scale() {
    let _rng = crate::tests::global_rng();
    assert_eq!(config(16, 32.0, true).scale(), 8.0);
}
