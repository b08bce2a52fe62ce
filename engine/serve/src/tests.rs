//! The batcher against `swift_model::generate` run on one prompt at a time, on the tiny random
//! llama of tests/fixtures/models: rows of different lengths join the running batch at different
//! steps and leave it at different steps (cache append, retain and trim), some with a LoRA
//! adapter chosen per row, and every row's tokens equal what the same prompt gets alone (for
//! adapter rows: alone on a model with that adapter attached the ordinary way). The join steps
//! are fixed, so the test is deterministic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use swift_model::{generate, LoadedModel, SamplingParams, StopCriteria};
use swift_plugin_tensors::model::SlotKind;
use swift_template::{EncodeOptions, Encoder, Template, Tokenizer};
use swift_train::{AdapterFiles, AttachedAdapter};
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc::unbounded_channel;

use crate::adapters::{self, Selection};
use crate::batcher::{Decoder, EventKind, Job};
use crate::pt::PtModel;
use swift_plugin_tensors::backend::{AdapterSupport, BackendModelHandle, Capabilities};

// Linked for its `inventory` registrations (the llama family, the llama3 template).
use swift_plugin_models as _;
use swift_plugin_templates as _;
use swift_plugin_tuners as _;

/// The built-in `lora` tuner (its math crosses the tuner contract).
fn lora(regs: &swift_registry::Registries) -> Arc<swift_plugin_tensors::TunerHandle> {
    regs.tuners.resolve("lora").unwrap().imp.clone().unwrap()
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama")
}

fn registries() -> swift_registry::Registries {
    swift_registry::PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-in plugins load")
        .registries
}

fn load_model(regs: &swift_registry::Registries) -> LoadedModel {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny().join("config.json")).unwrap())
            .unwrap();
    let family = regs.models.resolve("llama").unwrap();
    let handle = family.imp.as_ref().expect("llama has behaviour");
    let instance = handle.instantiate(&config).unwrap();
    LoadedModel::load(&tiny(), instance, Kind::Float, Device::Cpu).unwrap()
}

fn encoder(regs: &swift_registry::Registries) -> Arc<Encoder> {
    let record = &regs.templates.resolve("llama3").unwrap().record;
    let template = Template::from_record(record).unwrap();
    let tok = Tokenizer::from_dir(&tiny()).unwrap();
    Arc::new(Encoder::new(template, tok, EncodeOptions::default()).unwrap())
}

