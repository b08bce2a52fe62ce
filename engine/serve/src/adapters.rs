//! Several adapters on one model, chosen per row of the batch.
//!
//! Each adapter is loaded once through the tuner contract (swift-train's `AttachedAdapter`, the
//! tuner plugin's math, so the arithmetic is the one `swift infer --adapters` runs), then its
//! hooks are moved off the slots into one
//! [`AdapterSwitch`] per slot. Before every forward pass the batcher says which adapter each row
//! uses ([`Selection::set`]); the switch applies an adapter's hook to its rows only, and rows of
//! the base model pass through. Nothing is merged into the base weights.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use swift_model::{LinearHook, LoadedModel};
use swift_plugin_tensors::TunerHandle;
use swift_train::{AdapterFiles, AttachedAdapter};
use tch::Tensor;

use crate::ServeError;

/// Which adapter each row of the next forward pass uses (`None`: the base model).
#[derive(Clone, Default)]
pub struct Selection(Arc<RwLock<Vec<Option<usize>>>>);

impl Selection {
    pub fn set(&self, rows: Vec<Option<usize>>) {
        match self.0.write() {
            Ok(mut g) => *g = rows,
            Err(poisoned) => *poisoned.into_inner() = rows,
        }
    }

    fn get(&self) -> Vec<Option<usize>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The hook on one slot: every adapter's own hook for that slot (None where the adapter does
/// not target it), applied to the rows that chose it.
struct AdapterSwitch {
    hooks: Vec<Option<Arc<dyn LinearHook>>>,
    selection: Selection,
}

impl LinearHook for AdapterSwitch {
    fn forward(&self, x: &Tensor, base: Tensor) -> Result<Tensor, String> {
        let rows = self.selection.get();
        let batch = x.size().first().copied().unwrap_or(0);
        if rows.len() as i64 != batch {
            return Err(format!(
                "adapter selection has {} rows, the batch {batch}",
                rows.len()
            ));
        }
        // Rows grouped by the hook they need.
        let mut groups: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
        for (i, a) in rows.iter().enumerate() {
            if let Some(a) = *a {
                if self.hooks.get(a).is_some_and(Option::is_some) {
                    groups.entry(a).or_default().push(i as i64);
                }
            }
        }
        let te = |e: tch::TchError| e.to_string();
        let mut out = base;
        for (a, idx) in groups {
            let Some(Some(hook)) = self.hooks.get(a) else {
                continue;
            };
            if idx.len() as i64 == batch {
                out = hook.forward(x, out)?;
                continue;
            }
            let index = Tensor::from_slice(&idx)
                .f_to_device(x.device())
                .map_err(te)?;
            let xa = x.f_index_select(0, &index).map_err(te)?;
            let ba = out.f_index_select(0, &index).map_err(te)?;
            let ya = hook.forward(&xa, ba)?;
            out = out.f_index_copy(0, &index, &ya).map_err(te)?;
        }
        Ok(out)
    }
}

/// An adapter as the server lists it.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub name: String,
    pub path: PathBuf,
    /// The adapter's rank (LoRA's `r`), when it has one.
    pub rank: Option<i64>,
    pub slots: usize,
}

/// An adapter to serve: its name, checkpoint folder, and the tuner whose math reads it.
pub type ServedAdapter = (String, PathBuf, Arc<TunerHandle>);

/// Loads every adapter onto `model` behind per-row switches; returns what was loaded and the
/// selection the batcher sets before each pass. Adapter `i` of the list is selected as `Some(i)`.
pub fn attach(
    model: &mut LoadedModel,
    adapters: &[ServedAdapter],
) -> Result<(Vec<AdapterInfo>, Selection), ServeError> {
    let selection = Selection::default();
    let mut per_slot: BTreeMap<String, Vec<Option<Arc<dyn LinearHook>>>> = BTreeMap::new();
    let mut infos = Vec::new();
    for (i, (name, path, tuner)) in adapters.iter().enumerate() {
        let fail = |e: &dyn std::fmt::Display| {
            ServeError::Adapter(format!("{name}={}: {e}", path.display()))
        };
        let files = AdapterFiles::open(path, model.layout()).map_err(|e| fail(&e))?;
        let adapter = AttachedAdapter::load(model, tuner, &files).map_err(|e| fail(&e))?;
        if let Some(m) = adapter.saved_modules.first() {
            // A whole layer cannot be switched per row: its copy replaced the base's.
            return Err(ServeError::Adapter(format!(
                "{name}={}: the adapter trains `{}` whole (modules_to_save), which per-request adapters cannot switch; serve it merged (swift export --adapters {} --merge_lora true)",
                path.display(),
                m.slot,
                path.display()
            )));
        }
        let slots = adapter.slots();
        for slot in &slots {
            // AttachedAdapter::load pushed its hook last on the slot: move it into the switch.
            let hook = model
                .slot_mut(slot)
                .and_then(|s| s.hooks.pop())
                .ok_or_else(|| ServeError::Adapter(format!("{name}: slot `{slot}` vanished")))?;
            let hooks = per_slot
                .entry(slot.clone())
                .or_insert_with(|| vec![None; adapters.len()]);
            hooks[i] = Some(hook);
        }
        infos.push(AdapterInfo {
            name: name.clone(),
            path: path.clone(),
            rank: adapter.plan().rank,
            slots: slots.len(),
        });
    }
    for (slot, hooks) in per_slot {
        let s = model
            .slot_mut(&slot)
            .ok_or_else(|| ServeError::Adapter(format!("slot `{slot}` vanished")))?;
        s.hooks.push(Arc::new(AdapterSwitch {
            hooks,
            selection: selection.clone(),
        }));
    }
    Ok((infos, selection))
}
