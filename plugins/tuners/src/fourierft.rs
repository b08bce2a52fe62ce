//! FourierFT on the tuner contract, as PEFT computes it: each targeted linear slot trains
//! `n = --fourier_n_frequency` spectral coefficients placed at fixed positions of an
//! `[out, in]` spectrum `F` (zero elsewhere); the slot's weight change is
//! `ΔW = real(ifft2(F)) · --fourier_scaling`, so its output becomes `base + x·ΔWᵀ`.
//!
//! The positions are PEFT's: the first `n` entries of
//! `torch.randperm(out·in, generator=torch.Generator().manual_seed(random_loc_seed))`, read
//! row-major (`row = v / in`, `col = v % in`), the same for every slot of one shape. They are
//! regenerated from `--random_loc_seed` (PEFT's name; default 777), never saved. Drawing them
//! seeds libtorch's global generator, so `positions` first draws a seed from it and re-seeds it
//! afterwards: the run stays a function of `--seed`. The coefficients start as PEFT's do
//! (`init_weights: false`, its default and ms-swift's): standard normal, drawn by the host.
//!
//! Checkpoints are PEFT's: `base_model.model.<slot>.fourierft_spectrum` `[n]` and
//! `adapter_config.json` with `peft_type: FOURIERFT`, `n_frequency`, `scaling`,
//! `random_loc_seed`. Merging adds `ΔW` to the weight.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{self, Device, Kind, Tensor};
use swift_plugin_tensors::tuner::keyed;

use crate::lora::target_modules;

/// The `fourierft` tuner.
pub struct FourierTuner;

