//! Integration tests of dataset loading through the real registries (built-in plugins linked):
//! every file format, `#N` sampling, column renames, placeholders, and each bad-input case with
//! the exact `file:line` in the message.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use swift_data::{
    open_dataset, open_datasets, split_dataset, DataError, Dataset, DatasetOptions, SourcedRow,
};
use swift_plugin_api::{DatasetRecord, Message};
use swift_plugin_datasets as _;
use swift_registry::{Entry, PluginLoader, Provenance, Registries};

fn regs() -> Registries {
    PluginLoader::new(vec![])
        .load(&[])
        .expect("built-in plugins load")
        .registries
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .expect("write test file");
    p
}

fn rows(ds: Dataset) -> Vec<SourcedRow> {
    ds.collect::<Result<Vec<_>, _>>().expect("rows read")
}

fn open(path: &Path, opts: &DatasetOptions) -> Dataset {
    open_dataset(path.to_str().expect("utf-8 path"), &regs(), opts).expect("dataset opens")
}

fn err_of(ds: Dataset) -> DataError {
    ds.into_iter().find_map(Result::err).expect("an error")
}

fn qa(q: &str, a: &str) -> Vec<Message> {
    vec![Message::new("user", q), Message::new("assistant", a)]
}

#[test]
fn jsonl_rows_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.jsonl", "{\"query\": \"q1\", \"response\": \"a1\"}\n\n{\"instruction\": \"q2\", \"input\": \"\", \"output\": \"a2\"}\r\n");
    let got = rows(open(&p, &DatasetOptions::default()));
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].line, got[0].index, got[0].row.messages.clone()),
        (1, 0, qa("q1", "a1"))
    );
    assert_eq!(
        (got[1].line, got[1].index, got[1].row.messages.clone()),
        (3, 1, qa("q2", "a2"))
    );
    assert_eq!(got[0].file, p);
}

#[test]
fn json_array_object_of_rows_and_single_key_list() {
    let dir = tempfile::tempdir().unwrap();
    let array = write(
        dir.path(),
        "a.json",
        "[\n  {\n    \"query\": \"q1\",\n    \"response\": \"a1 ]}\\\" tricky\"\n  },\n  {\"query\": \"q2\", \"response\": \"a2\"},\n]\n",
    );
    let got = rows(open(&array, &DatasetOptions::default()));
    assert_eq!(got.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 6]);
    assert_eq!(got[0].row.messages, qa("q1", "a1 ]}\" tricky"));
    let keyed = write(dir.path(), "k.json", "{\"r1\": {\"query\": \"q1\", \"response\": \"a1\"},\n \"r2\": {\"query\": \"q2\", \"response\": \"a2\"}}");
    let got = rows(open(&keyed, &DatasetOptions::default()));
    assert_eq!(
        got.iter()
            .map(|r| (r.line, r.row.messages.clone()))
            .collect::<Vec<_>>(),
        [(1, qa("q1", "a1")), (2, qa("q2", "a2"))]
    );
    let listed = write(dir.path(), "l.json", "{\"data\": [{\"query\": \"q1\", \"response\": \"a1\"}, {\"query\": \"q2\", \"response\": \"a2\"}]}");
    assert_eq!(rows(open(&listed, &DatasetOptions::default())).len(), 2);
    let two = write(
        dir.path(),
        "t.json",
        "{\"train\": [{\"query\": \"q\", \"response\": \"a\"}],\n \"test\": []}",
    );
    let e = err_of(open(&two, &DatasetOptions::default()));
    assert!(
        e.to_string().contains(&format!("{}:2:", two.display()))
            && e.to_string().contains("`test`"),
        "{e}"
    );
}

