//! The entry points every plugin exports, and the macros that generate them.
//!
//! [`export_plugin!`](crate::export_plugin) makes a `cdylib` a plugin (it exports the root
//! module under abi_stable's loader symbol); [`builtin_plugin!`](crate::builtin_plugin) submits a
//! statically linked crate to the host's built-in list through `inventory`. Both wrap the author's
//! plain `fn(&mut Registrar) -> Result<(), PluginError>` in `catch_unwind`, so a panic becomes an
//! error naming the plugin instead of aborting the host.
//!
//! A plugin file also exports its manifest as JSON under a plain C symbol,
//! [`MANIFEST_SYMBOL`](crate::MANIFEST_SYMBOL), which the host reads before abi_stable checks the
//! root module's layout: a plugin built against another contract, whose root module may differ,
//! is then refused with the contract-version message instead of a layout report.

use abi_stable::std_types::{RResult, RString};

use crate::abi::{manifest_to_ffi, FfiManifest, HostServicesRef, RegistrarFfi};
use crate::behaviour::guard;
use crate::registrar::{PluginError, Registrar};

/// Body of a plugin's `manifest` entry point.
pub fn run_manifest(
    name: &str,
    version: &str,
    contract_version: u32,
    libtorch_version: Option<&str>,
    tch_version: Option<&str>,
) -> RResult<FfiManifest, RString> {
    guard("manifest", || {
        Ok(manifest_to_ffi(&crate::Manifest {
            name: name.to_string(),
            version: version.to_string(),
            contract_version,
            libtorch_version: libtorch_version.map(str::to_string),
            tch_version: tch_version.map(str::to_string),
        }))
    })
}

/// Body of a plugin's manifest symbol: the manifest as NUL-terminated JSON, made once and kept
/// for the life of the process (plugins are never unloaded); null if making it panicked.
pub fn manifest_json(
    cell: &'static std::sync::OnceLock<std::ffi::CString>,
    manifest: fn() -> crate::Manifest,
) -> *const std::ffi::c_char {
    std::panic::catch_unwind(|| {
        cell.get_or_init(|| {
            let json = serde_json::to_string(&manifest()).unwrap_or_default();
            std::ffi::CString::new(json).unwrap_or_default()
        })
        .as_ptr()
    })
    .unwrap_or(std::ptr::null())
}

/// Body of a plugin's `register` entry point.
pub fn run_register(
    host: HostServicesRef,
    registrar: RegistrarFfi<'_>,
    register: fn(&mut Registrar<'_>) -> Result<(), PluginError>,
    own_std: bool,
) -> RResult<(), RString> {
    crate::log::install(host.log());
    if own_std {
        // A cdylib has its own copy of std, hence its own panic hook: report panics through the
        // host's log (at debug level; the caught panic becomes an error anyway) instead of
        // printing to stderr. Built-ins share the host's std and leave its hook alone.
        std::panic::set_hook(Box::new(|info| {
            crate::log::emit(
                crate::log::Level::Debug,
                "plugin",
                &format!("panic: {info}"),
            );
        }));
    }
    guard("register", || {
        let mut r = Registrar::new(registrar);
        register(&mut r).map_err(|e| e.0)
    })
}

/// Makes this `cdylib` crate a swift-rs plugin.
///
/// `export_plugin!(register)` uses the crate's name and version from Cargo; the long form
/// `export_plugin!(name: "acme", version: "1.0.0", register: register)` sets them explicitly.
/// `register` is a `fn(&mut Registrar) -> Result<(), PluginError>`.
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
        $crate::export_plugin!(
            @declare contract: $crate::CONTRACT_VERSION,
            libtorch: $crate::LIBTORCH_VERSION,
            tch: $crate::TCH_VERSION,
            name: $name,
            version: $version,
            register: $register
        );
    };
    // Declares an explicit contract and libtorch version: only for tests of the host's checks.
    (@declare contract: $contract:expr, libtorch: $libtorch:expr, name: $name:expr,
     version: $version:expr, register: $register:path) => {
        $crate::export_plugin!(
            @declare contract: $contract,
            libtorch: $libtorch,
            tch: $crate::TCH_VERSION,
            name: $name,
            version: $version,
            register: $register
        );
    };
    // Everything explicit (swift-plugin-tensors' macro declares its libtorch and tch here).
    (@declare contract: $contract:expr, libtorch: $libtorch:expr, tch: $tch:expr,
     name: $name:expr, version: $version:expr, register: $register:path) => {
        const _: () = {
            use $crate::__private::abi_stable::{library, std_types::{RResult, RString}};
            use $crate::__private::{FfiManifest, HostServicesRef, PluginModuleRef, RegistrarFfi};

            extern "C" fn __swift_manifest() -> RResult<FfiManifest, RString> {
                $crate::__private::run_manifest($name, $version, $contract, $libtorch, $tch)
            }

            /// The manifest as JSON under a plain C symbol, read before the root module's
            /// layout is checked (`swift_plugin_api::MANIFEST_SYMBOL`).
            #[export_name = "swift_plugin_manifest_json"]
            pub extern "C" fn __swift_manifest_json() -> *const ::std::ffi::c_char {
                static JSON: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
                fn manifest() -> $crate::Manifest {
                    $crate::Manifest {
                        name: ::std::string::String::from($name),
                        version: ::std::string::String::from($version),
                        contract_version: $contract,
                        libtorch_version: $libtorch.map(::std::string::String::from),
                        tch_version: $tch.map(::std::string::String::from),
                    }
                }
                $crate::__private::manifest_json(&JSON, manifest)
            }

            extern "C" fn __swift_register(host: HostServicesRef, registrar: RegistrarFfi<'_>) -> RResult<(), RString> {
                $crate::__private::run_register(host, registrar, $register, true)
            }

            fn __swift_root_module() -> PluginModuleRef {
                $crate::__private::builtin_module(__swift_manifest, __swift_register)
            }

            /// abi_stable's library header, under the symbol its loader looks up.
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static LIB_HEADER: library::LibHeader = {
                extern "C" fn erased_module() -> library::RootModuleResult {
                    library::__call_root_module_loader(__swift_root_module)
                }
                unsafe {
                    library::LibHeader::from_constructor::<PluginModuleRef>(
                        erased_module,
                        library::CheckTypeLayout::Yes,
                    )
                }
            };
        };
    };
}