impl Tuner for FourierTuner {
    fn targets(&self, args: &Value, slots: &[String]) -> Result<Vec<String>, String> {
        crate::select_targets(args, slots)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FourierConfig {
    n: i64,
    scaling: f64,
    seed: i64,
}

/// The flat (row-major) positions of the `n` coefficients of an `[out, in]` spectrum, as PEFT
/// draws them from `seed`.
pub fn positions(out: i64, inp: i64, n: i64, seed: i64) -> Result<Vec<i64>, String> {
    let f = || -> Result<Vec<i64>, tch::TchError> {
        let cpu = (Kind::Int64, Device::Cpu);
        // Keep the global generator a function of what came before: draw where it goes on.
        let next = Tensor::f_randint(i64::MAX, [1], cpu)?.int64_value(&[0]);
        tch::manual_seed(seed);
        let perm = Tensor::f_randperm(out * inp, cpu)?.f_narrow(0, 0, n);
        tch::manual_seed(next);
        Vec::<i64>::try_from(perm?)
    };
    f().map_err(|e| format!("fourierft positions: {e}"))
}

impl AdapterTuner for FourierTuner {
    fn attach(&self, req: &AttachRequest) -> Result<Box<dyn Adapter>, String> {
        let o = &req.options;
        let (config, slots): (FourierConfig, Vec<&SlotInfo>) = match req.mode {
            AttachMode::Train => {
                let c = FourierConfig {
                    n: o["fourier_n_frequency"].as_i64().unwrap_or(2000),
                    scaling: o["fourier_scaling"].as_f64().unwrap_or(300.0),
                    seed: o["random_loc_seed"].as_i64().unwrap_or(777),
                };
                if c.n < 1 || c.seed < 0 || !(c.scaling.is_finite() && c.scaling > 0.0) {
                    return Err(format!(
                        "--fourier_n_frequency must be ≥ 1 (got {}), --fourier_scaling > 0 (got {}), --random_loc_seed ≥ 0 (got {})",
                        c.n, c.scaling, c.seed
                    ));
                }
                (c, req.slots.iter().collect())
            }
            AttachMode::Load => {
                let (cfg, file) = (&req.config_file, &req.weights_file);
                if o["peft_type"].as_str() != Some("FOURIERFT") {
                    return Err(format!(
                        "{cfg}: peft_type {} is not FOURIERFT",
                        o["peft_type"]
                    ));
                }
                if o["n_frequency_pattern"]
                    .as_object()
                    .is_some_and(|m| !m.is_empty())
                {
                    return Err(format!(
                        "{cfg}: n_frequency_pattern (a per-layer n_frequency) is not read by this swift; it reads one n_frequency for every slot"
                    ));
                }
                let get = |k: &str| o[k].as_i64();
                let c = match (get("n_frequency"), o["scaling"].as_f64(), get("random_loc_seed")) {
                    (Some(n), Some(scaling), Some(seed)) if n >= 1 && seed >= 0 => FourierConfig { n, scaling, seed },
                    _ => {
                        return Err(format!(
                            "{cfg}: n_frequency ({}), scaling ({}) and random_loc_seed ({}) must be an integer ≥ 1, a number and an integer ≥ 0",
                            o["n_frequency"], o["scaling"], o["random_loc_seed"]
                        ))
                    }
                };
                let mut slots = Vec::new();
                for (key, shape) in &req.stored {
                    let Some(slot) = key
                        .strip_prefix("base_model.model.")
                        .and_then(|k| k.strip_suffix(".fourierft_spectrum"))
                    else {
                        continue;
                    };
                    let info = req.slots.iter().find(|s| s.name == slot).ok_or_else(|| {
                        format!("{file}: the adapter has weights for `{slot}`, which this model does not have")
                    })?;
                    if *shape != [c.n] {
                        return Err(format!(
                            "{file}: `{key}` is {shape:?}; n_frequency in {cfg} is {}",
                            c.n
                        ));
                    }
                    slots.push(info);
                }
                (c, slots)
            }
        };
        let mut plan = AdapterPlan {
            peft_type: "FOURIERFT".into(),
            method: "FourierFT".into(),
            summary: format!(
                "FourierFT n_frequency={} scaling={}",
                config.n, config.scaling
            ),
            slots: Vec::new(),
            shared: Vec::new(),
            train_whole: Vec::new(),
            attention: AttentionMode::Full,
            extra_loss: false,
            after_backward: false,
            merge_refused: None,
            rank: Some(config.n),
        };
        let mut drawn: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
        let mut shapes = Vec::new();
        let mut places = Vec::new();
        for s in &slots {
            if s.kind != SlotKind::Linear || s.shape.len() != 2 {
                return Err(format!(
                    "FourierFT targets linear slots; `{}` is not one",
                    s.name
                ));
            }
            let (out, inp) = (s.shape[0], s.shape[1]);
            if config.n > out * inp {
                return Err(format!(
                    "--fourier_n_frequency {} is more than `{}` has weights ({out} × {inp} = {}): choose at most {}",
                    config.n,
                    s.name,
                    out * inp,
                    out * inp
                ));
            }
            let at = match drawn.entry((out, inp)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(positions(out, inp, config.n, config.seed)?)
                }
            };
            places.push(at.clone());
            shapes.push((out, inp));
            plan.slots.push(SlotPlan {
                slot: s.name.clone(),
                tensors: vec![TensorDecl {
                    name: "fourierft_spectrum".into(),
                    key: Some("fourierft_spectrum".into()),
                    shape: vec![config.n],
                    init: Init::Normal {
                        mean: 0.0,
                        std: 1.0,
                    },
                    dtype: DtypeRule::Float32,
                    trainable: req.mode == AttachMode::Train,
                    lr_factor: 1.0,
                }],
                needs_base_weight: false,
            });
        }
        let targeted: Vec<String> = plan.slots.iter().map(|s| s.slot.clone()).collect();
        Ok(Box::new(FourierAdapter {
            target_modules: target_modules(&targeted, &req.linear_slots),
            config,
            plan,
            shapes,
            places,
        }))
    }
}

struct FourierAdapter {
    config: FourierConfig,
    plan: AdapterPlan,
    target_modules: Vec<String>,
    /// Per slot: `(out, in)` and the coefficients' flat positions.
    shapes: Vec<(i64, i64)>,
    places: Vec<Vec<i64>>,
}

impl FourierAdapter {
    /// `ΔW = real(ifft2(F)) · scaling` of slot `slot` (`[out, in]`, float32, with the graph).
    fn delta(&self, slot: usize, spectrum: &Tensor) -> Result<Tensor, tch::TchError> {
        let (out, inp) = self.shapes[slot];
        let device = spectrum.device();
        let at = Tensor::from_slice(&self.places[slot]).f_to_device(device)?;
        Tensor::f_zeros([out * inp], (Kind::Float, device))?
            .f_index_put(&[Some(at)], &spectrum.f_to_kind(Kind::Float)?, false)?
            .f_view([out, inp])?
            .f_fft_ifft2(None::<&[i64]>, [-2i64, -1].as_slice(), "backward")?
            .f_real()?
            .f_mul_scalar(self.config.scaling)
    }
}

impl Adapter for FourierAdapter {
    fn plan(&self) -> AdapterPlan {
        self.plan.clone()
    }

