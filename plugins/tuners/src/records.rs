//! The built-in tuners' records: plain data (they use nothing of swift-plugin-api but its record
//! types), compiled by this plugin and by the `swift` binary (`host/src/catalogue.rs`), which
//! lists them without loading libtorch.

use swift_plugin_api::records::TunerRecord;
use swift_plugin_api::tuner::OptionDecl;

/// The plugin's name.
pub const PLUGIN: &str = "swift-plugin-tuners";

/// The options the LoRA family reads (its flags).
pub fn lora_schema() -> Vec<OptionDecl> {
    use serde_json::json;
    vec![
        OptionDecl::new(
            "lora_rank",
            "int",
            json!(8),
            "the rank r of A [r, in] and B [out, r]",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "lora_alpha",
            "float",
            json!(32.0),
            "the scale is alpha / r (alpha / √r with use_rslora)",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "lora_dropout",
            "float",
            json!(0.05),
            "dropout on the adapter's input while training",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "target_modules",
            "list",
            json!(["all-linear"]),
            "all-linear, or slot names / their last parts (q_proj, ...)",
        ),
        OptionDecl::new(
            "use_rslora",
            "bool",
            json!(false),
            "scale by alpha / √r (rsLoRA)",
        ),
        OptionDecl::new(
            "use_dora",
            "bool",
            json!(false),
            "DoRA: a trained magnitude per output row",
        ),
        OptionDecl::new("init_weights", "choice", json!("true"), "how A and B start")
            .choices(&["true", "gaussian", "pissa", "olora"]),
        OptionDecl::new(
            "lora_lr_ratio",
            "float",
            json!(null),
            "LoRA+: B's learning rate over A's",
        )
        .range(Some(0.0), None),
    ]
}

/// Every built-in tuner, with (for the LoRA variants) the option its record sets.
pub fn all() -> Vec<TunerRecord> {
    let mut lora = TunerRecord::new(
        "lora",
        "LoRA: trainable low-rank A·B beside frozen linear slots (--lora_rank, --lora_alpha, --lora_dropout, --target_modules)",
    );
    lora.peft_type = Some("LORA".into());
    lora.schema = lora_schema();
    let mut out = vec![lora];
    let variants: [(&str, &str, &str, serde_json::Value); 5] = [
        (
            "rslora",
            "rank-stabilised LoRA: scale alpha/√r",
            "use_rslora",
            true.into(),
        ),
        (
            "dora",
            "DoRA: LoRA plus a trained magnitude per output row",
            "use_dora",
            true.into(),
        ),
        (
            "lora_plus",
            "LoRA+: B learns --lora_lr_ratio (default 16) times faster than A",
            "lora_lr_ratio",
            16.0.into(),
        ),
        (
            "pissa",
            "PiSSA: LoRA started from the top singular vectors of each weight",
            "init_weights",
            "pissa".into(),
        ),
        (
            "olora",
            "OLoRA: LoRA started from the QR factors of each weight",
            "init_weights",
            "olora".into(),
        ),
    ];
    for (name, description, option, value) in variants {
        let mut record =
            TunerRecord::new(name, description).with_adapter("lora", [(option, value)]);
        if name == "lora_plus" {
            record.aliases.push("lora+".into());
        }
        record.schema = lora_schema();
        out.push(record);
    }
    let mut ia3 = TunerRecord::new(
        "ia3",
        "(IA)³: a trained vector rescales each targeted slot's output (its input for --feedforward_modules, default down_proj)",
    );
    ia3.peft_type = Some("IA3".into());
    ia3.schema = vec![
        OptionDecl::new(
            "target_modules",
            "list",
            serde_json::json!(["all-linear"]),
            "all-linear, or slot names / their last parts",
        ),
        OptionDecl::new(
            "feedforward_modules",
            "list",
            serde_json::json!(["down_proj"]),
            "targeted slots whose input (not output) is rescaled",
        ),
    ];
    out.push(ia3);
    let mut vera = TunerRecord::new(
        "vera",
        "VeRA: frozen random projections shared by every slot, trained per-slot scaling vectors (--vera_rank, --vera_projection_prng_key, --vera_d_initial, --vera_dropout)",
    );
    vera.peft_type = Some("VERA".into());
    vera.schema = vec![
        OptionDecl::new(
            "target_modules",
            "list",
            serde_json::json!(["all-linear"]),
            "all-linear, or slot names / their last parts",
        ),
        OptionDecl::new(
            "vera_rank",
            "int",
            serde_json::json!(256),
            "the rank of the shared projections",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "vera_projection_prng_key",
            "int",
            serde_json::json!(0),
            "the seed of the shared projections",
        ),
        OptionDecl::new(
            "vera_dropout",
            "float",
            serde_json::json!(0.0),
            "dropout on the adapter's input while training",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "vera_d_initial",
            "float",
            serde_json::json!(0.1),
            "the starting value of λ_d",
        ),
    ];
    out.push(vera);
    out.push(boft_record());
    out.push(fourierft_record());
    out.push(adalora_record());
    let mut longlora = TunerRecord::new(
        "longlora",
        "LongLoRA: LoRA plus embeddings and norms trained whole (--embedder_and_normalizer), with shifted sparse attention while training (--group_size_ratio of --max_length); full attention at inference",
    );
    longlora.schema = lora_schema();
    longlora.schema.extend([
        OptionDecl::new(
            "group_size_ratio",
            "float",
            serde_json::json!(0.25),
            "the shifted sparse attention's group, as a share of --max_length",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "embedder_and_normalizer",
            "list",
            serde_json::json!(["embed", "norm"]),
            "layers trained whole: those whose weight's name contains one of these",
        ),
    ]);
    out.push(longlora);
    out.push(TunerRecord::new(
        "full",
        "full fine-tuning: every parameter is trained",
    ));
    out.push(TunerRecord::new(
        "freeze",
        "full fine-tuning except the parameters --freeze_parameters names (prefixes or globs); --trainable_parameters re-enables some",
    ));
    out.push(TunerRecord::new(
        "llamapro",
        "LLaMA-Pro: --llamapro_num_new_blocks zero-output copies of layers inserted and trained, the rest frozen",
    ));
    out.push(TunerRecord::new(
        "lisa",
        "LISA: full fine-tuning of --lisa_activated_layers random layers, re-drawn every --lisa_step_interval steps",
    ));
    out
}

