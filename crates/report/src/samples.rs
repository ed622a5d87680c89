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
    if let Some(manifold) = &config.data.manifold {
        let charts = manifold_charts(manifold);
        if charts.is_empty() {
            return Ok(None);
        }
        let reference = reference_samples(&config, samples.nrows());
        let mapped: Vec<_> = charts
            .iter()
            .map(|chart| (chart.map(samples.view()), chart.map(reference.view())))
            .collect();
        let panels: Vec<plot::SamplesPanel> = charts
            .iter()
            .zip(&mapped)
            .map(|(chart, (generated, reference))| plot::SamplesPanel {
                caption: chart.caption.clone(),
                generated: generated.view(),
                reference: reference.view(),
                window: chart.window(),
            })
            .collect();
        let title = format!(
            "{} -> {} on {}",
            config.data.source.name(),
            config.data.target.name(),
            manifold.name()
        );
        plot::samples_panels_png(&path, &title, &panels)?;
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

/// A plane coordinate read off a manifold point's ambient coordinates (its factor's first column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordinate {
    /// The longitude atan2(y, x) of an S^2 factor, in [-pi, pi).
    Longitude(usize),
    /// The height z of an S^2 factor, in [-1, 1]: with the longitude, Lambert's cylindrical equal-area map,
    /// so equal areas of the sphere cover equal areas of the picture.
    Height(usize),
    /// A torus angle, in [-pi, pi).
    Angle(usize),
}

impl Coordinate {
    fn of(self, p: ndarray::ArrayView1<f32>) -> f32 {
        match self {
            Coordinate::Longitude(o) => p[o + 1].atan2(p[o]),
            Coordinate::Height(o) => p[o + 2],
            Coordinate::Angle(o) => p[o],
        }
    }

    fn range(self) -> (f64, f64) {
        match self {
            Coordinate::Height(_) => (-1.0, 1.0),
            _ => (-std::f64::consts::PI, std::f64::consts::PI),
        }
    }

    fn period(self) -> Option<f64> {
        match self {
            Coordinate::Height(_) => None,
            _ => Some(std::f64::consts::TAU),
        }
    }
}

/// A chart of (part of) a manifold: two coordinates and a caption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifoldChart {
    /// What the chart shows.
    pub caption: String,
    /// The horizontal coordinate.
    pub x: Coordinate,
    /// The vertical coordinate.
    pub y: Coordinate,
}

impl ManifoldChart {
    /// The plane coordinates of each row of ambient coordinates.
    pub fn map(&self, points: ndarray::ArrayView2<f32>) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_fn((points.nrows(), 2), |(row, col)| {
            let coordinate = if col == 0 { self.x } else { self.y };
            coordinate.of(points.row(row))
        })
    }

    /// The whole chart: both coordinates' ranges.
    pub fn window(&self) -> plot::Window {
        let ((x_min, x_max), (y_min, y_max)) = (self.x.range(), self.y.range());
        plot::Window {
            x_min,
            x_max,
            y_min,
            y_max,
        }
    }

    /// Which of its axes wrap around.
    pub fn periods(&self) -> plot::Periods {
        plot::Periods {
            x: self.x.period(),
            y: self.y.period(),
        }
    }
}

/// The charts that picture a manifold, one panel each: every S^2 factor's equal-area map, every torus of
/// two or more angles by its first two, and a circle (T^1) against the height of the first S^2 factor (or
/// else against the next circle), so that a product's joint law shows. Empty when nothing can be drawn in
/// a plane (a lone circle, higher spheres).
pub fn manifold_charts(manifold: &ManifoldSpec) -> Vec<ManifoldChart> {
    let mut factors = Vec::new();
    flatten(manifold, 0, &mut factors);
    let first_sphere = factors
        .iter()
        .find(|(f, _)| matches!(f, ManifoldSpec::Sphere { dim: 3 }))
        .map(|(_, o)| *o);
    let circles: Vec<usize> = factors
        .iter()
        .filter(|(f, _)| matches!(f, ManifoldSpec::Torus { dim: 1 }))
        .map(|(_, o)| *o)
        .collect();
    let many = factors.len() > 1;
    let label = |i: usize, name: String| {
        if many {
            format!("factor {}: {name}", i + 1)
        } else {
            name
        }
    };
    let mut charts = Vec::new();
    for (i, (factor, offset)) in factors.iter().enumerate() {
        let offset = *offset;
        match factor {
            ManifoldSpec::Sphere { dim: 3 } => charts.push(ManifoldChart {
                caption: label(i, "S^2, longitude vs z (equal-area)".into()),
                x: Coordinate::Longitude(offset),
                y: Coordinate::Height(offset),
            }),
            ManifoldSpec::Torus { dim } if *dim >= 2 => charts.push(ManifoldChart {
                caption: label(i, format!("T^{dim}, first two angles")),
                x: Coordinate::Angle(offset),
                y: Coordinate::Angle(offset + 1),
            }),
            ManifoldSpec::Torus { dim: 1 } => {
                let partner = first_sphere.map(Coordinate::Height).or_else(|| {
                    let next = circles
                        .iter()
                        .position(|&o| o == offset)
                        .map(|k| (k + 1) % circles.len());
                    next.filter(|&k| circles[k] != offset)
                        .map(|k| Coordinate::Angle(circles[k]))
                });
                if let Some(y) = partner {
                    let against = match y {
                        Coordinate::Height(_) => "the S^2 factor's z",
                        _ => "the next circle's angle",
                    };
                    charts.push(ManifoldChart {
                        caption: label(i, format!("T^1 angle vs {against}")),
                        x: Coordinate::Angle(offset),
                        y,
                    });
                }
            }
            _ => {}
        }
    }
    charts
}

