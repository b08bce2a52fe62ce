//! BOFT (butterfly orthogonal fine-tuning) on the tuner contract, as PEFT computes it. Each
//! targeted linear slot rotates its input by an orthogonal `in × in` matrix `R` and rescales its
//! output rows: `y = ((x·R)·Wᵀ) ⊙ s + b`.
//!
//! `R = M_{N-1} ··· M_1 · M_0` over `N = --boft_n_butterfly_factor` factors. Factor `i` is
//! block-diagonal in permuted coordinates: `D` blocks of `H × H` (`D · H = in`; `H` is
//! `--boft_block_size`, or `in / --boft_block_num`), each the Cayley transform
//! `Q = (I − A)(I + A)⁻¹` of the skew-symmetric part `A = (B − Bᵀ)/2` of a trained block `B`.
//! Factor 0 is plain block-diagonal (OFT); factor `i ≥ 1` splits the input into chunks of
//! `2ⁱ·H` and, in each, pairs the half-blocks (`H/2` wide) `j` and `j + 2ⁱ` into one block — the
//! butterfly, which PEFT writes as `P_i · blockdiag(Q_i) · P_iᵀ` with its
//! `block_butterfly_perm` permutations (`butterfly_perm` below is the same permutation).
//! Blocks start at zero (`R = I`) and `s` at one, so the model starts unchanged.
//! `--boft_dropout p` sets `⌊p·D⌋` random blocks of one random factor to the identity while
//! training (PEFT's multiplicative dropout).
//!
//! Checkpoints are PEFT's: `base_model.model.<slot>.boft_R` `[N, D, H, H]` and `.boft_s`
//! `[out, 1]`, and `adapter_config.json` with `peft_type: BOFT`, `boft_block_size` or
//! `boft_block_num` (the other 0), `boft_n_butterfly_factor`. PEFT on a machine without its
//! CUDA extension forces the factor to 1 (so it loads only factor-1 checkpoints there, and its
//! CPU-trained checkpoints may say a larger factor over `[1, D, H, H]` tensors: read as factor 1,
//! with a warning). Merging gives `W' = (W·Rᵀ) ⊙ s` (rows scaled); the bias is unchanged.

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Device, Kind, Tensor};
use swift_plugin_tensors::tuner::keyed;

use crate::lora::target_modules;

/// The `boft` tuner.
pub struct BoftTuner;

impl Tuner for BoftTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

/// BOFT's settings: exactly one of `block_size` and `block_num` is non-zero.
#[derive(Debug, Clone, PartialEq)]
struct BoftConfig {
    block_size: i64,
    block_num: i64,
    factors: i64,
    dropout: f64,
}

/// An integer option: `None` when unset; refused when it is not an integer.
fn int(o: &Value, name: &str, what: &str) -> Result<Option<i64>, String> {
    match &o[name] {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{what}{name} must be an integer, got {v}")),
    }
}

impl BoftConfig {
    /// From the flags (`--boft_block_size` defaults to 4 unless `--boft_block_num` is given).
    fn from_flags(o: &Value) -> Result<Self, String> {
        let size = int(o, "boft_block_size", "--")?;
        let num = int(o, "boft_block_num", "--")?;
        let (block_size, block_num) = match (size, num) {
            (None, None) | (None, Some(0)) => (4, 0),
            (s, n) => (s.unwrap_or(0), n.unwrap_or(0)),
        };
        let c = Self {
            block_size,
            block_num,
            factors: int(o, "boft_n_butterfly_factor", "--")?.unwrap_or(1),
            dropout: o["boft_dropout"].as_f64().unwrap_or(0.0),
        };
        c.check("--", "")?;
        Ok(c)
    }

    /// From a checkpoint's `adapter_config.json` (`cfg` names it).
    fn from_config(o: &Value, cfg: &str) -> Result<Self, String> {
        let at = format!("{cfg}: ");
        let c = Self {
            block_size: int(o, "boft_block_size", &at)?.unwrap_or(4),
            block_num: int(o, "boft_block_num", &at)?.unwrap_or(0),
            factors: int(o, "boft_n_butterfly_factor", &at)?.unwrap_or(1),
            dropout: 0.0,
        };
        c.check("", &at)?;
        Ok(c)
    }

