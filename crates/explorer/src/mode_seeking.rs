//! The mode-seeking panel: divergence-based guidance `v + lambda(t) g`, `g = grad_x [-div v]`, on the
//! closed-form marginal field of a target (the guidance crate's [`MixtureVelocity`], free of training error)
//! or on a trained run's `v_theta`, through the guidance crate's [`ModeSeekingField`] and estimators.
//!
//! One request gives: plain and guided samples from the same source points and sampler (Euler or midpoint);
//! at one time `t`, the exact `div v` and `g` on a grid; the spread of Hutchinson's `K`-probe estimate of
//! `div v` over independent repeats at each grid cell, next to its closed form (for a probe `e` with
//! `E[e e^T] = I`, `Var[e^T J e] = 2 sum_{i != j} S_ij^2` for Rademacher probes and `2 sum_ij S_ij^2` for
//! Gaussian ones, `S = (J + J^T) / 2`, so the `K`-probe mean has that variance over `K`); and the measured
//! time of one guided field evaluation with each estimator on the sample batch.

use std::path::Path;
use std::time::Instant;

use ferroflow_engine::sample::{TrainedFlow, integrate_unit_interval};
use ferroflow_guidance::{
    DivergenceEstimator, GuidanceError, MixtureVelocity, ModeSeeking, ModeSeekingField, Normalize,
    ProbeDistribution, Schedule, divergence_gradient_exact, divergence_gradient_hutchinson,
};
use ferroflow_models::autograd::{divergence_hutchinson, vjp};
use ferroflow_paths::ConditionalPath;
use ferroflow_solvers::{Method, OdeOptions, SolverError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{ApiError, check_range, check_real};
use crate::runs::{run_dir, run_source};
use crate::views::{
    FieldSource, Marginal, PathSpec, T_MAX, TargetSpec, WINDOW, field_source, grid_points, source_points,
};

/// The samplers the page offers.
pub const SAMPLERS: [&str; 2] = ["euler", "midpoint"];
/// The guidance schedules the page offers.
pub const SCHEDULES: [&str; 3] = ["constant", "window", "decay"];
/// The largest guidance strength accepted.
pub const MAX_LAMBDA: f64 = 10.0;
/// The most Hutchinson probes accepted.
pub const MAX_PROBES: usize = 64;
/// Rows times mixture components per batch of Hutchinson's repeats (a drawn target has up to 2,000
/// components and the repeats up to 256 x 48^2 rows, so they are estimated in batches).
pub const ROW_BUDGET: usize = 1 << 20;
/// Times each estimator is timed; the median is reported.
pub const TIMING_REPEATS: usize = 5;

/// A request for the mode-seeking views. The field is either closed-form (`target` and `path`) or a trained
/// run (`run`), never both.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSeekingRequest {
    /// The target of a closed-form field.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// The path of a closed-form field.
    #[serde(default)]
    pub path: Option<PathSpec>,
    /// A trained run, by name under the runs folder.
    #[serde(default)]
    pub run: Option<String>,
    /// The guidance strength, in `[0, MAX_LAMBDA]` (0 gives the plain samples bit for bit).
    pub lambda: f64,
    /// `exact` or `hutchinson`.
    pub estimator: String,
    /// Hutchinson's probes `K`, 1..=[`MAX_PROBES`]: the guidance's when `estimator` is `hutchinson`, and the
    /// spread and timing figures' in every case.
    pub probes: i64,
    /// `rademacher` (default) or `gaussian` probes.
    #[serde(default = "default_distribution")]
    pub distribution: String,
    /// One of [`SCHEDULES`] (default `constant`).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Start of a `window` schedule, in `[0, 1]` (default 0).
    #[serde(default)]
    pub t_start: f64,
    /// End of a `window` schedule, in `[t_start, 1]` (default 1).
    #[serde(default = "one")]
    pub t_end: f64,
    /// Exponent of a `decay` schedule `(1 - t)^power`, in `[0, 10]` (default 1).
    #[serde(default = "one")]
    pub power: f64,
    /// `g` clipped to at most `clip |v|` per sample when given (in `(0, 100]`); unclipped when absent.
    #[serde(default)]
    pub clip: Option<f64>,
    /// One of [`SAMPLERS`].
    pub sampler: String,
    /// Sampler steps over [0, 1], 1..=200.
    pub steps: i64,
    /// Samples, 1..=2000.
    pub n_particles: i64,
    /// Cells per side of the divergence map, 2..=48.
    pub grid: i64,
    /// The time of the divergence map, the arrows and the spread, in `[0, 1]`.
    pub t: f64,
    /// Independent repeats of the `K`-probe estimate per cell, 2..=256.
    pub repeats: i64,
    /// Seed of the samples, the probes and a kernel density estimate's samples.
    #[serde(default)]
    pub seed: u64,
}

