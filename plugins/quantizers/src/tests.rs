//! Unit tests with hand-computed values (bitsandbytes needs a GPU, so its formats are checked
//! against the code books and the arithmetic written out here).

use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Kind, Tensor};

use crate::affine;
use crate::bnb::{self, Absmax};
use crate::gptq::{self, GptqParams};
use crate::{awq, hqq, Bnb4Type, Builtin};

fn v(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol,
            "element {i}: {x} vs {y} (all: {a:?} vs {b:?})"
        );
    }
}

#[test]
fn nf4_picks_the_nearest_code_and_scales_by_the_block_absmax() {
    // absmax 2: normalised [0.5, -1, 0.1, 0]; 0.5 lies below the midpoint of codes 12 and 13
    // (0.44071 and 0.56262: 0.50166), 0.1 below that of codes 8 and 9 (0.12026).
    let w = Tensor::from_slice(&[1.0f32, -2.0, 0.2, 0.0]);
    let q = bnb::quantize_4bit(&w, Bnb4Type::Nf4, 4, false).unwrap();
    assert_eq!(Vec::<u8>::try_from(&q.codes).unwrap(), vec![0x0c, 0x78]);
    let back = bnb::dequantize_4bit(&q, &[4]).unwrap();
    close(
        &v(&back),
        &[2.0 * 0.440_709_83, -2.0, 2.0 * 0.079_580_3, 0.0],
        1e-6,
    );
}

#[test]
fn fp4_uses_bitsandbytes_code_order() {
    // absmax 3: [1, -0.25, 0.4667, 0.00333] → codes 3, 8+7, 5 (0.5), 1 (0.0625/12).
    let w = Tensor::from_slice(&[3.0f32, -0.75, 1.4, 0.01]);
    let q = bnb::quantize_4bit(&w, Bnb4Type::Fp4, 4, false).unwrap();
    assert_eq!(
        Vec::<u8>::try_from(&q.codes).unwrap(),
        vec![3 | (15 << 4), 5 | (1 << 4)]
    );
    let back = bnb::dequantize_4bit(&q, &[4]).unwrap();
    close(&v(&back), &[3.0, -0.75, 1.5, 3.0 * 0.0625 / 12.0], 1e-6);
}

#[test]
fn blocks_have_their_own_absmax() {
    let w = Tensor::from_slice(&[1.0f32, -1.0, 4.0, 2.0, 0.5]);
    let q = bnb::quantize_4bit(&w, Bnb4Type::Nf4, 2, false).unwrap();
    let Absmax::Plain(a) = &q.absmax else {
        panic!()
    };
    assert_eq!(v(a), vec![1.0, 4.0, 0.5]);
    let back = bnb::dequantize_4bit(&q, &[5]).unwrap();
    // 2/4 = 0.5 → code 12 (0.44071) → 1.76284; the rest are code-book end points.
    close(&v(&back), &[1.0, -1.0, 4.0, 4.0 * 0.440_709_83, 0.5], 1e-6);
}

#[test]
fn double_quantized_absmax_round_trips_within_half_a_step() {
    let absmax: Vec<f32> = (0..300)
        .map(|i| 0.01 + (i as f32 * 0.37).sin().abs())
        .collect();
    let a = Absmax::new(Tensor::from_slice(&absmax), true).unwrap();
    let Absmax::Double { q, scale, offset } = &a else {
        panic!()
    };
    assert_eq!(q.size(), [300]);
    assert_eq!(q.kind(), Kind::Int8);
    assert_eq!(scale.size(), [2]);
    let mean: f32 = absmax.iter().sum::<f32>() / 300.0;
    close(&v(offset), &[mean], 1e-5);
    let back = v(&a.values().unwrap());
    let s = v(scale);
    for (i, (x, y)) in absmax.iter().zip(&back).enumerate() {
        let step = s[i / 256] / 127.0;
        assert!((x - y).abs() <= step / 2.0 + 1e-6, "{i}: {x} vs {y}");
    }
}

#[test]
fn int8_is_row_absmax() {
    let w = Tensor::from_slice(&[1.0f32, -0.5, 0.25, 2.0, 0.0, -4.0]).view([2, 3]);
    let q = bnb::quantize_8bit(&w).unwrap();
    assert_eq!(v(&q.scb), vec![1.0, 4.0]);
    // -63.5 and 63.5 round half to even.
    assert_eq!(
        Vec::<i8>::try_from(q.q.reshape([-1])).unwrap(),
        vec![127, -64, 32, 64, 0, -127]
    );
    let back = bnb::dequantize_8bit(&q).unwrap();
    close(
        &v(&back),
        &[
            1.0,
            -64.0 / 127.0,
            32.0 / 127.0,
            4.0 * 64.0 / 127.0,
            0.0,
            -4.0,
        ],
        1e-6,
    );
}

