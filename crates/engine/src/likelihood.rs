//! Log-likelihood of points under a trained run: the continuous change of variables
//! `log p1(x) = log p0(x0) - int_0^1 div v(t, x(t)) dt`, integrated backwards from the data (t = 1) to the
//! source (t = 0) by the solvers crate, with the divergence from autograd (exact, or Hutchinson's estimator
//! with probes fixed for each solve), and bits per dimension.
//!
//! The source must be the Gaussian `N(0, s^2 I)` (any `s`: its log-density is evaluated exactly, in f64).
//! Points are processed in chunks (default [`DEFAULT_CHUNK_SIZE`]) so memory stays bounded for any number of
//! points; each chunk is one solve, so with an adaptive method every chunk gets its own steps.
//!
//! The core, [`log_likelihood_of_field`], works on any velocity closure `(x, t) -> v` that records the
//! autograd graph, so it is tested against closed-form flows through the same code path as networks.

use ferroflow_models::ModelError;
use ferroflow_models::autograd::{AutogradDivergence, DivergenceEstimator, ForwardModeFn, ProbeSchedule};
use ferroflow_solvers::{DataScaling, OdeOptions, SolverError, bits_per_dim};
use ndarray::Array1;
use tch::{Kind, Tensor};

use crate::data::Dataset;
use crate::sample::TrainedFlow;

/// Points per solve unless told otherwise: bounds the memory of the autograd graphs.
pub const DEFAULT_CHUNK_SIZE: usize = 2000;

/// Settings beyond the estimator and the ODE options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LikelihoodSettings {
    /// How the divergence is computed: exactly (one vector-Jacobian product per dimension at every field
    /// evaluation) or by Hutchinson's estimate, whose probes are fixed for each chunk's solve (so adaptive
    /// methods see a smooth ODE).
    pub estimator: DivergenceEstimator,
    /// Points per solve.
    pub chunk_size: usize,
    /// Seed of Hutchinson's probes (chunk `k` uses a stream derived from it and `k`).
    pub seed: u64,
}

impl LikelihoodSettings {
    /// `estimator` with the default chunk size and seed `seed`.
    pub fn new(estimator: DivergenceEstimator, seed: u64) -> Self {
        Self {
            estimator,
            chunk_size: DEFAULT_CHUNK_SIZE,
            seed,
        }
    }

    /// The seed of chunk `chunk_idx`'s probes: distinct and reproducible per chunk (an odd multiplier spreads
    /// the seeds).
    pub fn chunk_seed(&self, chunk_idx: usize) -> u64 {
        self.seed
            .wrapping_add((chunk_idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// Why a likelihood could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum LikelihoodError {
    /// The points do not fit the model.
    #[error(
        "data has shape {found:?}, but the run's model takes points of shape {expected:?} (n points of dimension {dim})"
    )]
    WrongShape {
        /// The shape of the data.
        found: Vec<i64>,
        /// The shape the model takes (`[n, dim]` with the data's `n`).
        expected: Vec<i64>,
        /// The model's dimension.
        dim: usize,
    },
    /// The run's source has no closed-form density here.
    #[error(
        "the run's source `{source_name}` has no closed-form log-density here; likelihoods need a Gaussian \
         source N(0, s^2 I) (key data.source)"
    )]
    UnsupportedSource {
        /// The source's name.
        source_name: String,
    },
    /// A setting is out of range.
    #[error("invalid likelihood setting `{key}`: {detail}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is allowed.
        detail: String,
    },
    /// The divergence field refused its input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The solve failed (non-finite state, step underflow, ...).
    #[error("likelihood solve of points {first}..{end} failed: {source}")]
    Solver {
        /// First point of the chunk.
        first: usize,
        /// One past its last point.
        end: usize,
        /// The solver's error.
        #[source]
        source: SolverError,
    },
}

/// The source `N(0, std^2 I)` of a flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianSource {
    /// Standard deviation of each coordinate.
    pub std: f64,
}

