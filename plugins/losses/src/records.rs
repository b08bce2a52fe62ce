//! The records of the built-in preference losses: plain data, no tensors.
//!
//! The behaviour they go with is in `lib.rs`, which pairs them by name. The `swift` binary
//! compiles this same file into its catalogue (host/src/catalogue.rs), so that `swift list`
//! shows these entries without loading libtorch: keep it free of anything but
//! `swift_plugin_api`'s records.

use swift_plugin_api::PreferenceLossRecord;

/// The plugin these records belong to (this crate's package name; a test checks it).
pub const PLUGIN: &str = "swift-plugin-losses";

/// Every built-in preference loss, in registration order.
pub fn all() -> Vec<PreferenceLossRecord> {
    let with_ref = |name: &str, desc: &str| {
        let mut rec = PreferenceLossRecord::new(name, desc);
        rec.reference = true;
        rec
    };
    let mut kto = with_ref("kto", "KTO (unpaired rows with a label): 1 − σ(β·(log-ratio − KL)), weighted by --desirable_weight / --undesirable_weight");
    kto.unpaired = true;
    let mut bt = PreferenceLossRecord::new(
        "bradley_terry",
        "reward modelling (--rlhf_type rm): −log σ(r_chosen − r_rejected) on the value head's scores, + --center_rewards_coefficient·mean((r_c + r_r)²)",
    );
    bt.aliases = vec!["rm".into()];
    bt.scores = true;
    vec![
        with_ref("sigmoid", "DPO: −log σ(β·(chosen − rejected log-ratio to the reference)), with --label_smoothing and --rpo_alpha"),
        with_ref(
            "ipo",
            "IPO: squared distance of the length-averaged log-ratio margin from 1/(2β)",
        ),
        with_ref("hinge", "DPO hinge (SLiC): relu(1 − β·margin)"),
        with_ref(
            "robust",
            "robust DPO: the sigmoid loss unbiased for --label_smoothing noise",
        ),
        PreferenceLossRecord::new(
            "orpo",
            "ORPO (reference-free): chosen NLL − β·log σ(log odds ratio)",
        ),
        PreferenceLossRecord::new(
            "simpo",
            "SimPO (reference-free): −log σ(β·(avg chosen − avg rejected) − γ) + cpo_alpha·NLL",
        ),
        PreferenceLossRecord::new(
            "cpo",
            "CPO (reference-free): −log σ(β·(chosen − rejected)) + cpo_alpha·NLL",
        ),
        kto,
        bt,
    ]
}