/// Writes a LoRA adapter with random (non-zero) A and B on the attention projections.
fn write_adapter(regs: &swift_registry::Registries, dir: &Path) {
    let mut model = load_model(regs);
    let targets: Vec<String> = model
        .layout()
        .slots
        .iter()
        .filter(|s| {
            s.kind == SlotKind::Linear && (s.name.ends_with("q_proj") || s.name.ends_with("v_proj"))
        })
        .map(|s| s.name.clone())
        .collect();
    tch::manual_seed(11);
    let options = serde_json::json!({"lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0});
    let lora = AttachedAdapter::attach(&mut model, &lora(regs), options, &targets).unwrap();
    tch::no_grad(|| {
        for (_, b) in lora
            .named_tensors()
            .iter()
            .filter(|(n, _)| n.contains(".lora_B."))
        {
            let mut b = b.shallow_clone();
            let r = Tensor::randn(b.size(), (Kind::Float, Device::Cpu)) * 0.5;
            b.copy_(&r);
        }
    });
    lora.save(dir, "tiny").unwrap();
}

/// Greedy tokens of one prompt alone.
fn alone(model: &LoadedModel, prompt: &[i64], max_new: usize) -> Vec<i64> {
    let params = SamplingParams {
        max_new_tokens: max_new,
        ..Default::default()
    };
    let out = generate(
        model,
        &[prompt.to_vec()],
        &params,
        &StopCriteria::default(),
        &|_| String::new(),
        &mut |_, _| {},
    )
    .unwrap();
    out[0].tokens.clone()
}

struct Case {
    prompt: Vec<i64>,
    max_new: usize,
    adapter: Option<usize>,
    /// The step at which the request joins.
    joins: usize,
}

fn prompt(len: usize, salt: i64) -> Vec<i64> {
    (0..len as i64)
        .map(|i| (i * 37 + salt * 101) % 300 + 3)
        .collect()
}

#[test]
fn rows_joining_and_leaving_decode_as_they_would_alone() {
    let regs = registries();
    let tmp = tempfile::tempdir().unwrap();
    write_adapter(&regs, tmp.path());

    let base = load_model(&regs);
    let mut with_adapter = load_model(&regs);
    let files = AdapterFiles::open(tmp.path(), with_adapter.layout()).unwrap();
    AttachedAdapter::load(&mut with_adapter, &lora(&regs), &files).unwrap();

    let cases = [
        Case {
            prompt: prompt(9, 1),
            max_new: 14,
            adapter: None,
            joins: 0,
        },
        Case {
            prompt: prompt(4, 2),
            max_new: 5,
            adapter: Some(0),
            joins: 0,
        },
        Case {
            prompt: prompt(17, 3),
            max_new: 12,
            adapter: Some(0),
            joins: 3,
        },
        Case {
            prompt: prompt(6, 4),
            max_new: 9,
            adapter: None,
            joins: 3,
        },
        Case {
            prompt: prompt(12, 5),
            max_new: 10,
            adapter: Some(0),
            joins: 8,
        },
        Case {
            prompt: prompt(3, 6),
            max_new: 4,
            adapter: None,
            joins: 20,
        },
    ];
    let want: Vec<Vec<i64>> = cases
        .iter()
        .map(|c| match c.adapter {
            None => alone(&base, &c.prompt, c.max_new),
            Some(_) => alone(&with_adapter, &c.prompt, c.max_new),
        })
        .collect();
    // The adapter changes the answers (else the adapter rows would prove nothing).
    assert_ne!(
        alone(&base, &cases[2].prompt, 12),
        want[2],
        "the adapter should change the greedy answer"
    );

    let mut served = load_model(&regs);
    let (_, selection): (_, Selection) = adapters::attach(
        &mut served,
        &[("a".into(), tmp.path().to_path_buf(), lora(&regs))],
    )
    .unwrap();
    // Through the backend contract, as the server drives it.
    let model = BackendModelHandle::from_model(Box::new(PtModel::new(
        served,
        Some(selection),
        320,
        "tiny".into(),
    )))
    .unwrap();
    let caps = Capabilities {
        adapters: AdapterSupport::PerRow,
        ..Default::default()
    };
    let mut decoder = Decoder::new(model, &caps, encoder(&regs), Vec::new());
    let mut receivers = Vec::new();
    let mut max_rows = 0;
    for step in 0..40 {
        let mut joining = Vec::new();
        for c in cases.iter().filter(|c| c.joins == step) {
            let (tx, rx) = unbounded_channel();
            receivers.push(rx);
            joining.extend(crate::batcher::rows_of(Job {
                prompt: c.prompt.clone(),
                adapter: c.adapter,
                choices: 1,
                params: SamplingParams {
                    max_new_tokens: c.max_new,
                    ..Default::default()
                },
                stop_words: Vec::new(),
                ignore_eos: false,
                logprobs: None,
                images: Default::default(),
                events: tx,
            }));
        }
        decoder.step(joining).unwrap();
        max_rows = max_rows.max(decoder.running());
    }
    assert_eq!(decoder.running(), 0, "every row finished");
    assert!(max_rows >= 4, "rows overlapped in the batch ({max_rows})");
    for (i, mut rx) in receivers.into_iter().enumerate() {
        let mut got = None;
        while let Ok(ev) = rx.try_recv() {
            if let EventKind::Done { tokens, .. } = ev.kind {
                got = Some(tokens);
            }
        }
        assert_eq!(got.as_ref(), Some(&want[i]), "case {i}");
    }
}

/// Without adapters the `pt` model folds joining rows into the running rows' pass
/// (`LoadedModel::forward_mixed`): rows joining a busy batch (steps of up to 32 rows, of more,
/// which the kernels' tiles serve, and one of more than `MIXED_KERNEL_ROWS`, which libtorch's
/// product serves) decode what they decode alone.
#[test]
fn rows_joining_in_the_running_pass_decode_as_they_would_alone() {
    let regs = registries();
    let base = load_model(&regs);
    // (prompt length, new tokens, step it joins at)
    let cases = [
        (9, 14, 0),
        (4, 6, 0),
        (17, 12, 2),
        (30, 9, 2),
        (25, 10, 5),
        (3, 4, 6),
        (12, 8, 12),
        (swift_model::MIXED_KERNEL_ROWS + 4, 4, 13),
    ];
    let prompts: Vec<Vec<i64>> = (0..cases.len())
        .map(|i| prompt(cases[i].0, i as i64 + 11))
        .collect();
    let want: Vec<Vec<i64>> = cases
        .iter()
        .zip(&prompts)
        .map(|(c, p)| alone(&base, p, c.1))
        .collect();
    let served = load_model(&regs);
    assert!(served.can_mix(), "the tiny llama takes mixed passes");
    let model =
        BackendModelHandle::from_model(Box::new(PtModel::new(served, None, 320, "tiny".into())))
            .unwrap();
    let mut decoder = Decoder::new(model, &Capabilities::default(), encoder(&regs), Vec::new());
    let mut receivers = Vec::new();
    for step in 0..34 {
        let mut joining = Vec::new();
        for (c, p) in cases.iter().zip(&prompts).filter(|(c, _)| c.2 == step) {
            let (tx, rx) = unbounded_channel();
            receivers.push(rx);
            joining.extend(crate::batcher::rows_of(Job {
                prompt: p.clone(),
                adapter: None,
                choices: 1,
                params: SamplingParams {
                    max_new_tokens: c.1,
                    ..Default::default()
                },
                stop_words: Vec::new(),
                ignore_eos: false,
                logprobs: None,
                images: Default::default(),
                events: tx,
            }));
        }
        decoder.step(joining).unwrap();
    }
    assert_eq!(decoder.running(), 0, "every row finished");
    for (i, mut rx) in receivers.into_iter().enumerate() {
        let mut got = None;
        while let Ok(ev) = rx.try_recv() {
            if let EventKind::Done { tokens, .. } = ev.kind {
                got = Some(tokens);
            }
        }
        assert_eq!(got.as_ref(), Some(&want[i]), "case {i}");
    }
}

/// A mixed pass on the decoding kernels (`LoadedModel::mixes_on_kernels`: a float32 model, at
/// most `MIXED_KERNEL_ROWS` packed rows, a CPU with the kernels' tiles) gives each running row
/// bit for bit the logits of its decoding step alone (the kernels' products do not depend on the
/// other rows); a longer pass is libtorch's, equal to float rounding.
#[test]
fn a_mixed_pass_on_the_kernels_gives_the_running_rows_their_decoding_step_bit_for_bit() {
    let regs = registries();
    let model = load_model(&regs);
    let n = 5i64;
    let running: Vec<Vec<i64>> = (0..n).map(|i| prompt(6 + i as usize, i + 3)).collect();
    let refs: Vec<&[i64]> = running.iter().map(|p| &p[..]).collect();
    let (ids, mask) = swift_model::left_padded(&refs);
    let mut cache = model.new_cache(n);
    let _ = model.forward(&ids, mask.as_ref(), &mut cache).unwrap();
    let all: Vec<i64> = (0..n).collect();
    let last: Vec<i64> = (0..n).map(|i| 20 + i).collect();
    let step = {
        let mut c = cache.copy_rows(&all).unwrap();
        let ids = Tensor::from_slice(&last).view([n, 1]);
        let h = model.forward(&ids, None, &mut c).unwrap();
        model.logits(&h.select(1, -1)).unwrap()
    };
    // 5 + 2 × 30 rows (the kernels' where the CPU has tiles), 5 + 2 × 70 (libtorch's).
    for plen in [30usize, 70] {
        let joins: Vec<Vec<i64>> = (0..2).map(|j| prompt(plen, 40 + j)).collect();
        let jrefs: Vec<&[i64]> = joins.iter().map(|p| &p[..]).collect();
        let mut c = cache.copy_rows(&all).unwrap();
        let mut fresh = model.new_cache(2);
        let h = model
            .forward_mixed(&last, &mut c, &jrefs, &mut fresh)
            .unwrap();
        let mixed = model.logits(&h.narrow(0, 0, n)).unwrap();
        let rows = n as usize + 2 * plen;
        let on_kernels = model.mixes_on_kernels(rows);
        assert!(
            rows <= swift_model::MIXED_KERNEL_ROWS || !on_kernels,
            "{rows} rows are past the kernels' mixed passes"
        );
        #[cfg(target_arch = "x86_64")]
        if rows <= swift_model::MIXED_KERNEL_ROWS
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            assert!(on_kernels, "{rows} rows on an AVX2 CPU run on the kernels");
        }
        if on_kernels {
            assert!(
                mixed.equal(&step),
                "{rows} rows: the running rows' logits moved"
            );
        } else {
            let diff = f64::try_from((&mixed - &step).abs().max()).unwrap();
            assert!(diff < 1e-4, "{rows} rows: logits {diff} apart");
        }
    }
}