#[test]
fn csv_tsv_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "d.csv",
        "instruction,input,output\n\"Say \"\"hi\"\"\",,hi\nAdd,\"2\nand 3\",5\n",
    );
    let got = rows(open(&csv, &DatasetOptions::default()));
    assert_eq!(got[0].row.messages, qa("Say \"hi\"", "hi"));
    assert_eq!(
        (got[1].line, got[1].row.messages.clone()),
        (3, qa("Add\n2\nand 3", "5"))
    );
    let tsv = write(dir.path(), "d.tsv", "question\tanswer\nq\ta\n");
    assert_eq!(
        rows(open(&tsv, &DatasetOptions::default()))[0].row.messages,
        qa("q", "a")
    );
    let txt = write(dir.path(), "d.txt", "First document.\n\nSecond document.\n");
    let got = rows(open(&txt, &DatasetOptions::default()));
    assert_eq!(got.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        got[1].row.messages,
        vec![Message::new("assistant", "Second document.")]
    );
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_rows() {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.parquet");
    let schema = parquet::schema::parser::parse_message_type(
        "message schema { REQUIRED BYTE_ARRAY query (UTF8); REQUIRED BYTE_ARRAY response (UTF8); }",
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&path).unwrap(),
        Arc::new(schema),
        Arc::new(props),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let cols = [["q1", "q2", "q3"], ["a1", "a2", "a3"]];
    let mut i = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        let values: Vec<ByteArray> = cols[i].iter().map(|s| ByteArray::from(*s)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        i += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
    let got = rows(open(&path, &DatasetOptions::default()));
    assert_eq!(got.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(got[2].row.messages, qa("q3", "a3"));
    // Sampling knows the row count from the footer.
    let opts = DatasetOptions::default();
    let spec = format!("{}#2", path.display());
    assert_eq!(rows(open_dataset(&spec, &regs(), &opts).unwrap()).len(), 2);
}

fn numbered(dir: &Path, n: usize) -> PathBuf {
    let body: String = (0..n)
        .map(|i| format!("{{\"query\": \"q{i}\", \"response\": \"a{i}\"}}\n"))
        .collect();
    write(dir, "n.jsonl", &body)
}

fn sample(path: &Path, n: usize, seed: u64) -> Vec<u64> {
    let opts = DatasetOptions {
        data_seed: seed,
        ..Default::default()
    };
    let spec = format!("{}#{n}", path.display());
    rows(open_dataset(&spec, &regs(), &opts).unwrap())
        .iter()
        .map(|r| r.index)
        .collect()
}

#[test]
fn sampling_is_deterministic_and_repeats_then_samples() {
    let dir = tempfile::tempdir().unwrap();
    let p = numbered(dir.path(), 10);
    let a = sample(&p, 4, 1);
    assert_eq!(a.len(), 4);
    assert!(
        a.windows(2).all(|w| w[0] < w[1]),
        "distinct rows in file order: {a:?}"
    );
    assert_eq!(a, sample(&p, 4, 1), "same seed, same rows");
    assert!(
        (2..8).any(|s| sample(&p, 4, s) != a),
        "another seed picks other rows"
    );
    // 25 of 10: two whole passes, then 5 distinct rows.
    let b = sample(&p, 25, 1);
    assert_eq!(b.len(), 25);
    assert_eq!(&b[..10], &(0..10).collect::<Vec<_>>()[..]);
    assert_eq!(&b[10..20], &(0..10).collect::<Vec<_>>()[..]);
    let rest = &b[20..];
    assert!(rest.windows(2).all(|w| w[0] < w[1]), "{rest:?}");
    let mut counts = [0; 10];
    b.iter().for_each(|&i| counts[i as usize] += 1);
    assert_eq!(counts.iter().filter(|&&c| c == 3).count(), 5);
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 5);
    // Exactly the length: the whole file once.
    assert_eq!(sample(&p, 10, 1), (0..10).collect::<Vec<_>>());
}

#[test]
fn sampling_spec_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = numbered(dir.path(), 3);
    for (suffix, want) in [("#0", "#0"), ("#x", "number of rows")] {
        let spec = format!("{}{suffix}", p.display());
        let e = open_dataset(&spec, &regs(), &DatasetOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn column_renames_from_options_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.jsonl",
        "{\"Q\": \"q\", \"A\": \"a\", \"sys\": \"S\"}\n",
    );
    let opts = DatasetOptions {
        columns: DatasetOptions::parse_columns(r#"{"q": "query", "a": "response"}"#).unwrap(),
        ..Default::default()
    };
    let got = rows(open(&p, &opts));
    assert_eq!(
        got[0].row.messages,
        qa("q", "a"),
        "renames match case-insensitively"
    );
    // A registered dataset's own renames come first, --columns after.
    let mut regs = regs();
    let mut columns = BTreeMap::new();
    columns.insert("Q".to_string(), "query".to_string());
    columns.insert("A".to_string(), "response".to_string());
    let record = DatasetRecord {
        name: "renamed".into(),
        aliases: vec![],
        description: String::new(),
        path: p.display().to_string(),
        preprocessor: "auto".into(),
        columns,
    };
    regs.datasets
        .insert(
            Entry {
                record,
                imp: None,
                provenance: Provenance::TextFile {
                    path: dir.path().join("x.toml"),
                },
            },
            false,
        )
        .unwrap();
    let opts = DatasetOptions {
        columns: BTreeMap::from([("sys".to_string(), "system".to_string())]),
        ..Default::default()
    };
    let got = rows(open_dataset("renamed", &regs, &opts).unwrap());
    assert_eq!(
        got[0].row.messages,
        vec![
            Message::new("system", "S"),
            Message::new("user", "q"),
            Message::new("assistant", "a")
        ]
    );
    assert!(DatasetOptions::parse_columns("[1]")
        .unwrap_err()
        .to_string()
        .contains("--columns"));
}

#[test]
fn forced_preprocessor_and_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "t.jsonl",
        "{\"text\": \"doc\", \"query\": \"q\"}\n",
    );
    let forced = DatasetOptions {
        preprocessor: Some("pretrain".into()),
        ..Default::default()
    };
    assert_eq!(
        rows(open(&p, &forced))[0].row.messages,
        vec![Message::new("assistant", "doc")]
    );
    assert_eq!(
        rows(open(&p, &DatasetOptions::default()))[0].row.messages,
        vec![Message::new("user", "q")]
    );
    let unknown = DatasetOptions {
        preprocessor: Some("alpacca".into()),
        ..Default::default()
    };
    let e = open_dataset(p.to_str().unwrap(), &regs(), &unknown)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("alpaca"),
        "suggests the close name: {e}"
    );
}

