//! `swift export --quant_method rtn --quant_bits 4 --quant_lm_head` on the tiny random llama
//! (tied output projection) and mistral (untied), fast:
//!
//! * the output projection is stored quantized in swift-rs's own layout (tied: once, under the
//!   token embedding's stem, no float copy; untied: `lm_head.*`, the embedding kept in float),
//!   `quantization_config` says `lm_head: true` and converts every module;
//! * the folder's logits equal, within 2e-3 (the output projection's fine product), those of a
//!   float folder this test writes by decoding the stored codes itself (`w = q · scale + min` per group of 32, the layout's
//!   documented formula), and greedy decoding (whose steps run on swift-kernels' Q4_1 kernel
//!   over 8-bit activations, the output projection's largest logits recomputed finer) gives the
//!   float folder's tokens;
//! * the standard layouts keep their rule: `gptq` refuses `--quant_lm_head`, naming it.

use std::collections::HashMap;
use std::path::Path;

use crate::common::*;
use safetensors::{Dtype, SafeTensors};

const IDS: &str = "1,5,9,20,33,7";

/// IEEE half-precision values (little-endian) as f32 (finite values: what the layout stores).
fn f16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| {
            let h = u16::from_le_bytes([c[0], c[1]]);
            let sign = if h >> 15 == 1 { -1.0f32 } else { 1.0 };
            let (e, m) = (((h >> 10) & 31) as i32, (h & 1023) as f32);
            assert!(e != 31, "a stored scale or min is not finite");
            sign * if e == 0 {
                m * 2f32.powi(-24)
            } else {
                (1.0 + m / 1024.0) * 2f32.powi(e - 15)
            }
        })
        .collect()
}

/// A float32 copy of the quantized folder `q` in `out`: every `STEM.qweight` (4-bit codes, low
/// nibble first) with `STEM.scales`/`STEM.mins` (float16, groups of `group` columns) decoded to
/// `STEM.weight`, every float tensor widened, config.json without `quantization_config`.
fn dequantized_copy(q: &Path, out: &Path, group: usize) {
    std::fs::create_dir_all(out).unwrap();
    for e in std::fs::read_dir(q).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name != "model.safetensors" && name != "config.json" {
            std::fs::copy(&p, out.join(&name)).unwrap();
        }
    }
    let mut config = read_json(&q.join("config.json"));
    config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(q.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for (name, t) in st.tensors() {
        if let Some(stem) = name.strip_suffix(".qweight") {
            assert_eq!(t.dtype(), Dtype::U8, "{name}");
            let (rows, half_k) = (t.shape()[0], t.shape()[1]);
            let k = 2 * half_k;
            let s = f16s(st.tensor(&format!("{stem}.scales")).unwrap().data());
            let m = f16s(st.tensor(&format!("{stem}.mins")).unwrap().data());
            let ng = k.div_ceil(group);
            let mut w = vec![0f32; rows * k];
            for r in 0..rows {
                for c in 0..k {
                    let byte = t.data()[r * half_k + c / 2];
                    let code = if c % 2 == 0 { byte & 15 } else { byte >> 4 };
                    let g = r * ng + c / group;
                    w[r * k + c] = code as f32 * s[g] + m[g];
                }
            }
            tensors.insert(format!("{stem}.weight"), (vec![rows, k], w));
        } else if name.ends_with(".scales") || name.ends_with(".mins") {
        } else {
            let v = match t.dtype() {
                Dtype::F16 => f16s(t.data()),
                Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            tensors.insert(name.clone(), (t.shape().to_vec(), v));
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (shape, v))| (n, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

fn export(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export",
        "--model",
        model.to_str().unwrap(),
        "--output_dir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quant_bits",
        "4",
    ];
    args.extend_from_slice(extra);
    swift1(&args)
}

#[test]
fn rtn_quantizes_the_output_projection_tied_or_not_and_decodes_as_its_dequantized_weights() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, tied) in [("llama", true), ("mistral", false)] {
        let out = tmp.path().join(family);
        ok(export(
            &tiny_model(family),
            &out,
            &[
                "--quant_method",
                "rtn",
                "--group_size",
                "32",
                "--quant_lm_head",
            ],
        ));
        let q = &read_json(&out.join("config.json"))["quantization_config"];
        assert_eq!(q["lm_head"], true, "{family}: {q}");
        assert_eq!(q["modules_not_converted"], serde_json::json!([]), "{q}");
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        if tied {
            assert!(has("model.embed_tokens.qweight"), "{family}: {names:?}");
            assert!(!has("model.embed_tokens.weight") && !has("lm_head.qweight"));
        } else {
            assert!(has("lm_head.qweight") && has("model.embed_tokens.weight"));
        }
        let float = tmp.path().join(format!("{family}-float"));
        dequantized_copy(&out, &float, 32);
        let args = |m: &Path| vec!["--model".to_string(), m.display().to_string()];
        let run = |m: &Path| {
            let a = args(m);
            let mut v: Vec<&str> = a.iter().map(String::as_str).collect();
            v.extend(["--device", "cpu"]);
            infer_logits(&v, IDS, 8)
        };
        let (got, got_greedy) = run(&out);
        let (want, want_greedy) = run(&float);
        // The prompt's hidden states are the float folder's bit for bit (dense products); its
        // logits come from the quantized output projection's fine product (activations in 8
        // bits plus 8 bits of their rounding error per block of 32): within 2e-3.
        let d = max_abs_diff(&got, &want);
        eprintln!("{family}: logits vs the dequantized folder's: max |diff| {d:.2e}");
        assert!(
            d < 2e-3,
            "{family}: logits differ from the dequantized folder's by {d}"
        );
        assert_eq!(got_greedy, want_greedy, "{family}: greedy tokens");
    }
    // GPTQ's layout keeps the output projection in float (the standard's rule).
    let o = export(
        &tiny(),
        &tmp.path().join("gptq"),
        &["--quant_method", "gptq", "--quant_lm_head"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--quant_lm_head"),
        "{err}"
    );
}
