//! Records which libtorch this build of swift-plugin-tensors links against, as
//! `SWIFT_LIBTORCH_VERSION` (`unknown`, with a build warning, when it cannot be read: the host
//! refuses a tensor plugin whose version, or its own, is unknown). torch-sys declares
//! `links = "tch"` and exports its library folder as `DEP_TCH_LIBTORCH_LIB`; how the version is
//! found behind it is `src/libtorch_version.rs`, shared with the tests.

#[path = "src/libtorch_version.rs"]
mod libtorch_version;

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/libtorch_version.rs");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    let (version, looked) = libtorch_version::libtorch_version(Path::new(&lib));
    let source = Path::new(&lib).with_file_name(".source");
    for file in looked.iter().chain([&source]) {
        if file.exists() {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    let version = version.unwrap_or_else(|| {
        println!(
            "cargo:warning=swift-plugin-tensors: no torch version found behind libtorch folder \
             `{lib}` (looked for {}); recording `unknown`, which swift refuses. Point LIBTORCH \
             at a torch installation (make setup writes .cargo/config.toml) and rebuild.",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        "unknown".to_string()
    });
    println!("cargo:rustc-env=SWIFT_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=SWIFT_LIBTORCH_LIB={lib}");
}