#[test]
fn several_datasets_in_order_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.jsonl",
        "{\"query\": \"a\", \"response\": \"1\"}\n",
    );
    let b = write(
        dir.path(),
        "b.json",
        "[{\"query\": \"b\", \"response\": \"2\"}, {\"query\": \"c\", \"response\": \"3\"}]",
    );
    let specs = [a.display().to_string(), b.display().to_string()];
    let got = rows(open_datasets(&specs, &regs(), &DatasetOptions::default()).unwrap());
    assert_eq!(
        got.iter()
            .map(|r| r.row.messages[0].content.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!((got[0].file.clone(), got[2].file.clone()), (a, b));
    let (train, val) = split_dataset(got, 0.34, 42);
    assert_eq!((train.len(), val.len()), (1, 2));
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn malformed_jsonl_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.jsonl", "{\"query\": \"q\", \"response\": \"a\"}\n{\"query\": \"q\", \"response\": }\n[1]\n{\"query\": \"q3\", \"response\": \"a3\"}\n");
    let got: Vec<_> = open(&p, &DatasetOptions::default()).collect();
    assert_eq!(got.len(), 4, "row errors do not end the iteration");
    let e2 = got[1].as_ref().unwrap_err().to_string();
    assert!(
        e2.starts_with(&format!(
            "{}:2: malformed row: invalid JSON at column",
            p.display()
        )),
        "{e2}"
    );
    assert!(e2.contains("--skip_bad_rows"), "{e2}");
    let e3 = got[2].as_ref().unwrap_err().to_string();
    assert!(
        e3.starts_with(&format!("{}:3:", p.display())) && e3.contains("JSON object"),
        "{e3}"
    );
    assert_eq!(got[3].as_ref().unwrap().line, 4);
    // skip_bad_rows: counted, not yielded.
    let mut ds = open(
        &p,
        &DatasetOptions {
            skip_bad_rows: true,
            ..Default::default()
        },
    );
    let kept: Vec<_> = ds.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(kept.len(), 2);
    let s = ds.stats();
    assert_eq!(
        (s.rows_read, s.rows_bad, s.rows_dropped, s.rows_yielded),
        (4, 2, 0, 2)
    );
}

#[test]
fn malformed_json_row_is_skippable_but_broken_structure_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.json", "[\n{\"query\": \"q\", \"response\": \"a\"},\n{\"query\": \"q\",\n \"response\" \"a\"},\n{\"query\": \"q3\", \"response\": \"a3\"}\n]");
    let got: Vec<_> = open(&p, &DatasetOptions::default()).collect();
    let e = got[1].as_ref().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3: malformed row: invalid JSON at line 4",
            p.display()
        )),
        "{e}"
    );
    assert_eq!(got[2].as_ref().unwrap().line, 5);
    let unclosed = write(
        dir.path(),
        "open.json",
        "[\n{\"query\": \"q\", \"response\": \"a\"},\n{\"query\": \"q2",
    );
    let got: Vec<_> = open(
        &unclosed,
        &DatasetOptions {
            skip_bad_rows: true,
            ..Default::default()
        },
    )
    .collect();
    assert_eq!(
        got.len(),
        2,
        "one row, then the fatal error ends the iteration"
    );
    let e = got[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("open.json:3: the file ends inside the value that starts on line 3"),
        "{e}"
    );
    let not_rows = write(dir.path(), "s.json", "\"just a string\"");
    assert!(err_of(open(&not_rows, &DatasetOptions::default()))
        .to_string()
        .contains("list of rows"));
}