impl GaussianSource {
    /// The source of a run's config, refusing any that is not an isotropic centred Gaussian.
    pub fn of(source: &Dataset) -> Result<Self, LikelihoodError> {
        match source {
            Dataset::Gaussian { std, .. } => Ok(Self { std: *std }),
            other => Err(LikelihoodError::UnsupportedSource {
                source_name: other.name(),
            }),
        }
    }

    /// `log N(x; 0, std^2 I)` per sample, in f64: `-|x|^2 / (2 s^2) - D/2 ln(2 pi) - D ln s`.
    pub fn log_density(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let n_samples = x.size()[0];
            let flat = x.reshape([n_samples, -1]).to_kind(Kind::Double);
            let dim = flat.size()[1] as f64;
            let log_normaliser = 0.5 * dim * (2.0 * std::f64::consts::PI).ln() + dim * self.std.ln();
            flat.square()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
                * (-0.5 / (self.std * self.std))
                - log_normaliser
        })
    }
}

/// Per-sample log-densities and the cost of computing them.
#[derive(Clone, Debug, PartialEq)]
pub struct Likelihood {
    /// `log p1(x)` of each point, in input order.
    pub log_density: Array1<f64>,
    /// Accepted steps, summed over chunks.
    pub steps: usize,
    /// Field evaluations, summed over chunks.
    pub field_evals: usize,
}

impl Likelihood {
    /// The mean log-density.
    pub fn mean(&self) -> f64 {
        self.log_density.mean().unwrap_or(f64::NAN)
    }

    /// Bits per dimension of the mean log-density, for points of dimension `dim` scaled as `scaling`
    /// describes (for 8-bit images; [`DataScaling::Dequantized`] is the plain `-log p / (D ln 2)`).
    pub fn bits_per_dim(&self, dim: usize, scaling: DataScaling) -> f64 {
        bits_per_dim(self.mean(), dim, scaling)
    }
}

/// `log p1` of every row of `data` (`[n, D]`, any float kind, any device) under the trained `flow`, with the
/// divergence by `estimator` and the backward solve by `options`.
pub fn log_likelihood(
    flow: &TrainedFlow,
    data: &Tensor,
    estimator: DivergenceEstimator,
    options: &OdeOptions,
) -> Result<Likelihood, LikelihoodError> {
    log_likelihood_with(
        flow,
        data,
        &LikelihoodSettings::new(estimator, flow.config.run.seed),
        options,
    )
}

/// [`log_likelihood`] with every setting explicit.
pub fn log_likelihood_with(
    flow: &TrainedFlow,
    data: &Tensor,
    settings: &LikelihoodSettings,
    options: &OdeOptions,
) -> Result<Likelihood, LikelihoodError> {
    let dim = flow.dim();
    let size = data.size();
    if size.len() != 2 || size[1] != dim as i64 {
        return Err(LikelihoodError::WrongShape {
            expected: vec![size.first().copied().unwrap_or(0), dim as i64],
            found: size,
            dim,
        });
    }
    if size[0] == 0 {
        return Err(LikelihoodError::Setting {
            key: "data",
            detail: "no points: a likelihood needs at least one".into(),
        });
    }
    if let Some(manifold) = &flow.config.data.manifold {
        let method =
            crate::manifold::ManifoldMethod::of(options.method).ok_or_else(|| LikelihoodError::Setting {
                key: "solver",
                detail: "on a manifold: euler, midpoint or rk4".into(),
            })?;
        let ferroflow_solvers::StepControl::Fixed { n_steps } = options.control else {
            return Err(LikelihoodError::Setting {
                key: "solver",
                detail: "on a manifold the steps are fixed (euler, midpoint, rk4)".into(),
            });
        };
        let points = crate::sample::to_array(data).mapv(f64::from);
        let log_density = crate::manifold::log_likelihood_on_manifold(
            flow,
            manifold,
            points.view(),
            settings.estimator,
            n_steps,
            method,
            settings.seed,
        )
        .map_err(|detail| LikelihoodError::Setting { key: "data", detail })?;
        return Ok(Likelihood {
            log_density,
            steps: n_steps,
            field_evals: n_steps * 2 * method.stages(),
        });
    }
    let source = GaussianSource::of(&flow.config.data.source)?;
    let passes = match settings.estimator {
        DivergenceEstimator::Exact => 1 + dim,
        DivergenceEstimator::Hutchinson { probes, .. } => 1 + probes,
    };
    flow.use_threads_for(settings.chunk_size.min(size[0] as usize), passes);
    let data = data.to_kind(Kind::Float).to_device(flow.device());
    if let Some(result) = likelihood_in_tiles(flow, &data, source, settings, options) {
        return result;
    }
    // The forward-mode divergence (no autograd graph, all tangents in one matrix product per layer) where the
    // network has one; autograd otherwise.
    solve_chunks(
        |x: &Tensor, t: f64| flow.velocity_with_grad(x, t),
        Some(|x: &Tensor, t: f64, probes: Option<&Tensor>| flow.divergence_forward(x, t, probes)),
        &data,
        source,
        settings,
        options,
    )
}