    fn forward(&self, call: SlotCall<'_>) -> Result<Tensor, String> {
        let f = || -> Result<Tensor, tch::TchError> {
            let dw = self.delta(call.slot, &call.tensors[0])?;
            let y = call
                .x
                .f_to_kind(Kind::Float)?
                .f_linear::<Tensor>(&dw, None)?;
            let kind = call.base.kind();
            call.base.f_to_kind(Kind::Float)?.f_add(&y)?.f_to_kind(kind)
        };
        f().map_err(|e| format!("fourierft: {e}"))
    }

    fn save(&self, tensors: &[Vec<Tensor>], shared: &[Tensor]) -> Result<Saved, String> {
        let c = &self.config;
        Ok(Saved {
            tensors: keyed(&self.plan, tensors, shared),
            config: crate::peft_config(
                "FOURIERFT",
                &self.target_modules,
                true,
                json!({
                    "n_frequency": c.n,
                    "scaling": c.scaling,
                    "random_loc_seed": c.seed,
                    "n_frequency_pattern": {},
                    "init_weights": false,
                    "exclude_modules": null
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
        let f = || -> Result<Tensor, tch::TchError> {
            let dw = self.delta(slot, &tensors[0])?;
            weight
                .f_to_kind(Kind::Float)?
                .f_add(&dw)?
                .f_to_kind(weight.kind())
        };
        f().map_err(|e| format!("fourierft merge: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_coefficient_gives_a_plane_wave() {
        let _rng = crate::tests::global_rng();
        // A single coefficient c at (r, k) of an [M, N] spectrum: ifft2 gives
        // c/(M·N) · exp(2πi(r·m/M + k·n/N)), whose real part is c/(M·N) · cos(2π(r·m/M + k·n/N)).
        let (m, n) = (4i64, 6i64);
        let a = FourierAdapter {
            config: FourierConfig {
                n: 1,
                scaling: 2.0,
                seed: 0,
            },
            plan: AdapterPlan {
                peft_type: "FOURIERFT".into(),
                method: String::new(),
                summary: String::new(),
                slots: Vec::new(),
                shared: Vec::new(),
                train_whole: Vec::new(),
                attention: AttentionMode::Full,
                extra_loss: false,
                after_backward: false,
                merge_refused: None,
                rank: None,
            },
            target_modules: Vec::new(),
            shapes: vec![(m, n)],
            places: vec![vec![n + 2]],
        };
        let c = 3.0f64;
        let d = a.delta(0, &Tensor::from_slice(&[c as f32])).unwrap();
        for row in 0..m {
            for col in 0..n {
                let phase = 2.0
                    * std::f64::consts::PI
                    * (row as f64 / m as f64 + 2.0 * col as f64 / n as f64);
                let want = 2.0 * c / (m * n) as f64 * phase.cos();
                let got = d.double_value(&[row, col]);
                assert!((got - want).abs() < 1e-6, "({row}, {col}): {got} vs {want}");
            }
        }
    }
}
