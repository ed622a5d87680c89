//! Autograd helpers on tensors: vector-Jacobian products, divergences (exact, or Hutchinson's estimator with
//! Rademacher or Gaussian probes) and a [`DivergenceField`] over a velocity closure, for likelihoods and
//! divergence-based guidance. [`DivergenceEstimator`] says which of the two a caller wants (and, for
//! Hutchinson, how many probes of which [`ProbeDistribution`]); likelihoods and guidance share it.
//!
//! Conventions: dimension 0 is the batch and the rest of a sample is flattened, so an input of shape
//! `[batch, c, h, w]` is treated as `[batch, D]` with `D = c h w`; divergences come back as `[batch]` in the
//! kind of the velocity. The velocity closure must map `x` to a tensor of the same shape, and its samples must
//! not interact (the Jacobian is block-diagonal over the batch): that is what lets one backward pass give
//! every sample's vector-Jacobian product at once.
//!
//! libtorch facts this module relies on (see `shared/libtorch.md`): backpropagating a root that does not
//! require a gradient crashes the process, so every backward pass here first checks
//! [`Tensor::requires_grad`] on the root, and a root without a gradient has a zero Jacobian; an input the root
//! does not depend on comes back undefined, which is also a zero Jacobian.
//!
//! ```no_run
//! use ferroflow_models::autograd::{divergence_exact, divergence_hutchinson, rademacher_probes};
//! use rand::SeedableRng;
//! use tch::{Device, Kind, Tensor};
//!
//! let x = Tensor::randn([128, 2], (Kind::Float, Device::Cpu));
//! let field = |x: &Tensor| x.tanh() * 2.0;
//! let (_v, div) = divergence_exact(field, &x, false)?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let probes = rademacher_probes(16, &x, &mut rng);
//! let (_v, estimate) = divergence_hutchinson(field, &x, &probes, false)?;
//! assert_eq!(div.size(), estimate.size());
//! # Ok::<(), ferroflow_models::ModelError>(())
//! ```

