//! The quantizer contract end to end on the tiny random llama (fast):
//!
//! * GPTQ and AWQ exports are in the standard packed layouts: the committed reference unpacker
//!   (tests/reference/quant_layouts.py, numpy, written from GPTQModel's and AutoAWQ's layouts)
//!   reads them back to float weights whose logits in swift equal the quantized folder's
//!   (within 1e-4); folders the reference packer writes (GPTQ symmetric with an act-order
//!   `g_idx`, AutoAWQ's zero-point GEMM) load, and their logits equal those of the float
//!   weights their codes stand for;
//! * a third-party quantizer: the example plugin's `example-int8` (its own packing and forward)
//!   exports through `--plugin-dir`, its stored codes are the hand-computed per-row absmax
//!   codes of the float weights, the folder reloads and answers greedily with the logits of its
//!   dequantized weights, and without the plugin the folder is refused naming the quantizer.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const IDS: &str = "1,5,9,20,33,7";

fn logits(extra: &[&str], model: &Path) -> (Vec<f64>, Value) {
    let mut args: Vec<&str> = extra.to_vec();
    let m = model.to_str().unwrap();
    args.extend(["--model", m, "--device", "cpu"]);
    // `--plugin-dir` is global: it goes before the command.
    let (globals, rest): (Vec<&str>, Vec<&str>) = if args.first() == Some(&"--plugin-dir") {
        (args[..2].to_vec(), args[2..].to_vec())
    } else {
        (Vec::new(), args)
    };
    let n = "4";
    let mut full = globals;
    full.push("infer");
    full.extend(rest);
    full.extend(["--debug_input_ids", IDS, "--debug_greedy_tokens", n]);
    let v = json_out(swift1(&full));
    (floats(&v["last_logits"]), v["greedy"].clone())
}

fn layouts_py(args: &[&str]) {
    let python = reference_python(&["numpy", "safetensors"]);
    let script = workspace_root().join("tests/reference/quant_layouts.py");
    let o = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "quant_layouts.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn export(flags: &[&str]) {
    let mut args = vec!["export", "--device", "cpu"];
    args.extend_from_slice(flags);
    ok(swift1(&args));
}

#[test]
fn gptq_and_awq_exports_and_imports_follow_the_standard_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n);
    let calib = write_jsonl(
        &t("calib.jsonl"),
        (0..6).map(|i| serde_json::json!({"text": format!("the weather {i} is sunny and warm today with a light breeze, blue sky {i}")})),
    );
    let m = tiny();
    for method in ["gptq", "awq"] {
        let out = t(method);
        export(&[
            "--model",
            m.to_str().unwrap(),
            "--quant_method",
            method,
            "--quant_bits",
            "4",
            "--group_size",
            "32",
            "--dataset",
            calib.to_str().unwrap(),
            "--quant_n_samples",
            "4",
            "--max_length",
            "32",
            "--output_dir",
            out.to_str().unwrap(),
        ]);
        let q = &read_json(&out.join("config.json"))["quantization_config"];
        assert_eq!(q["quant_method"], method, "{q}");
        assert_eq!(q["bits"], 4, "{q}");
        assert_eq!(q["group_size"], 32, "{q}");
        match method {
            "gptq" => assert_eq!(q["checkpoint_format"], "gptq", "{q}"),
            _ => assert_eq!(q["version"], "gemm", "{q}"),
        }
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let qw = st
            .tensor("model.layers.0.self_attn.k_proj.qweight")
            .unwrap();
        assert_eq!(qw.dtype(), safetensors::Dtype::I32);
        // k_proj is [32, 64]: GPTQ packs 8 input columns per word, AWQ 8 output channels.
        let want: &[usize] = if method == "gptq" { &[8, 32] } else { &[64, 4] };
        assert_eq!(qw.shape(), want, "{method}");
        // The reference unpacker's float weights give the quantized folder's logits.
        let float = t(&format!("{method}-float"));
        layouts_py(&["unpack", out.to_str().unwrap(), float.to_str().unwrap()]);
        let (got, _) = logits(&[], &out);
        let (want, _) = logits(&[], &float);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "{method}: export vs reference unpacker: {d}");

        // Import: a folder written by the reference packer.
        let packed = t(&format!("{method}-ref"));
        let packed_float = t(&format!("{method}-ref-float"));
        layouts_py(&[
            "pack",
            m.to_str().unwrap(),
            method,
            packed.to_str().unwrap(),
            packed_float.to_str().unwrap(),
        ]);
        let (got, _) = logits(&[], &packed);
        let (want, _) = logits(&[], &packed_float);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "{method}: reference-packed folder: {d}");
    }
}