#[test]
fn unknown_columns_list_the_columns_and_the_known_formats() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "odd.jsonl",
        "{\"query\": \"q\", \"response\": \"a\"}\n{\"foo\": 1, \"bar\": \"x\"}\n",
    );
    let e = err_of(open(&p, &DatasetOptions::default()));
    let msg = e.to_string();
    assert!(matches!(e, DataError::NoFormat { line: 2, .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "{}:2: no known format matches the columns [bar, foo]",
            p.display()
        )),
        "{msg}"
    );
    for known in [
        "alpaca (instruction + input)",
        "preference (chosen|chosen_messages|chosen_response + rejected|rejected_messages)",
        "text (text|content)",
        "--columns",
    ] {
        assert!(msg.contains(known), "{known} missing from: {msg}");
    }
}

#[test]
fn csv_record_with_wrong_field_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.csv",
        "query,response\nq1,a1\nq2,a2,extra\nq3,a3\n",
    );
    let got: Vec<_> = open(&p, &DatasetOptions::default()).collect();
    let e = got[1].as_ref().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3: malformed row: the record has 3 fields but the header has 2",
            p.display()
        )),
        "{e}"
    );
    assert_eq!(got[2].as_ref().unwrap().row.messages, qa("q3", "a3"));
}

#[test]
fn empty_files_and_files_with_nothing_usable() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("e.jsonl", ""), ("e.json", "")] {
        let p = write(dir.path(), name, body);
        let e = open_dataset(p.to_str().unwrap(), &regs(), &DatasetOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("the file is empty"), "{e}");
    }
    for (name, body) in [
        ("blank.jsonl", "\n\n"),
        ("empty.json", "[ ]"),
        ("head.csv", "query,response\n"),
    ] {
        let p = write(dir.path(), name, body);
        let e = err_of(open(&p, &DatasetOptions::default()));
        assert!(matches!(e, DataError::Empty { .. }), "{name}: {e}");
        assert!(
            e.to_string()
                .contains(&format!("{}: the file is empty", p.display())),
            "{e}"
        );
    }
    // #N on an empty file fails at open.
    let p = write(dir.path(), "blank2.jsonl", "\n");
    let spec = format!("{}#3", p.display());
    assert!(matches!(
        open_dataset(&spec, &regs(), &DatasetOptions::default()),
        Err(DataError::Empty { .. })
    ));
    // Rows the preprocessor drops are counted; a file of nothing else is an error.
    let p = write(
        dir.path(),
        "dropped.jsonl",
        "{\"text\": \"\"}\n{\"text\": \"  \"}\n",
    );
    let mut ds = open(&p, &DatasetOptions::default());
    let e = ds.next().unwrap().unwrap_err();
    assert!(
        e.to_string()
            .contains("none of its 2 rows is usable (0 bad, 2 dropped"),
        "{e}"
    );
    assert_eq!(ds.stats().rows_dropped, 2);
    assert!(ds.next().is_none());
}

