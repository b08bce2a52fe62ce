//! GGUF's packed blocks (Q8_0, Q6_K, Q5_0, Q4_0, Q4_1, Q4_K) as quantized slots that decode on the integer
//! kernels: [`GgufLinear`] multiplies straight from the blocks ([`swift_kernels::quant_matmul`],
//! 8-bit activations in decoding steps, the output projection's largest outputs recomputed with
//! about 16-bit ones, [`swift_kernels::quant_matmul_refined`]; about 16-bit activations in every
//! slot outside them, [`swift_kernels::quant_matmul_fine`]: 8-bit activations everywhere made
//! greedy decoding of a Q8_0 SmolLM2 part from the float32 run at top-2 gaps up to 0.136) and looks
//! embedding rows up by decoding only those rows; [`GgufLoader`] reads the layout `swift_gguf::convert_to_hf_packed` writes (`STEM.qweight`: U8
//! `[out, bytes per row]`, the blocks of each row; `STEM.ggml_type`: I32 `[1]`), borrowing the
//! memory-mapped bytes, so the weights stay the size of the file. Q8_0, Q4_0 and Q4_1 slots are
//! repacked at load into swift-kernels' interleaved layout ([`swift_kernels::interleave`]: eight
//! rows' blocks side by side, which the kernels read eight rows per activation load), in place of
//! the file's layout: the bytes are the mapping's private (copy-on-write) pages, which then
//! stop being the page cache's and stay the file's size; [`QuantizedLinear::tensors`] hands the
//! file's layout back.
//!
//! A product of more than [`crate::decode::KERNEL_ROWS`] rows (a long prompt) or one that needs gradients
//! (training through the slot) decodes the weight to float32 and multiplies in libtorch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use swift_kernels::{
    deinterleave, dequantize_row, interleave, interleaved_row, interleaves, quant_matmul,
    quant_matmul_fine, quant_matmul_refined, BlockType, Blocks,
};
use swift_model::weights::{Checkpoint, MappedFile};
use swift_model::{ModelError, QuantizedLinear, QuantizedLoader};
use tch::{Device, Kind, Tensor};

use crate::msg;

/// The `quantization_config.quant_method` of a folder in this layout.
pub const QUANT_METHOD: &str = "gguf";

/// The integer kernel this CPU decodes with (`vnni`, `avx2` or `portable`).
pub fn kernel_name() -> &'static str {
    swift_kernels::quant_kernel_name()
}

/// Whether a model's config.json says its slots are stored in this layout.
pub fn is_gguf_config(config: &serde_json::Value) -> bool {
    config
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(serde_json::Value::as_str)
        == Some(QUANT_METHOD)
}

/// How many of an output projection's largest outputs a decoding step recomputes with finer
/// activations.
pub const REFINED_LOGITS: usize = 32;

/// ggml's type id of a block layout, and back.
fn type_id(ty: BlockType) -> i32 {
    match ty {
        BlockType::Q4_0 => 2,
        BlockType::Q4_1 => 3,
        BlockType::Q5_0 => 6,
        BlockType::Q8_0 => 8,
        BlockType::Q4_K => 12,
        BlockType::Q6_K => 14,
    }
}

fn block_type(id: i32) -> Option<BlockType> {
    BlockType::ALL.into_iter().find(|t| type_id(*t) == id)
}

/// A `[out, in]` weight in GGUF blocks.
pub struct GgufLinear {
    ty: BlockType,
    /// U8 `[out, in / 32 · block bytes]`, contiguous on the CPU (often the mapped file's bytes),
    /// interleaved for the types that have that layout.
    blocks: Tensor,
    /// `blocks`' first byte, read once: libtorch's `data_ptr` is a dispatch of its own, and a
    /// decoding step asks for each weight's bytes once per product.
    addr: usize,
    interleaved: bool,
    out: usize,
    k: usize,
    /// The dtype of embedding rows handed out (the model's).
    kind: Kind,
    /// An output projection (`lm_head`, or the token embedding a tied one reads): in decoding
    /// steps its [`REFINED_LOGITS`] largest outputs are recomputed with about 16-bit
    /// activations ([`quant_matmul_refined`]), since they pick the greedy token.
    output: bool,
    _keep: Option<Arc<MappedFile>>,
}

// SAFETY: never mutated after construction; its methods only read `blocks` (libtorch tensors
// may be read from several threads at once). tch marks `Tensor` `Send` but not `Sync`.
unsafe impl Sync for GgufLinear {}

