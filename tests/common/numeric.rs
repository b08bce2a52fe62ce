//! Numbers the tests compare: JSON arrays as floats, token ids as `--debug_input_ids`
//! arguments, differences and tolerances, and safetensors files read as float32 tensors.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// A JSON array of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

/// A JSON array of token ids as `1,2,3` (the form `--debug_input_ids` takes).
pub fn ids_arg(v: &Value) -> String {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of ids: {v}"))
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The largest element-wise difference of two equally long vectors.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// The largest magnitude in `a` (0 for an empty slice): the scale of a relative tolerance.
pub fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Asserts that `got` and `want` have the same length and differ by at most `tol` anywhere.
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{what}: {got:?} vs {want:?}");
    }
}

/// Every tensor of a float32 safetensors file, sorted by name.
pub fn read_safetensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{} is not safetensors: {e}", path.display()));
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// [`read_safetensors`] as a map by name.
pub fn tensors_by_name(path: &Path) -> BTreeMap<String, Vec<f32>> {
    read_safetensors(path).into_iter().collect()
}

/// The sorted tensor names of a safetensors file.
pub fn tensor_names(path: &Path) -> Vec<String> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{} is not safetensors: {e}", path.display()));
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
}

/// Whether any element differs.
pub fn changed(before: &[f32], after: &[f32]) -> bool {
    before.iter().zip(after).any(|(a, b)| a != b)
}

/// A file's size in bytes.
pub fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", p.display()))
        .len()
}