    fn check(&self, dashes: &str, at: &str) -> Result<(), String> {
        let (s, n) = (self.block_size, self.block_num);
        if s < 0 || n < 0 {
            return Err(format!(
                "{at}{dashes}boft_block_size ({s}) and {dashes}boft_block_num ({n}) must be ≥ 0"
            ));
        }
        if (s == 0) == (n == 0) {
            return Err(format!(
                "{at}give exactly one of {dashes}boft_block_size ({s}) and {dashes}boft_block_num ({n}): block size × block count is each slot's input size"
            ));
        }
        if self.factors < 1 {
            return Err(format!(
                "{at}{dashes}boft_n_butterfly_factor must be ≥ 1, got {}",
                self.factors
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "{at}{dashes}boft_dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// `(D, H)` for a slot with `inp` inputs, refused as PEFT refuses it.
    fn blocks(&self, inp: i64, slot: &str) -> Result<(i64, i64), String> {
        let extra = self.factors - 1;
        let pow = 1i64 << extra.min(62);
        let (d, h) = if self.block_num != 0 {
            let n = self.block_num;
            if inp % n != 0 {
                return Err(format!(
                    "`{slot}` has {inp} inputs, which --boft_block_num {n} does not divide"
                ));
            }
            if extra > 0 && (extra > 62 || n % pow != 0) {
                return Err(format!(
                    "--boft_block_num {n} must be a multiple of 2^(--boft_n_butterfly_factor − 1) = 2^{extra}"
                ));
            }
            (n, inp / n)
        } else {
            let h = self.block_size;
            if inp % h != 0 {
                return Err(format!(
                    "`{slot}` has {inp} inputs, which --boft_block_size {h} does not divide (choose a divisor of every targeted slot's input size, or --boft_block_num)"
                ));
            }
            if extra > 0 && (extra > 62 || inp % (h * pow) != 0) {
                return Err(format!(
                    "`{slot}` has {inp} inputs, which --boft_block_size {h} × 2^(--boft_n_butterfly_factor − 1) = {h} × 2^{extra} does not divide"
                ));
            }
            (inp / h, h)
        };
        if extra > 0 && (d % 2 != 0 || h % 2 != 0) {
            return Err(format!(
                "`{slot}`: with --boft_n_butterfly_factor {} the block count ({d}) and size ({h}) must be even",
                self.factors
            ));
        }
        Ok((d, h))
    }
}

/// PEFT's `block_butterfly_perm` for factor `i ≥ 1` of an `n`-wide input with blocks of `h`:
/// within each chunk of `2ⁱ·h`, position `p` in half-block `k` (`h/2` wide) takes the input at
/// the same offset of half-block `2k` (first half of the chunk) or `2(k − m/2) + 1` (second
/// half), `m = 2^(i+1)` half-blocks per chunk.
pub fn butterfly_perm(n: i64, i: u32, h: i64) -> Vec<i64> {
    let chunk = h << i;
    let half = h / 2;
    let m = 2i64 << i;
    (0..n)
        .map(|p| {
            let (c, rest) = (p / chunk, p % chunk);
            let (k, t) = (rest / half, rest % half);
            let from = if k < m / 2 {
                2 * k
            } else {
                2 * (k - m / 2) + 1
            };
            c * chunk + from * half + t
        })
        .collect()
}

/// The inverse of a permutation.
fn inverse(perm: &[i64]) -> Vec<i64> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p as usize] = i as i64;
    }
    inv
}

/// One slot's geometry.
#[derive(Debug, Clone)]
struct Geometry {
    out: i64,
    inp: i64,
    /// Blocks per factor and their size.
    d: i64,
    h: i64,
    /// Per factor `i ≥ 1`: the permutation and its inverse (factor 0 needs none).
    perms: Vec<(Vec<i64>, Vec<i64>)>,
}

impl AdapterTuner for BoftTuner {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        let o = &req.options;
        let (config, slots): (BoftConfig, Vec<&SlotInfo>) = match req.mode {
            AttachMode::Train => (BoftConfig::from_flags(o)?, req.slots.iter().collect()),
            AttachMode::Load => {
                let (cfg, file) = (&req.config_file, &req.weights_file);
                if o["peft_type"].as_str() != Some("BOFT") {
                    return Err(format!("{cfg}: peft_type {} is not BOFT", o["peft_type"]));
                }
                let mut c = BoftConfig::from_config(o, cfg)?;
                let mut slots = Vec::new();
                for (key, shape) in &req.stored {
                    let Some(slot) = key
                        .strip_prefix("base_model.model.")
                        .and_then(|k| k.strip_suffix(".boft_R"))
                    else {
                        continue;
                    };
                    let info = req.slots.iter().find(|s| s.name == slot).ok_or_else(|| {
                        format!("{file}: the adapter has weights for `{slot}`, which this model does not have")
                    })?;
                    if shape.first() == Some(&1) && c.factors > 1 {
                        plugin_warn!(
                            "{file}: boft_R of `{slot}` holds 1 butterfly factor while {cfg} says {}: PEFT trained it without its CUDA extension, which forces the factor to 1; read as 1",
                            c.factors
                        );
                        c.factors = 1;
                    }
                    slots.push(info);
                }
                (c, slots)
            }
        };
        let n = config.factors;
        let train = req.mode == AttachMode::Train;
        let decl = |name: &str, shape: Vec<i64>, init: Init| TensorDecl {
            name: name.into(),
            key: Some(name.into()),
            shape,
            init,
            dtype: DtypeRule::Float32,
            trainable: train,
            lr_factor: 1.0,
        };
        let mut plan = AdapterPlan {
            peft_type: "BOFT".into(),
            method: "BOFT".into(),
            summary: String::new(),
            slots: Vec::new(),
            shared: Vec::new(),
            train_whole: Vec::new(),
            attention: AttentionMode::Full,
            extra_loss: false,
            after_backward: false,
            merge_refused: None,
            rank: None,
        };
        let mut geometry = Vec::new();
        for s in &slots {
            if s.kind != SlotKind::Linear || s.shape.len() != 2 {
                return Err(format!(
                    "BOFT targets linear slots; `{}` is not one",
                    s.name
                ));
            }
            let (out, inp) = (s.shape[0], s.shape[1]);
            let (d, h) = config.blocks(inp, &s.name).map_err(|e| {
                if train {
                    e
                } else {
                    format!("{}: {e}", req.config_file)
                }
            })?;
            let shape_r = vec![n, d, h, h];
            if !train {
                let file = &req.weights_file;
                let stored = |k: &str| req.stored.get(&format!("base_model.model.{}.{k}", s.name));
                if stored("boft_R") != Some(&shape_r) || stored("boft_s") != Some(&vec![out, 1]) {
                    return Err(format!(
                        "{file}: `{}`'s boft_R {:?} and boft_s {:?} do not fit {} ({n} factors of {d} blocks of {h}, {out} outputs)",
                        s.name,
                        stored("boft_R"),
                        stored("boft_s"),
                        req.config_file
                    ));
                }
            }
            let perms = (1..n as u32)
                .map(|i| {
                    let p = butterfly_perm(inp, i, h);
                    let inv = inverse(&p);
                    (p, inv)
                })
                .collect();
            geometry.push(Geometry {
                out,
                inp,
                d,
                h,
                perms,
            });
            plan.slots.push(SlotPlan {
                slot: s.name.clone(),
                tensors: vec![
                    decl("boft_R", shape_r, Init::Zeros),
                    decl("boft_s", vec![out, 1], Init::Ones),
                ],
                needs_base_weight: true,
            });
        }
        let blocks = if config.block_num != 0 {
            format!("{} blocks", config.block_num)
        } else {
            format!("blocks of {}", config.block_size)
        };
        plan.summary = format!(
            "BOFT {blocks}, {n} butterfly factor{}",
            if n == 1 { "" } else { "s" }
        );
        let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
        Ok(Box::new(BoftAdapter {
            target_modules: target_modules(&targeted, &req.linear_slots),
            config,
            plan,
            geometry,
        }))
    }
}

