//! The picture drawn right after training: `samples.png`, the generated samples (`samples.npy`) over fresh
//! target samples for vector data (the first two coordinates; on a manifold its chart: the sphere's
//! equal-area map, the torus's periodic square), or a grid of the first 100 samples for
//! Fashion-MNIST runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferroflow_engine::RunConfig;
use ferroflow_engine::data::Dataset;
use ferroflow_engine::files::read_points;
use ferroflow_engine::images::image_grid;
use ferroflow_engine::manifold::ManifoldSpec;
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
    let samples = read_points(&run_dir.join(SAMPLES_FILE))?;
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
    if let Some(manifold) = &config.data.manifold
        && manifold.ambient_dim() >= 2
    {
        let reference = reference_samples(&config, samples.nrows());
        let (chart, title) = manifold_chart(manifold);
        let window = plot::Window {
            x_min: -std::f64::consts::PI,
            x_max: std::f64::consts::PI,
            y_min: if chart == Chart::EqualArea {
                -1.0
            } else {
                -std::f64::consts::PI
            },
            y_max: if chart == Chart::EqualArea {
                1.0
            } else {
                std::f64::consts::PI
            },
        };
        let title = format!(
            "{} -> {} on {title}",
            config.data.source.name(),
            config.data.target.name()
        );
        plot::samples_png_in(
            &path,
            &title,
            chart.map(samples.view()).view(),
            chart.map(reference.view()).view(),
            &window,
        )?;
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

/// How points of a manifold are drawn in the plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chart {
    /// The first sphere's Lambert cylindrical equal-area map: (longitude, z) in [-pi, pi) x [-1, 1], so equal
    /// areas of the sphere cover equal areas of the picture.
    EqualArea,
    /// The first two angles of a torus: the periodic square [-pi, pi)^2.
    Angles,
}

impl Chart {
    /// The plane coordinates of each row of ambient coordinates.
    fn map(self, points: ndarray::ArrayView2<f32>) -> ndarray::Array2<f32> {
        match self {
            Chart::EqualArea => ndarray::Array2::from_shape_fn((points.nrows(), 2), |(row, col)| {
                let p = points.row(row);
                if col == 0 { p[1].atan2(p[0]) } else { p[2] }
            }),
            Chart::Angles => points.slice(ndarray::s![.., ..2]).to_owned(),
        }
    }
}

/// The chart of a manifold's first factor and its name for titles; a torus with one angle is drawn against
/// nothing (its angle on both axes would say nothing), so circles only appear inside products with a sphere.
fn manifold_chart(manifold: &ManifoldSpec) -> (Chart, String) {
    let first = match manifold {
        ManifoldSpec::Product { factors } => factors
            .iter()
            .find(|f| matches!(f, ManifoldSpec::Sphere { dim: 3 }))
            .or(factors.first())
            .cloned()
            .unwrap_or_else(|| manifold.clone()),
        single => single.clone(),
    };
    match first {
        ManifoldSpec::Sphere { .. } => (
            Chart::EqualArea,
            format!("{} (its S^2: longitude vs z, equal-area)", manifold.name()),
        ),
        _ => (Chart::Angles, format!("{} (first two angles)", manifold.name())),
    }
}

/// Cells per side of the density picture of a manifold run.
const DENSITY_CELLS: usize = 48;

/// Draws the learned density of a run on S^2 (over the equal-area map, where a density per unit area of
/// the sphere is a density per unit area of the picture) or on T^2 (over the periodic square), from the
/// likelihood with the exact Riemannian divergence, into `path`. `Ok(false)` for other manifolds (products,
/// higher dimensions), which have no such picture.
pub fn write_manifold_density(flow: &ferroflow_engine::sample::TrainedFlow, path: &Path) -> Result<bool> {
    let Some(manifold) = &flow.config.data.manifold else {
        return Ok(false);
    };
    let chart = match manifold {
        ManifoldSpec::Sphere { dim: 3 } => Chart::EqualArea,
        ManifoldSpec::Torus { dim: 2 } => Chart::Angles,
        _ => return Ok(false),
    };
    let pi = std::f64::consts::PI;
    let window = plot::Window {
        x_min: -pi,
        x_max: pi,
        y_min: if chart == Chart::EqualArea { -1.0 } else { -pi },
        y_max: if chart == Chart::EqualArea { 1.0 } else { pi },
    };
    let cells = window.grid(DENSITY_CELLS);
    let points = ndarray::Array2::from_shape_fn((cells.nrows(), manifold.ambient_dim()), |(row, col)| {
        let (a, b) = (f64::from(cells[[row, 0]]), f64::from(cells[[row, 1]]));
        match chart {
            Chart::EqualArea => {
                let r = (1.0 - b * b).max(0.0).sqrt();
                [r * a.cos(), r * a.sin(), b][col]
            }
            Chart::Angles => [a, b][col],
        }
    });
    let config = &flow.config;
    let method = ferroflow_engine::manifold::ManifoldMethod::of(config.sample.solver)
        .context("the run's solver has no manifold version")?;
    let log_density = ferroflow_engine::manifold::log_likelihood_on_manifold(
        flow,
        manifold,
        points.view(),
        ferroflow_models::DivergenceEstimator::Exact,
        config.sample.steps.min(30),
        method,
        config.run.seed,
    )
    .map_err(anyhow::Error::msg)?;
    let density: Vec<f64> = log_density.iter().map(|l| l.exp()).collect();
    let title = format!("learned density on {}", manifold.name());
    plot::density_png(path, &title, &density, DENSITY_CELLS, &window)?;
    Ok(true)
}
