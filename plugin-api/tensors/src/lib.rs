//! # swift-plugin-tensors: the tensor side of the plugin contract
//!
//! A plugin whose behaviour handles tensors (a model family with its own forward pass, a
//! preference loss) depends on this crate instead of swift-plugin-api. It re-exports all of
//! swift-plugin-api (records, the text behaviour traits, the ABI, loading) and adds what needs
//! `tch` and libtorch:
//!
//! * [`ModelFamily`] with [`model::Model`] and [`model::ModelContext`] (the model interface,
//!   DESIGN.md §4), and [`ModelHandleExt`]: the host's `forward` on a registered family's model;
//! * [`PreferenceLoss`] with its inputs and outputs, and [`PreferenceLossHandleExt`];
//! * [`AdapterTuner`] and [`Adapter`] (a tuner's own math: per-slot tensors, forward, save,
//!   merge, extra loss, after-backward hook; swift-plugin-api's `tuner` module declares the
//!   data), and [`AdapterHandleExt`], the host's calls;
//! * [`OptimizerKind`] and [`Optimizer`] (an optimizer's math over the host's tensors and their
//!   gradients; swift-plugin-api's `optimizer` module declares the data), and
//!   [`OptimizerHandleExt`], the host's calls;
//! * [`QuantMethod`], [`QuantScheme`] and [`PackedSlot`] (a quantizer's math: packing a weight
//!   from its calibration statistics, reading a packed slot back, its forward; swift-plugin-api's
//!   `quantizer` module declares the data), and [`SchemeHandleExt`] / [`PackedSlotHandle`], the
//!   host's calls;
//! * [`TensorRegistrar`]: `Registrar::model_family`, `preference_loss`, `adapter_tuner`,
//!   `optimizer` and `quant_method`;
//! * [`TensorRefExt`] and [`OwnedTensorExt`]: the tensor handles as `tch::Tensor`s;
//! * [`LIBTORCH_VERSION`] and [`TCH_VERSION`], declared in every plugin's manifest by this
//!   crate's [`export_plugin!`] and [`builtin_plugin!`];
//! * [`sdk`]: what every decoder needs (rotary embeddings, norms, activations, a config reader,
//!   an error type that `?` converts tch errors into);
//! * `tch` itself, re-exported ([`tch`]), so a plugin uses the exact tch this contract links
//!   without pinning it.
//!
//! The traits are in the [`prelude`], which is swift-plugin-api's plus these:
//!
//! ```text
//! use swift_plugin_tensors::prelude::*;
//!
//! fn register(r: &mut Registrar) -> Result<(), PluginError> {
//!     r.model_family(my_record(), MyFamily)?;
//!     Ok(())
//! }
//!
//! swift_plugin_tensors::export_plugin!(register);
//! ```
//!
//! Why a separate crate and not a feature of swift-plugin-api: cargo unifies a crate's features
//! across everything it builds at once, so a `tensors` feature turned on by the tensor engine
//! would also link libtorch into the `swift` binary, which must start without it.

mod family;
#[cfg(test)]
mod libtorch_version;
pub mod model;
pub mod optimizer;
mod preference;
pub mod quantizer;
mod registration;
pub mod sdk;
pub mod tensor;
pub mod tuner;

pub use swift_plugin_api::*;

/// The `tch` this crate links (the exact version the host's tensor engine links): plugins use it
/// through this re-export (`use swift_plugin_tensors::tch;`) instead of pinning their own.
pub use tch;

pub use family::{ModelFamily, ModelHandleExt};
pub use optimizer::{Optimizer, OptimizerHandleExt, OptimizerKind};
pub use preference::{PreferenceInputs, PreferenceLoss, PreferenceLossHandleExt, PreferenceOutput};
pub use quantizer::{
    AffineCodes, PackedSlot, PackedSlotHandle, QuantMethod, QuantScheme, QuantizeCall,
    SchemeHandleExt,
};
pub use registration::TensorRegistrar;
pub use tensor::{OwnedTensorExt, TensorRefExt};
pub use tuner::{Adapter, AdapterHandleExt, AdapterTuner, HostSlotCall, Saved, SlotCall};

/// The `tch` version this crate links.
const TCH: &str = "0.26.0";

/// The `tch` version that plugins built against this crate link.
pub const TCH_VERSION: Option<&str> = Some(TCH);

/// The libtorch version this build links against, read from the torch installation behind the
/// library folder torch-sys found (`src/libtorch_version.rs`); `unknown` when it could not be
/// read, which the host refuses.
pub const LIBTORCH_VERSION: Option<&str> = Some(env!("SWIFT_LIBTORCH_VERSION"));

