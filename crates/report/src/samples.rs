//! The picture drawn right after training: `samples.png`, the generated samples (`samples.npy`) over fresh
//! target samples for vector data (the first two coordinates), or a grid of the first 100 samples for
//! Fashion-MNIST runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferroflow_engine::RunConfig;
use ferroflow_engine::data::Dataset;
use ferroflow_engine::files::read_npy;
use ferroflow_engine::images::image_grid;
use ferroflow_engine::run::{CONFIG_FILE, SAMPLES_FILE};
use ferroflow_engine::sample::reference_samples;
use tch::Tensor;

use crate::plot;

/// The picture of the samples.
pub const SAMPLES_PICTURE: &str = "samples.png";
/// Images shown in the grid of an image run.
const GRID_IMAGES: usize = 100;
/// Images per row of that grid.
const GRID_COLUMNS: usize = 10;

/// Draws `samples.png` of the finished run in `run_dir` from its `samples.npy` and config; returns its path,
/// or `None` for 1-D runs (nothing to draw in a plane).
pub fn write_samples_picture(run_dir: &Path) -> Result<Option<PathBuf>> {
    let config = RunConfig::load(&run_dir.join(CONFIG_FILE))?;
    let samples = read_npy(&run_dir.join(SAMPLES_FILE))?;
    let path = run_dir.join(SAMPLES_PICTURE);
    if matches!(config.data.target, Dataset::FashionMnist { .. }) {
        let shown = samples.nrows().min(GRID_IMAGES);
        let pixels = samples
            .slice(ndarray::s![..shown, ..])
            .as_standard_layout()
            .to_owned();
        let images = Tensor::from_slice(
            pixels
                .as_slice()
                .context("a standard-layout array is contiguous")?,
        )
        .view([shown as i64, 1, 28, 28]);
        let grid = image_grid(&images, GRID_COLUMNS)?;
        plot::rgb_png(&path, grid.width, grid.height, &grid.rgb)?;
        return Ok(Some(path));
    }
    if config.data.target.dim() < 2 {
        return Ok(None);
    }
    let reference = reference_samples(&config, samples.nrows());
    let title = format!(
        "{} -> {} ({} steps)",
        config.data.source.name(),
        config.data.target.name(),
        config.train.steps
    );
    plot::samples_png(&path, &title, samples.view(), reference.view())?;
    Ok(Some(path))
}
