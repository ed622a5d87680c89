//! The mode-seeking field `v + lambda(t) g` as a solver field on tensors.
//!
//! [`ModeSeekingField`] wraps a velocity closure `(x, t) -> v(x, t)` that records the autograd graph, and is
//! a `ferroflow_solvers::Field<Tensor>`: every ODE method (Euler, midpoint, Heun, RK4, adaptive
//! Bogacki-Shampine and Dormand-Prince) samples with it. Where `lambda(t) = 0` it evaluates the velocity
//! alone under `no_grad`, exactly as a plain sampler does, so `lambda = 0` (or a time outside a window
//! schedule) gives the plain samples bit for bit.
//!
//! Hutchinson's probes are drawn afresh at every evaluation from a seeded generator: the guidance term is then
//! random, which fixed-step methods average along the trajectory; adaptive methods see that noise in their
//! error estimate, so prefer fixed steps (or the exact estimator) with them.

use ferroflow_models::autograd::DivergenceEstimator;
use ferroflow_solvers::{Field, SolverError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::GuidanceError;
use crate::config::{ModeSeeking, Normalize};
use crate::estimator::{divergence_gradient_exact, divergence_gradient_hutchinson};

/// Counts of a [`ModeSeekingField`]'s work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuidanceStats {
    /// Field evaluations.
    pub evals: usize,
    /// Evaluations with a nonzero strength (the ones that computed `g`).
    pub guided_evals: usize,
}

/// `v(x, t) + lambda(t) g(x, t)`, `g = grad_x [-div v]`, normalised per sample as configured.
pub struct ModeSeekingField<V> {
    velocity: V,
    config: ModeSeeking,
    rng: ChaCha8Rng,
    stats: GuidanceStats,
}

impl<V: FnMut(&Tensor, f64) -> Tensor> ModeSeekingField<V> {
    /// Guides `velocity` (a closure that records the autograd graph) with `config`, validated here.
    pub fn new(velocity: V, config: ModeSeeking) -> Result<Self, GuidanceError> {
        config.validate()?;
        Ok(Self {
            velocity,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            stats: GuidanceStats::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ModeSeeking {
        &self.config
    }

    /// The work done so far.
    pub fn stats(&self) -> GuidanceStats {
        self.stats
    }

    /// The guided velocity at `(t, x)`, detached.
    pub fn guided_velocity(&mut self, t: f64, x: &Tensor) -> Result<Tensor, GuidanceError> {
        self.stats.evals += 1;
        let strength = self.config.lambda_at(t);
        let velocity = &mut self.velocity;
        if strength == 0.0 {
            // The plain sampler's evaluation, so lambda = 0 reproduces it bit for bit.
            return Ok(tch::no_grad(|| velocity(x, t)));
        }
        self.stats.guided_evals += 1;
        let result = match self.config.estimator {
            DivergenceEstimator::Exact => divergence_gradient_exact(|x| velocity(x, t), x)?,
            DivergenceEstimator::Hutchinson { probes, distribution } => {
                let probes = distribution.draw(probes, x, &mut self.rng);
                divergence_gradient_hutchinson(|x| velocity(x, t), x, &probes)?
            }
        };
        let gradient = normalize_gradient(&result.gradient, &result.velocity, self.config.normalize);
        Ok(tch::no_grad(|| result.velocity + gradient * strength))
    }
}

impl<V: FnMut(&Tensor, f64) -> Tensor> Field<Tensor> for ModeSeekingField<V> {
    fn eval(&mut self, t: f64, x: &Tensor) -> Result<Tensor, SolverError> {
        self.guided_velocity(t, x)
            .map_err(|err| SolverError::field(t, err))
    }
}

/// `gradient` scaled per sample against `velocity` (both shaped `[batch, ...]`): unchanged for
/// [`Normalize::None`]; shrunk to norm at most `scale |v|` for [`Normalize::Clip`]; set to norm `scale |v|`
/// for [`Normalize::Rescale`] (a zero gradient stays zero).
pub fn normalize_gradient(gradient: &Tensor, velocity: &Tensor, normalize: Normalize) -> Tensor {
    let scale = match normalize {
        Normalize::None => return gradient.shallow_clone(),
        Normalize::Clip { scale } | Normalize::Rescale { scale } => scale,
    };
    tch::no_grad(|| {
        let size = gradient.size();
        let batch = size[0];
        let mut shape = vec![batch];
        shape.extend(std::iter::repeat_n(1, size.len() - 1));
        let norm = |tensor: &Tensor| {
            tensor
                .reshape([batch, -1])
                .norm_scalaropt_dim(2.0, [1i64].as_slice(), false)
                .reshape(shape.as_slice())
        };
        let kind = gradient.kind();
        let tiny = if kind == Kind::Double { 1e-300 } else { 1e-30 };
        let gradient_norm = norm(gradient);
        let target = norm(velocity) * scale;
        let factor = &target / gradient_norm.clamp_min(tiny);
        let factor = match normalize {
            Normalize::Clip { .. } => factor.clamp_max(1.0),
            _ => factor,
        };
        gradient * factor
    })
}