#[test]
fn rtn_groups_have_min_and_scale() {
    // Group 0: [0, 1.5, 3] → scale 0.2, min 0; group 1 (shorter): [−1, 2] → scale 0.2, min −1.
    let w = Tensor::from_slice(&[0.0f32, 1.5, 3.0, -1.0, 2.0]).view([1, 5]);
    let a = affine::rtn(&w, 4, 3).unwrap();
    close(&v(&a.scales), &[0.2, 0.2], 1e-4);
    close(&v(&a.mins), &[0.0, -1.0], 0.0);
    assert_eq!(
        Vec::<u8>::try_from(a.q.reshape([-1])).unwrap(),
        vec![0, 8, 15, 0, 15]
    );
    // 1.5 / 0.2 = 7.5 rounds to 8 (f16 scale 0.19995: 7.502).
    let back = affine::dequantize(&a).unwrap();
    let s = v(&a.scales)[0];
    close(
        &v(&back),
        &[0.0, 8.0 * s, 15.0 * s, -1.0, -1.0 + 15.0 * s],
        1e-6,
    );
}

fn seeded(shape: &[i64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, tch::Device::Cpu))
}

/// Inputs with strongly correlated channels (as real activations are).
fn calibration_inputs(rows: i64, n: i64) -> Tensor {
    let base = seeded(&[rows, 4], 1);
    let mix = seeded(&[4, n], 2);
    let scale = Tensor::linspace(0.1, 3.0, n, (Kind::Float, tch::Device::Cpu));
    (base.matmul(&mix) + seeded(&[rows, n], 3) * 0.1) * scale
}

#[test]
fn hqq_lowers_the_weight_error_of_round_to_nearest() {
    let w = seeded(&[32, 64], 7);
    let rtn = affine::dequantize(&affine::rtn(&w, 4, 16).unwrap()).unwrap();
    let h = affine::dequantize(&hqq::quantize(&w, 4, 16, Default::default()).unwrap()).unwrap();
    let e = |x: &Tensor| f64::try_from((&w - x).abs().mean(Kind::Float)).unwrap();
    assert!(e(&h) < e(&rtn), "hqq {} vs rtn {}", e(&h), e(&rtn));
}

#[test]
fn gptq_lowers_the_output_error_of_round_to_nearest_on_calibration_inputs() {
    let w = seeded(&[16, 32], 5);
    let x = calibration_inputs(256, 32);
    let h = x.tr().matmul(&x) * (2.0 / 256.0);
    let rtn = affine::dequantize(&affine::rtn(&w, 4, 8).unwrap()).unwrap();
    let out_err = |wq: &Tensor| {
        f64::try_from((x.matmul(&(&w - wq).tr())).square().mean(Kind::Float)).unwrap()
    };
    for act_order in [false, true] {
        let g = gptq::quantize(
            &w,
            &h,
            GptqParams {
                bits: 4,
                group: 8,
                act_order,
                damp: 0.01,
            },
        )
        .unwrap();
        let gq = affine::dequantize(&g).unwrap();
        assert!(
            out_err(&gq) < 0.8 * out_err(&rtn),
            "act_order {act_order}: gptq {} vs rtn {}",
            out_err(&gq),
            out_err(&rtn)
        );
        // The Hessian form of the error agrees with the direct one.
        let via_h = gptq::output_error(&w, &gq, &h).unwrap();
        let direct = out_err(&gq);
        assert!(
            (via_h - direct).abs() <= 1e-3 * direct.max(1e-9),
            "{via_h} vs {direct}"
        );
    }
}

#[test]
fn awq_lowers_the_output_error_of_round_to_nearest() {
    let w = seeded(&[16, 32], 9);
    let x = calibration_inputs(128, 32);
    let x_mean = x.abs().mean_dim(&[0i64][..], false, Kind::Float);
    let rtn = affine::dequantize(&affine::rtn(&w, 4, 8).unwrap()).unwrap();
    let a = awq::quantize(
        &w,
        &x_mean,
        &x,
        awq::AwqParams {
            bits: 4,
            group: 8,
            grid: 20,
            clip_steps: 10,
        },
    )
    .unwrap();
    let aq = affine::effective_weight(&a).unwrap();
    let out_err = |wq: &Tensor| {
        f64::try_from((x.matmul(&(&w - wq).tr())).square().mean(Kind::Float)).unwrap()
    };
    assert!(
        out_err(&aq) < out_err(&rtn),
        "awq {} vs rtn {}",
        out_err(&aq),
        out_err(&rtn)
    );
}