struct BoftAdapter {
    config: BoftConfig,
    plan: AdapterPlan,
    target_modules: Vec<String>,
    geometry: Vec<Geometry>,
}

/// The Cayley transform of each `H × H` block of `r` (`[N, D, H, H]`, float32):
/// `(I − A)(I + A)⁻¹`, `A = (B − Bᵀ)/2` (PEFT's `cayley_batch`, solved the same way).
fn cayley(r: &Tensor) -> Result<Tensor, tch::TchError> {
    let size = r.size();
    let h = size[3];
    let b = r.f_reshape([-1, h, h])?;
    let skew = b.f_sub(&b.f_transpose(1, 2)?)?.f_mul_scalar(0.5)?;
    let eye = Tensor::f_eye(h, (r.kind(), r.device()))?.f_expand_as(&skew)?;
    let q = Tensor::f_linalg_solve(&eye.f_add(&skew)?, &eye.f_sub(&skew)?, false)?;
    q.f_reshape(size.as_slice())
}

/// PEFT's multiplicative dropout: `⌊p·D⌋` random blocks of one random factor become the
/// identity.
fn block_dropout(q: &Tensor, p: f64) -> Result<Tensor, tch::TchError> {
    let size = q.size();
    let (n, d, h) = (size[0], size[1], size[2]);
    let k = (p * d as f64) as i64;
    if k == 0 {
        return Ok(q.shallow_clone());
    }
    let cpu = (Kind::Int64, Device::Cpu);
    let factor = Tensor::f_randint(n, [1], cpu)?.int64_value(&[0]);
    let chosen = Tensor::f_randperm(d, cpu)?.f_narrow(0, 0, k)?;
    let mask = Tensor::f_zeros([n, d], (q.kind(), Device::Cpu))?;
    let mut row = mask.f_get(factor)?;
    let _ = row.f_index_fill_(0, &chosen, 1.0)?;
    let mask = mask.f_to_device(q.device())?.f_view([n, d, 1, 1])?;
    let eye = Tensor::f_eye(h, (q.kind(), q.device()))?;
    q.f_mul(&mask.f_neg()?.f_add_scalar(1.0)?)?
        .f_add(&mask.f_mul(&eye)?)
}