impl GgufLinear {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` is the first byte of `blocks`, a contiguous CPU U8 tensor of `out · row
        // bytes` elements (checked in `GgufLoader::load`) that `self` holds and never replaces.
        unsafe {
            std::slice::from_raw_parts(self.addr as *const u8, self.out * self.ty.row_bytes(self.k))
        }
    }

    fn weights(&self) -> Blocks<'_> {
        Blocks {
            ty: self.ty,
            data: self.bytes(),
            interleaved: self.interleaved,
        }
    }

    /// The rows `ids` decoded to float32, `[ids.len(), in]`.
    fn rows_f32(&self, ids: &[i64]) -> Result<Vec<f32>, String> {
        let rb = self.ty.row_bytes(self.k);
        let bytes = self.bytes();
        let mut out = vec![0f32; ids.len() * self.k];
        let mut row = vec![0u8; if self.interleaved { rb } else { 0 }];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            let r = usize::try_from(id)
                .ok()
                .filter(|&r| r < self.out)
                .ok_or_else(|| format!("index {id} is out of range for {} rows", self.out))?;
            if self.interleaved {
                interleaved_row(self.ty, bytes, self.k, r, &mut row);
                dequantize_row(self.ty, &row, o);
            } else {
                dequantize_row(self.ty, &bytes[r * rb..(r + 1) * rb], o);
            }
        }
        Ok(out)
    }

    fn dense(&self) -> Result<Tensor, String> {
        let ids: Vec<i64> = (0..self.out as i64).collect();
        let w = self.rows_f32(&ids)?;
        Tensor::f_from_slice(&w)
            .and_then(|t| t.f_view([self.out as i64, self.k as i64]))
            .map_err(msg)
    }
}

impl QuantizedLinear for GgufLinear {
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        let w = self.weights();
        // Outside decoding steps (a prompt's pass, whose last row picks the first token) every
        // slot's activations go in at about 16 bits.
        let decoding = swift_model::in_decoding_step();
        // The fine product takes a prompt's rows in wide calls (the weight streamed once per
        // call); the others take the kernel's `MAX_ROWS`.
        let per_call = if decoding {
            swift_kernels::MAX_ROWS
        } else {
            swift_kernels::WIDE_ROWS
        };
        let on_kernels =
            crate::decode::product(x, self.out, self.k, bias, per_call, |xs, m, b, ys| {
                if !decoding {
                    quant_matmul_fine(xs, m, self.k, w, b, ys)
                } else if self.output {
                    quant_matmul_refined(xs, m, self.k, w, b, ys, REFINED_LOGITS)
                } else {
                    quant_matmul(xs, m, self.k, w, b, ys)
                }
            });
        if let Some(y) = on_kernels {
            return y;
        }
        let w = self.dense()?.f_to_device(x.device()).map_err(msg)?;
        let w = w.f_to_kind(x.kind()).map_err(msg)?;
        x.f_linear(&w, bias).map_err(msg)
    }

    fn dequantize(&self) -> Result<Tensor, String> {
        self.dense()
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        // The file's layout: the interleaved bytes are this process's own.
        let qweight = if self.interleaved {
            let t = self.blocks.copy();
            // SAFETY: `t` is a fresh contiguous CPU U8 copy of `blocks`, written by nothing else.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, self.bytes().len())
            };
            match deinterleave(self.ty, bytes, self.k) {
                Ok(()) => t,
                Err(e) => unreachable!("checked at load: {e}"),
            }
        } else {
            self.blocks.shallow_clone()
        };
        vec![
            ("qweight".into(), qweight),
            ("ggml_type".into(), Tensor::from_slice(&[type_id(self.ty)])),
        ]
    }

    fn embedding(&self, ids: &Tensor) -> Result<Tensor, String> {
        let flat: Vec<i64> = Vec::<i64>::try_from(
            ids.f_to_kind(Kind::Int64)
                .and_then(|t| t.f_flatten(0, -1))
                .map_err(msg)?,
        )
        .map_err(msg)?;
        let rows = self.rows_f32(&flat)?;
        let mut size = ids.size();
        size.push(self.k as i64);
        Tensor::f_from_slice(&rows)
            .and_then(|t| t.f_view(size.as_slice()))
            .and_then(|t| t.f_to_kind(self.kind))
            .and_then(|t| t.f_to_device(ids.device()))
            .map_err(msg)
    }

    fn decodes_on_kernels(&self) -> bool {
        true
    }

    fn decoding_blocks(&self) -> Option<Blocks<'_>> {
        // A decoding step's product is `quant_matmul` except for an output projection's.
        (!self.output).then(|| self.weights())
    }
}

