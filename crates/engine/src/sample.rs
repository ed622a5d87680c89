//! Sampling a trained flow: the network's output turned into a velocity, integrated from t = 0 to 1 with
//! any method of the solvers crate on tensors.
//!
//! For an x1- or epsilon-predicting network on a path `x_t = a_t x0 + b_t x1` the velocity is
//! `v = a'_t x0_hat + b'_t x1_hat` with the missing endpoint solved from `x_t` (Lipman et al. 2024, section
//! 4.8.1). Those conversions are singular where `a_t` or `b_t` vanishes (t = 1 or t = 0), so they are
//! evaluated at t clamped to [1e-4, 1 - 1e-4].

use std::path::{Path, PathBuf};

use ferroflow_models::VelocityNet;
use ferroflow_paths::{ConditionalPath, Prediction};
use ferroflow_solvers::{
    Field, OdeOptions, Solution, SolverError, StepControl, solve, solve_with_trajectory,
};
use ndarray::{Array2, ArrayView2};
use tch::{Device, Kind, Tensor};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::manifold::{ManifoldMethod, ManifoldSpec};
use crate::stream::Stream;
use crate::threads::Threads;
use crate::train::{MODEL_FILE, build_model};

/// The smallest data weight `alpha_t` an epsilon-predicting network's `x1 = (x_t - sigma_t epsilon) / alpha_t`
/// divides by. Every path here starts at `alpha_0 = 0`, where that estimate is `0 / 0` (the network cannot
/// know `E[x1]` from pure noise) and near which it multiplies the network's error by `1 / alpha_t`: an
/// 8gaussians DDPM (epsilon on the variance-preserving path, 3,000 steps) sampled by the midpoint ODE ended
/// 17.2 from the nearest mode on average with the old floor (`t >= 1e-4`, `alpha >= 1.6e-4`), 0.95 with this
/// one (the target's own spread gives 0.71). The same floor as JiT's (Li and He 2025) for the analogous
/// x-prediction denominator `1 - t`; DDPM's own schedules stop at `alpha_T = sqrt(alpha-bar_T)`, about
/// 0.006. Below it the velocity is taken with `alpha_t` at the floor, so the ODE starts from the noise as
/// DDPM starts from `x_T`.
pub const EPSILON_ALPHA_FLOOR: f64 = 0.05;

fn epsilon_alpha(alpha: f64) -> f64 {
    alpha.max(EPSILON_ALPHA_FLOOR)
}

/// The affine map `v = a x + b out` from a network's output `out` at `(x, t)` to the velocity it stands for,
/// in a run whose network predicts `prediction` on `path`; `None` for the velocity itself. Through
/// `x_t = a_t x0 + b_t x1`, `v = a'_t x0 + b'_t x1` at `t` clamped to `[1e-4, 1 - 1e-4]`, with `b_t` at least
/// [`EPSILON_ALPHA_FLOOR`] for epsilon. Affine in `out`, so `div v = a dim + b div out`.
fn output_map(path: &dyn ConditionalPath, prediction: Prediction, t: f64) -> Option<(f64, f64)> {
    let c = path.coefficients(t.clamp(1e-4, 1.0 - 1e-4));
    match prediction {
        Prediction::Velocity => None,
        // x0_hat = (x - out c_t) / c_s, so v = x0_hat d_s + out d_t = x d_s / c_s + out (d_t - c_t d_s / c_s).
        Prediction::Target => Some((
            c.d_source / c.source,
            c.d_target - c.target * c.d_source / c.source,
        )),
        // x1_hat = (x - out c_s) / c_t, so v = out d_s + x1_hat d_t.
        _ => {
            let alpha = epsilon_alpha(c.target);
            Some((c.d_target / alpha, c.d_source - c.source * c.d_target / alpha))
        }
    }
}

/// The velocity that a network's output `out` at `(x, t)` stands for, in a run whose network predicts
/// `prediction` on `path` (`x` and `out` flat, `[n, dim]`): `out` itself for the velocity, else
/// [`output_map`]'s `a x + b out`. Every sampler of a run goes through it (and the explorer's live snapshots
/// of a training network).
pub fn output_velocity(
    path: &dyn ConditionalPath,
    prediction: Prediction,
    x: &Tensor,
    out: Tensor,
    t: f64,
) -> Tensor {
    match output_map(path, prediction, t) {
        None => out,
        Some((a, b)) => x * a + out * b,
    }
}