#[test]
fn empty_assistant_turns_are_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "e.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"\"}]}\n{\"query\": \"q\", \"response\": \"a\"}\n",
    );
    let got: Vec<_> = open(&p, &DatasetOptions::default()).collect();
    let e = got[0].as_ref().unwrap_err().to_string();
    assert_eq!(e, format!("{}:1: messages: assistant turn (message 2) is empty (fix the row, or pass --skip_bad_rows to skip such rows)", p.display()));
    let mut ds = open(
        &p,
        &DatasetOptions {
            skip_bad_rows: true,
            ..Default::default()
        },
    );
    assert_eq!(ds.by_ref().count(), 1);
    assert_eq!(ds.stats().rows_bad, 1);
}

#[test]
fn preprocessor_errors_name_the_preprocessor_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.jsonl", "{\"query\": \"q\", \"response\": \"a\"}\n{\"prompt\": \"q\", \"chosen\": \"x\", \"rejected\": \"x\"}\n");
    let e = err_of(open(&p, &DatasetOptions::default())).to_string();
    assert!(
        e.starts_with(&format!(
            "{}:2: preference: the rejected answer is the same as the chosen one",
            p.display()
        )),
        "{e}"
    );
}

#[test]
fn unknown_dataset_and_missing_asset() {
    let e = open_dataset("alpaca-en-dem", &regs(), &DatasetOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("did you mean") && e.contains("alpaca-en-demo"),
        "{e}"
    );
    let opts = DatasetOptions {
        asset_dir: Some(PathBuf::from("/nonexistent/assets")),
        ..Default::default()
    };
    let e = open_dataset("alpaca-en-demo", &regs(), &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/assets/llamafactory/data/alpaca_en_demo.json")
            && e.contains("make setup"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.xml", "<x/>");
    let e = open_dataset(p.to_str().unwrap(), &regs(), &DatasetOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unsupported file type `.xml`"), "{e}");
}

#[test]
fn placeholders_of_registered_datasets_need_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "id.json", "[{\"instruction\": \"hi\", \"input\": \"\", \"output\": \"I am {{name}}, by {{author}}.\"}]");
    let mut regs = regs();
    let record = DatasetRecord {
        name: "my-identity".into(),
        aliases: vec![],
        description: String::new(),
        path: p.display().to_string(),
        preprocessor: "auto".into(),
        columns: BTreeMap::new(),
    };
    regs.datasets
        .insert(
            Entry {
                record,
                imp: None,
                provenance: Provenance::TextFile {
                    path: dir.path().join("x.toml"),
                },
            },
            false,
        )
        .unwrap();
    let e = open_dataset("my-identity", &regs, &DatasetOptions::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: the row contains `{{{{name}}}}`; pass --model_name to fill it in",
            p.display()
        )
    );
    let only_name = DatasetOptions {
        model_name: Some("Swifty".into()),
        ..Default::default()
    };
    let e = open_dataset("my-identity", &regs, &only_name)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("--model_author"), "{e}");
    let both = DatasetOptions {
        model_name: Some("Swifty".into()),
        model_author: Some("ACME".into()),
        ..Default::default()
    };
    let got = rows(open_dataset("my-identity", &regs, &both).unwrap());
    assert_eq!(got[0].row.messages[1].content, "I am Swifty, by ACME.");
    // The same file by path keeps the text.
    let got = rows(open(&p, &DatasetOptions::default()));
    assert_eq!(
        got[0].row.messages[1].content,
        "I am {{name}}, by {{author}}."
    );
}

