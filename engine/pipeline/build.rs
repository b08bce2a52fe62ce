//! Embeds libtorch's directory as an rpath so this crate's test binaries run without
//! LD_LIBRARY_PATH (ARCHITECTURE.md §6).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