/// Adds a crate linked into the host to the built-in plugins (collected with `inventory`).
/// Same contract as [`export_plugin!`](crate::export_plugin): `builtin_plugin!(register)`.
#[macro_export]
macro_rules! builtin_plugin {
    ($register:path) => {
        $crate::builtin_plugin!(
            libtorch: $crate::LIBTORCH_VERSION,
            tch: $crate::TCH_VERSION,
            register: $register
        );
    };
    // With explicit libtorch and tch versions (swift-plugin-tensors' macro).
    (libtorch: $libtorch:expr, tch: $tch:expr, register: $register:path) => {
        const _: () = {
            use $crate::__private::abi_stable::std_types::{RResult, RString};
            use $crate::__private::{FfiManifest, HostServicesRef, PluginModuleRef, RegistrarFfi};

            extern "C" fn __swift_manifest() -> RResult<FfiManifest, RString> {
                $crate::__private::run_manifest(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    $crate::CONTRACT_VERSION,
                    $libtorch,
                    $tch,
                )
            }

            extern "C" fn __swift_register(
                host: HostServicesRef,
                registrar: RegistrarFfi<'_>,
            ) -> RResult<(), RString> {
                $crate::__private::run_register(host, registrar, $register, false)
            }

            fn __swift_root_module() -> PluginModuleRef {
                $crate::__private::builtin_module(__swift_manifest, __swift_register)
            }

            $crate::__private::inventory::submit! {
                $crate::__private::BuiltinPlugin { module: __swift_root_module }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_symbol_is_the_one_the_macro_exports() {
        // The export macro hard-codes the manifest symbol's name too.
        assert_eq!(crate::MANIFEST_SYMBOL, "swift_plugin_manifest_json");
    }

    #[test]
    fn manifest_json_round_trips() {
        static CELL: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
        fn m() -> crate::Manifest {
            crate::Manifest {
                name: "x".into(),
                version: "1".into(),
                contract_version: 7,
                libtorch_version: Some("2.13.0".into()),
                tch_version: None,
            }
        }
        let p = super::manifest_json(&CELL, m);
        let text = unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap();
        let back: crate::Manifest = serde_json::from_str(text).unwrap();
        assert_eq!(back, m());
    }

    #[test]
    fn export_symbol_matches_abi_stable() {
        // The export macro hard-codes abi_stable's loader symbol (a macro cannot compute it).
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
