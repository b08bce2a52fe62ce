//! Calibration statistics gathered through the host's linear slots: a [`LinearHook`] on each
//! slot to be quantized sees the slot's input on every calibration forward pass.
//!
//! Slots that receive the same input tensor (q/k/v projections, gate/up projections) share one
//! accumulator: a first probe pass records each slot's input pointer and groups them. Per group
//! it keeps what the methods need: the Hessian `H = 2 XᵀX / n` (GPTQ), the mean absolute input
//! per channel and up to `max_rows` input rows taken at a fixed stride (AWQ).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use swift_model::{LinearHook, LoadedModel};
use tch::{Kind, Tensor};

use crate::{QuantError, Result};

/// What to gather.
#[derive(Debug, Clone, Copy)]
pub struct CalibOptions {
    pub hessian: bool,
    pub rows: bool,
    /// Input rows kept per group (for AWQ's search).
    pub max_rows: i64,
}

/// Statistics of one input.
#[derive(Default)]
pub struct Stats {
    /// Σ xᵀx (f32 `[in, in]`).
    xtx: Option<Tensor>,
    /// Σ |x| (f32 `[in]`).
    abs_sum: Option<Tensor>,
    /// Kept rows.
    rows: Vec<Tensor>,
    kept: i64,
    /// Rows seen.
    pub n: i64,
}

impl Stats {
    /// `2 XᵀX / n` (f32 `[in, in]`).
    pub fn hessian(&self) -> Option<Tensor> {
        self.xtx
            .as_ref()
            .map(|h| h.shallow_clone() * (2.0 / self.n.max(1) as f64))
    }

    /// Mean |x| per channel.
    pub fn abs_mean(&self) -> Option<Tensor> {
        self.abs_sum
            .as_ref()
            .map(|a| a.shallow_clone() / self.n.max(1) as f64)
    }

    /// The kept input rows `[rows, in]`.
    pub fn rows(&self) -> Result<Option<Tensor>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::f_cat(&self.rows, 0)?))
    }
}

struct Probe {
    slot: String,
    /// The inputs seen, kept alive so no address is reused during the probe.
    seen: Arc<Mutex<Vec<(String, Tensor)>>>,
}

impl LinearHook for Probe {
    fn forward(&self, x: &Tensor, base: Tensor) -> std::result::Result<Tensor, String> {
        if let Ok(mut s) = self.seen.lock() {
            s.push((self.slot.clone(), x.shallow_clone()));
        }
        Ok(base)
    }
}

struct Capture {
    stats: Arc<Mutex<Stats>>,
    opts: CalibOptions,
    /// Rows to skip between kept rows.
    stride: i64,
}

impl LinearHook for Capture {
    fn forward(&self, x: &Tensor, base: Tensor) -> std::result::Result<Tensor, String> {
        let _g = tch::no_grad_guard();
        let n_in = *x.size().last().ok_or("calibration input is a scalar")?;
        let x2 = x
            .f_reshape([-1, n_in])
            .and_then(|t| t.f_to_kind(Kind::Float))
            .map_err(crate::msg)?;
        let rows = x2.size()[0];
        let mut st = self.stats.lock().map_err(crate::msg)?;
        st.n += rows;
        if self.opts.hessian {
            let xtx = x2.f_tr().and_then(|t| t.f_mm(&x2)).map_err(crate::msg)?;
            st.xtx = Some(match st.xtx.take() {
                Some(h) => h + xtx,
                None => xtx,
            });
        }
        if self.opts.rows {
            let a = x2
                .f_abs()
                .and_then(|a| a.f_sum_dim_intlist(&[0i64][..], false, Kind::Float))
                .map_err(crate::msg)?;
            st.abs_sum = Some(match st.abs_sum.take() {
                Some(s) => s + a,
                None => a,
            });
            let room = self.opts.max_rows - st.kept;
            if room > 0 {
                let take = x2
                    .f_slice(0, 0, None, self.stride.max(1))
                    .and_then(|t| {
                        let k = t.size()[0].min(room);
                        t.f_narrow(0, 0, k)
                    })
                    .map(|t| t.copy())
                    .map_err(crate::msg)?;
                st.kept += take.size()[0];
                st.rows.push(take);
            }
        }
        Ok(base)
    }
}

