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
//! * [`TensorRegistrar`]: `Registrar::model_family` and `Registrar::preference_loss`;
//! * [`TensorRefExt`] and [`OwnedTensorExt`]: the tensor handles as `tch::Tensor`s;
//! * [`LIBTORCH_VERSION`] and [`TCH_VERSION`], declared in every plugin's manifest by this
//!   crate's [`export_plugin!`] and [`builtin_plugin!`].
//!
//! The traits are in the [`prelude`], which is swift-plugin-api's plus these:
//!
//! ```ignore
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
pub mod model;
mod preference;
mod registration;
pub mod tensor;

pub use swift_plugin_api::*;

pub use family::{ModelFamily, ModelHandleExt};
pub use preference::{PreferenceInputs, PreferenceLoss, PreferenceLossHandleExt, PreferenceOutput};
pub use registration::TensorRegistrar;
pub use tensor::{OwnedTensorExt, TensorRefExt};

/// The `tch` version this crate links.
const TCH: &str = "0.26.0";

/// The `tch` version that plugins built against this crate link.
pub const TCH_VERSION: Option<&str> = Some(TCH);

/// The libtorch version this build links against (read from the torch installation that
/// torch-sys found).
pub const LIBTORCH_VERSION: Option<&str> = Some(env!("SWIFT_LIBTORCH_VERSION"));

/// Everything a plugin author needs in one import: swift-plugin-api's prelude and the tensor
/// side.
pub mod prelude {
    pub use crate::family::{ModelFamily, ModelHandleExt};
    pub use crate::model::{Model, ModelContext};
    pub use crate::preference::{
        PreferenceInputs, PreferenceLoss, PreferenceLossHandleExt, PreferenceOutput,
    };
    pub use crate::registration::TensorRegistrar;
    pub use crate::tensor::{OwnedTensorExt, TensorRefExt};
    pub use crate::{builtin_plugin, export_plugin};
    pub use swift_plugin_api::prelude::*;
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