fn default_distribution() -> String {
    "rademacher".into()
}
fn default_schedule() -> String {
    "constant".into()
}
fn one() -> f64 {
    1.0
}

/// The mode-seeking views.
#[derive(Clone, Debug, Serialize)]
pub struct ModeSeekingView {
    /// Half width of the window.
    pub window: f64,
    /// What was guided: the closed-form field's target, or `run NAME`.
    pub field: String,
    /// Plain samples at t = 1 `[n * 2]`.
    pub plain: Vec<f64>,
    /// Guided samples at t = 1 from the same source points `[n * 2]`.
    pub guided: Vec<f64>,
    /// Whether every guided sample equals its plain sample bit for bit.
    pub identical: bool,
    /// The time of the maps (clamped to the field's regular times for closed forms).
    pub t: f64,
    /// Cells per side of the maps.
    pub grid: usize,
    /// Exact `div v(x, t)` at the cell centres `[grid^2]`, rows from the bottom.
    pub divergence: Vec<f64>,
    /// Exact `g = grad_x [-div v]` at the cell centres `[grid^2 * 2]`.
    pub gradient: Vec<f64>,
    /// Per cell, the mean over `repeats` of Hutchinson's `K`-probe estimate of `div v`.
    pub hutchinson_mean: Vec<f64>,
    /// Per cell, the standard deviation of the `K`-probe estimate over the repeats.
    pub hutchinson_std: Vec<f64>,
    /// Per cell, the closed-form standard deviation of the `K`-probe estimate (from the exact Jacobian).
    pub hutchinson_std_theory: Vec<f64>,
    /// Spread summary.
    pub spread: Spread,
    /// Measured costs.
    pub timing: Timing,
    /// Field evaluations of the guided solve that computed `g` (those with `lambda(t) > 0`).
    pub guided_evals: usize,
    /// Milliseconds the server spent on the whole request.
    pub compute_ms: f64,
}

/// Hutchinson's spread over the grid.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    /// Probes per estimate.
    pub probes: usize,
    /// Repeats per cell.
    pub repeats: usize,
    /// `rademacher` or `gaussian`.
    pub distribution: String,
    /// Mean over cells of the measured standard deviation.
    pub mean_std: f64,
    /// Mean over cells of the closed-form standard deviation.
    pub mean_std_theory: f64,
    /// Mean over cells of `|mean of the repeats - exact|`.
    pub mean_abs_error: f64,
    /// Mean over cells of `|exact div v|`, for scale.
    pub mean_abs_divergence: f64,
}

/// Measured milliseconds on the sample batch (median of [`TIMING_REPEATS`]).
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// Samples in the batch.
    pub batch: usize,
    /// Hutchinson probes timed.
    pub probes: usize,
    /// One plain velocity evaluation (no graph).
    pub plain_eval_ms: f64,
    /// One evaluation of `v` and `g` with the exact estimator (`D + 1` backward passes).
    pub exact_eval_ms: f64,
    /// One evaluation of `v` and `g` with Hutchinson's estimator (`K + 1` backward passes).
    pub hutchinson_eval_ms: f64,
    /// Field evaluations per sampler step (1 for Euler, 2 for midpoint).
    pub evals_per_step: usize,
    /// One guided sampler step with the exact estimator.
    pub exact_step_ms: f64,
    /// One guided sampler step with Hutchinson's estimator.
    pub hutchinson_step_ms: f64,
    /// The whole plain solve.
    pub plain_solve_ms: f64,
    /// The whole guided solve with the chosen estimator.
    pub guided_solve_ms: f64,
}

