//! Tidy checks, written as ordinary tests: module docs, and the feature gate that keeps libtorch optional.

use std::fs;
use std::path::Path;

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    for dir in ["src", "tests", "tests/common"] {
        for entry in fs::read_dir(crate_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("//!"),
                    "{} does not start with a `//!` module doc",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn libtorch_stays_behind_the_tch_feature() {
    let manifest = fs::read_to_string(crate_root().join("Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for line in dependencies
        .lines()
        .filter(|line| line.starts_with("tch") || line.starts_with("torch-sys"))
    {
        assert!(
            line.contains("optional = true"),
            "non-optional libtorch dependency: {line}"
        );
    }
    assert!(
        manifest.contains("default = []"),
        "the default features must stay empty"
    );
    // Only the feature-gated module may name tch.
    for entry in fs::read_dir(crate_root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "tensor.rs" {
            continue;
        }
        for line in text.lines().filter(|line| !line.trim_start().starts_with("//")) {
            let gated = line.contains("cfg(feature = \"tch\")") || line.trim() == "pub mod tensor;";
            let names_tch = line.contains("tch::") || line.contains("use tch") || line.contains("torch_sys");
            assert!(
                gated || !names_tch,
                "{name} names tch outside the feature gate: {line}"
            );
        }
    }
}
