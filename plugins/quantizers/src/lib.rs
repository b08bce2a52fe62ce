//! The built-in quantizers, with their math on the quantizer contract (swift-plugin-api's and
//! swift-plugin-tensors' `quantizer` modules), registered through the same `register` path a
//! third-party plugin uses: `bnb`, `hqq`, `gptq`, `awq` and `rtn`.
//!
//! The math lives here, not in the host: the host collects the statistics a scheme asks for
//! (GPTQ's Hessian, AWQ's activation magnitudes and sample rows), writes and reads the files,
//! and runs its integer kernels on the affine formats; everything else is this crate's.
//!
//! * [`pack`]: two 4-bit codes per byte (swift-rs's own layout).
//! * [`bnb`]: bitsandbytes-style NF4 / FP4 with block-wise absmax (optionally double-quantized
//!   absmax), and 8-bit row-wise absmax (LLM.int8's weight format).
//! * [`affine`]: group-wise asymmetric integer quantization (`w ≈ q·scale + min` per group of
//!   `group_size` input columns, or `(q − z)·scale` with an integer zero point), the format
//!   round-to-nearest, HQQ, GPTQ and AWQ share.
//! * [`hqq`]: half-quadratic optimisation of the zero point (no calibration data).
//! * [`gptq`]: Hessian-based post-training quantization (calibration data, act-order).
//! * [`awq`]: activation-aware per-input-channel scaling search (calibration data).
//! * [`layout`]: GPTQ's and AutoAWQ's standard int32 packings.
//! * [`slot`]: the packed slots (forward, dequantization, stored tensors, the host's affine view)
//!   and reading them back.
//!
//! ## Layouts
//!
//! `gptq` writes GPTQ's standard layout (`layout.rs`; `quantization_config` as GPTQModel writes
//! it: `bits`, `group_size` (−1: one group per row), `desc_act`, `sym: false`,
//! `checkpoint_format: "gptq"`), `awq` AutoAWQ's GEMM layout (`zero_point: true`,
//! `version: "gemm"`) plus `STEM.input_scale`, the activation-aware scale the slot divides its
//! input by (AutoAWQ folds it into the previous layer instead; folders from AutoAWQ have none),
//! and both read folders other tools wrote in those layouts. `bnb`, `hqq` and `rtn` write
//! swift-rs's own layout (`format: "swift-rs/packed-v1"` in `quantization_config`), which
//! `gptq`/`awq` folders of earlier swift-rs versions used too and which they still read. For a
//! quantized slot whose float weight would be `STEM.weight` (`[out, in]`):
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `STEM.qweight` | U8 | `[out, ceil(in/2)]` (4-bit) or `[out, in]` (8-bit affine) | codes; 4-bit: column `2j` in the low nibble, `2j+1` in the high nibble |
//! | `STEM.qweight` | U8 | `[ceil(out·in/2)]` (bnb 4-bit) | NF4/FP4 codes of the row-major flattened weight, packed as above |
//! | `STEM.qweight` | I8 | `[out, in]` (bnb 8-bit) | `round(w · 127 / absmax_row)` |
//! | `STEM.absmax` | F32 | `[ceil(out·in/blocksize)]` | bnb 4-bit: absmax of each block |
//! | `STEM.absmax_q`, `STEM.absmax_scale`, `STEM.absmax_offset` | I8, F32, F32 | `[nblocks]`, `[ceil(nblocks/256)]`, `[1]` | bnb 4-bit double quantization: `absmax ≈ absmax_q · scale/127 + offset` per 256 blocks |
//! | `STEM.scb` | F32 | `[out]` | bnb 8-bit: row absmax |
//! | `STEM.scales`, `STEM.mins` | F16 | `[out, ceil(in/group)]` | affine: `w ≈ q · scale + min` |
//! | `STEM.input_scale` | F32 | `[in]` | AWQ: the input is divided by it, the weight was multiplied by it |