/// The factors of `manifold` that are not products, with the column where each starts.
fn flatten(manifold: &ManifoldSpec, offset: usize, out: &mut Vec<(ManifoldSpec, usize)>) {
    match manifold {
        ManifoldSpec::Product { factors } => {
            let mut start = offset;
            for factor in factors {
                flatten(factor, start, out);
                start += factor.ambient_dim();
            }
        }
        single => out.push((single.clone(), offset)),
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
    let sphere = match manifold {
        ManifoldSpec::Sphere { dim: 3 } => true,
        ManifoldSpec::Torus { dim: 2 } => false,
        _ => return Ok(false),
    };
    let window = manifold_charts(manifold)
        .first()
        .context("S^2 and T^2 have a chart")?
        .window();
    let cells = window.grid(DENSITY_CELLS);
    // The inverse of the chart: the point of the manifold at each cell's centre.
    let points = ndarray::Array2::from_shape_fn((cells.nrows(), manifold.ambient_dim()), |(row, col)| {
        let (a, b) = (f64::from(cells[[row, 0]]), f64::from(cells[[row, 1]]));
        if sphere {
            let r = (1.0 - b * b).max(0.0).sqrt();
            [r * a.cos(), r * a.sin(), b][col]
        } else {
            [a, b][col]
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

/// Times at which the manifold trajectories are drawn (the solver's steps are spread over them).
const TRAJECTORY_TIMES: usize = 41;

/// Draws `points` trajectories of a manifold run on its first chart (paths that cross a seam of the chart
/// come back at the other edge) over fresh target samples, into `path`. `Ok(false)` when the manifold has no
/// chart.
pub fn write_manifold_trajectories(
    flow: &ferroflow_engine::sample::TrainedFlow,
    points: usize,
    path: &Path,
) -> Result<bool> {
    let Some(manifold) = &flow.config.data.manifold else {
        return Ok(false);
    };
    let Some(chart) = manifold_charts(manifold).into_iter().next() else {
        return Ok(false);
    };
    let times: Vec<f64> = (0..TRAJECTORY_TIMES)
        .map(|k| k as f64 / (TRAJECTORY_TIMES - 1) as f64)
        .collect();
    let x0 = flow.source_points(points, ferroflow_engine::stream::Stream::Report);
    let solution = flow
        .integrate(x0, &flow.config.sample.ode_options(), Some(&times))
        .map_err(|e| anyhow::anyhow!("integrating the trajectories: {e}"))?;
    let states: Vec<ndarray::Array2<f32>> = solution
        .trajectory
        .iter()
        .map(|state| chart.map(ferroflow_engine::sample::to_array(state).view()))
        .collect();
    let reference = chart.map(reference_samples(&flow.config, 2000).view());
    let title = format!(
        "{} -> {} on {}: trajectories",
        flow.config.data.source.name(),
        flow.config.data.target.name(),
        manifold.name()
    );
    plot::trajectories_png(
        path,
        &title,
        &states,
        reference.view(),
        &chart.window(),
        chart.periods(),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_is_pictured_factor_by_factor() {
        let sphere_circle = ManifoldSpec::Product {
            factors: vec![ManifoldSpec::Sphere { dim: 3 }, ManifoldSpec::Torus { dim: 1 }],
        };
        let charts = manifold_charts(&sphere_circle);
        let axes: Vec<_> = charts.iter().map(|c| (c.x, c.y)).collect();
        assert_eq!(
            axes,
            vec![
                (Coordinate::Longitude(0), Coordinate::Height(0)),
                (Coordinate::Angle(3), Coordinate::Height(0)),
            ]
        );
        let circles = ManifoldSpec::Product {
            factors: vec![ManifoldSpec::Torus { dim: 1 }, ManifoldSpec::Torus { dim: 1 }],
        };
        let axes: Vec<_> = manifold_charts(&circles).iter().map(|c| (c.x, c.y)).collect();
        assert_eq!(
            axes,
            vec![
                (Coordinate::Angle(0), Coordinate::Angle(1)),
                (Coordinate::Angle(1), Coordinate::Angle(0)),
            ]
        );
        assert!(manifold_charts(&ManifoldSpec::Torus { dim: 1 }).is_empty());
        assert_eq!(manifold_charts(&ManifoldSpec::Torus { dim: 3 }).len(), 1);
    }

    #[test]
    fn the_equal_area_chart_reads_back_the_point_it_was_made_from() {
        let chart = &manifold_charts(&ManifoldSpec::Sphere { dim: 3 })[0];
        let (lon, z) = (2.5f32, -0.3f32);
        let r = (1.0 - z * z).sqrt();
        let point = ndarray::array![[r * lon.cos(), r * lon.sin(), z]];
        let mapped = chart.map(point.view());
        assert!((mapped[[0, 0]] - lon).abs() < 1e-6 && (mapped[[0, 1]] - z).abs() < 1e-6);
        let window = chart.window();
        assert_eq!((window.y_min, window.y_max), (-1.0, 1.0));
        assert_eq!(chart.periods().y, None);
        assert_eq!(chart.periods().x, Some(std::f64::consts::TAU));
    }
}