/// BOFT (`boft.rs`).
fn boft_record() -> TunerRecord {
    use serde_json::json;
    let mut r = TunerRecord::new(
        "boft",
        "BOFT: each targeted slot's input rotated by a trained butterfly of orthogonal (Cayley) blocks, its output rescaled per row (--boft_block_size or --boft_block_num, --boft_n_butterfly_factor, --boft_dropout)",
    );
    r.peft_type = Some("BOFT".into());
    r.schema = vec![
        OptionDecl::new(
            "target_modules",
            "list",
            json!(["all-linear"]),
            "all-linear, or slot names / their last parts",
        ),
        OptionDecl::new(
            "boft_block_size",
            "int",
            json!(4),
            "the size of each orthogonal block; must divide every targeted slot's input (4 unless boft_block_num is given; give one of the two)",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "boft_block_num",
            "int",
            json!(0),
            "blocks per slot instead of boft_block_size (0: unset)",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "boft_n_butterfly_factor",
            "int",
            json!(1),
            "butterfly factors (1: block-diagonal OFT; each more doubles the effective block size)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "boft_dropout",
            "float",
            json!(0.0),
            "the share of one factor's blocks set to the identity while training",
        )
        .range(Some(0.0), Some(1.0)),
    ];
    r
}

/// FourierFT (`fourierft.rs`).
fn fourierft_record() -> TunerRecord {
    use serde_json::json;
    let mut r = TunerRecord::new(
        "fourierft",
        "FourierFT: each targeted slot adds real(ifft2(S)) * scaling, S holding trained coefficients at seeded positions (--fourier_n_frequency, --fourier_scaling, --random_loc_seed)",
    );
    r.peft_type = Some("FOURIERFT".into());
    r.schema = vec![
        OptionDecl::new(
            "target_modules",
            "list",
            json!(["all-linear"]),
            "all-linear, or slot names / their last parts",
        ),
        OptionDecl::new(
            "fourier_n_frequency",
            "int",
            json!(2000),
            "trained spectral coefficients per slot (at most the slot's out x in)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "fourier_scaling",
            "float",
            json!(300.0),
            "the scale of the weight change",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "random_loc_seed",
            "int",
            json!(777),
            "the seed of the spectral positions (regenerated, never saved)",
        )
        .range(Some(0.0), None),
    ];
    r
}

/// AdaLoRA's record: its options are ms-swift's `--adalora_*` flags plus `lora_alpha`,
/// `lora_dropout` and `target_modules` (PEFT's `AdaLoraConfig` defaults as ms-swift sets them).
fn adalora_record() -> TunerRecord {
    use serde_json::json;
    let mut r = TunerRecord::new(
        "adalora",
        "AdaLoRA: SVD-shaped low-rank updates whose ranks a budget schedule prunes from --adalora_init_r to --adalora_target_r per slot, with orthogonal regularisation (--adalora_tinit, --adalora_tfinal, --adalora_deltaT, --adalora_beta1, --adalora_beta2, --adalora_orth_reg_weight, --lora_alpha, --lora_dropout)",
    );
    r.peft_type = Some("ADALORA".into());
    r.schema = vec![
        OptionDecl::new(
            "target_modules",
            "list",
            json!(["all-linear"]),
            "all-linear, or slot names / their last parts",
        ),
        OptionDecl::new(
            "lora_alpha",
            "float",
            json!(32.0),
            "the scale is alpha / init_r",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "lora_dropout",
            "float",
            json!(0.05),
            "dropout on the adapter's input while training",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "adalora_init_r",
            "int",
            json!(12),
            "the rank every slot starts with",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "adalora_target_r",
            "int",
            json!(8),
            "the average rank per slot the budget falls to (below adalora_init_r)",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "adalora_tinit",
            "int",
            json!(0),
            "warm-up steps before the budget falls",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "adalora_tfinal",
            "int",
            json!(0),
            "final steps with the ranks fixed at the target budget",
        )
        .range(Some(0.0), None),
        OptionDecl::new(
            "adalora_deltaT",
            "int",
            json!(1),
            "steps between two rank allocations",
        )
        .range(Some(1.0), None),
        OptionDecl::new(
            "adalora_beta1",
            "float",
            json!(0.85),
            "the smoothing of the importance (exclusive bounds)",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "adalora_beta2",
            "float",
            json!(0.85),
            "the smoothing of the importance's uncertainty (exclusive bounds)",
        )
        .range(Some(0.0), Some(1.0)),
        OptionDecl::new(
            "adalora_orth_reg_weight",
            "float",
            json!(0.5),
            "the weight of the orthogonal regularisation of A and B in the loss",
        )
        .range(Some(0.0), None),
    ];
    r
}