impl BoftAdapter {
    /// `x · R` for slot `g` from the blocks `q` (`[N, D, H, H]`): the factors applied
    /// blockwise, last factor first (`x·R = x·M_{N−1}···M_0`).
    fn rotate(&self, g: &Geometry, x: &Tensor, q: &Tensor) -> Result<Tensor, tch::TchError> {
        let n = q.size()[0];
        let shape = x.size();
        let mut y = x.shallow_clone();
        for i in (0..n).rev() {
            let index = |v: &[i64]| Tensor::from_slice(v).f_to_device(x.device());
            // x·P_i·B_i·P_iᵀ: gather by the inverse permutation, the blocks, gather back.
            if i > 0 {
                y = y.f_index_select(-1, &index(&g.perms[i as usize - 1].1)?)?;
            }
            let mut blocked = shape[..shape.len() - 1].to_vec();
            blocked.extend([g.d, g.h]);
            // Block d of every row times Q_i[d] (one batched product over the blocks).
            let y_blocks = y.f_reshape(blocked.as_slice())?;
            y = Tensor::f_einsum("...dh,dhk->...dk", &[&y_blocks, &q.f_get(i)?], None::<i64>)?
                .f_reshape(shape.as_slice())?;
            if i > 0 {
                y = y.f_index_select(-1, &index(&g.perms[i as usize - 1].0)?)?;
            }
        }
        Ok(y)
    }

