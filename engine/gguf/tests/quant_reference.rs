//! Checks the dequantizers and the type table against llama.cpp's gguf-py: the fixture
//! `fixtures/quant_reference.gguf` (written by gguf-py, see `make_quant_reference.py`) holds
//! random blocks of each type next to gguf-py's own dequantization of them.

use std::path::PathBuf;

use swift_gguf::{GgmlType, GgufFile};

fn fixture() -> GgufFile {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant_reference.gguf");
    GgufFile::open(p).unwrap()
}

#[test]
fn dequantization_matches_gguf_py() {
    let f = fixture();
    let mut checked = Vec::new();
    for t in f.tensors() {
        if t.name.ends_with(".expected") {
            continue;
        }
        let ty = t.ggml_type.unwrap();
        assert_eq!(t.name, ty.name());
        let got = f.tensor_f32(&t.name).unwrap();
        let want = f.tensor_f32(&format!("{}.expected", t.name)).unwrap();
        assert_eq!(got.shape, want.shape, "{}", t.name);
        for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
            // gguf-py computes in float32 like ggml, but may associate products differently.
            let tol = 1e-6 * w.abs().max(1.0);
            assert!(
                (g - w).abs() <= tol,
                "{} element {i}: swift-gguf {g}, gguf-py {w}",
                t.name
            );
        }
        checked.push(ty);
    }
    for ty in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(checked.contains(&ty), "{ty} not in the fixture");
    }
}

#[test]
fn type_table_matches_gguf_py() {
    let f = fixture();
    let sizes = f.get_i64_array("reference.quant_sizes").unwrap().unwrap();
    let mut seen = 0;
    for triple in sizes.chunks_exact(3) {
        let (id, block, bytes) = (triple[0] as u32, triple[1] as usize, triple[2] as usize);
        let ty = GgmlType::from_id(id)
            .unwrap_or_else(|| panic!("ggml type id {id} unknown to swift-gguf"));
        assert_eq!(ty.block_size(), block, "{ty}");
        if ty == GgmlType::Q8_1 {
            // gguf-py still lists the old float32 layout (40 bytes); ggml's block_q8_1 has held
            // two f16 since 2024 (36 bytes). Q8_1 is a scratch type and never stored in models.
            assert_eq!(ty.type_size(), 36);
        } else {
            assert_eq!(ty.type_size(), bytes, "{ty}");
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        GgmlType::ALL.len(),
        "swift-gguf knows types gguf-py does not"
    );
}