pub mod affine;
pub mod awq;
pub mod bnb;
pub mod gptq;
pub mod hqq;
pub mod layout;
pub mod pack;
pub mod records;
pub mod slot;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::Tensor;

use slot::{Layout, Packed, PackedWeight};

/// Everything that can go wrong quantizing.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{0}")]
    Config(String),
    #[error("libtorch: {0}")]
    Torch(#[from] swift_plugin_tensors::tch::TchError),
}

pub type Result<T> = std::result::Result<T, QuantError>;

/// `e` as a message (for `Result<_, String>` interfaces).
pub(crate) fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// bnb's 4-bit code books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bnb4Type {
    Nf4,
    Fp4,
}

/// The layout version written into swift-rs's own `quantization_config.format`.
pub const FORMAT: &str = "swift-rs/packed-v1";

/// How to quantize, as swift-rs's own layout records it in `quantization_config` (GPTQ's and
/// AWQ's standard configs are written from it by [`Scheme::config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    pub quant_method: String,
    pub bits: u8,
    /// Affine methods: input columns per scale/min pair (0: one group per row).
    #[serde(default)]
    pub group_size: i64,
    /// bnb 4-bit: code book.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnb_4bit_quant_type: Option<Bnb4Type>,
    /// bnb 4-bit: elements per absmax block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocksize: Option<i64>,
    /// bnb 4-bit: absmax values quantized again (8-bit, blocks of 256).
    #[serde(default)]
    pub bnb_4bit_use_double_quant: bool,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal.
    #[serde(default)]
    pub desc_act: bool,
    /// The layout of the stored tensors (see the crate docs).
    #[serde(default)]
    pub format: String,
    /// rtn, hqq (`--quant_lm_head`): the output projection is quantized too (GPTQModel's
    /// `lm_head` key); a tied one is stored once, under the token embedding's stem, and serves
    /// the embedding's rows as well.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lm_head: bool,
}

impl QuantConfig {
    /// Defaults for `method` at `bits`: group size 128, NF4 with double quantization for bnb
    /// 4-bit (blocks of 64), act-order for GPTQ.
    pub fn new(method: &str, bits: u8) -> Self {
        let bnb4 = method == "bnb" && bits == 4;
        Self {
            quant_method: method.into(),
            bits,
            group_size: if method == "bnb" { 0 } else { 128 },
            bnb_4bit_quant_type: bnb4.then_some(Bnb4Type::Nf4),
            blocksize: bnb4.then_some(64),
            bnb_4bit_use_double_quant: bnb4,
            desc_act: method == "gptq",
            format: FORMAT.into(),
            lm_head: false,
        }
    }
}

/// A built-in quantizer: its name and the bit widths it accepts.
struct Builtin {
    name: &'static str,
    bits: &'static [u8],
}

impl Quantizer for Builtin {
    fn check_bits(&self, bits: u8) -> std::result::Result<(), String> {
        if self.bits.contains(&bits) {
            return Ok(());
        }
        let list: Vec<String> = self.bits.iter().map(|b| b.to_string()).collect();
        Err(format!(
            "quantizer `{}` does not support {bits}-bit weights; --quant_bits must be {}",
            self.name,
            list.join(" or ")
        ))
    }
}

/// The options (flags) each method reads.
fn options_of(method: &str) -> &'static [&'static str] {
    match method {
        "bnb" => &["bnb_4bit_quant_type", "bnb_4bit_use_double_quant"],
        "gptq" => &["group_size", "act_order"],
        "awq" => &["group_size"],
        _ => &["group_size", "quant_lm_head"],
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> std::result::Result<Option<bool>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(format!("--{k} must be true or false, got {v}")),
    }
}

