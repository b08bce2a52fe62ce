//! The built-in optimizers' records: plain data (they use nothing of swift-plugin-api but its
//! record types), compiled by this plugin and by the `swift` binary (`host/src/catalogue.rs`),
//! which lists them without loading libtorch. Option names are the flags that set them.

use serde_json::json;
use swift_plugin_api::optimizer::OptimizerRecord;
use swift_plugin_api::tuner::OptionDecl;

/// The plugin's name.
pub const PLUGIN: &str = "swift-plugin-optimizers";

/// Adam's options (the trainer flags of the same names; their defaults are the flags').
pub fn adam_options() -> Vec<OptionDecl> {
    vec![
        OptionDecl::new("adam_beta1", "float", json!(0.9), "first-moment decay")
            .range(Some(0.0), Some(1.0)),
        OptionDecl::new("adam_beta2", "float", json!(0.95), "second-moment decay")
            .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "adam_epsilon",
            "float",
            json!(1e-8),
            "added to the denominator",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "weight_decay",
            "float",
            json!(0.1),
            "decoupled weight decay, on tensors of two or more dimensions",
        )
        .range(Some(0.0), None),
    ]
}

/// GaLore's options (ms-swift's flags and defaults).
pub fn galore_options() -> Vec<OptionDecl> {
    let mut o = adam_options();
    o.extend([
        OptionDecl::new(
            "galore_rank",
            "int",
            json!(128),
            "rank of the gradient projection",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_update_proj_gap",
            "int",
            json!(50),
            "steps between two SVDs of a gradient (its projection's update)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_scale",
            "float",
            json!(1.0),
            "the projected-back update is multiplied by it",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "galore_target_modules",
            "list",
            json!(null),
            "2-D tensors whose name contains one of these are projected (default: attn, mlp)",
        ),
    ]);
    o
}

/// Q-GaLore's options: GaLore's, plus its projection quantization and adaptive gap (fixed at
/// Q-GaLore's defaults; ms-swift's `galore_proj_bits` etc. are not flags here).
pub fn q_galore_options() -> Vec<OptionDecl> {
    let mut o = galore_options();
    o.extend([
        OptionDecl::new(
            "galore_proj_bits",
            "int",
            json!(4),
            "bits of the projection",
        )
        .range(Some(2.0), Some(8.0)),
        OptionDecl::new(
            "galore_proj_group_size",
            "int",
            json!(256),
            "projection quantization group (one group per row when it does not divide)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_cos_threshold",
            "float",
            json!(0.4),
            "mean cosine similarity of successive projections above which the gap grows",
        ),
        OptionDecl::new(
            "galore_gamma_proj",
            "float",
            json!(2.0),
            "the gap's growth factor",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_queue_size",
            "int",
            json!(5),
            "successive similarities averaged",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_weight_group_size",
            "int",
            json!(256),
            "int8 weight quantization group (one group per row when it does not divide)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "galore_stochastic_round",
            "bool",
            json!(true),
            "round the int8 weights stochastically (Q-GaLore's default) instead of to nearest",
        ),
    ]);
    o
}

/// Every built-in optimizer's record.
pub fn all() -> Vec<OptimizerRecord> {
    vec![
        OptimizerRecord::new(
            "adamw",
            "AdamW as torch.optim.AdamW computes it (decoupled weight decay on tensors of two or more dimensions)",
        )
        .with_options(adam_options()),
        OptimizerRecord::new(
            "galore",
            "GaLore (galore_torch.GaLoreAdamW): Adam on 2-D gradients projected to a low rank, refreshed by SVD every galore_update_proj_gap steps",
        )
        .with_options(galore_options()),
        OptimizerRecord::new(
            "q_galore",
            "Q-GaLore: GaLore with int4 projections, an adaptive projection gap and int8 weights (simulated: the weights stay float, snapped to their int8 grid after each update)",
        )
        .with_options(q_galore_options()),
    ]
}