/// A trained run, loaded for sampling.
pub struct TrainedFlow {
    /// The resolved config of the run.
    pub config: RunConfig,
    /// The network with the sampling weights loaded.
    pub net: Box<dyn VelocityNet>,
    path: Box<dyn ConditionalPath + Send + Sync>,
    /// The run folder.
    pub run_dir: PathBuf,
    /// libtorch threads of sampling and likelihoods (by default chosen by the batch's size; a run's
    /// `run.threads` is its training setting).
    pub threads: Threads,
}

impl TrainedFlow {
    /// Loads `run_dir/config.toml` and `run_dir/model.safetensors`.
    pub fn load(run_dir: &Path) -> Result<Self, anyhow::Error> {
        let config_path = run_dir.join(crate::run::CONFIG_FILE);
        let config = RunConfig::load(&config_path)?;
        Self::from_config(config, run_dir)
    }

    /// Builds the flow of `config` with the weights in `run_dir/model.safetensors`.
    pub fn from_config(config: RunConfig, run_dir: &Path) -> Result<Self, anyhow::Error> {
        let net = build_model(&config)?;
        net.params()
            .load(&run_dir.join(MODEL_FILE))
            .map_err(TrainError::from)?;
        let path = config.flow.build_path()?;
        Ok(Self {
            config,
            net,
            path,
            run_dir: run_dir.to_path_buf(),
            threads: Threads::Auto,
        })
    }

    /// The run's conditional path (its Gaussian coefficients convert the network's output between
    /// parameterisations, and give DDPM's ancestral steps).
    pub fn path(&self) -> &(dyn ConditionalPath + Send + Sync) {
        self.path.as_ref()
    }

    /// Sets libtorch's threads for network evaluations on `batch` points, each `passes` forward passes' worth
    /// of arithmetic (1 for sampling, `1 + D` for an exact forward-mode divergence), as [`Self::threads`]
    /// says; returns the count.
    pub fn use_threads_for(&self, batch: usize, passes: usize) -> usize {
        self.threads
            .apply(self.net.flops_per_sample() * batch as f64 * passes as f64)
    }

    /// Dimension of a sample.
    pub fn dim(&self) -> usize {
        self.config.data.target.dim()
    }

    /// The number of coordinates a density of this run is taken over: the manifold's intrinsic dimension (2
    /// on S^2, where samples have 3 ambient coordinates), else the sample dimension. `None` only if the run's
    /// manifold cannot be built (a config that was validated always can).
    pub fn intrinsic_dim(&self) -> Option<usize> {
        match &self.config.data.manifold {
            Some(manifold) => manifold.build().ok().map(|m| m.intrinsic_dim()),
            None => Some(self.dim()),
        }
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.net.params().device()
    }

    /// The learned velocity field at time `t` for a batch `x` (no gradient is recorded). An MLP predicting
    /// the velocity of `f32` points on the CPU runs through its fused kernel
    /// ([`ferroflow_models::mlp_kernel`]) on libtorch's current thread count.
    pub fn velocity(&self, x: &Tensor, t: f64) -> Tensor {
        if let Some(kernel) = self.kernel_for(x) {
            let points = flat_f32(x);
            let mut out = vec![0.0f32; points.len()];
            kernel.velocity(
                &points,
                t as f32,
                &mut out,
                tch::get_num_threads().max(1) as usize,
            );
            return Tensor::from_slice(&out).view(x.size().as_slice());
        }
        tch::no_grad(|| self.velocity_with_grad(x, t))
    }

    /// The fused kernel for a batch `x`, where it applies: the network has one, predicts the velocity, is
    /// unconditional and off manifolds, and `x` is `[n, dim]` `f32` on the CPU.
    pub(crate) fn kernel_for(&self, x: &Tensor) -> Option<ferroflow_models::mlp_kernel::MlpKernel> {
        let applies = self.config.flow.prediction == Prediction::Velocity
            && self.config.data.manifold.is_none()
            && self.net.num_classes().is_none()
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && x.dim() == 2
            && x.size()[1] == self.dim() as i64;
        if !applies {
            return None;
        }
        self.net.cpu_kernel(&self.net.params().views())
    }

    /// The learned velocity, recording the autograd graph (for divergences and guidance).
    pub fn velocity_with_grad(&self, x: &Tensor, t: f64) -> Tensor {
        self.velocity_labelled(x, t, None)
    }