/// Everything a plugin author needs in one import: swift-plugin-api's prelude and the tensor
/// side.
pub mod prelude {
    pub use crate::family::{ModelFamily, ModelHandleExt};
    pub use crate::model::{Model, ModelContext};
    pub use crate::optimizer::{Optimizer, OptimizerKind};
    pub use crate::preference::{
        PreferenceInputs, PreferenceLoss, PreferenceLossHandleExt, PreferenceOutput,
    };
    pub use crate::quantizer::{AffineCodes, PackedSlot, QuantMethod, QuantScheme, QuantizeCall};
    pub use crate::registration::TensorRegistrar;
    pub use crate::tensor::{OwnedTensorExt, TensorRefExt};
    pub use crate::tuner::{Adapter, AdapterTuner, Saved, SlotCall};
    pub use crate::{builtin_plugin, export_plugin};
    pub use swift_plugin_api::prelude::*;
    pub use swift_plugin_api::quantizer::{Calibration, SchemeMode, SchemePlan, SchemeRequest};
    pub use swift_plugin_api::tuner::{
        AdapterPlan, AttachMode, AttachRequest, AttentionMode, DtypeRule, Init, OptionDecl,
        SlotInfo, SlotPlan, TensorDecl,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use swift_plugin_api;
}

/// Makes this `cdylib` crate a swift-rs plugin that declares this crate's libtorch and tch
/// versions (swift-plugin-api's `export_plugin!`, which declares none, otherwise).
#[macro_export]
macro_rules! export_plugin {
    ($register:path) => {
        $crate::export_plugin!(
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            register: $register
        );
    };
    (name: $name:expr, version: $version:expr, register: $register:path) => {
        $crate::__private::swift_plugin_api::export_plugin!(
            @declare contract: $crate::CONTRACT_VERSION,
            libtorch: $crate::LIBTORCH_VERSION,
            tch: $crate::TCH_VERSION,
            name: $name,
            version: $version,
            register: $register
        );
    };
}

/// Adds a crate linked into the tensor engine to the built-in plugins, declaring this crate's
/// libtorch and tch versions.
#[macro_export]
macro_rules! builtin_plugin {
    ($register:path) => {
        $crate::__private::swift_plugin_api::builtin_plugin!(
            libtorch: $crate::LIBTORCH_VERSION,
            tch: $crate::TCH_VERSION,
            register: $register
        );
    };
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::libtorch_version::libtorch_version;

    /// The torch this checkout pins (scripts/setup.sh; tch 0.26 expects exactly it).
    const PINNED: &str = "2.13.0";

    #[test]
    fn the_libtorch_version_is_read_through_the_link_folder_and_the_wheel_alike() {
        // This build's folder: the link folder of .cargo/config.toml, or torch/lib itself.
        let lib = Path::new(env!("SWIFT_LIBTORCH_LIB"));
        assert_eq!(crate::LIBTORCH_VERSION, Some(PINNED));
        assert_eq!(libtorch_version(lib).0.as_deref(), Some(PINNED));
        // The wheel's own torch/lib, as torch-sys reports it when built the standard tch way
        // (LIBTORCH_USE_PYTORCH=1): the folder the links point at.
        let real = std::fs::canonicalize(lib.join("libc10.so")).expect("libc10.so in the folder");
        let wheel_lib = real.parent().unwrap();
        assert!(
            wheel_lib.join("../version.py").exists(),
            "{}",
            wheel_lib.display()
        );
        assert_eq!(libtorch_version(wheel_lib).0.as_deref(), Some(PINNED));

        // A link folder found through its links alone (no .source), through `.source` alone
        // (no links), and a folder with neither.
        let work = tempfile::tempdir().unwrap();
        let links = work.path().join("links/lib");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(&real, links.join("libc10.so")).unwrap();
        assert_eq!(libtorch_version(&links).0.as_deref(), Some(PINNED));
        let named = work.path().join("named");
        std::fs::create_dir_all(named.join("lib")).unwrap();
        std::fs::write(
            named.join(".source"),
            format!("{}\n", wheel_lib.parent().unwrap().display()),
        )
        .unwrap();
        assert_eq!(
            libtorch_version(&named.join("lib")).0.as_deref(),
            Some(PINNED)
        );
        let empty = work.path().join("empty/lib");
        std::fs::create_dir_all(&empty).unwrap();
        let (v, looked) = libtorch_version(&empty);
        assert_eq!(v, None);
        assert!(!looked.is_empty());
    }
}