fn scheme(name: &'static str, bits: u8, options: serde_json::Value) -> Box<dyn QuantScheme> {
    let q = Builtin {
        name,
        bits: &[4, 8],
    };
    let request = SchemeRequest {
        mode: SchemeMode::Export,
        bits: Some(bits),
        options: options.as_object().cloned().unwrap_or_default(),
        config_file: String::new(),
    };
    q.scheme(&request).unwrap()
}

fn call<'a>(w: &'a Tensor, h: Option<&'a Tensor>) -> QuantizeCall<'a> {
    QuantizeCall {
        slot: "s",
        weight: w,
        hessian: h,
        act_mean: None,
        act_rows: None,
    }
}

#[test]
fn packed_slot_forward_is_x_times_the_dequantized_weight() {
    let w = seeded(&[8, 6], 11);
    let x = seeded(&[3, 6], 12);
    let b = seeded(&[8], 13);
    for (m, bits, opts) in [
        ("bnb", 4, serde_json::json!({})),
        ("bnb", 8, serde_json::json!({})),
        ("hqq", 4, serde_json::json!({"group_size": 4})),
        ("rtn", 8, serde_json::json!({"group_size": 4})),
    ] {
        let p = scheme(m, bits, opts).quantize(call(&w, None)).unwrap();
        let y = p.forward(&x, Some(&b)).unwrap();
        let want = x.matmul(&p.dequantize().unwrap().tr()) + &b;
        close(&v(&y), &v(&want), 1e-5);
        // 4-bit codes are stored two per byte.
        let q = &p.tensors().unwrap()[0].1;
        let want_bytes = if bits == 4 { 24 } else { 48 };
        assert_eq!(q.numel(), want_bytes, "{m} {bits}");
    }
}

#[test]
fn gptq_layout_round_trips_and_reads_integer_zero_points() {
    let w = seeded(&[16, 32], 21);
    let x = calibration_inputs(64, 32);
    let h = x.tr().matmul(&x) * (2.0 / 64.0);
    for bits in [4u8, 8] {
        let s = scheme("gptq", bits, serde_json::json!({"group_size": 8}));
        assert_eq!(s.plan().calibration, Calibration::Hessian);
        assert_eq!(s.plan().config["checkpoint_format"], "gptq");
        let p = s.quantize(call(&w, Some(&h))).unwrap();
        let stored = p.tensors().unwrap();
        let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["qweight", "qzeros", "scales", "g_idx"]);
        assert_eq!(stored[0].1.size(), [32 * bits as i64 / 32, 16]);
        assert_eq!(stored[0].1.kind(), Kind::Int);
        let back = s.load("s", [16, 32], &stored).unwrap();
        close(
            &v(&back.dequantize().unwrap()),
            &v(&p.dequantize().unwrap()),
            0.0,
        );
        // Integer zero points: every weight is (q − z) · scale with q, z in range.
        let a = p.affine_codes().unwrap();
        let z = a.mins.neg() / &a.scales;
        close(&v(&z), &v(&z.round()), 1e-3);
    }
}

#[test]
fn awq_layout_round_trips_with_its_input_scale() {
    let w = seeded(&[16, 32], 31);
    let x = calibration_inputs(64, 32);
    let mean = x.abs().mean_dim(&[0i64][..], false, Kind::Float);
    let s = scheme("awq", 4, serde_json::json!({"group_size": 8}));
    let p = s
        .quantize(QuantizeCall {
            slot: "s",
            weight: &w,
            hessian: None,
            act_mean: Some(&mean),
            act_rows: Some(&x),
        })
        .unwrap();
    let stored = p.tensors().unwrap();
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["qweight", "qzeros", "scales", "input_scale"]);
    assert_eq!(stored[0].1.size(), [32, 2]);
    let back = s.load("s", [16, 32], &stored).unwrap();
    close(
        &v(&back.dequantize().unwrap()),
        &v(&p.dequantize().unwrap()),
        0.0,
    );
}

#[test]
fn unsupported_bits_are_refused_with_the_supported_ones() {
    let awq = Builtin {
        name: "awq",
        bits: &[4],
    };
    let e = awq.check_bits(8).unwrap_err();
    assert!(e.contains("awq") && e.contains("must be 4"), "{e}");
    let e = awq
        .scheme(&SchemeRequest {
            mode: SchemeMode::Export,
            bits: Some(4),
            options: serde_json::json!({"act_order": true})
                .as_object()
                .cloned()
                .unwrap(),
            config_file: String::new(),
        })
        .err()
        .unwrap();
    assert!(
        e.contains("--act_order does not apply to --quant_method awq"),
        "{e}"
    );
}