    /// The learned velocity for a flat batch `x` (`[n, dim]`) given class labels (`[n]`, or `None` for the
    /// unconditional field of a class-conditional network), recording the autograd graph.
    pub fn velocity_labelled(&self, x: &Tensor, t: f64, labels: Option<&Tensor>) -> Tensor {
        let times = Tensor::from_slice(&[t as f32]).to_device(x.device());
        let batch = x.size()[0];
        let shape: Vec<i64> = std::iter::once(batch).chain(self.net.sample_shape()).collect();
        let out = self
            .net
            .forward_with(
                &self.net.params().views(),
                &x.view(shape.as_slice()),
                &times,
                labels,
            )
            .view([batch, -1]);
        output_velocity(self.path.as_ref(), self.config.flow.prediction, x, out, t)
    }

    /// The learned velocity and its divergence at `(x, t)` in forward mode, without autograd, when the network
    /// has one (see [`VelocityNet::divergence_forward`]; `None`: use autograd). `probes` as there: `None` for
    /// the exact divergence, `[K, n, dim]` for Hutchinson's. A network predicting the target or the source
    /// gives the velocity `v = a x + b out` (affine in its output), so `div v = a dim + b div out`.
    pub fn divergence_forward(
        &self,
        x: &Tensor,
        t: f64,
        probes: Option<&Tensor>,
    ) -> Option<(Tensor, Tensor)> {
        if self.config.data.manifold.is_some() || self.net.num_classes().is_some() {
            return None;
        }
        if let Some(kernel) = self.kernel_for(x)
            && probes.is_none_or(|p| p.device() == Device::Cpu)
        {
            let points = flat_f32(x);
            let probes = probes.map(flat_f32);
            let mut out = vec![0.0f32; points.len()];
            let mut divergence = vec![0.0f32; x.size()[0] as usize];
            kernel.velocity_divergence(
                &points,
                t as f32,
                probes.as_deref(),
                &mut out,
                &mut divergence,
                tch::get_num_threads().max(1) as usize,
            );
            return Some((
                Tensor::from_slice(&out).view(x.size().as_slice()),
                Tensor::from_slice(&divergence),
            ));
        }
        let times = Tensor::from_slice(&[t as f32]).to_device(x.device());
        let params = self.net.params().views();
        let (out, divergence) =
            self.net
                .divergence_forward(&params, x, &times, probes, FORWARD_MODE_MAX_ELEMENTS)?;
        let Some((a, b)) = output_map(self.path.as_ref(), self.config.flow.prediction, t) else {
            return Some((out, divergence));
        };
        let dim = x.size()[1] as f64;
        Some(tch::no_grad(|| (x * a + out * b, divergence * b + a * dim)))
    }

    /// Draws `n_samples` source points from the run's random stream for `purpose`.
    pub fn source_points(&self, n_samples: usize, purpose: Stream) -> Tensor {
        let points = source_sample(&self.config, n_samples, purpose);
        Tensor::from_slice(&points)
            .view([n_samples as i64, self.dim() as i64])
            .to_device(self.device())
    }