    /// The dense `R` (`[in, in]`) of slot `g`: `M_{N−1}···M_0`, `M_i[a, b] =
    /// blockdiag(Q_i)[π(a), π(b)]`.
    fn dense(&self, g: &Geometry, q: &Tensor) -> Result<Tensor, tch::TchError> {
        let n = q.size()[0];
        let mut r = Tensor::f_eye(g.inp, (q.kind(), q.device()))?;
        for i in 0..n {
            let mut m = Tensor::f_block_diag(&q.f_get(i)?.f_unbind(0)?)?;
            if i > 0 {
                let p = Tensor::from_slice(&g.perms[i as usize - 1].0).f_to_device(q.device())?;
                m = m.f_index_select(0, &p)?.f_index_select(1, &p)?;
            }
            r = m.f_matmul(&r)?;
        }
        Ok(r)
    }
}

impl Adapter for BoftAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let g = &self.geometry[call.slot];
        let Some(w) = call.weight else {
            return Err("BOFT needs the slot's base weight".into());
        };
        let (r, s) = (&call.tensors[0], &call.tensors[1]);
        let f = || -> Result<Tensor, tch::TchError> {
            let mut q = cayley(&r.f_to_kind(Kind::Float)?)?;
            if call.training && self.config.dropout > 0.0 {
                q = block_dropout(&q, self.config.dropout)?;
            }
            let x = self.rotate(g, &call.x.f_to_kind(Kind::Float)?, &q)?;
            let y = x
                .f_to_kind(w.kind())?
                .f_linear::<Tensor>(w, None)?
                .f_to_kind(Kind::Float)?
                .f_mul(&s.f_view([-1])?)?;
            let y = match call.bias {
                Some(b) => y.f_add(&b.f_to_kind(Kind::Float)?)?,
                None => y,
            };
            y.f_to_kind(call.base.kind())
        };
        f().map_err(|e| format!("boft: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        let c = &self.config;
        Ok(Saved {
            tensors: keyed(&self.plan, tensors, shared),
            config: crate::peft_config(
                "BOFT",
                &self.target_modules,
                true,
                json!({
                    "boft_block_size": c.block_size,
                    "boft_block_num": c.block_num,
                    "boft_n_butterfly_factor": c.factors,
                    "boft_dropout": c.dropout,
                    "exclude_modules": null,
                    "init_weights": true
                }),
            ),
        })
    }

    fn merge(
        &self,
        slot: usize,
        weight: &Tensor,
        tensors: &[Tensor],
        _shared: &[Tensor],
    ) -> Result<Tensor, String> {
        let _g = tch::no_grad_guard();
        let g = &self.geometry[slot];
        let f = || -> Result<Tensor, tch::TchError> {
            let q = cayley(&tensors[0].f_to_kind(Kind::Float)?)?;
            let r = self.dense(g, &q)?;
            weight
                .f_to_kind(Kind::Float)?
                .f_matmul(&r.f_tr()?)?
                .f_mul(&tensors[1].f_to_kind(Kind::Float)?)?
                .f_to_kind(weight.kind())
        };
        if weight.size() != [g.out, g.inp] {
            return Err(format!(
                "boft merge: the weight is {:?}, the adapter was planned for [{}, {}]",
                weight.size(),
                g.out,
                g.inp
            ));
        }
        f().map_err(|e| format!("boft merge: {e}"))
    }
}

#[cfg(test)]
mod tests {
    //! BOFT's butterfly against the paper's formula written out densely, at 1 to 3 factors.
    use super::*;

    fn slot(out: i64, inp: i64) -> SlotInfo {
        SlotInfo {
            name: "q".into(),
            kind: SlotKind::Linear,
            shape: vec![out, inp],
            has_bias: true,
            quantized: false,
            layer: None,
        }
    }

    fn attach(options: Value, out: i64, inp: i64) -> Result<Box<dyn Adapter>, String> {
        BoftTuner.attach(&AttachRequest {
            mode: AttachMode::Train,
            options,
            slots: vec![slot(out, inp)],
            linear_slots: vec!["q".into()],
            dtype: "float32".into(),
            stored: Default::default(),
            config_file: String::new(),
            weights_file: String::new(),
        })
    }

