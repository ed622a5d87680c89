//! Every config shipped under `configs/` (the default, the examples, both benchmark folders) loads and
//! validates, so a typo in one is caught by `cargo test` rather than by a user's run.

use std::path::{Path, PathBuf};

use ferroflow_engine::RunConfig;

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_loads_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    // default, ring, two Fashion-MNIST configs, 19 benchmark configs, 2 EMA variants, 4 Riemannian ones.
    assert!(files.len() >= 29, "found only {files:?}");
    // Relative paths in configs (data folders) are meant from the workspace root, as `cargo xtask` runs.
    std::env::set_current_dir(root.join("..")).unwrap();
    let fashion_present = Path::new("data/fashion-mnist/train-images-idx3-ubyte").is_file();
    for file in &files {
        match RunConfig::load(file).and_then(|config| config.validate().map(|()| config)) {
            Ok(_) => {}
            // Without the prepared data set (a fresh clone: `cargo xtask data fashion-mnist` has not run), a
            // Fashion-MNIST config can only fail on its data folder, named as such.
            Err(e) if !fashion_present && format!("{e:#}").contains("data.target.dir") => {
                let text = std::fs::read_to_string(file).unwrap();
                assert!(text.contains("fashion_mnist"), "{}: {e:#}", file.display());
            }
            Err(e) => panic!("{}: {e:#}", file.display()),
        }
    }
}