impl Builtin {
    /// A scheme at `bits` from the user's options (export / training).
    fn new_config(
        &self,
        bits: u8,
        o: &Map<String, Value>,
    ) -> std::result::Result<QuantConfig, String> {
        self.check_bits(bits)?;
        let name = self.name;
        for k in o.keys() {
            if !options_of(name).contains(&k.as_str()) {
                let whose = match k.as_str() {
                    "act_order" => " (gptq's)",
                    "bnb_4bit_quant_type" | "bnb_4bit_use_double_quant" => " (bnb's)",
                    "group_size" => " (bnb's 4-bit blocks are 64 elements)",
                    "quant_lm_head" => " (rtn's and hqq's: gptq and awq keep the output projection in float, as GPTQ's and AutoAWQ's layouts do by default; bnb's formats do not serve a tied embedding's rows)",
                    _ => "",
                };
                return Err(format!(
                    "--{k} does not apply to --quant_method {name}{whose}"
                ));
            }
        }
        let mut cfg = QuantConfig::new(name, bits);
        if let Some(g) = o.get("group_size").filter(|v| !v.is_null()) {
            let g = g.as_i64().filter(|g| *g >= 0).ok_or_else(|| {
                format!("--group_size must be an integer >= 0 (0: one group per row), got {g}")
            })?;
            cfg.group_size = g;
        }
        if let Some(a) = opt_bool(o, "act_order")? {
            cfg.desc_act = a;
        }
        if let Some(l) = opt_bool(o, "quant_lm_head")? {
            cfg.lm_head = l;
        }
        if name == "bnb" {
            let t = o.get("bnb_4bit_quant_type").filter(|v| !v.is_null());
            let d = opt_bool(o, "bnb_4bit_use_double_quant")?;
            if bits != 4 && (t.is_some() || d.is_some()) {
                return Err("--bnb_4bit_quant_type and --bnb_4bit_use_double_quant apply to 4-bit bnb only (--quant_bits 4)".into());
            }
            if let Some(t) = t {
                let s = t.as_str().unwrap_or_default().to_ascii_lowercase();
                cfg.bnb_4bit_quant_type = Some(match s.as_str() {
                    "nf4" => Bnb4Type::Nf4,
                    "fp4" => Bnb4Type::Fp4,
                    _ => return Err(format!("--bnb_4bit_quant_type must be nf4 or fp4, got {t}")),
                });
            }
            if let Some(d) = d {
                cfg.bnb_4bit_use_double_quant = d;
            }
        }
        Ok(cfg)
    }

    /// A scheme reading a folder's `quantization_config`.
    fn load_config(&self, r: &SchemeRequest) -> std::result::Result<(QuantConfig, Layout), String> {
        let o = &r.options;
        let file = &r.config_file;
        let format = o.get("format").and_then(Value::as_str).unwrap_or("");
        if format == FORMAT {
            let cfg: QuantConfig = serde_json::from_value(Value::Object(o.clone()))
                .map_err(|e| format!("{file}: quantization_config: {e}"))?;
            self.check_bits(cfg.bits)
                .map_err(|e| format!("{file}: {e}"))?;
            return Ok((cfg, Layout::Own));
        }
        let layout = match self.name {
            "gptq" => Layout::Gptq,
            "awq" => Layout::Awq,
            m => {
                return Err(format!(
                    "{file}: quantization_config has quant_method `{m}` and format `{format}`; swift reads {m} folders in its own layout `{FORMAT}` only (re-export the float model with `swift export --quant_method {m}`)"
                ))
            }
        };
        let bits = o
            .get("bits")
            .or_else(|| o.get("w_bit"))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{file}: quantization_config has no integer `bits`"))?;
        let bits =
            u8::try_from(bits).map_err(|_| format!("{file}: bits {bits} is out of range"))?;
        self.check_bits(bits).map_err(|e| format!("{file}: {e}"))?;
        let group = o
            .get("group_size")
            .or_else(|| o.get("q_group_size"))
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        if layout == Layout::Gptq {
            if o.get("sym").and_then(Value::as_bool) == Some(true) {
                // Symmetric checkpoints store the zero point too (2^(bits−1)): nothing changes.
            }
            let cf = o
                .get("checkpoint_format")
                .or_else(|| o.get("format"))
                .and_then(Value::as_str)
                .unwrap_or("gptq");
            if cf != "gptq" {
                return Err(format!("{file}: GPTQ checkpoint_format `{cf}`; swift reads `gptq` (v1: zero points stored minus one)"));
            }
        } else {
            if o.get("zero_point").and_then(Value::as_bool) == Some(false) {
                return Err(format!(
                    "{file}: AWQ without zero points (zero_point: false) is not supported"
                ));
            }
            let v = o.get("version").and_then(Value::as_str).unwrap_or("gemm");
            if !v.eq_ignore_ascii_case("gemm") {
                return Err(format!(
                    "{file}: AWQ version `{v}`; swift reads AutoAWQ's `gemm` packing"
                ));
            }
            if group <= 0 {
                return Err(format!(
                    "{file}: AWQ needs a positive group_size, got {group}"
                ));
            }
        }
        let mut cfg = QuantConfig::new(self.name, bits);
        cfg.group_size = group.max(0);
        cfg.desc_act = o.get("desc_act").and_then(Value::as_bool).unwrap_or(false);
        cfg.format = String::new();
        Ok((cfg, layout))
    }
}

