//! Every model family against Hugging Face transformers, on the tiny random-weight models that
//! tests/reference/make_tiny_models.py wrote (tests/fixtures/models/<family>/): last-position
//! logits within 1e-4 relative error in float32 and identical 32-token greedy continuations, for
//! the built-in llama, qwen2, qwen3 and mistral and for the example plugin's GPT-2 family loaded
//! with --plugin-dir. Also: batched generation equals one-by-one, sharded checkpoints, the chat
//! loop, and one clear error per bad input.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{json, Value};

/// Runs the hidden logits diagnostic and checks it against transformers' numbers.
fn check_against_transformers(family: &str, model_dir: &Path, extra: &[&str]) {
    let exp = expected(family);
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "infer",
            "--model",
            model_dir.to_str().unwrap(),
            "--debug_input_ids",
        ]
        .map(String::from),
    );
    args.push(ids_arg(&exp["input_ids"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = json_out(swift(&args));
    let (want, have) = (floats(&exp["last_logits"]), floats(&got["last_logits"]));
    assert_eq!(want.len(), have.len(), "{family}: vocabulary size");
    let scale = max_abs(&want);
    let worst = max_abs_diff(&want, &have);
    assert!(
        worst <= 1e-4 * scale,
        "{family}: logits differ by {worst} (scale {scale})"
    );
    assert_eq!(
        got["greedy"], exp["greedy"],
        "{family}: greedy continuation"
    );
}

#[test]
fn builtin_families_match_transformers() {
    for family in ["llama", "qwen2", "qwen3", "mistral"] {
        check_against_transformers(family, &tiny_model(family), &[]);
    }
}

#[test]
fn gpt2_from_the_example_plugin_matches_transformers() {
    // Without the plugin, GPT-2 is unknown and the error lists what is known.
    let out = swift(&[
        "infer",
        "--model",
        tiny_model("gpt2").to_str().unwrap(),
        "--debug_input_ids",
        "1,2",
    ]);
    assert_fails(
        out,
        &[
            "unknown architecture",
            "GPT2LMHeadModel",
            "LlamaForCausalLM",
        ],
    );
    let dir = plugin_dir_with(&["swift-example-plugin"]);
    check_against_transformers(
        "gpt2",
        &tiny_model("gpt2"),
        &["--plugin-dir", dir.path().to_str().unwrap()],
    );
}

/// `queries` as single user turns with reference answers `ref I`, in `dir/q.jsonl`.
fn write_dataset(dir: &Path, queries: &[&str]) -> PathBuf {
    write_jsonl(
        &dir.join("q.jsonl"),
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| chat_row(q, &format!("ref {i}"))),
    )
}

#[test]
fn batched_generation_equals_one_by_one() {
    let work = tempfile::tempdir().unwrap();
    let queries = [
        "Hello",
        "What is the capital of France? Tell me about Paris and Rome.",
        "tiny model",
        "Once upon a time there was",
    ];
    let data = write_dataset(work.path(), &queries);
    let run = |family: &str, batch: &str, extra: &[&str]| {
        let out = work.path().join(format!("{family}-{batch}.jsonl"));
        let dir = tiny_model(family);
        let mut args = vec![
            "infer",
            "--model",
            dir.to_str().unwrap(),
            "--template",
            "chatml",
            "--val_dataset",
            data.to_str().unwrap(),
            "--result_path",
            out.to_str().unwrap(),
            "--max_batch_size",
            batch,
            "--max_new_tokens",
            "24",
        ];
        args.extend_from_slice(extra);
        ok(swift(&args));
        read_jsonl(&out)
    };
    // Padding: prompts of different lengths share a batch.
    let one = run("qwen2", "1", &[]);
    let four = run("qwen2", "4", &[]);
    assert_eq!(one.len(), 4);
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a["response"], b["response"], "row {a}");
        assert_eq!(a["completion_tokens"], b["completion_tokens"]);
    }
    assert_eq!(one[1]["labels"], "ref 1", "the reference answer is kept");
    assert_eq!(one[1]["messages"][0]["content"], queries[1]);
    assert!(one[0]["prompt_tokens"].as_u64().unwrap() > 0);
    // Rows that stop early (a stop word) leave the batch; the others carry on unchanged.
    let one = run("qwen3", "1", &["--stop_words", "the"]);
    let four = run("qwen3", "4", &["--stop_words", "the"]);
    let lengths: Vec<u64> = one
        .iter()
        .map(|r| r["completion_tokens"].as_u64().unwrap())
        .collect();
    assert!(
        lengths.iter().any(|&n| n < 24) && lengths.iter().any(|&n| n != lengths[0]),
        "{lengths:?}"
    );
    assert!(one.iter().any(|r| r["finish_reason"] == "stop"));
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a["response"], b["response"], "row {a}");
        assert_eq!(a["completion_tokens"], b["completion_tokens"]);
        assert!(
            !a["response"].as_str().unwrap().contains("the"),
            "the stop word is cut: {a}"
        );
    }
}

