//! Property tests of the dataset files users hand over: random bytes and damaged rows in every
//! text format (`.jsonl`, `.json`, `.csv`, `.tsv`, `.txt`) through the row readers, and rows of
//! random JSON under the column names the built-in preprocessors look for (messages,
//! conversations, query/response, instruction/output, chosen/rejected, tools, ...) through the
//! whole loader (`auto` preprocessing, the row checks). Reading must give rows or errors, never
//! panic, and end: a reader yields at most one item per line or byte of the file.
//!
//! Cases: `PROPTEST_CASES` (proptest's default, 256, in `make test`; `make fuzz` runs more).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use swift_data::read::{self, Format};
use swift_data::{open_dataset, DatasetOptions};
use swift_plugin_datasets as _;
use swift_registry::{PluginLoader, Registries};

fn regs() -> &'static Registries {
    static REGS: OnceLock<Registries> = OnceLock::new();
    REGS.get_or_init(|| {
        PluginLoader::new(vec![])
            .load(&[])
            .expect("built-in plugins load")
            .registries
    })
}

/// Pieces of dataset files: valid rows, near-valid ones, and structure characters.
const PIECES: &[&str] = &[
    "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}",
    "{\"query\": \"q\", \"response\": \"r\"}",
    "{\"instruction\": \"i\", \"input\": \"\", \"output\": \"o\"}",
    "[{\"query\": \"q\", \"response\": \"r\"}]",
    "{\"rows\": [",
    "query,response",
    "\"a,b\",\"c\"\"d\"",
    "q\tr",
    "\n",
    "\r\n",
    ",",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\\",
    "\u{feff}",
    "null",
    "1e999",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "é",
];

fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(PIECES), 0..12)
            .prop_map(|p| p.concat().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Reads every row of `path`, parsed or stepped over; the number of items seen.
fn read_all(path: &Path, format: Format, parse: bool, limit: usize) -> usize {
    let mut seen = 0;
    if let Ok(mut r) = read::open(path, format) {
        while let Some(_row) = r.next_row(parse) {
            seen += 1;
            assert!(
                seen <= limit,
                "{path:?}: more than {limit} items from the reader"
            );
        }
    }
    seen
}

/// JSON values of any shape, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z{}<>\\n ]{0,8}".prop_map(Value::from),
        proptest::sample::select(
            &[
                "user",
                "assistant",
                "system",
                "tool",
                "human",
                "gpt",
                "function_call",
                "observation",
                "wizard"
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Column and field names the preprocessors look for.
fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(
        &[
            "messages",
            "conversations",
            "role",
            "content",
            "from",
            "value",
            "query",
            "response",
            "instruction",
            "input",
            "output",
            "system",
            "history",
            "tools",
            "tool_calls",
            "chosen",
            "rejected",
            "rejected_response",
            "label",
            "text",
            "images",
            "prompt",
            "completion",
            "function",
            "name",
            "arguments",
        ][..],
    )
    .prop_map(String::from)
}

fn row() -> impl Strategy<Value = Value> {
    proptest::collection::vec((key(), json_value()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_file_is_read_as_rows_or_errors(bytes in contents()) {
        let dir = tempfile::tempdir().unwrap();
        for (ext, format) in [("jsonl", Format::Jsonl), ("json", Format::Json), ("csv", Format::Csv),
                              ("tsv", Format::Tsv), ("txt", Format::Text)] {
            let path = dir.path().join(format!("data.{ext}"));
            std::fs::write(&path, &bytes).unwrap();
            let limit = bytes.len() + 2;
            let parsed = read_all(&path, format, true, limit);
            let stepped = read_all(&path, format, false, limit);
            prop_assert_eq!(parsed, stepped, "{} rows parsed and stepped over differ", ext);
            let _ = read::count_rows(&path, format);
        }
    }

    #[test]
    fn any_row_is_preprocessed_or_refused(rows in proptest::collection::vec(row(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&path, text).unwrap();
        for skip_bad_rows in [false, true] {
            let opts = DatasetOptions { skip_bad_rows, ..Default::default() };
            if let Ok(ds) = open_dataset(path.to_str().unwrap(), regs(), &opts) {
                let mut seen = 0;
                for item in ds {
                    seen += 1;
                    prop_assert!(seen <= rows.len(), "more items than rows");
                    if let Ok(r) = item {
                        prop_assert!(!r.row.messages.is_empty());
                    }
                }
            }
        }
    }
}

/// A `.json` file whose structure is broken gives one error, then no more rows (it gave the same
/// error forever: the byte at fault was never consumed).
#[test]
fn a_broken_json_file_gives_one_error_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "]",
        "[{\"q\": 1}] x",
        "{\"a\": 1}",
        "[{\"q\": 1} {\"q\": 2}]",
    ] {
        let path = dir.path().join("data.json");
        std::fs::write(&path, text).unwrap();
        for parse in [true, false] {
            let mut r = read::open(&path, Format::Json).unwrap();
            let items: Vec<_> = std::iter::from_fn(|| r.next_row(parse)).take(10).collect();
            let errors = items.iter().filter(|i| i.is_err()).count();
            assert_eq!(errors, 1, "{text}: {items:?}");
            assert!(
                items.last().unwrap().is_err(),
                "{text}: the error comes last"
            );
        }
    }
}
