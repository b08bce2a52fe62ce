//! The built-in quantizers, registered through the plugin contract (the same `register` path a
//! third-party plugin uses): `bnb`, `hqq`, `gptq`, `awq` and `rtn`.
//!
//! A quantizer's behaviour here is its name, its description and the bit widths it accepts;
//! the host resolves `--quant_method` through this registry and dispatches to the math in
//! swift-quant (engine/quant) by the resolved name, as the LoRA math lives host-side while the
//! tuner registry selects it.

use swift_plugin_api::prelude::*;

/// A quantizer that accepts the bit widths in `bits`.
struct Bits {
    name: &'static str,
    bits: &'static [u8],
}

impl Quantizer for Bits {
    fn check_bits(&self, bits: u8) -> Result<(), String> {
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

/// Name, accepted bit widths, description.
const QUANTIZERS: &[(&str, &[u8], &str)] = &[
    (
        "bnb",
        &[4, 8],
        "bitsandbytes-style: 4-bit NF4/FP4 with block-wise absmax (double quantization), 8-bit row absmax; no calibration; QLoRA base (--bnb_4bit_quant_type, --bnb_4bit_use_double_quant)",
    ),
    (
        "hqq",
        &[4, 8],
        "half-quadratic quantization: zero points optimised without calibration data (--group_size)",
    ),
    (
        "gptq",
        &[4, 8],
        "GPTQ: Hessian-based error compensation on a calibration set (--dataset, --quant_n_samples, --max_length, --group_size, --act_order)",
    ),
    (
        "awq",
        &[4],
        "AWQ: activation-aware channel scaling and clipping searched on a calibration set (--dataset, --group_size)",
    ),
    (
        "rtn",
        &[4, 8],
        "round-to-nearest with a min/max per group (--group_size): the baseline the others improve on",
    ),
];

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    for (name, bits, description) in QUANTIZERS {
        r.quantizer(
            QuantizerRecord::new(*name, *description),
            Bits { name, bits },
        )?;
    }
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_widths_are_checked_per_method() {
        let awq = Bits {
            name: "awq",
            bits: &[4],
        };
        assert!(awq.check_bits(4).is_ok());
        let e = awq.check_bits(8).unwrap_err();
        assert!(e.contains("awq") && e.contains("must be 4"), "{e}");
    }
}