    /// The paper's `R` from the blocks directly: factor `i` of an `n`-wide input with blocks of
    /// `h` splits it into chunks of `2ⁱ·h`; in chunk `c`, block `c·2ⁱ + j` (`j < 2ⁱ`) acts on
    /// the half-blocks `j` and `j + 2ⁱ` (each `h/2` wide, concatenated in that order);
    /// `R = M_{N−1}···M_0`; every block is `(I − A)(I + A)⁻¹`, `A = (B − Bᵀ)/2`.
    fn paper_rotation(blocks: &Tensor, n: i64) -> Tensor {
        let size = blocks.size();
        let (factors, h) = (size[0], size[2]);
        let half = h / 2;
        let opts = (Kind::Double, Device::Cpu);
        let mut r = Tensor::eye(n, opts);
        for i in 0..factors {
            let m = Tensor::zeros([n, n], opts);
            let chunk = h << i;
            let pairs = 1i64 << i;
            for c in 0..n / chunk {
                for j in 0..pairs {
                    let idx: Vec<i64> = if i == 0 {
                        (0..h).map(|t| c * chunk + t).collect()
                    } else {
                        (0..half)
                            .map(|t| c * chunk + j * half + t)
                            .chain((0..half).map(|t| c * chunk + (j + pairs) * half + t))
                            .collect()
                    };
                    let b = blocks.get(i).get(c * pairs + j).to_kind(Kind::Double);
                    let a = (&b - b.tr()) * 0.5;
                    let eye = Tensor::eye(h, opts);
                    let q = (&eye - &a).matmul(&(&eye + &a).inverse());
                    for (x, &ia) in idx.iter().enumerate() {
                        for (y, &ib) in idx.iter().enumerate() {
                            let _ = m
                                .get(ia)
                                .get(ib)
                                .fill_(q.double_value(&[x as i64, y as i64]));
                        }
                    }
                }
            }
            r = m.matmul(&r);
        }
        r
    }

    #[test]
    fn the_butterfly_is_the_papers_and_merging_gives_the_same_output() {
        let _rng = crate::tests::global_rng();
        let (out, inp) = (6, 16);
        let opts = (Kind::Float, Device::Cpu);
        for (factors, size) in [(1, 4), (2, 4), (3, 2), (2, 8)] {
            tch::manual_seed(factors * 10 + size);
            let a = attach(
                json!({"boft_block_size": size, "boft_n_butterfly_factor": factors}),
                out,
                inp,
            )
            .unwrap();
            let plan = a.plan();
            let d = inp / size;
            assert_eq!(plan.slots[0].tensors[0].shape, [factors, d, size, size]);
            let blocks = Tensor::randn([factors, d, size, size], opts) * 0.3;
            let s = Tensor::randn([out, 1], opts) * 0.1 + 1.0;
            let w = Tensor::randn([out, inp], opts);
            let bias = Tensor::randn([out], opts);
            let x = Tensor::randn([3, 5, inp], opts);
            let base = x.linear(&w, Some(&bias));
            let tensors = [blocks.shallow_clone(), s.shallow_clone()];
            let y = a
                .forward(SlotCall {
                    slot: 0,
                    x: &x,
                    base,
                    tensors: &tensors,
                    shared: &[],
                    weight: Some(&w),
                    bias: Some(&bias),
                    training: false,
                })
                .unwrap();
            let r = paper_rotation(&blocks, inp);
            // R is orthogonal.
            let eye = r.tr().matmul(&r) - Tensor::eye(inp, (Kind::Double, Device::Cpu));
            assert!(eye.abs().max().double_value(&[]) < 1e-9);
            let want = x
                .to_kind(Kind::Double)
                .matmul(&r)
                .matmul(&w.to_kind(Kind::Double).tr())
                * s.to_kind(Kind::Double).view([-1])
                + bias.to_kind(Kind::Double);
            let d1 = (y.to_kind(Kind::Double) - &want)
                .abs()
                .max()
                .double_value(&[]);
            assert!(d1 < 1e-4, "factors {factors}, block {size}: {d1}");
            let merged = a.merge(0, &w, &tensors, &[]).unwrap();
            let d2 = (x.linear(&merged, Some(&bias)).to_kind(Kind::Double) - &want)
                .abs()
                .max()
                .double_value(&[]);
            assert!(d2 < 1e-4, "merged, factors {factors}, block {size}: {d2}");
        }
    }

