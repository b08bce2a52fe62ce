//! What a joining step costs on the `pt` backend, both ways in the same seconds (so a loaded
//! machine slows both alike): running rows decode one token each while new prompts join, either
//! as a decoding pass and then a prefill pass of the prompts (before `forward_mixed`), or as one
//! mixed pass ([`LoadedModel::forward_mixed`]), B on the decoding kernels with libtorch on one
//! thread (where [`LoadedModel::mixes_on_kernels`]), D on libtorch's threads; and, for scale, C:
//! the running rows' decoding step alone (what the step would cost if no prompt joined). Rounds
//! alternate A, B, D, C, A, B, D, C …; prints each round's wall and CPU seconds and voluntary
//! context switches, the medians, how far the logits are apart (and whether their greedy tokens
//! agree), and whether B's running rows are bit for bit C's. B − C is what the joining prompts
//! cost.
//!
//!     cargo run --release -p swift-serve --example mixed_step -- MODEL_DIR [RUNNING] [JOINING] [PROMPT_LEN] [ROUNDS]
//!
//! Defaults: 12 running rows (prompts of 16 to 27 tokens, 8 tokens decoded), 4 joining prompts of
//! 16 tokens, 9 rounds.

use std::path::PathBuf;
use std::time::Instant;

use swift_model::{left_padded, KvCache, LoadedModel};
use tch::{Device, Kind, Tensor};

// Linked for its `inventory` registrations (the llama family).
use swift_plugin_models as _;

// The kernel examples' reader of this process's CPU time.
#[path = "../../kernels/examples/common/mod.rs"]
mod common;

fn ids(len: usize, salt: usize) -> Vec<i64> {
    (0..len)
        .map(|i| ((i * 37 + salt * 101) % 40_000 + 100) as i64)
        .collect()
}

