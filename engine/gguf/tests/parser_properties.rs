//! Property tests of the GGUF reader, the file format users hand over most: a valid file written
//! by `GgufWriter` (metadata of every value type, nested arrays, float and quantized tensors) is
//! damaged at random (bytes overwritten, a count or length replaced by a huge or small number,
//! the file cut short) and opened; so are random bytes behind a valid magic and version. Opening
//! must return `Ok` or `Err`, never panic, and no single allocation may exceed a bound set by the
//! file's length (a header's counts must not drive allocation): a counting allocator measures
//! it. When the file opens, every metadata getter and every tensor's dequantization must also
//! return without panicking.
//!
//! Cases: `PROPTEST_CASES` (proptest's default, 256, in `make test`; `make fuzz` runs more).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use swift_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue, ValueType, QK_K};

/// The system allocator, noting per thread the largest single allocation asked for.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards to `System` unchanged; only records sizes in a const-initialised thread local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A small valid GGUF file, written once.
fn valid() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut w = GgufWriter::new();
        w.set_metadata("general.architecture", "llama");
        w.set_metadata("llama.block_count", 2u32);
        w.set_metadata("llama.rope.freq_base", 10000.0f32);
        w.set_metadata("general.flag", true);
        w.set_metadata("general.big", u64::MAX / 3);
        w.set_metadata(
            "tokenizer.ggml.tokens",
            vec!["<s>".to_string(), "a".into(), "bc".into()],
        );
        w.set_metadata(
            "tokenizer.ggml.scores",
            MetadataValue::Array(
                ValueType::F32,
                vec![MetadataValue::F32(0.5), MetadataValue::F32(-1.0)],
            ),
        );
        w.set_metadata(
            "general.nested",
            MetadataValue::Array(
                ValueType::Array,
                vec![MetadataValue::Array(
                    ValueType::I32,
                    vec![MetadataValue::I32(-3), MetadataValue::I32(7)],
                )],
            ),
        );
        let vals: Vec<f32> = (0..64).map(|i| i as f32 / 7.0 - 3.0).collect();
        w.add_tensor_f32("a.weight", &[2, 32], &vals, GgmlType::F32)
            .unwrap();
        w.add_tensor_f32("b.weight", &[2, 32], &vals, GgmlType::Q8_0)
            .unwrap();
        w.add_tensor_f32("c.weight", &[4, 16], &vals, GgmlType::F16)
            .unwrap();
        let q4k = GgmlType::Q4_K.bytes_for(QK_K as u64).unwrap() as usize;
        w.add_tensor_bytes(
            "d.weight",
            &[1, QK_K],
            GgmlType::Q4_K,
            (0..q4k).map(|i| (i * 31 % 251) as u8).collect(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("valid.gguf");
        w.write(&path).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// Opens `bytes` as a GGUF file and uses everything it offers; returns the largest single
/// allocation made meanwhile.
fn open_and_use(dir: &Path, bytes: &[u8]) -> usize {
    let path = dir.join("case.gguf");
    std::fs::write(&path, bytes).unwrap();
    LARGEST.with(|l| l.set(0));
    if let Ok(f) = GgufFile::open(&path) {
        let keys: Vec<String> = f.metadata_entries().map(|(k, _)| k.to_string()).collect();
        for k in &keys {
            let _ = f.get_u64(k);
            let _ = f.get_i64(k);
            let _ = f.get_f64(k);
            let _ = f.get_bool(k);
            let _ = f.get_str(k);
            let _ = f.get_str_array(k);
            let _ = f.get_i64_array(k);
            let _ = f.get_f64_array(k);
        }
        let _ = f.architecture();
        let _ = f.parameter_count();
        for t in f.tensors().to_vec() {
            let _ = t.shape();
            let _ = f.f32_of(&t);
        }
    }
    LARGEST.with(|l| l.get())
}

/// What the reader may allocate at once for a file of `len` bytes: the file's own values, each
/// held in a 32-byte `MetadataValue` or a 4-byte `f32`, plus a fixed allowance.
fn bound(len: usize) -> usize {
    64 * len + (4 << 20)
}

/// One damage to a file.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite one byte.
    Byte(usize, u8),
    /// Write a little-endian u64 (a count, a length, an offset) at a position.
    Word(usize, u64),
    /// Cut the file at a position.
    Cut(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    let word = prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1u64 << 40),
        Just(1u64 << 32),
        0u64..64,
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Damage::Byte(p, b)),
        (any::<usize>(), word).prop_map(|(p, w)| Damage::Word(p, w)),
        any::<usize>().prop_map(Damage::Cut),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    let len = bytes.len().max(1);
    match *d {
        Damage::Byte(p, b) => {
            if let Some(x) = bytes.get_mut(p % len) {
                *x = b;
            }
        }
        Damage::Word(p, w) => {
            let at = p % len;
            for (i, b) in w.to_le_bytes().into_iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = b;
                }
            }
        }
        Damage::Cut(p) => bytes.truncate(p % len),
    }
}

proptest! {
    #[test]
    fn damaged_gguf_files_are_refused_or_read_without_panic(
        damages in proptest::collection::vec(damage(), 1..6)
    ) {
        let mut bytes = valid().to_vec();
        for d in &damages {
            apply(&mut bytes, d);
        }
        let dir = tempfile::tempdir().unwrap();
        let largest = open_and_use(dir.path(), &bytes);
        prop_assert!(largest <= bound(bytes.len()), "{largest} bytes at once for a {}-byte file", bytes.len());
    }

    #[test]
    fn random_bytes_behind_a_gguf_magic_are_refused_or_read_without_panic(
        version in prop_oneof![Just(2u32), Just(3u32)],
        counts in (0u64..8, 0u64..8),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(counts.0.to_le_bytes());
        bytes.extend(counts.1.to_le_bytes());
        bytes.extend(body);
        let dir = tempfile::tempdir().unwrap();
        let largest = open_and_use(dir.path(), &bytes);
        prop_assert!(largest <= bound(bytes.len()), "{largest} bytes at once for a {}-byte file", bytes.len());
    }
}

/// The undamaged file opens and reads back (else the damage tests would prove little).
#[test]
fn the_valid_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    std::fs::write(&path, valid()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensors().len(), 4);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap(),
        ["<s>", "a", "bc"]
    );
    assert_eq!(f.tensor_f32("a.weight").unwrap().data[8], 8.0 / 7.0 - 3.0);
}

/// A metadata array whose length claims 2^40 strings, in a file of a few hundred bytes, is
/// refused without reserving room for them.
#[test]
fn a_huge_array_length_allocates_nothing_for_it() {
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "llama");
    w.set_metadata("tokenizer.ggml.tokens", vec!["a".to_string(); 40]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    w.write(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // The array's header: key, type 9 (array), element type 8 (string), then the u64 length.
    let key = b"tokenizer.ggml.tokens";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 8;
    assert_eq!(&bytes[at - 8..at], [9, 0, 0, 0, 8, 0, 0, 0]);
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let largest = open_and_use(dir.path(), &bytes);
    assert!(largest < 1 << 20, "{largest} bytes at once");
    std::fs::write(&path, &bytes).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("a.gguf"), "{err}");
}