/// [`log_likelihood_with`] through the fused kernel's tile-by-tile solve of the augmented state
/// ([`ferroflow_models::mlp_kernel::MlpKernel::integrate_with_divergence`]), where the kernel applies and the
/// method takes fixed steps and is not first-same-as-last: the chunks, their probes and the arithmetic of
/// [`solve_chunks`] with the kernel's divergence, so the same numbers, without the per-step tensors and
/// with one hand-out of tiles to the threads per chunk. `None` where it does not apply.
fn likelihood_in_tiles(
    flow: &TrainedFlow,
    data: &Tensor,
    source: GaussianSource,
    settings: &LikelihoodSettings,
    options: &OdeOptions,
) -> Option<Result<Likelihood, LikelihoodError>> {
    if matches!(
        settings.estimator,
        DivergenceEstimator::Hutchinson { probes: 0, .. }
    ) || settings.chunk_size == 0
    {
        return None;
    }
    let grid = crate::sample::TileGrid::of(options, 1.0, 0.0)?;
    let kernel = flow.kernel_for(data)?;
    let threads = tch::get_num_threads().max(1) as usize;
    let n_samples = data.size()[0] as usize;
    let dim = flow.dim() as i64;
    let mut log_density = Vec::with_capacity(n_samples);
    let mut chunks = 0;
    for (chunk_idx, first) in (0..n_samples).step_by(settings.chunk_size).enumerate() {
        let end = (first + settings.chunk_size).min(n_samples);
        let chunk = data.narrow(0, first as i64, (end - first) as i64);
        // The probes the field of `solve_chunks` draws at its first evaluation.
        let seed = settings.chunk_seed(chunk_idx);
        let probes = match settings.estimator {
            DivergenceEstimator::Exact => None,
            DivergenceEstimator::Hutchinson { probes, distribution } => {
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                Some(crate::sample::flat_f32(
                    &distribution.draw(probes, &chunk, &mut rng),
                ))
            }
        };
        let mut x = crate::sample::flat_f32(&chunk);
        let mut integral = vec![0.0f32; end - first];
        if let Err(bad) = kernel.integrate_with_divergence(
            &mut x,
            &mut integral,
            probes.as_deref(),
            &grid.method(),
            threads,
        ) {
            return Some(Err(LikelihoodError::Solver {
                first,
                end,
                source: grid.error(bad),
            }));
        }
        let x0 = Tensor::from_slice(&x).view([(end - first) as i64, dim]);
        // log p1 = log p0(x0) + l(0), l(0) = -int_0^1 div v dt.
        let values = source.log_density(&x0) + Tensor::from_slice(&integral);
        log_density.extend(
            Vec::<f64>::try_from(values.to_kind(Kind::Double))
                .expect("a [n] double tensor converts to Vec<f64>"),
        );
        chunks += 1;
    }
    Some(Ok(Likelihood {
        log_density: Array1::from_vec(log_density),
        steps: grid.steps() * chunks,
        field_evals: grid.field_evals() * chunks,
    }))
}