impl QuantMethod for Builtin {
    fn scheme(&self, r: &SchemeRequest) -> std::result::Result<Box<dyn QuantScheme>, String> {
        let (cfg, layout) = match r.mode {
            SchemeMode::Load => self.load_config(r)?,
            SchemeMode::Export | SchemeMode::Train => {
                let bits = r.bits.ok_or("--quant_method needs --quant_bits")?;
                let cfg = self.new_config(bits, &r.options)?;
                let layout = match self.name {
                    "gptq" => Layout::Gptq,
                    "awq" => Layout::Awq,
                    _ => Layout::Own,
                };
                (cfg, layout)
            }
        };
        Ok(Box::new(Scheme { cfg, layout }))
    }
}

/// A configured built-in quantizer.
struct Scheme {
    cfg: QuantConfig,
    layout: Layout,
}

impl Scheme {
    /// `quantization_config` as the layout's tools write it.
    fn config(&self) -> Value {
        let c = &self.cfg;
        match self.layout {
            Layout::Own => serde_json::to_value(c).unwrap_or(Value::Null),
            Layout::Gptq => json!({
                "quant_method": "gptq",
                "bits": c.bits,
                "group_size": if c.group_size > 0 { c.group_size } else { -1 },
                "desc_act": c.desc_act,
                "static_groups": c.desc_act,
                "sym": false,
                "true_sequential": false,
                "damp_percent": 0.01,
                "checkpoint_format": "gptq",
                "quantizer": "swift-rs",
            }),
            Layout::Awq => json!({
                "quant_method": "awq",
                "bits": c.bits,
                "group_size": c.group_size,
                "zero_point": true,
                "version": "gemm",
                "desc_act": false,
                "quantizer": "swift-rs",
            }),
        }
    }

    fn summary(&self) -> String {
        let c = &self.cfg;
        let layout = match self.layout {
            Layout::Own => FORMAT,
            Layout::Gptq => "GPTQ's packed layout",
            Layout::Awq => "AutoAWQ's GEMM layout",
        };
        format!(
            "{} {}-bit, groups of {}, {layout}",
            c.quant_method, c.bits, c.group_size
        )
    }

