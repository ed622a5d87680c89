//! Adds libtorch's library folder to the rpath of this package's binaries and tests, so they run without
//! `LD_LIBRARY_PATH`. torch-sys publishes the folder (`links = "tch"`) to direct dependents only.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