/// The core: `log p1` of every sample of `data` (`[n, ...]`) under the flow of `velocity(x, t)` from
/// `source`. `velocity` must record the autograd graph from `x` to its output, and map samples
/// independently.
pub fn log_likelihood_of_field<F>(
    velocity: F,
    data: &Tensor,
    source: GaussianSource,
    settings: &LikelihoodSettings,
    options: &OdeOptions,
) -> Result<Likelihood, LikelihoodError>
where
    F: FnMut(&Tensor, f64) -> Tensor,
{
    solve_chunks(velocity, None::<ForwardModeFn>, data, source, settings, options)
}

/// `log p1` of every sample of `data` (`[n, D]`) under the flow of an unconditional velocity network `net`
/// (its trainable weights) from `source`: [`log_likelihood_of_field`] with the network's forward-mode
/// divergence where it has one.
pub fn log_likelihood_of_net(
    net: &dyn ferroflow_models::VelocityNet,
    data: &Tensor,
    source: GaussianSource,
    settings: &LikelihoodSettings,
    options: &OdeOptions,
) -> Result<Likelihood, LikelihoodError> {
    let params = net.params().views();
    let time = |t: f64| Tensor::from_slice(&[t as f32]).to_device(data.device());
    solve_chunks(
        |x: &Tensor, t: f64| net.forward_with(&params, x, &time(t), None),
        Some(|x: &Tensor, t: f64, probes: Option<&Tensor>| {
            net.divergence_forward(
                &params,
                x,
                &time(t),
                probes,
                crate::sample::FORWARD_MODE_MAX_ELEMENTS,
            )
        }),
        data,
        source,
        settings,
        options,
    )
}

/// [`log_likelihood_of_field`], trying `forward_mode` (see [`AutogradDivergence::with_forward_mode`]) before
/// autograd at every evaluation.
fn solve_chunks<F, G>(
    mut velocity: F,
    mut forward_mode: Option<G>,
    data: &Tensor,
    source: GaussianSource,
    settings: &LikelihoodSettings,
    options: &OdeOptions,
) -> Result<Likelihood, LikelihoodError>
where
    F: FnMut(&Tensor, f64) -> Tensor,
    G: FnMut(&Tensor, f64, Option<&Tensor>) -> Option<(Tensor, Tensor)>,
{
    if settings.chunk_size == 0 {
        return Err(LikelihoodError::Setting {
            key: "chunk_size",
            detail: "must be at least 1".into(),
        });
    }
    if let DivergenceEstimator::Hutchinson { probes: 0, .. } = settings.estimator {
        return Err(LikelihoodError::Setting {
            key: "n_probes",
            detail: "must be at least 1".into(),
        });
    }
    let n_samples = data.size().first().copied().unwrap_or(0).max(0) as usize;
    let mut log_density = Vec::with_capacity(n_samples);
    let (mut steps, mut field_evals) = (0, 0);
    for (chunk_idx, first) in (0..n_samples).step_by(settings.chunk_size).enumerate() {
        let end = (first + settings.chunk_size).min(n_samples);
        let chunk = data.narrow(0, first as i64, (end - first) as i64);
        let seed = settings.chunk_seed(chunk_idx);
        let forward = |x: &Tensor, t: f64, probes: Option<&Tensor>| {
            forward_mode.as_mut().and_then(|forward| forward(x, t, probes))
        };
        let mut field = AutogradDivergence::with_forward_mode(
            &mut velocity,
            forward,
            settings.estimator,
            ProbeSchedule::fixed(seed),
        )?;
        let result =
            ferroflow_solvers::log_likelihood(&mut field, &chunk, |x0| source.log_density(x0), options)
                .map_err(|source| LikelihoodError::Solver { first, end, source })?;
        steps += result.stats.steps;
        field_evals += result.stats.field_evals;
        let values = Vec::<f64>::try_from(
            result
                .log_density
                .to_kind(Kind::Double)
                .to_device(tch::Device::Cpu),
        )
        .expect("a [n] double tensor converts to Vec<f64>");
        log_density.extend(values);
    }
    Ok(Likelihood {
        log_density: Array1::from_vec(log_density),
        steps,
        field_evals,
    })
}