use ferroflow_solvers::{DivergenceField, SolverError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::Tensor;

use crate::ModelError;

mod estimator;

pub use estimator::{DivergenceEstimator, ProbeDistribution};

/// `J^T c`, the vector-Jacobian product of `output` with respect to `input` along `cotangent` (shaped like
/// `output`): the gradient of `(output * cotangent).sum()`. Comes back shaped like `input`.
///
/// The graph is kept, so several products can be taken from one forward pass. With `create_graph` the
/// result is itself differentiable (for gradients of divergences). An `output` that does not require a
/// gradient, or does not depend on `input`, has a zero Jacobian: zeros come back and no backward pass runs.
/// `input` must require a gradient (`set_requires_grad(true)`) or be computed from one that does.
pub fn vjp(
    output: &Tensor,
    input: &Tensor,
    cotangent: &Tensor,
    create_graph: bool,
) -> Result<Tensor, ModelError> {
    if cotangent.size() != output.size() {
        return Err(ModelError::Shape {
            name: "cotangent",
            actual: cotangent.size(),
            expected: format!("the output's shape {:?}", output.size()),
        });
    }
    if !output.requires_grad() {
        check_input(input)?;
        return Ok(zeros_like_detached(input));
    }
    let root = tch::with_grad(|| (output * cotangent).sum(output.kind()));
    gradient(&root, input, true, create_graph)
}

/// The divergence `div f(x) = tr(df/dx)` of every sample, exactly, by one vector-Jacobian product per
/// coordinate (`D` backward passes through one forward pass). Returns `(f(x), div f(x))`, the divergence
/// shaped `[batch]`.
///
/// `f` must return a tensor shaped like `x`. With `create_graph` the divergence can itself be
/// differentiated; to differentiate it with respect to `x`, pass an `x` that requires a gradient (otherwise a
/// detached leaf copy is differentiated, and `x` stays free of the graph). A divergence that does not depend on
/// `x` (a linear field) comes back without a gradient; [`vjp`] of it returns zeros.
pub fn divergence_exact<F>(f: F, x: &Tensor, create_graph: bool) -> Result<(Tensor, Tensor), ModelError>
where
    F: FnOnce(&Tensor) -> Tensor,
{
    let (x, batch, dim) = differentiable_input(x)?;
    let velocity = forward(f, &x)?;
    let mut divergence = Tensor::zeros([batch], (velocity.kind(), velocity.device()));
    if !velocity.requires_grad() || dim == 0 {
        return Ok((velocity, divergence));
    }
    let flat = tch::with_grad(|| velocity.reshape([batch, dim]));
    for coordinate in 0..dim {
        // The sum over the batch of one output coordinate: its gradient is row `coordinate` of every sample's
        // Jacobian (samples do not interact), and the diagonal entry is column `coordinate` of that.
        let root = tch::with_grad(|| flat.select(1, coordinate).sum(velocity.kind()));
        let keep_graph = create_graph || coordinate + 1 < dim;
        let row = gradient(&root, &x, keep_graph, create_graph)?;
        let diagonal = maybe_tracked(create_graph, || row.reshape([batch, dim]).select(1, coordinate));
        divergence = accumulate(divergence, &diagonal, create_graph);
    }
    Ok((velocity, divergence))
}

/// Hutchinson's estimate of the divergence, `mean_k e_k^T (df/dx) e_k`, with the probes `e_k` given as
/// `probes` (`[K, batch, ...]`, each probe shaped like `x`; draw them with [`ProbeDistribution::draw`],
/// [`rademacher_probes`] or [`gaussian_probes`]). One forward pass and `K` vector-Jacobian products through
/// it. Returns `(f(x), estimate)`, the estimate shaped `[batch]`; it is unbiased when `E[e e^T] = I`.
///
/// `create_graph` and the gradient with respect to `x` behave as in [`divergence_exact`].
pub fn divergence_hutchinson<F>(
    f: F,
    x: &Tensor,
    probes: &Tensor,
    create_graph: bool,
) -> Result<(Tensor, Tensor), ModelError>
where
    F: FnOnce(&Tensor) -> Tensor,
{
    let size = probes.size();
    if size.len() < 2 || size[1..] != x.size()[..] || size[0] < 1 {
        return Err(ModelError::Shape {
            name: "probes",
            actual: size,
            expected: format!(
                "[n_probes >= 1, {:?}...] (probes shaped like x, stacked)",
                x.size()
            ),
        });
    }
    let n_probes = size[0];
    let (x, batch, _) = differentiable_input(x)?;
    let velocity = forward(f, &x)?;
    let kind = velocity.kind();
    let mut estimate = Tensor::zeros([batch], (kind, velocity.device()));
    if !velocity.requires_grad() {
        return Ok((velocity, estimate));
    }
    let probes = if probes.kind() == kind && probes.device() == velocity.device() {
        probes.shallow_clone()
    } else {
        probes.to_kind(kind).to_device(velocity.device())
    };
    for probe_idx in 0..n_probes {
        let probe = probes.get(probe_idx);
        let root = tch::with_grad(|| (&velocity * &probe).sum(kind));
        let keep_graph = create_graph || probe_idx + 1 < n_probes;
        let product = gradient(&root, &x, keep_graph, create_graph)?;
        let quadratic_form = maybe_tracked(create_graph, || {
            (product * &probe)
                .reshape([batch, -1])
                .sum_dim_intlist([1i64].as_slice(), false, kind)
        });
        estimate = accumulate(estimate, &quadratic_form, create_graph);
    }
    if n_probes > 1 {
        estimate = maybe_tracked(create_graph, || estimate / n_probes as f64);
    }
    Ok((velocity, estimate))
}

/// `n_probes` Rademacher probes (entries +-1 with probability 1/2 each) shaped `[n_probes, like.size()...]`,
/// in the kind and on the device of `like`. Drawn from `rng` on the CPU, so a seeded generator gives the same
/// probes on every device. Their variance is the smallest of all probes with `E[e e^T] = I`.
pub fn rademacher_probes<R: Rng + ?Sized>(n_probes: usize, like: &Tensor, rng: &mut R) -> Tensor {
    let n_values = n_probes * like.numel();
    let mut values = Vec::with_capacity(n_values);
    while values.len() < n_values {
        // 64 signs from each draw.
        let mut bits: u64 = rng.random();
        for _ in 0..(n_values - values.len()).min(64) {
            values.push(if bits & 1 == 1 { 1.0f32 } else { -1.0 });
            bits >>= 1;
        }
    }
    probe_tensor(&values, n_probes, like)
}

/// `n_probes` standard normal probes shaped `[n_probes, like.size()...]`, in the kind and on the device of
/// `like`, drawn from `rng` on the CPU.
pub fn gaussian_probes<R: Rng + ?Sized>(n_probes: usize, like: &Tensor, rng: &mut R) -> Tensor {
    let values: Vec<f32> = (0..n_probes * like.numel())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    probe_tensor(&values, n_probes, like)
}

/// When the probes of a Hutchinson [`AutogradDivergence`] field are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProbeRefresh {
    /// Once, at the first evaluation, then kept for the whole solve: the integrand is one smooth ODE, which
    /// adaptive step control needs. The default.
    #[default]
    Fixed,
    /// Anew every `evals_per_step` evaluations, i.e. every step of a fixed-step method that calls the field
    /// that many times per step (its number of stages: 1 for Euler, 2 for midpoint and Heun, 4 for RK4).
    /// Averages out the estimator's noise along the trajectory, but makes the right-hand side random: use it
    /// with fixed-step methods only (with an adaptive method the count drifts with rejected steps, and the
    /// error control sees noise).
    EveryStep {
        /// Field evaluations per step.
        evals_per_step: usize,
    },
}