/// Whether the slot stored under `stem` is an output projection: `lm_head` (the Hugging Face
/// name `swift_gguf` gives GGUF's `output`), or the token embedding a tied output projection
/// reads (an embedding slot itself never multiplies: it hands out rows).
pub(crate) fn is_output_projection(stem: &str) -> bool {
    let last = stem.rsplit('.').next().unwrap_or(stem);
    matches!(last, "lm_head" | "embed_tokens")
}

/// Reads [`GgufLinear`] slots from a folder in this layout (CPU only).
pub struct GgufLoader {
    /// The model's dtype (of embedding rows).
    kind: Kind,
    /// The slots loaded so far, by stem and bytes: a tied output projection and its embedding
    /// read one stored weight, which is repacked in place once and shared.
    loaded: Mutex<SlotCache>,
}

/// Slots by stem and the address of their bytes.
type SlotCache = HashMap<(String, usize), Arc<GgufLinear>>;

impl GgufLoader {
    /// A loader handing out embedding rows in `kind` (the model's dtype).
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            loaded: Mutex::default(),
        }
    }
}

impl QuantizedLoader for GgufLoader {
    fn load(
        &self,
        ckpt: &Checkpoint,
        stem: &str,
        shape: &[i64],
        device: Device,
    ) -> Result<Option<Arc<dyn QuantizedLinear>>, ModelError> {
        let bad = |reason: String| ModelError::Config(format!("{stem}: {reason}"));
        if device != Device::Cpu {
            return Err(bad(
                "GGUF blocks decode on the CPU only; run with --device cpu, or convert the file with `swift export --from_gguf` for other devices".into(),
            ));
        }
        let id_name = format!("{stem}.ggml_type");
        let id = ckpt.load(&id_name, Kind::Int, Device::Cpu)?.tensor;
        let id = i32::try_from(id.f_flatten(0, -1)?.f_get(0)?)
            .map_err(|e| bad(format!("{id_name}: {e}")))?;
        let ty = block_type(id).ok_or_else(|| {
            let known: Vec<&str> = BlockType::ALL.iter().map(|t| t.name()).collect();
            bad(format!(
                "ggml type {id} is not one the integer kernels read ({})",
                known.join(", ")
            ))
        })?;
        let &[out, k] = shape else {
            return Err(bad(format!("expected a 2-D slot, got shape {shape:?}")));
        };
        let (out, k) = (out as usize, k as usize);
        if k % ty.block_elems() != 0 {
            return Err(bad(format!(
                "{k} input columns are not whole {} blocks of {}",
                ty.name(),
                ty.block_elems()
            )));
        }
        let loaded = ckpt.load(&format!("{stem}.qweight"), Kind::Uint8, Device::Cpu)?;
        let want = [out as i64, ty.row_bytes(k) as i64];
        if loaded.tensor.size() != want || !loaded.tensor.is_contiguous() {
            return Err(ModelError::Shape {
                name: format!("{stem}.qweight"),
                got: loaded.tensor.size(),
                want: want.to_vec(),
            });
        }
        let key = (stem.to_string(), loaded.tensor.data_ptr() as usize);
        let mut cache = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = cache.get(&key) {
            return Ok(Some(slot.clone()));
        }
        let interleaved = interleaves(ty);
        if interleaved {
            // SAFETY: a contiguous CPU U8 tensor of `out · row bytes` (checked above): the
            // mapping's private copy-on-write pages (never the file) or a copy of them; no other
            // slot reads them (the cache above hands the same slot out for the same bytes).
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    loaded.tensor.data_ptr() as *mut u8,
                    out * ty.row_bytes(k),
                )
            };
            interleave(ty, bytes, k).map_err(|e| bad(e.to_string()))?;
        }
        let slot = Arc::new(GgufLinear {
            ty,
            addr: loaded.tensor.data_ptr() as usize,
            blocks: loaded.tensor,
            interleaved,
            out,
            k,
            kind: self.kind,
            output: is_output_projection(stem),
            _keep: loaded.keep,
        });
        cache.insert(key, slot.clone());
        Ok(Some(slot))
    }
}