    fn quantize_weight(&self, call: &QuantizeCall<'_>) -> Result<PackedWeight> {
        let w = call.weight;
        let shape = [w.size()[0], w.size()[1]];
        let c = &self.cfg;
        if self.layout != Layout::Own {
            // The standard layouts pack whole int32 words.
            let pw = 32 / c.bits as i64;
            let [out, inp] = shape;
            let need = if self.layout == Layout::Gptq {
                (inp, out)
            } else {
                (out, out)
            };
            if need.0 % pw != 0 || need.1 % pw != 0 {
                return Err(QuantError::Config(format!(
                    "{}: {}'s packed layout needs dimensions divisible by {pw}, the slot is [{out}, {inp}]",
                    call.slot, c.quant_method
                )));
            }
        }
        let _g = swift_plugin_tensors::tch::no_grad_guard();
        let missing = |what: &str| QuantError::Config(format!("{}: no {what} gathered", call.slot));
        let packed = match (c.quant_method.as_str(), c.bits) {
            ("bnb", 4) => Packed::Bnb4(bnb::quantize_4bit(
                w,
                c.bnb_4bit_quant_type.unwrap_or(Bnb4Type::Nf4),
                c.blocksize.unwrap_or(64),
                c.bnb_4bit_use_double_quant,
            )?),
            ("bnb", _) => Packed::Bnb8(bnb::quantize_8bit(w)?),
            ("hqq", bits) => {
                Packed::Affine(hqq::quantize(w, bits, c.group_size, Default::default())?)
            }
            ("rtn", bits) => Packed::Affine(affine::rtn(w, bits, c.group_size)?),
            ("gptq", bits) => {
                let h = call.hessian.ok_or_else(|| missing("Hessian"))?;
                Packed::Affine(gptq::quantize(
                    w,
                    h,
                    gptq::GptqParams {
                        bits,
                        group: c.group_size,
                        act_order: c.desc_act,
                        damp: 0.01,
                    },
                )?)
            }
            ("awq", bits) => {
                let mean = call
                    .act_mean
                    .ok_or_else(|| missing("activation magnitudes"))?;
                let rows = call.act_rows.ok_or_else(|| missing("activation rows"))?;
                Packed::Affine(awq::quantize(
                    w,
                    mean,
                    rows,
                    awq::AwqParams {
                        bits,
                        group: c.group_size,
                        ..Default::default()
                    },
                )?)
            }
            (m, _) => return Err(QuantError::Config(format!("unknown method {m}"))),
        };
        Ok(PackedWeight {
            packed,
            shape,
            layout: self.layout,
        })
    }
}

impl QuantScheme for Scheme {
    fn plan(&self) -> SchemePlan {
        SchemePlan {
            bits: self.cfg.bits,
            calibration: match self.cfg.quant_method.as_str() {
                "gptq" => Calibration::Hessian,
                "awq" => Calibration::Activations,
                _ => Calibration::None,
            },
            config: self.config(),
            summary: self.summary(),
        }
    }

    fn quantize(&self, call: QuantizeCall<'_>) -> std::result::Result<Box<dyn PackedSlot>, String> {
        Ok(Box::new(self.quantize_weight(&call).map_err(msg)?))
    }

    fn load(
        &self,
        slot: &str,
        shape: [i64; 2],
        tensors: &[(String, Tensor)],
    ) -> std::result::Result<Box<dyn PackedSlot>, String> {
        let p = match self.layout {
            Layout::Own => slot::load_own(slot, shape, tensors, &self.cfg),
            Layout::Gptq => {
                slot::load_gptq(slot, shape, tensors, self.cfg.bits, self.cfg.group_size)
            }
            Layout::Awq => slot::load_awq(slot, shape, tensors, self.cfg.group_size),
        }
        .map_err(msg)?;
        Ok(Box::new(p))
    }
}

fn register(r: &mut Registrar) -> std::result::Result<(), PluginError> {
    for (record, (name, bits, _)) in records::all().into_iter().zip(records::QUANTIZERS) {
        r.quant_method(record, Builtin { name, bits })?;
    }
    Ok(())
}

swift_plugin_tensors::builtin_plugin!(register);

#[cfg(test)]
mod tests;