/// The velocity being guided: a closed form in f64 or a network in f32, both recording the autograd graph.
enum Velocity {
    Closed {
        field: MixtureVelocity<Box<dyn ConditionalPath + Send + Sync>>,
        t_min: f64,
        name: String,
        /// Components of the mixture: a batch's intermediates grow with rows times components.
        n_components: usize,
    },
    Run {
        flow: Box<TrainedFlow>,
        name: String,
    },
}

impl Velocity {
    fn of(runs_dir: &Path, request: &ModeSeekingRequest) -> Result<Self, ApiError> {
        match field_source(&request.run, &request.target, &request.path)? {
            FieldSource::Run(run) => {
                let dir = run_dir(runs_dir, run)?;
                let flow = TrainedFlow::load(&dir).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
                Ok(Velocity::Run {
                    flow: Box::new(flow),
                    name: format!("run {run}"),
                })
            }
            FieldSource::Closed(target, path) => {
                let marginal = Marginal::new(target, path, request.seed)?;
                let (mixture, _) = target.mixture("target", request.seed)?;
                let field = path.mixture_velocity(&mixture)?;
                Ok(Velocity::Closed {
                    field,
                    t_min: marginal.t_min,
                    name: target.kind.clone(),
                    n_components: mixture.n_components(),
                })
            }
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Velocity::Closed { .. } => Kind::Double,
            Velocity::Run { .. } => Kind::Float,
        }
    }

    fn device(&self) -> Device {
        match self {
            Velocity::Closed { .. } => Device::Cpu,
            Velocity::Run { flow, .. } => flow.device(),
        }
    }

    /// Rows per batch that keep a batch's intermediates near [`ROW_BUDGET`] entries.
    fn rows_per_batch(&self) -> usize {
        match self {
            Velocity::Closed { n_components, .. } => (ROW_BUDGET / (*n_components).max(1)).max(1),
            Velocity::Run { .. } => ROW_BUDGET,
        }
    }

    fn name(&self) -> &str {
        match self {
            Velocity::Closed { name, .. } | Velocity::Run { name, .. } => name,
        }
    }

    /// The time the field is evaluated at for `t`: closed forms are singular at the ends of some paths.
    fn regular_time(&self, t: f64) -> f64 {
        match self {
            Velocity::Closed { t_min, .. } => t.clamp(*t_min, T_MAX),
            Velocity::Run { .. } => t,
        }
    }

    /// `v(x, t)`, recording the autograd graph. The closed form only refuses a time with `sigma_t = 0` or a
    /// badly shaped `x`, neither of which happens at regular times on `[n, 2]` batches; were it to, the
    /// answer is NaN, which [`finite`] turns into an error.
    fn eval(&self, x: &Tensor, t: f64) -> Tensor {
        match self {
            Velocity::Closed { field, .. } => field
                .velocity(x, self.regular_time(t))
                .unwrap_or_else(|_| x.full_like(f64::NAN)),
            Velocity::Run { flow, .. } => flow.velocity_with_grad(x, t),
        }
    }
}

fn points_tensor(points: &[[f64; 2]], kind: Kind, device: Device) -> Tensor {
    let flat: Vec<f64> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
    Tensor::from_slice(&flat)
        .view([points.len() as i64, 2])
        .to_kind(kind)
        .to_device(device)
}

fn to_f64(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &tensor
            .detach()
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .contiguous()
            .view([-1]),
    )
    .unwrap_or_default()
}