#[test]
fn sampling_is_seeded() {
    let work = tempfile::tempdir().unwrap();
    let data = write_dataset(work.path(), &["Hello", "tiny"]);
    let run = |seed: &str, out: &str| {
        let out = work.path().join(out);
        ok(swift(&[
            "infer",
            "--model",
            tiny_model("llama").to_str().unwrap(),
            "--template",
            "chatml",
            "--val_dataset",
            data.to_str().unwrap(),
            "--result_path",
            out.to_str().unwrap(),
            "--max_new_tokens",
            "16",
            "--temperature",
            "1.0",
            "--top_k",
            "50",
            "--top_p",
            "0.9",
            "--repetition_penalty",
            "1.1",
            "--seed",
            seed,
        ]));
        read_jsonl(&out)
            .into_iter()
            .map(|r| r["response"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(run("1", "a.jsonl"), run("1", "b.jsonl"));
}

/// Splits a safetensors file into two shards plus model.safetensors.index.json.
fn shard(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, group) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let (mut head, mut body) = (serde_json::Map::new(), Vec::new());
        for name in group.iter() {
            let info = &header[*name];
            let offs = info["data_offsets"].as_array().unwrap();
            let (a, b) = (
                offs[0].as_u64().unwrap() as usize,
                offs[1].as_u64().unwrap() as usize,
            );
            let start = body.len();
            body.extend_from_slice(&data[a..b]);
            head.insert((*name).clone(), json!({"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [start, body.len()]}));
            weight_map.insert((*name).clone(), json!(file));
        }
        let mut h = serde_json::to_vec(&Value::Object(head)).unwrap();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(body);
        std::fs::write(dst.join(file), out).unwrap();
    }
    std::fs::write(
        dst.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
}

#[test]
fn sharded_checkpoints_load() {
    let work = tempfile::tempdir().unwrap();
    shard(&tiny_model("mistral"), work.path());
    check_against_transformers("mistral", work.path(), &[]);
}

#[test]
fn bfloat16_runs_close_to_float32() {
    let exp = expected("llama");
    let (have, _) = infer_logits_env(
        &[],
        &[
            "--model",
            tiny_model("llama").to_str().unwrap(),
            "--torch_dtype",
            "bfloat16",
            "--device",
            "cpu",
        ],
        &ids_arg(&exp["input_ids"]),
        4,
    );
    let want = floats(&exp["last_logits"]);
    let scale = max_abs(&want);
    let worst = max_abs_diff(&want, &have);
    assert!(
        worst <= 0.1 * scale,
        "bfloat16 logits off by {worst} (scale {scale})"
    );
}

#[test]
fn chat_keeps_history_and_clears_it() {
    let out = swift_input(
        &[
            "infer",
            "--model",
            tiny_model("qwen3").to_str().unwrap(),
            "--template",
            "chatml",
            "--max_new_tokens",
            "8",
        ],
        &[],
        "Hello\nWhat is the capital\n/clear\nHello\n/exit\n",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(text.matches(">>> ").count(), 3, "{text}");
    assert!(text.contains("(conversation cleared)"), "{text}");
    // The first answer to "Hello" and the one after /clear are the same (greedy, same prompt).
    let answers: Vec<&str> = text
        .split(">>> ")
        .skip(1)
        .map(|s| s.split('\n').next().unwrap_or(""))
        .collect();
    assert_eq!(answers[0], answers[2], "{text}");
}

#[test]
fn bad_inputs_give_one_clear_error_each() {
    let work = tempfile::tempdir().unwrap();
    let fail = |args: &[&str], needle: &str| {
        let err = assert_fails(swift(args), &[needle]);
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{err}"
        );
    };
    let missing = work.path().join("nope");
    fail(
        &["infer", "--model", missing.to_str().unwrap()],
        "no such file or folder",
    );
    fail(
        &["infer", "--model", work.path().to_str().unwrap()],
        "has no config.json",
    );
    let no_weights = work.path().join("no-weights");
    std::fs::create_dir(&no_weights).unwrap();
    // Everything but the weights (the tokenizer is read first), so the weights are what fails.
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        if tiny().join(f).exists() {
            std::fs::copy(tiny().join(f), no_weights.join(f)).unwrap();
        }
    }
    fail(
        &["infer", "--model", no_weights.to_str().unwrap()],
        "model.safetensors",
    );
    let m = tiny();
    let m = m.to_str().unwrap();
    fail(
        &[
            "infer",
            "--model",
            m,
            "--torch_dtype",
            "float16",
            "--device",
            "cpu",
        ],
        "float16 is not supported on the CPU",
    );
    fail(
        &["infer", "--model", m, "--torch_dtype", "float8"],
        "unknown --torch_dtype",
    );
    fail(&["infer", "--model", m, "--model_type", "gpt5"], "gpt5");
    fail(
        &["infer", "--model", m, "--infer_backend", "vllm"],
        "unknown backend",
    );
    fail(
        &["infer", "--model", m, "--device", "tpu"],
        "unknown --device",
    );
    fail(
        &[
            "infer",
            "--model",
            m,
            "--template",
            "chatml",
            "--result_path",
            "x.jsonl",
        ],
        "--result_path needs --val_dataset",
    );
}

#[test]
fn defaults_family_template_and_position_limit() {
    // No --template and no chat_template in the tokenizer: the family's default (llama3) is used.
    // GPT-2's 128 learned positions bound the answer instead of failing on max_new_tokens 512.
    let work = tempfile::tempdir().unwrap();
    let data = write_dataset(work.path(), &["Hello", "What is the capital"]);
    let out = work.path().join("llama.jsonl");
    ok(swift(&[
        "infer",
        "--model",
        tiny_model("llama").to_str().unwrap(),
        "--val_dataset",
        data.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--max_new_tokens",
        "4",
    ]));
    assert_eq!(read_jsonl(&out).len(), 2);
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let out = work.path().join("gpt2.jsonl");
    ok(swift(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "infer",
        "--model",
        tiny_model("gpt2").to_str().unwrap(),
        "--val_dataset",
        data.to_str().unwrap(),
        "--result_path",
        out.to_str().unwrap(),
        "--max_batch_size",
        "2",
    ]));
    for r in read_jsonl(&out) {
        let total = r["prompt_tokens"].as_u64().unwrap() + r["completion_tokens"].as_u64().unwrap();
        assert!(total <= 128, "{r}");
    }
}