/// The stored tensor `name` of a safetensors file as raw bytes with its dtype and shape.
fn raw(st: &safetensors::SafeTensors<'_>, name: &str) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.dtype(), t.shape().to_vec(), t.data().to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn a_plugins_quantizer_exports_reloads_and_answers() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let pd = plugins.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int8");
    let m = tiny();
    ok(swift1(&[
        "--plugin-dir",
        pd,
        "export",
        "--model",
        m.to_str().unwrap(),
        "--quant_method",
        "example-int8",
        "--quant_bits",
        "8",
        "--output_dir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let q = &read_json(&out.join("config.json"))["quantization_config"];
    assert_eq!(q["quant_method"], "example-int8", "{q}");
    assert_eq!(q["modules_not_converted"][0], "lm_head", "{q}");

    // The stored codes are round(w · 127 / absmax_row), the scale absmax_row / 127.
    let fbytes = std::fs::read(m.join("model.safetensors")).unwrap();
    let fst = safetensors::SafeTensors::deserialize(&fbytes).unwrap();
    let qbytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let qst = safetensors::SafeTensors::deserialize(&qbytes).unwrap();
    let stem = "model.layers.1.mlp.down_proj";
    let (_, shape, w) = raw(&fst, &format!("{stem}.weight"));
    let w = f32s(&w);
    let (dt, qshape, codes) = raw(&qst, &format!("{stem}.qweight"));
    assert_eq!(
        (dt, qshape.as_slice()),
        (safetensors::Dtype::I8, shape.as_slice())
    );
    let (_, _, scale) = raw(&qst, &format!("{stem}.row_scale"));
    let scale = f32s(&scale);
    let cols = shape[1];
    for (r, row) in w.chunks(cols).enumerate() {
        let absmax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            (scale[r] - absmax / 127.0).abs() <= 1e-6 * absmax,
            "row {r}"
        );
        for (c, x) in row.iter().enumerate() {
            // As the plugin computes it: (w / absmax) · 127, rounded half to even.
            let want = ((x / absmax) * 127.0).round_ties_even() as i8;
            let got = codes[r * cols + c] as i8;
            assert_eq!(got, want, "[{r}, {c}]");
        }
    }

    // The folder reloads through the plugin and answers with the logits of its dequantized
    // weights (a float folder written here from the stored codes).
    let deq = tmp.path().join("deq");
    std::fs::create_dir_all(&deq).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(m.join(f), deq.join(f)).unwrap();
    }
    // Every other tensor as the export stored it (float16).
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in qst.tensors() {
        if name.ends_with(".row_scale") {
            continue;
        }
        match name.strip_suffix(".qweight") {
            Some(stem) => {
                let (_, s, c) = raw(&qst, &name);
                let (_, _, sc) = raw(&qst, &format!("{stem}.row_scale"));
                let sc = f32s(&sc);
                let vals: Vec<u8> = c
                    .iter()
                    .enumerate()
                    .flat_map(|(i, b)| ((*b as i8) as f32 * sc[i / s[1]]).to_le_bytes())
                    .collect();
                data.push((format!("{stem}.weight"), safetensors::Dtype::F32, s, vals));
            }
            None => data.push((
                name.clone(),
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )),
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &deq.join("model.safetensors")).unwrap();
    let (got, greedy) = logits(&["--plugin-dir", pd], &out);
    let (want, want_greedy) = logits(&[], &deq);
    let d = max_abs_diff(&got, &want);
    assert!(
        d < 1e-4,
        "example-int8 folder vs its dequantized weights: {d}"
    );
    assert_eq!(greedy.as_array().map(Vec::len), Some(4), "{greedy}");
    assert_eq!(greedy, want_greedy);

    // Without the plugin the folder names its quantizer.
    assert_fails(
        swift1(&[
            "infer",
            "--model",
            out.to_str().unwrap(),
            "--debug_input_ids",
            IDS,
        ]),
        &["example-int8"],
    );
}
