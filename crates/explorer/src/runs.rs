//! Trained runs, chosen by name from the runs folder (never by a path from the page): the names the page may
//! pick, and the learned field `v_theta` of one as frames of particles, arrows and divergences, in the same
//! layout as the closed-form views.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferroflow_engine::config::RunConfig;
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_solvers::{Method, OdeOptions};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{ApiError, check_range};
use crate::views::{WINDOW, frame_times, grid_points, source_points};

/// The longest run name accepted.
pub const MAX_RUN_NAME: usize = 120;

/// Checks a run name: 1 to [`MAX_RUN_NAME`] ASCII letters, digits, `-`, `_` or `.`, not starting with `.`
/// (so no `/`, no `..`, no hidden folder).
pub fn check_run_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RUN_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!(
                "`{name}` is not a run name (1 to {MAX_RUN_NAME} letters, digits, `-`, `_`, `.`; no leading `.`)"
            ),
        ));
    }
    Ok(())
}

/// Whether `dir` holds a finished run of a 2D continuous flow the page can show.
fn is_viewable(dir: &Path) -> bool {
    if !dir.join(ferroflow_engine::train::MODEL_FILE).is_file() {
        return false;
    }
    RunConfig::load(&dir.join(ferroflow_engine::run::CONFIG_FILE)).is_ok_and(|config| {
        config.data.manifold.is_none() && !config.data.target.is_tokens() && config.data.target.dim() == 2
    })
}

/// The names of the runs under `runs_dir` the page can show, sorted.
pub fn list_runs(runs_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| check_run_name("run", name).is_ok() && is_viewable(&runs_dir.join(name)))
        .collect();
    names.sort();
    names
}

/// The folder of run `name` under `runs_dir`, checked: a valid name of a viewable run directly under it.
pub fn run_dir(runs_dir: &Path, name: &str) -> Result<PathBuf, ApiError> {
    check_run_name("run", name)?;
    let dir = runs_dir.join(name);
    if !dir.is_dir() || !is_viewable(&dir) {
        return Err(ApiError::NotFound {
            field: "run".into(),
            message: format!("no finished 2D run `{name}` in the runs folder"),
        });
    }
    Ok(dir)
}

/// A request for a trained run's views.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunViewRequest {
    /// The run's name under the runs folder.
    pub run: String,
    /// Particles pushed by the learned field, 1..=5000.
    pub n_particles: i64,
    /// Arrows per side, 2..=64.
    pub grid: i64,
    /// Frames over [0, 1], 2..=201.
    pub frames: i64,
    /// Seed of the particles.
    #[serde(default)]
    pub seed: u64,
}

/// Frames of a trained run's learned field (the layout of [`crate::views::FlowFrames`], without a density).
#[derive(Clone, Debug, Serialize)]
pub struct RunFrames {
    /// The run.
    pub run: String,
    /// Its target's name.
    pub target: String,
    /// Frame times.
    pub t: Vec<f64>,
    /// Half width of the window.
    pub window: f64,
    /// Per frame, particle positions.
    pub particles: Vec<Vec<f32>>,
    /// Per frame, `div v_theta` at each particle (central differences of step 1e-2 on the network).
    pub divergence: Vec<Vec<f32>>,
    /// Arrows per side.
    pub grid: usize,
    /// Per frame, `v_theta` at the grid's cell centres.
    pub field: Vec<Vec<f32>>,
    /// Milliseconds the server spent.
    pub compute_ms: f64,
}

fn tensor_of(points: &[[f64; 2]]) -> Tensor {
    let flat: Vec<f32> = points.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
    Tensor::from_slice(&flat).view([points.len() as i64, 2])
}

fn flat(tensor: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&tensor.to_kind(Kind::Float).contiguous().view([-1])).unwrap_or_default()
}

/// `div v_theta(x, t)` for a batch by central differences.
fn divergence(flow: &TrainedFlow, x: &Tensor, t: f64) -> Tensor {
    const STEP: f64 = 1e-2;
    let mut total = Tensor::zeros([x.size()[0]], (Kind::Float, x.device()));
    for axis in 0..2 {
        let offset = Tensor::zeros([1, 2], (Kind::Float, x.device()));
        let _ = offset.narrow(1, axis, 1).fill_(STEP);
        let plus = flow.velocity(&(x + &offset), t).select(1, axis);
        let minus = flow.velocity(&(x - &offset), t).select(1, axis);
        total += (plus - minus) / (2.0 * STEP);
    }
    total
}

/// Computes a trained run's views.
pub fn run_frames(runs_dir: &Path, request: &RunViewRequest) -> Result<RunFrames, ApiError> {
    let started = Instant::now();
    let n_particles = check_range("n_particles", request.n_particles, 1, 5_000)?;
    let grid = check_range("grid", request.grid, 2, 64)?;
    let frames = check_range("frames", request.frames, 2, 201)?;
    let dir = run_dir(runs_dir, &request.run)?;
    let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    let times = frame_times(frames);
    let x0 = tensor_of(&source_points(n_particles, request.seed)).to_device(flow.device());
    let solution = flow
        .integrate(
            x0,
            &OdeOptions::fixed(Method::Midpoint, 2 * (frames - 1)),
            Some(&times),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let grid_x = tensor_of(&grid_points(grid)).to_device(flow.device());
    let mut out = RunFrames {
        run: request.run.clone(),
        target: flow.config.data.target.name(),
        t: times.clone(),
        window: WINDOW,
        particles: Vec::with_capacity(frames),
        divergence: Vec::with_capacity(frames),
        grid,
        field: Vec::with_capacity(frames),
        compute_ms: 0.0,
    };
    for (&t, positions) in times.iter().zip(&solution.trajectory) {
        out.particles.push(flat(positions));
        out.divergence
            .push(flat(&tch::no_grad(|| divergence(&flow, positions, t))));
        out.field.push(flat(&flow.velocity(&grid_x, t)));
    }
    out.compute_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}
