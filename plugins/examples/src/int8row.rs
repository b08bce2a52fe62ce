//! `example-int8`: a third-party quantizer on the quantizer contract, with its own packing and
//! forward. Each output row is scaled to `-127..=127` by its absmax (`q = round(w · 127 /
//! absmax)`), stored as `STEM.qweight` (I8 `[out, in]`) and `STEM.row_scale` (F32 `[out]`,
//! `absmax / 127`); its forward multiplies by the integer codes and scales the output columns
//! (`y = (x · qᵀ) · row_scale + b`), never materialising the float weight.
//! `quantization_config` is `{"quant_method": "example-int8", "bits": 8}`; no calibration.

use swift_plugin_tensors::prelude::*;
use swift_plugin_tensors::tch::{Kind, Tensor};

/// The quantizer's name.
pub const NAME: &str = "example-int8";

/// The registered quantizer.
pub struct Int8Row;

pub fn record() -> QuantizerRecord {
    QuantizerRecord::new(
        NAME,
        "per-row absmax int8 with an integer-code forward (the example plugin's quantizer)",
    )
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Quantizer for Int8Row {
    fn check_bits(&self, bits: u8) -> Result<(), String> {
        if bits == 8 {
            Ok(())
        } else {
            Err(format!(
                "quantizer `{NAME}` does not support {bits}-bit weights; --quant_bits must be 8"
            ))
        }
    }
}

impl QuantMethod for Int8Row {
    fn scheme(&self, r: &SchemeRequest) -> Result<Box<dyn QuantScheme>, String> {
        match r.mode {
            SchemeMode::Load => {
                let bits = r.options.get("bits").and_then(|b| b.as_u64());
                if bits != Some(8) {
                    return Err(format!(
                        "{}: an {NAME} quantization_config has bits 8, not {bits:?}",
                        r.config_file
                    ));
                }
            }
            SchemeMode::Export | SchemeMode::Train => {
                self.check_bits(r.bits.unwrap_or(0))?;
                if let Some(k) = r.options.keys().next() {
                    return Err(format!("--{k} does not apply to --quant_method {NAME}"));
                }
            }
        }
        Ok(Box::new(Scheme))
    }
}

struct Scheme;

impl QuantScheme for Scheme {
    fn plan(&self) -> SchemePlan {
        SchemePlan {
            bits: 8,
            calibration: Calibration::None,
            config: serde_json::json!({"quant_method": NAME, "bits": 8}),
            summary: format!("{NAME}: per-row absmax int8"),
        }
    }

    fn quantize(&self, call: QuantizeCall<'_>) -> Result<Box<dyn PackedSlot>, String> {
        let w = call.weight.f_to_kind(Kind::Float).map_err(err)?;
        let absmax = w
            .f_abs()
            .and_then(|a| a.f_amax([1], false))
            .and_then(|a| a.f_clamp_min(1e-12))
            .map_err(err)?;
        let q = w
            .f_div(&absmax.unsqueeze(1))
            .and_then(|t| t.f_mul_scalar(127.0))
            .and_then(|t| t.f_round())
            .and_then(|t| t.f_to_kind(Kind::Int8))
            .map_err(err)?;
        Ok(Box::new(Rows {
            q,
            scale: absmax / 127.0,
        }))
    }

    fn load(
        &self,
        slot: &str,
        [out, inp]: [i64; 2],
        tensors: &[(String, Tensor)],
    ) -> Result<Box<dyn PackedSlot>, String> {
        let get = |n: &str| {
            tensors
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| format!("{NAME} weight `{slot}` has no `{n}`"))
        };
        let (q, scale) = (get("qweight")?, get("row_scale")?);
        if q.size() != [out, inp] || q.kind() != Kind::Int8 || scale.size() != [out] {
            return Err(format!(
                "{NAME} weight `{slot}`: qweight {:?} {:?} and row_scale {:?} for a [{out}, {inp}] slot",
                q.size(),
                q.kind(),
                scale.size()
            ));
        }
        Ok(Box::new(Rows {
            q,
            scale: scale.f_to_kind(Kind::Float).map_err(err)?,
        }))
    }
}

/// One packed slot: int8 codes and a scale per output row.
struct Rows {
    q: Tensor,
    scale: Tensor,
}

impl PackedSlot for Rows {
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, String> {
        let kind = x.kind();
        let y = x
            .f_matmul(&self.q.f_to_kind(kind).map_err(err)?.tr())
            .and_then(|y| y.f_mul(&self.scale.f_to_kind(kind)?))
            .map_err(err)?;
        match bias {
            Some(b) => y.f_add(&b.f_to_kind(kind).map_err(err)?).map_err(err),
            None => Ok(y),
        }
    }

    fn dequantize(&self) -> Result<Tensor, String> {
        self.q
            .f_to_kind(Kind::Float)
            .and_then(|q| q.f_mul(&self.scale.unsqueeze(1)))
            .map_err(err)
    }

    fn tensors(&self) -> Result<Vec<(String, Tensor)>, String> {
        Ok(vec![
            ("qweight".into(), self.q.shallow_clone()),
            ("row_scale".into(), self.scale.shallow_clone()),
        ])
    }
}