fn finite(what: &str, values: Vec<f64>) -> Result<Vec<f64>, ApiError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(ApiError::Internal(format!(
            "{what} is not finite (the field blew up; lower lambda or clip g)"
        )))
    }
}

fn guidance_error(error: GuidanceError) -> ApiError {
    match error {
        GuidanceError::InvalidConfig { key, detail } => {
            // The page's flat fields: `schedule.t_start` is `t_start`, `estimator.probes` is `probes`, ...
            let field = key.rsplit('.').next().unwrap_or(key);
            ApiError::invalid(field, detail)
        }
        other => ApiError::Internal(other.to_string()),
    }
}

fn solver_error(error: SolverError) -> ApiError {
    ApiError::Internal(error.to_string())
}

fn median_ms(mut work: impl FnMut() -> Result<(), ApiError>) -> Result<f64, ApiError> {
    let mut times = Vec::with_capacity(TIMING_REPEATS);
    for _ in 0..TIMING_REPEATS {
        let started = Instant::now();
        work()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[TIMING_REPEATS / 2])
}

impl ModeSeekingRequest {
    /// The guidance crate's settings of this request, validated.
    pub fn settings(&self) -> Result<ModeSeeking, ApiError> {
        let lambda = check_real("lambda", self.lambda, 0.0, MAX_LAMBDA)?;
        let probes = check_range("probes", self.probes, 1, MAX_PROBES as i64)?;
        let distribution = match self.distribution.as_str() {
            "rademacher" => ProbeDistribution::Rademacher,
            "gaussian" => ProbeDistribution::Gaussian,
            other => {
                return Err(ApiError::invalid(
                    "distribution",
                    format!("unknown probe distribution `{other}`; allowed: rademacher, gaussian"),
                ));
            }
        };
        let estimator = match self.estimator.as_str() {
            "exact" => DivergenceEstimator::Exact,
            "hutchinson" => DivergenceEstimator::Hutchinson { probes, distribution },
            other => {
                return Err(ApiError::invalid(
                    "estimator",
                    format!("unknown estimator `{other}`; allowed: exact, hutchinson"),
                ));
            }
        };
        let schedule = match self.schedule.as_str() {
            "constant" => Schedule::Constant,
            "window" => Schedule::Window {
                t_start: check_real("t_start", self.t_start, 0.0, 1.0)?,
                t_end: check_real("t_end", self.t_end, 0.0, 1.0)?,
            },
            "decay" => Schedule::Decay {
                power: check_real("power", self.power, 0.0, 10.0)?,
            },
            other => {
                return Err(ApiError::invalid(
                    "schedule",
                    format!("unknown schedule `{other}`; allowed: {}", SCHEDULES.join(", ")),
                ));
            }
        };
        let normalize = match self.clip {
            None => Normalize::None,
            Some(scale) => Normalize::Clip {
                scale: check_real("clip", scale, 1e-6, 100.0)?,
            },
        };
        let settings = ModeSeeking {
            lambda,
            estimator,
            schedule,
            normalize,
            seed: self.seed,
        };
        settings.validate().map_err(guidance_error)?;
        Ok(settings)
    }
}

/// The sampler of a name in [`SAMPLERS`].
pub fn sampler(field: &str, name: &str) -> Result<Method, ApiError> {
    match name {
        "euler" => Ok(Method::Euler),
        "midpoint" => Ok(Method::Midpoint),
        other => Err(ApiError::invalid(
            field,
            format!("unknown sampler `{other}`; allowed: {}", SAMPLERS.join(", ")),
        )),
    }
}