/// When an [`AutogradDivergence`] field draws its Hutchinson probes, and from which seed. This is the part of
/// a Hutchinson solve that is not the [`DivergenceEstimator`] itself: the same estimator value describes a
/// likelihood (probes fixed per solve) and guidance (fresh probes at every evaluation). An exact field
/// ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeSchedule {
    /// When the probes are drawn.
    pub refresh: ProbeRefresh,
    /// Seed of the probes' generator (ChaCha8), so a solve is reproducible.
    pub seed: u64,
}

impl ProbeSchedule {
    /// Probes drawn once from `seed` and kept for the whole solve.
    pub fn fixed(seed: u64) -> Self {
        Self {
            refresh: ProbeRefresh::Fixed,
            seed,
        }
    }

    /// Probes drawn from `seed` anew every `evals_per_step` field evaluations (see
    /// [`ProbeRefresh::EveryStep`]).
    pub fn every_step(evals_per_step: usize, seed: u64) -> Self {
        Self {
            refresh: ProbeRefresh::EveryStep { evals_per_step },
            seed,
        }
    }

    /// Checks the ranges: a refresh period of at least one evaluation.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let ProbeRefresh::EveryStep { evals_per_step: 0 } = self.refresh {
            return Err(ModelError::InvalidConfig {
                key: "refresh.evals_per_step",
                detail: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A [`DivergenceField`] on tensors over a velocity closure `velocity(x, t)` that records the autograd graph
/// (e.g. a network's forward pass): the velocity and its divergence by autograd, for
/// `ferroflow_solvers::log_likelihood`.
///
/// Values handed to the solver are detached, so the solve builds no graph across steps.
///
/// A field built [`with_forward_mode`](AutogradDivergence::with_forward_mode) first asks that closure for
/// the velocity and divergence without autograd (a network that propagates tangents, such as the MLP's
/// [`VelocityNet::divergence_forward`](crate::VelocityNet::divergence_forward)), with the same probes, and
/// takes the autograd path only when it declines.
pub struct AutogradDivergence<F, G = ForwardModeFn> {
    velocity: F,
    forward_mode: Option<G>,
    estimator: DivergenceEstimator,
    schedule: ProbeSchedule,
    rng: ChaCha8Rng,
    probes: Option<Tensor>,
    evals: usize,
}

/// The type of a forward-mode closure `(x, t, probes) -> Some((v, div))`, or `None` to use autograd: `probes`
/// is `None` for the exact divergence and `[K, batch, ...]` for Hutchinson's estimate.
pub type ForwardModeFn = fn(&Tensor, f64, Option<&Tensor>) -> Option<(Tensor, Tensor)>;

impl<F: FnMut(&Tensor, f64) -> Tensor> AutogradDivergence<F> {
    /// A field with the divergence computed by `estimator`, Hutchinson's probes drawn as `schedule` says.
    /// Refuses zero probes and a refresh period of zero evaluations.
    pub fn new(
        velocity: F,
        estimator: DivergenceEstimator,
        schedule: ProbeSchedule,
    ) -> Result<Self, ModelError> {
        AutogradDivergence::build(velocity, None, estimator, schedule)
    }

    /// A field with the exact divergence.
    pub fn exact(velocity: F) -> Self {
        Self::new(velocity, DivergenceEstimator::Exact, ProbeSchedule::default())
            .expect("the exact estimator and the default schedule are valid")
    }
}

impl<F, G> AutogradDivergence<F, G>
where
    F: FnMut(&Tensor, f64) -> Tensor,
    G: FnMut(&Tensor, f64, Option<&Tensor>) -> Option<(Tensor, Tensor)>,
{
    /// [`new`](AutogradDivergence::new) with a forward-mode closure tried before autograd at every
    /// evaluation (it gets the probes this field draws, so both paths estimate with the same ones).
    pub fn with_forward_mode(
        velocity: F,
        forward_mode: G,
        estimator: DivergenceEstimator,
        schedule: ProbeSchedule,
    ) -> Result<Self, ModelError> {
        Self::build(velocity, Some(forward_mode), estimator, schedule)
    }

    fn build(
        velocity: F,
        forward_mode: Option<G>,
        estimator: DivergenceEstimator,
        schedule: ProbeSchedule,
    ) -> Result<Self, ModelError> {
        estimator.validate()?;
        schedule.validate()?;
        Ok(Self {
            velocity,
            forward_mode,
            estimator,
            schedule,
            rng: ChaCha8Rng::seed_from_u64(schedule.seed),
            probes: None,
            evals: 0,
        })
    }

    /// How the divergence is computed.
    pub fn estimator(&self) -> DivergenceEstimator {
        self.estimator
    }

    /// The number of evaluations so far.
    pub fn evals(&self) -> usize {
        self.evals
    }

    /// Evaluates the velocity and its divergence (exact or estimated) at `(t, x)`, both detached.
    pub fn velocity_and_divergence(&mut self, t: f64, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let velocity = &mut self.velocity;
        let (v, divergence) = match self.estimator {
            DivergenceEstimator::Exact => {
                match self.forward_mode.as_mut().and_then(|forward| forward(x, t, None)) {
                    Some(result) => result,
                    None => divergence_exact(|x| velocity(x, t), x, false)?,
                }
            }
            DivergenceEstimator::Hutchinson {
                probes: n_probes,
                distribution,
            } => {
                let redraw = match (&self.probes, self.schedule.refresh) {
                    (None, _) => true,
                    // A batch of another shape (not seen in a solve) needs probes of its shape.
                    (Some(probes), _) if probes.size()[1..] != x.size()[..] => true,
                    (Some(_), ProbeRefresh::Fixed) => false,
                    (Some(_), ProbeRefresh::EveryStep { evals_per_step }) => {
                        self.evals.is_multiple_of(evals_per_step)
                    }
                };
                if redraw {
                    let probes = distribution.draw(n_probes, x, &mut self.rng);
                    self.probes = Some(probes);
                }
                let probes = self.probes.as_ref().expect("drawn above");
                match self
                    .forward_mode
                    .as_mut()
                    .and_then(|forward| forward(x, t, Some(probes)))
                {
                    Some(result) => result,
                    None => divergence_hutchinson(|x| velocity(x, t), x, probes, false)?,
                }
            }
        };
        self.evals += 1;
        Ok((v.detach(), divergence.detach()))
    }
}

impl<F, G> DivergenceField<Tensor> for AutogradDivergence<F, G>
where
    F: FnMut(&Tensor, f64) -> Tensor,
    G: FnMut(&Tensor, f64, Option<&Tensor>) -> Option<(Tensor, Tensor)>,
{
    fn eval_with_divergence(&mut self, t: f64, x: &Tensor) -> Result<(Tensor, Tensor), SolverError> {
        self.velocity_and_divergence(t, x)
            .map_err(|err| SolverError::field(t, err))
    }
}

/// `x` itself when it requires a gradient (so results can be differentiated with respect to it), otherwise
/// a detached leaf sharing its storage; with the batch size and the flattened sample dimension.
fn differentiable_input(x: &Tensor) -> Result<(Tensor, i64, i64), ModelError> {
    let size = x.size();
    if size.is_empty() {
        return Err(ModelError::Shape {
            name: "x",
            actual: size,
            expected: "[batch, ...] with a batch dimension".into(),
        });
    }
    let batch = size[0];
    let dim = size[1..].iter().product::<i64>();
    let x = if x.requires_grad() {
        x.shallow_clone()
    } else {
        x.detach().set_requires_grad(true)
    };
    Ok((x, batch, dim))
}

/// Runs `f` with gradient recording on (a solver may call fields under `no_grad`) and checks its shape.
fn forward<F: FnOnce(&Tensor) -> Tensor>(f: F, x: &Tensor) -> Result<Tensor, ModelError> {
    let velocity = tch::with_grad(|| f(x));
    if velocity.size() != x.size() {
        return Err(ModelError::Shape {
            name: "velocity",
            actual: velocity.size(),
            expected: format!("the input's shape {:?}", x.size()),
        });
    }
    Ok(velocity)
}

/// The gradient of the scalar `root` with respect to `input`; zeros when the root has no gradient (a
/// backward pass from it would crash) or does not depend on `input`.
fn gradient(
    root: &Tensor,
    input: &Tensor,
    keep_graph: bool,
    create_graph: bool,
) -> Result<Tensor, ModelError> {
    check_input(input)?;
    if !root.requires_grad() {
        return Ok(zeros_like_detached(input));
    }
    let mut grads = Tensor::f_run_backward(&[root], &[input], keep_graph, create_graph).map_err(|err| {
        ModelError::Autograd {
            detail: err.to_string(),
        }
    })?;
    let grad = grads.pop().expect("one gradient per input");
    Ok(if grad.defined() {
        grad
    } else {
        zeros_like_detached(input)
    })
}

fn check_input(input: &Tensor) -> Result<(), ModelError> {
    if input.requires_grad() {
        Ok(())
    } else {
        Err(ModelError::Autograd {
            detail: format!(
                "the input (shape {:?}) does not require a gradient: call set_requires_grad(true) on it \
                 before the forward pass",
                input.size()
            ),
        })
    }
}

fn zeros_like_detached(like: &Tensor) -> Tensor {
    tch::no_grad(|| like.zeros_like())
}

/// Runs `op` with gradient recording when `tracked`, else without (no graph for values nobody differentiates).
fn maybe_tracked<T>(tracked: bool, op: impl FnOnce() -> T) -> T {
    if tracked {
        tch::with_grad(op)
    } else {
        tch::no_grad(op)
    }
}

/// `sum + term`, in place when no graph is wanted.
fn accumulate(mut sum: Tensor, term: &Tensor, tracked: bool) -> Tensor {
    if tracked {
        tch::with_grad(|| sum + term)
    } else {
        tch::no_grad(|| {
            let _ = sum.g_add_(term);
        });
        sum
    }
}

fn probe_tensor(values: &[f32], n_probes: usize, like: &Tensor) -> Tensor {
    let mut shape = vec![n_probes as i64];
    shape.extend(like.size());
    Tensor::from_slice(values)
        .reshape(shape.as_slice())
        .to_kind(like.kind())
        .to_device(like.device())
}
