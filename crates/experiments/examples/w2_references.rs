//! Prints each 2D benchmark task's W2(source, target)^2, the yardstick bench2d's NPE divides by, without
//! training anything: `cargo run --release -p ferroflow-experiments --example w2_references [CONFIG_DIR]`
//! (default `configs/bench2d`, run from the workspace root). One config per task is read (the first file of
//! each task name); the estimate is the mean of bench2d's independent exact draws, with its standard error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferroflow_engine::RunConfig;
use ferroflow_experiments::bench2d::{REFERENCE_DRAWS, source_target_w2_sq};

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "configs/bench2d".into()),
    );
    let mut tasks: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let task = stem
                .rsplit_once('-')
                .map_or(stem.clone(), |(task, _)| task.to_owned());
            tasks.entry(task).or_insert(path);
        }
    }
    println!("| task | W2(source, target)^2 | standard error ({REFERENCE_DRAWS} draws) |\n|---|---:|---:|");
    for (task, path) in tasks {
        let config = RunConfig::load(&path)?;
        let reference = source_target_w2_sq(&config)?;
        println!(
            "| {task} | {:.4} | {:.4} |",
            reference.mean, reference.standard_error
        );
    }
    Ok(())
}