/// Computes the mode-seeking views of `request`; a run is looked up by name under `runs_dir`.
pub fn mode_seeking(runs_dir: &Path, request: &ModeSeekingRequest) -> Result<ModeSeekingView, ApiError> {
    let started = Instant::now();
    let settings = request.settings()?;
    let probes = check_range("probes", request.probes, 1, MAX_PROBES as i64)?;
    let method = sampler("sampler", &request.sampler)?;
    let steps = check_range("steps", request.steps, 1, 200)?;
    let n_particles = check_range("n_particles", request.n_particles, 1, 2_000)?;
    let grid = check_range("grid", request.grid, 2, 48)?;
    let repeats = check_range("repeats", request.repeats, 2, 256)?;
    let t_map = check_real("t", request.t, 0.0, 1.0)?;
    let source = Velocity::of(runs_dir, request)?;
    // The exact gradient and the solves take whole batches: bound their rows times components.
    let max_rows = 4 * source.rows_per_batch();
    for (field, rows) in [("n_particles", n_particles), ("grid", grid * grid)] {
        if rows > max_rows {
            return Err(ApiError::invalid(
                field,
                format!("{rows} points is too many for this target's components; at most {max_rows}"),
            ));
        }
    }
    let (kind, device) = (source.kind(), source.device());
    let t_map = source.regular_time(t_map);
    let velocity = |x: &Tensor, t: f64| source.eval(x, t);
    let options = OdeOptions::fixed(method, steps);

    // Plain and guided samples from the same source points.
    let x0 = match &source {
        Velocity::Run { flow, .. } => run_source(flow, n_particles, request.seed),
        Velocity::Closed { .. } => points_tensor(&source_points(n_particles, request.seed), kind, device),
    };
    let solving = Instant::now();
    let mut plain_field =
        |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(tch::no_grad(|| velocity(x, t))) };
    let plain = integrate_unit_interval(&mut plain_field, x0.shallow_clone(), &options, None)
        .map_err(solver_error)?
        .state;
    let plain_solve_ms = solving.elapsed().as_secs_f64() * 1e3;
    let solving = Instant::now();
    let mut guided_field = ModeSeekingField::new(&velocity, settings.clone()).map_err(guidance_error)?;
    let guided = integrate_unit_interval(&mut guided_field, x0.shallow_clone(), &options, None)
        .map_err(solver_error)?
        .state;
    let guided_solve_ms = solving.elapsed().as_secs_f64() * 1e3;
    let identical = plain.equal(&guided);
    let plain = finite("the plain samples", to_f64(&plain))?;
    let guided = finite("the guided samples", to_f64(&guided))?;

    // The exact divergence and its gradient on the grid.
    let grid_x = points_tensor(&grid_points(grid), kind, device);
    let exact = divergence_gradient_exact(|x| velocity(x, t_map), &grid_x).map_err(guidance_error)?;
    let divergence = finite("div v", to_f64(&exact.divergence))?;
    let gradient = finite("g", to_f64(&exact.gradient))?;

    // The exact Jacobian (two vector-Jacobian products) for the closed-form spread.
    let leaf = grid_x.detach().set_requires_grad(true);
    let v = tch::with_grad(|| velocity(&leaf, t_map));
    let row = |axis: i64| -> Result<Vec<f64>, ApiError> {
        let cotangent = tch::no_grad(|| {
            let c = v.zeros_like();
            let _ = c.narrow(1, axis, 1).fill_(1.0);
            c
        });
        vjp(&v, &leaf, &cotangent, false)
            .map(|r| to_f64(&r))
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let (row0, row1) = (row(0)?, row(1)?);
    let distribution = match settings.estimator {
        DivergenceEstimator::Hutchinson { distribution, .. } => distribution,
        DivergenceEstimator::Exact => match request.distribution.as_str() {
            "gaussian" => ProbeDistribution::Gaussian,
            _ => ProbeDistribution::Rademacher,
        },
    };
    let n_cells = grid * grid;
    let hutchinson_std_theory: Vec<f64> = (0..n_cells)
        .map(|cell| {
            // S = (J + J^T) / 2 with J = [[row0], [row1]] of this cell.
            let (j00, j01) = (row0[2 * cell], row0[2 * cell + 1]);
            let (j10, j11) = (row1[2 * cell], row1[2 * cell + 1]);
            let off = 0.5 * (j01 + j10);
            let variance = match distribution {
                ProbeDistribution::Rademacher => 2.0 * 2.0 * off * off,
                ProbeDistribution::Gaussian => 2.0 * (j00 * j00 + j11 * j11 + 2.0 * off * off),
            };
            (variance / probes as f64).sqrt()
        })
        .collect();

    // Hutchinson's estimate, `repeats` independent K-probe estimates per cell, as many repeats per batch as
    // the row budget allows.
    let mut rng = ChaCha8Rng::seed_from_u64(request.seed.wrapping_add(0x5EED));
    let repeats_per_batch = (source.rows_per_batch() / n_cells).clamp(1, repeats);
    let mut estimates = Vec::with_capacity(repeats * n_cells);
    let mut done = 0;
    while done < repeats {
        let batch = repeats_per_batch.min(repeats - done);
        let repeated = grid_x.repeat([batch as i64, 1]);
        let probe_draw = distribution.draw(probes, &repeated, &mut rng);
        let (_, batch_estimates) =
            divergence_hutchinson(|x| velocity(x, t_map), &repeated, &probe_draw, false)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        estimates.extend(to_f64(&batch_estimates));
        done += batch;
    }
    let estimates = finite("Hutchinson's estimate", estimates)?;
    let mut hutchinson_mean = vec![0.0; n_cells];
    let mut hutchinson_std = vec![0.0; n_cells];
    for cell in 0..n_cells {
        let values = (0..repeats).map(|r| estimates[r * n_cells + cell]);
        let mean = values.clone().sum::<f64>() / repeats as f64;
        let variance = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / (repeats - 1) as f64;
        hutchinson_mean[cell] = mean;
        hutchinson_std[cell] = variance.sqrt();
    }
    let mean_of = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let abs_errors: Vec<f64> = hutchinson_mean
        .iter()
        .zip(&divergence)
        .map(|(m, e)| (m - e).abs())
        .collect();
    let abs_divergence: Vec<f64> = divergence.iter().map(|d| d.abs()).collect();
    let spread = Spread {
        probes,
        repeats,
        distribution: distribution.name().into(),
        mean_std: mean_of(&hutchinson_std),
        mean_std_theory: mean_of(&hutchinson_std_theory),
        mean_abs_error: mean_of(&abs_errors),
        mean_abs_divergence: mean_of(&abs_divergence),
    };

    // The cost of one guided evaluation with each estimator, on the sample batch at the map's time.
    let x_timing = x0.shallow_clone();
    let plain_eval_ms = median_ms(|| {
        let _ = tch::no_grad(|| velocity(&x_timing, t_map));
        Ok(())
    })?;
    let exact_eval_ms = median_ms(|| {
        divergence_gradient_exact(|x| velocity(x, t_map), &x_timing)
            .map(drop)
            .map_err(guidance_error)
    })?;
    let mut timing_rng = ChaCha8Rng::seed_from_u64(request.seed.wrapping_add(0x7123));
    let hutchinson_eval_ms = median_ms(|| {
        let probe_draw = distribution.draw(probes, &x_timing, &mut timing_rng);
        divergence_gradient_hutchinson(|x| velocity(x, t_map), &x_timing, &probe_draw)
            .map(drop)
            .map_err(guidance_error)
    })?;
    let evals_per_step = match method {
        Method::Euler => 1,
        _ => 2,
    };
    Ok(ModeSeekingView {
        window: WINDOW,
        field: source.name().to_string(),
        plain,
        guided,
        identical,
        t: t_map,
        grid,
        divergence,
        gradient,
        hutchinson_mean,
        hutchinson_std,
        hutchinson_std_theory,
        spread,
        timing: Timing {
            batch: n_particles,
            probes,
            plain_eval_ms,
            exact_eval_ms,
            hutchinson_eval_ms,
            evals_per_step,
            exact_step_ms: exact_eval_ms * evals_per_step as f64,
            hutchinson_step_ms: hutchinson_eval_ms * evals_per_step as f64,
            plain_solve_ms,
            guided_solve_ms,
        },
        guided_evals: guided_field.stats().guided_evals,
        compute_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