fn load(dir: &std::path::Path) -> LoadedModel {
    let regs = swift_registry::PluginLoader::new(Vec::<String>::new())
        .load(&[])
        .expect("built-in plugins load")
        .registries;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
            .expect("config.json");
    let family = regs.models.resolve("llama").expect("llama family");
    let instance = family
        .imp
        .as_ref()
        .expect("llama has behaviour")
        .instantiate(&config)
        .expect("instantiate");
    LoadedModel::load(dir, instance, Kind::Float, Device::Cpu).expect("load")
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("MODEL_DIR"));
    let (running, joining, plen, rounds) = (arg(2, 12), arg(3, 4), arg(4, 16), arg(5, 9));
    let model = load(&dir);
    // The running rows: prompts of different lengths, prefilled, then 8 decoding steps.
    let prompts: Vec<Vec<i64>> = (0..running).map(|r| ids(16 + r % 12, r)).collect();
    let refs: Vec<&[i64]> = prompts.iter().map(|p| &p[..]).collect();
    let (pids, pmask) = left_padded(&refs);
    let mut cache: KvCache = model.new_cache(running as i64);
    let _ = model.forward(&pids, pmask.as_ref(), &mut cache).unwrap();
    let last = Tensor::from_slice(&vec![7i64; running]).view([running as i64, 1]);
    for _ in 0..8 {
        let _ = model.forward(&last, None, &mut cache).unwrap();
    }
    let feed: Vec<i64> = (0..running).map(|r| 200 + r as i64).collect();
    let joins: Vec<Vec<i64>> = (0..joining).map(|j| ids(plen, 50 + j)).collect();
    let jrefs: Vec<&[i64]> = joins.iter().map(|p| &p[..]).collect();
    let all: Vec<i64> = (0..running as i64).collect();

    let separate = |c: &mut KvCache| -> Tensor {
        let ids = Tensor::from_slice(&feed).view([running as i64, 1]);
        let h = model.forward(&ids, None, c).unwrap();
        let a = model.logits(&h.select(1, -1)).unwrap();
        let (jids, jmask) = left_padded(&jrefs);
        let mut fresh = model.new_cache(joining as i64);
        let h = model.forward(&jids, jmask.as_ref(), &mut fresh).unwrap();
        let b = model.logits(&h.select(1, -1)).unwrap();
        c.append(fresh).unwrap();
        Tensor::cat(&[a, b], 0)
    };
    let mixed = |c: &mut KvCache| -> Tensor {
        let mut fresh = model.new_cache(joining as i64);
        let h = model.forward_mixed(&feed, c, &jrefs, &mut fresh).unwrap();
        let l = model.logits(&h).unwrap();
        c.append(fresh).unwrap();
        l
    };
    let decode_alone = |c: &mut KvCache| -> Tensor {
        let ids = Tensor::from_slice(&feed).view([running as i64, 1]);
        let h = model.forward(&ids, None, c).unwrap();
        model.logits(&h.select(1, -1)).unwrap()
    };
    // Each variant: wall seconds, CPU seconds (every thread) and voluntary context switches.
    type Run<'a> = (&'a str, &'a dyn Fn(&mut KvCache) -> Tensor, bool);
    let variants: [Run; 4] = [
        ("A decode + prefill", &separate, false),
        ("B mixed, kernels", &mixed, true),
        ("D mixed, libtorch", &mixed, false),
        ("C decode alone", &decode_alone, true),
    ];
    let mut figures: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    let mut logits: Vec<Option<Tensor>> = (0..variants.len()).map(|_| None).collect();
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        for (i, (name, run, on_kernels)) in variants.iter().enumerate() {
            swift_model::set_mixed_on_kernels(*on_kernels);
            let mut c = cache.copy_rows(&all).unwrap();
            let (cpu0, sw0) = usage();
            let t0 = Instant::now();
            let l = run(&mut c);
            let wall = t0.elapsed().as_secs_f64();
            let (cpu1, sw1) = usage();
            figures[i].push((wall, cpu1 - cpu0, sw1 - sw0));
            logits[i].get_or_insert(l);
            line += &format!(
                " {name} {wall:.3} s ({:.3} CPU s, {:.0} switches);",
                cpu1 - cpu0,
                sw1 - sw0
            );
        }
        println!("{line}");
    }
    swift_model::set_mixed_on_kernels(true);
    println!(
        "{running} running rows + {joining} prompts of {plen} tokens, medians of {rounds} rounds:"
    );
    for (i, (name, ..)) in variants.iter().enumerate() {
        let pick = |f: fn(&(f64, f64, f64)) -> f64| median(figures[i].iter().map(f).collect());
        println!(
            "  {name}: {:.3} s wall, {:.3} CPU s, {:.0} voluntary switches",
            pick(|t| t.0),
            pick(|t| t.1),
            pick(|t| t.2)
        );
    }
    let l: Vec<Tensor> = logits.into_iter().map(Option::unwrap).collect();
    let cmp = |a: &Tensor, b: &Tensor| {
        let diff = f64::try_from((a - b).abs().max()).unwrap();
        let same = a.argmax(-1, false).eq_tensor(&b.argmax(-1, false));
        (diff, i64::try_from(same.sum(Kind::Int64)).unwrap())
    };
    for (x, y) in [(0, 1), (0, 2), (1, 2)] {
        let (diff, agree) = cmp(&l[x], &l[y]);
        println!(
            "  logits {} vs {}: max |diff| {diff:.2e}, greedy tokens agree on {agree} of {} rows",
            variants[x].0,
            variants[y].0,
            running + joining
        );
    }
    // The running rows of a mixed pass on the kernels against the decoding step alone.
    let run = running as i64;
    let b = l[1].narrow(0, 0, run);
    let equal = b.equal(&l[3]);
    println!("  running rows of B bit for bit C's: {equal}");
}

/// CPU seconds of every thread of this process and their voluntary context switches.
fn usage() -> (f64, f64) {
    let mut switches = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                    switches += v.trim().parse::<f64>().unwrap_or(0.0);
                }
            }
        }
    }
    (common::cpu_seconds(), switches)
}