/// Gathered statistics, per slot (slots sharing an input share the same [`Stats`]).
pub struct Calibration {
    pub by_slot: HashMap<String, Arc<Mutex<Stats>>>,
}

impl Calibration {
    /// The statistics of `slot`.
    pub fn stats(&self, slot: &str) -> Option<Arc<Mutex<Stats>>> {
        self.by_slot.get(slot).cloned()
    }
}

/// Runs `samples` (token ids, one sequence each) through `model` with hooks on `slots`.
pub fn calibrate(
    model: &mut LoadedModel,
    slots: &[String],
    samples: &[Vec<i64>],
    opts: CalibOptions,
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    let first = samples
        .first()
        .ok_or_else(|| QuantError::Config("the calibration set yielded no samples".into()))?;
    // Probe: which slots see the same input tensor.
    let seen = Arc::new(Mutex::new(Vec::new()));
    for s in slots {
        let slot = model
            .slot_mut(s)
            .ok_or_else(|| QuantError::Config(format!("no slot `{s}`")))?;
        slot.hooks.push(Arc::new(Probe {
            slot: s.clone(),
            seen: seen.clone(),
        }));
    }
    let probe_ids: Vec<i64> = first.iter().take(8).copied().collect();
    let run = model.forward(
        &Tensor::from_slice(&probe_ids).view([1, -1]),
        None,
        &mut model.new_cache(1),
    );
    for s in slots {
        if let Some(slot) = model.slot_mut(s) {
            slot.hooks.pop();
        }
    }
    let _ = run?;
    let seen = std::mem::take(&mut *seen.lock().map_err(|e| QuantError::Config(e.to_string()))?);
    // (An input kept alive by `seen` cannot share its address with another.)
    let mut leader: HashMap<(usize, Vec<i64>), String> = HashMap::new();
    let mut by_slot: HashMap<String, Arc<Mutex<Stats>>> = HashMap::new();
    let mut capturing: Vec<String> = Vec::new();
    let total: i64 = samples.iter().map(|s| s.len() as i64).sum();
    let stride = (total / opts.max_rows.max(1)).max(1);
    for (slot, x) in &seen {
        let (slot, ptr, size) = (slot.clone(), x.data_ptr() as usize, x.size());
        if by_slot.contains_key(&slot) {
            continue;
        }
        match leader.get(&(ptr, size.clone())) {
            Some(l) => {
                let st = by_slot[l].clone();
                by_slot.insert(slot, st);
            }
            None => {
                leader.insert((ptr, size), slot.clone());
                by_slot.insert(slot.clone(), Arc::new(Mutex::new(Stats::default())));
                capturing.push(slot);
            }
        }
    }
    for s in &capturing {
        let hook = Capture {
            stats: by_slot[s].clone(),
            opts,
            stride,
        };
        if let Some(slot) = model.slot_mut(s) {
            slot.hooks.push(Arc::new(hook));
        }
    }
    let mut result = Ok(());
    for (i, ids) in samples.iter().enumerate() {
        let mut cache = model.new_cache(1);
        if let Err(e) = model.forward(&Tensor::from_slice(ids).view([1, -1]), None, &mut cache) {
            result = Err(e);
            break;
        }
        progress(i + 1);
    }
    for s in &capturing {
        if let Some(slot) = model.slot_mut(s) {
            slot.hooks.pop();
        }
    }
    result?;
    tracing::debug!(
        "calibration: {} slots, {} distinct inputs",
        by_slot.len(),
        capturing.len()
    );
    Ok(Calibration { by_slot })
}