#[test]
fn relative_image_paths_become_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mm.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"<image><image>Who?\"}, {\"role\": \"assistant\", \"content\": \"Kane\"}], \"images\": [\"imgs/1.jpg\", \"https://x/2.jpg\"]}\n",
    );
    let got = rows(open(&p, &DatasetOptions::default()));
    assert_eq!(
        got[0].row.images,
        vec![
            dir.path().join("imgs/1.jpg").display().to_string(),
            "https://x/2.jpg".to_string()
        ]
    );
}

#[test]
fn datasets_can_move_to_a_loader_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Dataset>();
    assert_send::<DataError>();
}

#[test]
fn byte_order_marks_json_columns_in_csv_and_sampling_other_formats() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write(
        dir.path(),
        "bom.jsonl",
        "\u{feff}{\"query\": \"q\", \"response\": \"a\"}\n",
    );
    assert_eq!(
        rows(open(&jsonl, &DatasetOptions::default()))[0]
            .row
            .messages,
        qa("q", "a")
    );
    let json = write(
        dir.path(),
        "bom.json",
        "\u{feff}[{\"query\": \"q\", \"response\": \"a\"}]",
    );
    assert_eq!(
        rows(open(&json, &DatasetOptions::default()))[0]
            .row
            .messages,
        qa("q", "a")
    );
    let csv = write(
        dir.path(),
        "conv.csv",
        "conversations,tools\n\"[{\"\"from\"\": \"\"human\"\", \"\"value\"\": \"\"q\"\"}, {\"\"from\"\": \"\"gpt\"\", \"\"value\"\": \"\"a\"\"}]\",\n",
    );
    let got = rows(open(&csv, &DatasetOptions::default()));
    assert_eq!(
        (got[0].row.messages.clone(), got[0].row.tools.clone()),
        (qa("q", "a"), None)
    );
    // #N counts rows of .json and .csv files too.
    let body: Vec<String> = (0..6)
        .map(|i| format!("{{\"query\": \"q{i}\", \"response\": \"a{i}\"}}"))
        .collect();
    let json = write(dir.path(), "six.json", &format!("[{}]", body.join(",\n")));
    let csv = write(
        dir.path(),
        "six.csv",
        &(0..6).fold("query,response\n".to_string(), |s, i| {
            s + &format!("q{i},a{i}\n")
        }),
    );
    for p in [json, csv] {
        let spec = format!("{}#9", p.display());
        let got = rows(open_dataset(&spec, &regs(), &DatasetOptions::default()).unwrap());
        assert_eq!(got.len(), 9, "{}", p.display());
        let idx: Vec<u64> = got.iter().map(|r| r.index).collect();
        assert_eq!(idx[..6], [0, 1, 2, 3, 4, 5], "one whole pass first");
        assert!(
            idx[6..].windows(2).all(|w| w[0] < w[1]),
            "then 3 distinct rows: {idx:?}"
        );
    }
    // A keyed object whose value is not a row.
    let keyed = write(
        dir.path(),
        "k.json",
        "{\"a\": {\"query\": \"q\", \"response\": \"r\"},\n \"b\": 3}",
    );
    let got: Vec<_> = open(&keyed, &DatasetOptions::default()).collect();
    let e = got[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("k.json:2: malformed row: rows should be JSON objects, found a number"),
        "{e}"
    );
    // A single-key list that is empty.
    let empty = write(dir.path(), "e.json", "{\"data\": []}");
    assert!(matches!(
        err_of(open(&empty, &DatasetOptions::default())),
        DataError::Empty { .. }
    ));
}

#[test]
fn jsonl_content_in_a_json_file_says_to_rename_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "lines.json",
        "{\"query\": \"q1\", \"response\": \"a1\"}\n{\"query\": \"q2\", \"response\": \"a2\"}\n",
    );
    let e = err_of(open(&p, &DatasetOptions::default())).to_string();
    assert!(
        e.starts_with(&format!(
            "{}:1: the top-level object's values should be rows",
            p.display()
        )) && e.contains(".jsonl"),
        "{e}"
    );
}

