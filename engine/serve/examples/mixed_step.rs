//! What a joining step costs on the `pt` backend, both ways in the same seconds (so a loaded
//! machine slows both alike): running rows decode one token each while new prompts join, either
//! as a decoding pass and then a prefill pass of the prompts (before `forward_mixed`), or as one
//! mixed pass ([`LoadedModel::forward_mixed`]); and, for scale, C: the running rows' decoding
//! step alone (what the step would cost if no prompt joined). Rounds alternate A, B, C, A, B, C
//! …; prints each round's seconds, the medians, and how far A's and B's logits are apart (and
//! whether their greedy tokens agree). B − C is what the joining prompts cost.
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
    let (mut ta, mut tb, mut tc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut la, mut lb) = (None, None);
    for round in 0..rounds {
        let mut c = cache.copy_rows(&all).unwrap();
        let t0 = Instant::now();
        let l = separate(&mut c);
        ta.push(t0.elapsed().as_secs_f64());
        la.get_or_insert(l);
        let mut c = cache.copy_rows(&all).unwrap();
        let t0 = Instant::now();
        let l = mixed(&mut c);
        tb.push(t0.elapsed().as_secs_f64());
        lb.get_or_insert(l);
        let mut c = cache.copy_rows(&all).unwrap();
        let t0 = Instant::now();
        let _ = decode_alone(&mut c);
        tc.push(t0.elapsed().as_secs_f64());
        println!(
            "round {round}: A (decode + prefill) {:.3} s, B (mixed) {:.3} s, C (decode alone) {:.3} s",
            ta[round], tb[round], tc[round]
        );
    }
    let (la, lb) = (la.unwrap(), lb.unwrap());
    let diff = f64::try_from((&la - &lb).abs().max()).unwrap();
    let same = la.argmax(-1, false).eq_tensor(&lb.argmax(-1, false));
    let agree = i64::try_from(same.sum(Kind::Int64)).unwrap();
    let (ma, mb, mc) = (median(ta), median(tb), median(tc));
    println!(
        "{running} running rows + {joining} prompts of {plen} tokens: median A {ma:.3} s, B {mb:.3} s (B/A {:.2}), C {mc:.3} s (B-C {:.3} s); logits max |A-B| {diff:.2e}, greedy tokens agree on {agree} of {} rows",
        mb / ma,
        mb - mc,
        running + joining
    );
}