    #[test]
    fn block_settings_are_checked_as_peft_checks_them() {
        let _rng = crate::tests::global_rng();
        let e = attach(json!({"boft_block_size": 5}), 6, 16).err().unwrap();
        assert!(
            e.contains("16 inputs") && e.contains("--boft_block_size 5"),
            "{e}"
        );
        let e = attach(json!({"boft_block_size": 4, "boft_block_num": 4}), 6, 16)
            .err()
            .unwrap();
        assert!(e.contains("exactly one"), "{e}");
        let e = attach(
            json!({"boft_block_size": 4, "boft_n_butterfly_factor": 4}),
            6,
            16,
        )
        .err()
        .unwrap();
        assert!(e.contains("2^3"), "{e}");
        // --boft_block_num alone replaces the default block size.
        let a = attach(json!({"boft_block_num": 2}), 6, 16).unwrap();
        assert_eq!(a.plan().slots[0].tensors[0].shape, [1, 2, 8, 8]);
    }

    fn load(config: Value, r: Vec<i64>) -> Result<Box<dyn Adapter>, String> {
        let stored = [
            ("base_model.model.q.boft_R".to_string(), r),
            ("base_model.model.q.boft_s".to_string(), vec![6, 1]),
        ];
        BoftTuner.attach(&AttachRequest {
            mode: AttachMode::Load,
            options: config,
            slots: vec![slot(6, 16)],
            linear_slots: vec!["q".into()],
            dtype: "float32".into(),
            stored: stored.into_iter().collect(),
            config_file: "ck/adapter_config.json".into(),
            weights_file: "ck/adapter_model.safetensors".into(),
        })
    }

    #[test]
    fn checkpoints_are_read_against_their_config() {
        let _rng = crate::tests::global_rng();
        let config = json!({"peft_type": "BOFT", "boft_block_size": 0, "boft_block_num": 4,
            "boft_n_butterfly_factor": 2});
        let a = load(config.clone(), vec![2, 4, 4, 4]).unwrap();
        assert_eq!(a.plan().slots[0].tensors[0].shape, [2, 4, 4, 4]);
        assert!(!a.plan().slots[0].tensors[0].trainable);
        // PEFT without its CUDA extension saved one factor under a config saying two.
        let a = load(config.clone(), vec![1, 4, 4, 4]).unwrap();
        assert_eq!(a.plan().slots[0].tensors[0].shape, [1, 4, 4, 4]);
        let e = load(config, vec![2, 2, 8, 8]).err().unwrap();
        assert!(
            e.contains("ck/adapter_model.safetensors") && e.contains("[2, 2, 8, 8]"),
            "{e}"
        );
        let e = load(json!({"peft_type": "LORA"}), vec![1, 4, 4, 4])
            .err()
            .unwrap();
        assert!(e.contains("ck/adapter_config.json"), "{e}");
    }

    #[test]
    fn dropout_sets_whole_blocks_to_the_identity_while_training() {
        let _rng = crate::tests::global_rng();
        tch::manual_seed(1);
        let q = Tensor::randn([2, 8, 3, 3], (Kind::Float, Device::Cpu));
        let d = block_dropout(&q, 0.5).unwrap();
        let eye = Tensor::eye(3, (Kind::Float, Device::Cpu));
        let mut identity = 0;
        for i in 0..2 {
            for j in 0..8 {
                let b = d.get(i).get(j);
                if b.equal(&eye) {
                    identity += 1;
                } else {
                    assert!(b.equal(&q.get(i).get(j)));
                }
            }
        }
        assert_eq!(identity, 4, "⌊0.5 · 8⌋ blocks of one factor");
    }
}