#[test]
fn a_file_of_only_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let odd = write(dir.path(), "odd.jsonl", "{\"foo\": 1}\n");
    let good = write(
        dir.path(),
        "good.jsonl",
        "{\"query\": \"q\", \"response\": \"a\"}\n",
    );
    let specs = [odd.display().to_string(), good.display().to_string()];
    // Without skip_bad_rows: the row error, then the next file goes on.
    let got: Vec<_> = open_datasets(&specs, &regs(), &DatasetOptions::default())
        .unwrap()
        .collect();
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0], Err(DataError::NoFormat { line: 1, .. })));
    assert_eq!(got[1].as_ref().unwrap().row.messages, qa("q", "a"));
    // With it: nothing usable in a file is an error that shows the first bad row.
    let opts = DatasetOptions {
        skip_bad_rows: true,
        ..Default::default()
    };
    let got: Vec<_> = open_datasets(&specs, &regs(), &opts).unwrap().collect();
    assert_eq!(got.len(), 1);
    let e = got[0].as_ref().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: none of its 1 rows is usable (1 bad, 0 dropped",
            odd.display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "the first bad row: {}:1: no known format",
            odd.display()
        )),
        "{e}"
    );
}

/// An organisation's private dataset, declared in a text-only plugin file next to its data.
#[test]
fn dataset_from_a_text_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "faq.csv", "Frage,Antwort\nWie spät?,Zwölf.\n");
    write(
        dir.path(),
        "acme.toml",
        "[[dataset]]\nname = \"acme-faq\"\npath = \"faq.csv\"\npreprocessor = \"response\"\ncolumns = { Frage = \"query\", Antwort = \"response\" }\n",
    );
    let report = PluginLoader::new(vec![])
        .load(&[swift_registry::PluginSource::Dir(dir.path().to_path_buf())])
        .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let got =
        rows(open_dataset("acme-faq#3", &report.registries, &DatasetOptions::default()).unwrap());
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].row.messages, qa("Wie spät?", "Zwölf."));
    assert_eq!(got[0].file, dir.path().join("faq.csv"));
}

#[test]
fn image_tags_must_match_the_images_and_objects_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mm.jsonl",
        concat!(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"<image>Where is <ref-object>?\"}, {\"role\": \"assistant\", \"content\": \"<bbox>\"}], \"images\": [\"1.jpg\"], \"objects\": {\"ref\": [\"the dog\"], \"bbox\": [[10, 20, 30, 40]]}}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"2.jpg\"}, {\"type\": \"text\", \"text\": \"Who?\"}]}, {\"role\": \"assistant\", \"content\": \"Kane\"}], \"objects\": \"{\\\"ref\\\": [], \\\"bbox\\\": [[0.1, 0.2]], \\\"bbox_type\\\": \\\"norm1\\\"}\"}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"<image><image>Who?\"}, {\"role\": \"assistant\", \"content\": \"Kane\"}], \"images\": [\"1.jpg\"]}\n",
        ),
    );
    let mut ds = open(&p, &DatasetOptions::default());
    let first = ds.next().unwrap().unwrap();
    let o = *first.row.objects.expect("objects");
    assert_eq!(
        (o.refs, o.bbox),
        (
            vec!["the dog".to_string()],
            vec![vec![10.0, 20.0, 30.0, 40.0]]
        )
    );
    let second = ds.next().unwrap().unwrap();
    assert_eq!(second.row.messages[0].content, "<image>Who?");
    assert_eq!(
        second.row.images,
        vec![dir.path().join("2.jpg").display().to_string()]
    );
    assert_eq!(
        second.row.objects.unwrap().bbox_type.as_deref(),
        Some("norm1")
    );
    let e = ds.next().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("mm.jsonl:3") && e.contains("2 <image> tag(s) but the row has 1 image(s)"),
        "{e}"
    );
}
