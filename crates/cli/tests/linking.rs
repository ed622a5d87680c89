//! The `ferroflow` binary names libtorch_cpu before OpenBLAS among its shared libraries, so that libtorch's
//! calls to `sgemm_` reach its own MKL kernels and not Debian's OpenBLAS (whose generic kernel made every
//! matrix product about 6x slower here; see the build scripts). The dynamic linker searches the libraries in
//! this order, so the order is the property.

use std::process::Command;

#[test]
fn libtorch_comes_before_openblas_in_the_binarys_library_list() {
    let output = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_ferroflow")])
        .output()
        .expect("readelf (binutils) runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    let position = |prefix: &str| needed.iter().position(|n| n.starts_with(prefix));
    let torch = position("libtorch_cpu").unwrap_or_else(|| panic!("no libtorch_cpu in {needed:?}"));
    if let Some(openblas) = position("libopenblas") {
        assert!(torch < openblas, "OpenBLAS comes first: {needed:?}");
    }
}