    /// Integrates the learned ODE from t = 0 to 1 starting at `x0`; with `times`, also returns the states at
    /// those times.
    pub fn integrate(
        &self,
        x0: Tensor,
        options: &OdeOptions,
        times: Option<&[f64]>,
    ) -> Result<Solution<Tensor>, SolverError> {
        let rows = x0.size().first().copied().unwrap_or(0).clamp(0, CHUNK_ROWS);
        self.use_threads_for(rows as usize, 1);
        if let Some(manifold) = &self.config.data.manifold {
            return self.integrate_on_manifold(manifold, x0, options, times);
        }
        if times.is_none()
            && let Some(solution) = self.integrate_in_tiles(&x0, options)
        {
            return solution;
        }
        let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(self.velocity(x, t)) };
        integrate_unit_interval(&mut field, x0, options, times)
    }

    /// [`TrainedFlow::integrate`] without trajectory through the fused kernel's tile-by-tile solve, where
    /// the kernel applies and the method takes fixed steps and is not first-same-as-last: the same numbers
    /// as the step-by-step solve, without its per-step tensors and with one hand-out of the tiles to the
    /// threads for the whole solve. `None` where it does not apply.
    fn integrate_in_tiles(
        &self,
        x0: &Tensor,
        options: &OdeOptions,
    ) -> Option<Result<Solution<Tensor>, SolverError>> {
        let grid = TileGrid::of(options, 0.0, 1.0)?;
        let kernel = self.kernel_for(x0)?;
        let mut x = flat_f32(x0);
        let threads = tch::get_num_threads().max(1) as usize;
        Some(match kernel.integrate(&mut x, &grid.method(), threads) {
            Ok(()) => Ok(Solution {
                state: Tensor::from_slice(&x).view(x0.size().as_slice()),
                times: Vec::new(),
                trajectory: Vec::new(),
                stats: ferroflow_solvers::SolverStats {
                    steps: grid.steps(),
                    rejected_steps: 0,
                    field_evals: grid.field_evals(),
                },
            }),
            Err(bad) => Err(grid.error(bad)),
        })
    }

    /// The learned field on a manifold: the network's velocity projected onto the tangent space at `x`.
    pub fn tangent_velocity(&self, manifold: &ManifoldSpec, x: ArrayView2<f64>, t: f64) -> Array2<f64> {
        let points = from_array(x, self.device());
        let velocity = manifold.project_tangent(&points, &self.velocity(&points, t));
        to_array(&velocity).mapv(f64::from)
    }

    /// [`TrainedFlow::integrate`] on the run's manifold: Euler, midpoint or RK4 steps through the exp map
    /// (`ferroflow-manifolds`), `steps` of them over [0, 1] (spread over the segments between `times`).
    fn integrate_on_manifold(
        &self,
        spec: &ManifoldSpec,
        x0: Tensor,
        options: &OdeOptions,
        times: Option<&[f64]>,
    ) -> Result<Solution<Tensor>, SolverError> {
        let manifold = spec.build().map_err(|e| SolverError::field(0.0, e))?;
        let method = ManifoldMethod::of(options.method).ok_or_else(|| {
            SolverError::field(
                0.0,
                format!(
                    "{:?} has no manifold version: euler, midpoint, rk4",
                    options.method
                ),
            )
        })?;
        let StepControl::Fixed { n_steps } = options.control else {
            return Err(SolverError::field(
                0.0,
                "a manifold solve takes a fixed number of steps",
            ));
        };
        let mut field = |t: f64, x: ArrayView2<f64>| -> ferroflow_manifolds::Result<Array2<f64>> {
            Ok(self.tangent_velocity(spec, x, t))
        };
        let grid: Vec<f64> = times.map_or_else(|| vec![0.0, 1.0], <[f64]>::to_vec);
        let mut x = manifold
            .project_batch(to_array(&x0).mapv(f64::from).view())
            .map_err(|e| SolverError::field(0.0, e))?;
        let device = x0.device();
        let as_tensor = |x: &Array2<f64>| from_array(x.view(), device);
        let mut trajectory = times.map(|_| vec![as_tensor(&x)]).unwrap_or_default();
        let mut stats = ferroflow_solvers::SolverStats::default();
        for pair in grid.windows(2) {
            let (t0, t1) = (pair[0], pair[1]);
            let steps = ((n_steps as f64 * (t1 - t0).abs()).ceil() as usize).max(1);
            let solution =
                ferroflow_manifolds::solve(manifold.as_ref(), &mut field, method, x.view(), t0, t1, steps)
                    .map_err(|e| SolverError::field(t0, e))?;
            stats.steps += solution.steps;
            stats.field_evals += solution.field_evaluations;
            x = solution.x;
            if times.is_some() {
                trajectory.push(as_tensor(&x));
            }
        }
        Ok(Solution {
            state: as_tensor(&x),
            times: times.map(<[f64]>::to_vec).unwrap_or_default(),
            trajectory,
            stats,
        })
    }
}

/// The most points integrated at once: larger batches are integrated in chunks of this many rows, so the
/// network's activations stay bounded whatever the number of samples (each chunk is an independent solve;
/// an adaptive method picks its own steps per chunk).
pub const CHUNK_ROWS: i64 = 1 << 16;

/// The most floats the tangents of a forward-mode divergence may take (256 MiB); above it autograd, which
/// takes one backward pass per tangent, is used instead.
pub const FORWARD_MODE_MAX_ELEMENTS: i64 = 1 << 26;

/// Integrates `field` from t = 0 to 1 starting at `x0` (`[n, ...]`, in chunks of [`CHUNK_ROWS`] rows); with
/// `times`, also returns the states at those times. The stats add up the chunks' steps and evaluations.
pub fn integrate_unit_interval<F: Field<Tensor>>(
    field: &mut F,
    x0: Tensor,
    options: &OdeOptions,
    times: Option<&[f64]>,
) -> Result<Solution<Tensor>, SolverError> {
    let mut solve_chunk = |x0: Tensor| match times {
        Some(times) => solve_with_trajectory(field, x0, times, options),
        None => solve(field, x0, 0.0, 1.0, options),
    };
    let rows = x0.size().first().copied().unwrap_or(0);
    if rows <= CHUNK_ROWS {
        return solve_chunk(x0);
    }
    let mut parts = Vec::new();
    for chunk in x0.split(CHUNK_ROWS, 0) {
        parts.push(solve_chunk(chunk)?);
    }
    let states: Vec<&Tensor> = parts.iter().map(|p| &p.state).collect();
    let state = Tensor::cat(&states, 0);
    let trajectory = (0..parts[0].trajectory.len())
        .map(|k| Tensor::cat(&parts.iter().map(|p| &p.trajectory[k]).collect::<Vec<_>>(), 0))
        .collect();
    let mut stats = parts[0].stats;
    for part in &parts[1..] {
        stats.steps += part.stats.steps;
        stats.rejected_steps += part.stats.rejected_steps;
        stats.field_evals += part.stats.field_evals;
    }
    Ok(Solution {
        state,
        times: parts[0].times.clone(),
        trajectory,
        stats,
    })
}

