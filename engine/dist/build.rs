//! Compiles `src/shim.cpp` against the headers of the libtorch tch links (`$LIBTORCH/include`,
//! set by `.cargo/config.toml`, as for torch-sys) with `gloo-decl/` standing in for the gloo
//! headers the wheel lacks; the symbols come from `libtorch_cpu.so`, which torch-sys links.
//! Also embeds libtorch's directory as an rpath for the test binaries.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=gloo-decl");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let libtorch = match std::env::var("LIBTORCH") {
        Ok(p) => PathBuf::from(p),
        Err(_) => panic!(
            "swift-dist needs LIBTORCH (the torch wheel's folder) for c10d's headers: run `make setup`, which writes .cargo/config.toml"
        ),
    };
    let include = libtorch.join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include("gloo-decl")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/shim.cpp")
        .compile("swift_dist_shim");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-search=native={lib}");
        println!("cargo:rustc-link-lib=dylib=torch_cpu");
        println!("cargo:rustc-link-lib=dylib=c10");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
