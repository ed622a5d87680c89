//! Trained runs, chosen by name from the runs folder (never by a path from the page): the names the page may
//! pick, and the learned field `v_theta` of one as frames of particles, arrows and divergences, in the same
//! layout as the closed-form views; its learned log-density `ln p_theta(x)` on a grid (the engine's
//! likelihood); and one trajectory with `ln rho` along it, checked against the engine's backward likelihood.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferroflow_engine::config::RunConfig;
use ferroflow_engine::data::Dataset;
use ferroflow_engine::likelihood::{
    GaussianSource, LikelihoodError, LikelihoodSettings, log_likelihood_with,
};
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_models::DivergenceEstimator;
use ferroflow_models::autograd::divergence_exact;
use ferroflow_solvers::{Method, OdeOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::ancestral::DDPM;
use crate::error::{ApiError, check_range, check_real};
use crate::views::{
    GRID_LINE_POINTS, MAX_GRID_LINES, T_MAX, T_MIN_SINGULAR, WINDOW, frame_times, grid_line_points,
    grid_points,
};

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
    /// The sampler pushing the particles, `euler`, `midpoint` (default) or `ddpm` (DDPM's ancestral sampler,
    /// for a run from a Gaussian source), two steps per frame interval.
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Lines per direction of a pushed-forward grid over `[-3, 3]^2` (0 to 41; pushed by the ODE, midpoint
    /// when the particles follow `ddpm`).
    #[serde(default)]
    pub grid_lines: i64,
}

fn default_sampler() -> String {
    "midpoint".into()
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
    /// `(alpha, sigma, alpha', sigma')` of the run's path per frame, for the page's conditional field
    /// `u_t(x | x1)` beside `v_theta` (see [`path_coefficients`]); empty where it has none.
    pub coefficients: Vec<[f64; 4]>,
    /// Lines per direction of the pushed-forward grid (0: none).
    pub grid_lines: usize,
    /// Points per line of the pushed-forward grid.
    pub grid_line_points: usize,
    /// Per frame, the pushed grid's points (the layout of [`crate::views::grid_line_points`]).
    pub pushed_grid: Vec<Vec<f32>>,
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

/// `n_points` points of a run's source (its data set, N(0, I) unless the run chose another), drawn with `seed`.
pub fn run_source(flow: &TrainedFlow, n_points: usize, seed: u64) -> Tensor {
    let points = flow
        .config
        .data
        .source
        .sample(n_points, &mut ChaCha8Rng::seed_from_u64(seed));
    Tensor::from_slice(&points)
        .view([n_points as i64, 2])
        .to_device(flow.device())
}

/// The run path's `(alpha, sigma, alpha', sigma')` at `times` (clamped to `[0, T_MAX]`, and from
/// [`T_MIN_SINGULAR`] on where they are singular at 0, as the closed-form views do), for `u_t(x | x1) = alpha' x1 + (sigma' / sigma) (x - alpha x1)`. That is the
/// conditional velocity exactly for a Gaussian source (the law of `x_t` given `x1` is Gaussian), and for any
/// source on a path without extra noise (`x0 = (x - alpha x1) / sigma` is then determined, and the ratio
/// `sigma' / sigma` does not depend on the source's scale). A run with another source on a noisy path has no
/// such closed form: `None`.
pub fn path_coefficients(flow: &TrainedFlow, times: &[f64]) -> Option<Vec<[f64; 4]>> {
    let source_std = match flow.config.data.source {
        Dataset::Gaussian { std, .. } => std,
        _ => 1.0,
    };
    let gaussian = matches!(flow.config.data.source, Dataset::Gaussian { .. });
    times
        .iter()
        .map(|&t| {
            let at = |t: f64| {
                let c = flow.path().gaussian_coefficients(t, source_std).ok()?;
                let values = [c.alpha, c.sigma, c.d_alpha, c.d_sigma];
                values.iter().all(|v| v.is_finite()).then_some(values)
            };
            let t = t.clamp(0.0, T_MAX);
            let regular = at(t).map_or(t.max(T_MIN_SINGULAR), |_| t);
            let noiseless = flow.path().coefficients(regular).noise == 0.0;
            (gaussian || noiseless).then_some(at(regular)?)
        })
        .collect()
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
    let grid_lines = check_range("grid_lines", request.grid_lines, 0, MAX_GRID_LINES)?;
    let ancestral = request.sampler == DDPM;
    let method = if ancestral {
        Method::Midpoint
    } else {
        crate::mode_seeking::sampler("sampler", &request.sampler)?
    };
    let dir = run_dir(runs_dir, &request.run)?;
    let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    let times = frame_times(frames);
    let x0 = run_source(&flow, n_particles, request.seed);
    let ode = |x: Tensor| {
        flow.integrate(x, &OdeOptions::fixed(method, 2 * (frames - 1)), Some(&times))
            .map(|solution| solution.trajectory)
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let pushed_grid = if grid_lines > 0 {
        ode(tensor_of(&grid_line_points(grid_lines)).to_device(flow.device()))?
    } else {
        Vec::new()
    };
    let trajectory = if ancestral {
        let source_std = match flow.config.data.source {
            Dataset::Gaussian { std, .. } => std,
            ref other => {
                return Err(ApiError::invalid(
                    "sampler",
                    format!(
                        "the {DDPM} sampler needs a Gaussian source; run {} trains from {}",
                        request.run,
                        other.name()
                    ),
                ));
            }
        };
        crate::ancestral::ancestral_solve(
            flow.path(),
            source_std,
            |x, t| flow.velocity(x, t),
            |t| t,
            x0,
            2 * (frames - 1),
            2,
            request.seed,
            flow.config.flow.prediction == ferroflow_paths::Prediction::Epsilon,
            "sampler",
        )?
    } else {
        ode(x0)?
    };
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
        coefficients: path_coefficients(&flow, &times).unwrap_or_default(),
        grid_lines,
        grid_line_points: GRID_LINE_POINTS,
        pushed_grid: pushed_grid.iter().map(flat).collect(),
        compute_ms: 0.0,
    };
    for (&t, positions) in times.iter().zip(&trajectory) {
        out.particles.push(flat(positions));
        out.divergence
            .push(flat(&tch::no_grad(|| divergence(&flow, positions, t))));
        out.field.push(flat(&flow.velocity(&grid_x, t)));
    }
    out.compute_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// A likelihood that cannot be computed for this run (a non-Gaussian source) is the request's fault (`run`);
/// any other failure is the server's.
fn likelihood_error(run: &str, error: LikelihoodError) -> ApiError {
    match error {
        LikelihoodError::UnsupportedSource { .. } => ApiError::invalid("run", format!("run {run}: {error}")),
        other => ApiError::Internal(format!("run {run}: {other}")),
    }
}

/// A request for a trained run's learned log-density `ln p_theta(x)` at t = 1 on a grid.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDensityRequest {
    /// The run's name under the runs folder.
    pub run: String,
    /// Cells per side of the window, 2..=64.
    pub grid: i64,
    /// Midpoint steps of the backward solve, 2..=200.
    pub steps: i64,
}

/// `ln p_theta(x)` of a trained run at the cell centres of a grid over the window.
#[derive(Clone, Debug, Serialize)]
pub struct RunDensity {
    /// The run.
    pub run: String,
    /// Half width of the window.
    pub window: f64,
    /// Cells per side.
    pub grid: usize,
    /// `ln p_theta` at the cell centres `[grid^2]`, rows from the bottom, by the engine's likelihood
    /// (`ln p0(x0) - int_0^1 div v_theta dt`, exact divergence, integrated backwards from t = 1).
    pub log_density: Vec<f64>,
    /// The probability mass inside the window, `sum exp(ln p) * cell area` (close to 1 when the window holds
    /// the learned distribution and the grid resolves it).
    pub mass: f64,
    /// Milliseconds the server spent.
    pub compute_ms: f64,
}

/// Computes a trained run's learned log-density on a grid.
pub fn run_density(runs_dir: &Path, request: &RunDensityRequest) -> Result<RunDensity, ApiError> {
    let started = Instant::now();
    let grid = check_range("grid", request.grid, 2, 64)?;
    let steps = check_range("steps", request.steps, 2, 200)?;
    let dir = run_dir(runs_dir, &request.run)?;
    let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    let points = tensor_of(&grid_points(grid));
    let likelihood = log_likelihood_with(
        &flow,
        &points,
        &LikelihoodSettings::new(DivergenceEstimator::Exact, 0),
        &OdeOptions::fixed(Method::Midpoint, steps),
    )
    .map_err(|e| likelihood_error(&request.run, e))?;
    let log_density = likelihood.log_density.to_vec();
    let cell = 2.0 * WINDOW / grid as f64;
    let mass = log_density.iter().map(|l| l.exp()).sum::<f64>() * cell * cell;
    Ok(RunDensity {
        run: request.run.clone(),
        window: WINDOW,
        grid,
        log_density,
        mass,
        compute_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// A request for one trajectory of a trained run with `ln rho` along it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTrajectoryRequest {
    /// The run's name under the runs folder.
    pub run: String,
    /// The start point at t = 0, inside the window.
    pub start: [f64; 2],
    /// RK4 steps over [0, 1], 4..=1000.
    pub steps: i64,
}

/// One trajectory of the learned field with the log-density along it.
#[derive(Clone, Debug, Serialize)]
pub struct RunTrajectory {
    /// Times `k / steps`.
    pub t: Vec<f64>,
    /// Positions `[len * 2]`.
    pub points: Vec<f64>,
    /// `ln rho_t(x_t) = ln p0(x0) - int_0^t div v_theta(x_s, s) ds`, integrated with the position (RK4,
    /// exact divergence by autograd).
    pub log_density: Vec<f64>,
    /// `div v_theta(x_t, t)`.
    pub divergence: Vec<f64>,
    /// The engine's likelihood of the end point (integrated backwards, the same steps): agrees with the
    /// last `log_density` up to the solvers' errors.
    pub log_density_backward: f64,
}

/// Integrates one trajectory of a trained run forward with its log-density.
pub fn run_trajectory(runs_dir: &Path, request: &RunTrajectoryRequest) -> Result<RunTrajectory, ApiError> {
    for (axis, &value) in request.start.iter().enumerate() {
        check_real(&format!("start[{axis}]"), value, -WINDOW, WINDOW)?;
    }
    let steps = check_range("steps", request.steps, 4, 1_000)?;
    let dir = run_dir(runs_dir, &request.run)?;
    let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    let source = GaussianSource::of(&flow.config.data.source)
        .map_err(|e| ApiError::invalid("run", format!("run {}: {e}", request.run)))?;
    let internal = |e: ferroflow_models::ModelError| ApiError::Internal(e.to_string());
    // The state (x, y, ln rho) in f64; the network sees f32.
    let derivative = |t: f64, state: [f64; 3]| -> Result<[f64; 3], ApiError> {
        let x = tensor_of(&[[state[0], state[1]]]).to_device(flow.device());
        let (velocity, divergence) =
            divergence_exact(|x| flow.velocity_with_grad(x, t), &x, false).map_err(internal)?;
        let velocity = flat(&velocity);
        let divergence = flat(&divergence);
        Ok([
            f64::from(velocity[0]),
            f64::from(velocity[1]),
            -f64::from(divergence[0]),
        ])
    };
    let [x, y] = request.start;
    let start_tensor = Tensor::from_slice(&[x, y]).view([1, 2]);
    let log_density_start = Vec::<f64>::try_from(&source.log_density(&start_tensor)).unwrap_or_default();
    let mut state = [x, y, log_density_start.first().copied().unwrap_or(f64::NAN)];
    let dt = 1.0 / steps as f64;
    let mut out = RunTrajectory {
        t: Vec::with_capacity(steps + 1),
        points: Vec::with_capacity(2 * steps + 2),
        log_density: Vec::with_capacity(steps + 1),
        divergence: Vec::with_capacity(steps + 1),
        log_density_backward: f64::NAN,
    };
    for step in 0..=steps {
        let t = step as f64 * dt;
        let k1 = derivative(t, state)?;
        out.t.push(t);
        out.points.extend([state[0], state[1]]);
        out.log_density.push(state[2]);
        out.divergence.push(-k1[2]);
        if step == steps {
            break;
        }
        let shifted = |k: [f64; 3], h: f64| [state[0] + h * k[0], state[1] + h * k[1], state[2] + h * k[2]];
        let k2 = derivative(t + 0.5 * dt, shifted(k1, 0.5 * dt))?;
        let k3 = derivative(t + 0.5 * dt, shifted(k2, 0.5 * dt))?;
        let k4 = derivative(t + dt, shifted(k3, dt))?;
        for axis in 0..3 {
            state[axis] += dt / 6.0 * (k1[axis] + 2.0 * k2[axis] + 2.0 * k3[axis] + k4[axis]);
        }
    }
    if !state.iter().all(|v| v.is_finite()) {
        return Err(ApiError::Internal(
            "the trajectory left the finite numbers".into(),
        ));
    }
    let end = tensor_of(&[[state[0], state[1]]]);
    let backward = log_likelihood_with(
        &flow,
        &end,
        &LikelihoodSettings::new(DivergenceEstimator::Exact, 0),
        &OdeOptions::fixed(Method::Rk4, steps),
    )
    .map_err(|e| likelihood_error(&request.run, e))?;
    out.log_density_backward = backward.log_density[0];
    Ok(out)
}

/// A request for a trained run's learned density `ln rho_t` over time on a grid.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDensityFramesRequest {
    /// The run's name under the runs folder.
    pub run: String,
    /// Cells per side of the window, 2..=48.
    pub grid: i64,
    /// Frames over [0, 1], 2..=21.
    pub frames: i64,
    /// Midpoint steps of a backward solve over the whole of [0, 1] (a frame at `t` takes `t` of them,
    /// at least 2), 2..=200.
    pub steps: i64,
}

/// `ln rho_t` of a trained run at the cell centres of a grid, per frame time.
#[derive(Clone, Debug, Serialize)]
pub struct RunDensityFrames {
    /// The run.
    pub run: String,
    /// Frame times.
    pub t: Vec<f64>,
    /// Cells per side.
    pub grid: usize,
    /// Per frame, `ln rho_t` at the cell centres `[grid^2]`, rows from the bottom.
    pub log_density: Vec<Vec<f32>>,
    /// Per frame, the probability mass inside the window.
    pub mass: Vec<f64>,
    /// Milliseconds the server spent.
    pub compute_ms: f64,
}

/// The learned density at time `t` of the points `x` (`[n, 2]`, f32): traced back from `t` to 0 by `steps`
/// midpoint steps of `(x, ln rho)` with the exact divergence,
/// `ln rho_t(x) = ln rho_0(x_0) - int_0^t div v_theta(x_s, s) ds`. At `t = 1` this is the engine's likelihood
/// (tested against it); at `t = 0` the source's density.
pub fn run_log_density_at(
    flow: &TrainedFlow,
    source: &GaussianSource,
    x: &Tensor,
    t: f64,
    steps: usize,
) -> Result<Tensor, ApiError> {
    let internal = |e: ferroflow_models::ModelError| ApiError::Internal(e.to_string());
    let field = |x: &Tensor, s: f64| -> Result<(Tensor, Tensor), ApiError> {
        let (velocity, divergence) =
            divergence_exact(|x| flow.velocity_with_grad(x, s), x, false).map_err(internal)?;
        Ok((velocity.detach(), divergence.detach().to_kind(Kind::Double)))
    };
    let mut x = x.shallow_clone();
    // `integral` accumulates int_t^s div v ds as s runs from t down to 0, that is -int_0^t.
    let mut integral = Tensor::zeros([x.size()[0]], (Kind::Double, x.device()));
    if t > 0.0 {
        let h = -t / steps as f64;
        for step in 0..steps {
            let s = t + step as f64 * h;
            let (k1, _) = field(&x, s)?;
            let middle = &x + &k1 * (0.5 * h);
            let (k2, d2) = field(&middle, s + 0.5 * h)?;
            x = &x + k2 * h;
            integral += d2 * h;
        }
    }
    let log_density = source.log_density(&x.to_kind(Kind::Double).to_device(tch::Device::Cpu))
        + integral.to_device(tch::Device::Cpu);
    Ok(log_density)
}

/// Computes a trained run's learned `ln rho_t` frames on a grid.
pub fn run_density_frames(
    runs_dir: &Path,
    request: &RunDensityFramesRequest,
) -> Result<RunDensityFrames, ApiError> {
    let started = Instant::now();
    let grid = check_range("grid", request.grid, 2, 48)?;
    let frames = check_range("frames", request.frames, 2, 21)?;
    let steps = check_range("steps", request.steps, 2, 200)?;
    let dir = run_dir(runs_dir, &request.run)?;
    let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    let source = GaussianSource::of(&flow.config.data.source)
        .map_err(|e| ApiError::invalid("run", format!("run {}: {e}", request.run)))?;
    let points = tensor_of(&grid_points(grid)).to_device(flow.device());
    let times = frame_times(frames);
    let cell = 2.0 * WINDOW / grid as f64;
    let mut out = RunDensityFrames {
        run: request.run.clone(),
        t: times.clone(),
        grid,
        log_density: Vec::with_capacity(frames),
        mass: Vec::with_capacity(frames),
        compute_ms: 0.0,
    };
    for &t in &times {
        let frame_steps = ((t * steps as f64).ceil() as usize).max(2);
        let values = Vec::<f64>::try_from(&run_log_density_at(&flow, &source, &points, t, frame_steps)?)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if values.iter().any(|v| v.is_nan()) {
            return Err(ApiError::Internal(format!(
                "run {}: the learned density at t = {t} is not finite",
                request.run
            )));
        }
        out.mass
            .push(values.iter().map(|l| l.exp()).sum::<f64>() * cell * cell);
        out.log_density
            .push(values.iter().map(|&l| l.max(-1e4) as f32).collect());
    }
    out.compute_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}
