//! Embeds libtorch's directory as an rpath so the engine library finds libtorch wherever the
//! `swift` binary is, and keeps libtorch (hence libtorch_cuda on GPU machines) linked even though
//! no symbol of it is used directly (tch-rs issue #980; DESIGN.md §7).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-arg-cdylib=-Wl,--no-as-needed,-ltorch");
    }
}
