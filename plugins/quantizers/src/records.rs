//! The built-in quantizers' records: plain data (they use nothing of swift-plugin-api but its
//! record types), compiled by this plugin and by the `swift` binary (`host/src/catalogue.rs`),
//! which lists them without loading libtorch.

use swift_plugin_api::records::QuantizerRecord;

/// The plugin's name.
pub const PLUGIN: &str = "swift-plugin-quantizers";

/// Name, accepted bit widths, description.
pub const QUANTIZERS: &[(&str, &[u8], &str)] = &[
    (
        "bnb",
        &[4, 8],
        "bitsandbytes-style: 4-bit NF4/FP4 with block-wise absmax (double quantization), 8-bit row absmax; no calibration; QLoRA base (--bnb_4bit_quant_type, --bnb_4bit_use_double_quant); swift-rs's packed layout",
    ),
    (
        "hqq",
        &[4, 8],
        "half-quadratic quantization: zero points optimised without calibration data (--group_size); swift-rs's packed layout",
    ),
    (
        "gptq",
        &[4, 8],
        "GPTQ: Hessian-based error compensation on a calibration set (--dataset, --quant_n_samples, --max_length, --group_size, --act_order); GPTQ's standard packed layout (qweight, qzeros, scales, g_idx), reads GPTQModel/AutoGPTQ checkpoints",
    ),
    (
        "awq",
        &[4],
        "AWQ: activation-aware channel scaling and clipping searched on a calibration set (--dataset, --group_size); AutoAWQ's GEMM packed layout (qweight, qzeros, scales) plus the per-channel input scale, reads AutoAWQ checkpoints",
    ),
    (
        "rtn",
        &[4, 8],
        "round-to-nearest with a min/max per group (--group_size): the baseline the others improve on; swift-rs's packed layout",
    ),
];

/// Every built-in quantizer's record.
pub fn all() -> Vec<QuantizerRecord> {
    QUANTIZERS
        .iter()
        .map(|(name, _, description)| QuantizerRecord::new(*name, *description))
        .collect()
}