/// A fixed-step method as the fused kernel's tile solves take it (not first-same-as-last): the solver's grid
/// from `t0` to `t1` and the tableau, shared by sampling and the likelihood so both step on the stepper's
/// times.
pub(crate) struct TileGrid {
    times: Vec<f64>,
    tableau: &'static ferroflow_solvers::ButcherTableau,
}

impl TileGrid {
    /// The grid of `options` from `t0` to `t1`; `None` for adaptive steps, no steps or an FSAL method.
    pub(crate) fn of(options: &OdeOptions, t0: f64, t1: f64) -> Option<Self> {
        let StepControl::Fixed { n_steps } = options.control else {
            return None;
        };
        let tableau = options.method.tableau();
        if tableau.fsal || n_steps == 0 {
            return None;
        }
        let times = (0..=n_steps)
            .map(|k| ferroflow_solvers::grid_time(t0, t1, k, n_steps))
            .collect();
        Some(TileGrid { times, tableau })
    }

    /// The method as the kernel reads it.
    pub(crate) fn method(&self) -> ferroflow_models::mlp_kernel::FixedSteps<'_> {
        ferroflow_models::mlp_kernel::FixedSteps {
            times: &self.times,
            c: self.tableau.c,
            a: self.tableau.a,
            b: self.tableau.b,
        }
    }

    /// Steps of one solve.
    pub(crate) fn steps(&self) -> usize {
        self.times.len() - 1
    }

    /// Field evaluations of one solve.
    pub(crate) fn field_evals(&self) -> usize {
        self.steps() * self.tableau.n_stages()
    }

    /// The stepper's error for a solve whose state stopped being finite.
    pub(crate) fn error(&self, bad: ferroflow_models::mlp_kernel::NonFinite) -> SolverError {
        SolverError::NonFiniteState {
            t_reached: self.times[bad.step],
            t_attempted: self.times[bad.step + 1],
        }
    }
}

/// The values of `tensor` as row-major `f32`.
pub(crate) fn flat_f32(tensor: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(tensor.detach().to_kind(Kind::Float).contiguous().view([-1]))
        .expect("a CPU float tensor converts to Vec<f32>")
}

/// The source points [`TrainedFlow::source_points`] starts from, row-major, drawn from the run's stream for
/// `purpose`.
pub fn source_sample(config: &RunConfig, n_samples: usize, purpose: Stream) -> Vec<f32> {
    config
        .data
        .source
        .sample(n_samples, &mut purpose.rng(config.run.seed))
}

/// `n_samples` fresh target samples from the run's [`Stream::EvalTarget`] (never seen in training), as an
/// `[n_samples, dim]` array.
pub fn reference_samples(config: &RunConfig, n_samples: usize) -> ndarray::Array2<f32> {
    let points = config
        .data
        .target
        .sample(n_samples, &mut Stream::EvalTarget.rng(config.run.seed));
    ndarray::Array2::from_shape_vec((n_samples, config.data.target.dim()), points)
        .expect("a data set draws n x dim coordinates")
}

/// Copies a `[n, d]` array of `f64` into an `f32` tensor on `device` (the inverse of [`to_array`]).
pub fn from_array(x: ArrayView2<f64>, device: Device) -> Tensor {
    Tensor::from_slice(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .view([x.nrows() as i64, x.ncols() as i64])
        .to_device(device)
}

/// Copies a `[n, d]` tensor into a row-major `f32` array.
pub fn to_array(tensor: &Tensor) -> ndarray::Array2<f32> {
    let size = tensor.size();
    let flat = tensor
        .to(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let data = Vec::<f32>::try_from(&flat).expect("a float tensor converts to Vec<f32>");
    ndarray::Array2::from_shape_vec(
        (size[0] as usize, size[1..].iter().product::<i64>() as usize),
        data,
    )
    .expect("shape matches the data")
}
