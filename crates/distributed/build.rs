//! Links libtorch for this package's binaries and tests: its library folder goes into their rpath, so they
//! run without `LD_LIBRARY_PATH` (torch-sys publishes the folder, `links = "tch"`, to direct dependents
//! only), and `libtorch_cpu` is named first among their shared libraries. The order matters: libtorch_cpu
//! calls the Fortran BLAS symbol `sgemm_`, which it defines itself (MKL), but the dynamic linker binds it to
//! the first library in the executable's list that defines it, and the OpenBLAS that ndarray-linalg links
//! also does. Debian's OpenBLAS 0.3.21 runs its generic Prescott kernel on this machine's CPU: with OpenBLAS
//! first, every network evaluation's matrix products ran about 6x slower (`tests/linking.rs` of the
//! `ferroflow` package checks the order).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-search=native={lib}");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}
