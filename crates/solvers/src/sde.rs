//! Euler-Maruyama for `dX = mu(t, X) dt + sigma(t, X) dW` with scalar or diagonal noise, and the stochastic
//! sampler of flow models, `dX = [v + g(t)^2 / 2 * score] dt + g(t) dW`.
//!
//! Euler-Maruyama (Kloeden & Platen, *Numerical Solution of SDEs*, 1992, 9.1) steps
//! `X_{n+1} = X_n + mu(t_n, X_n) h + sigma(t_n, X_n) sqrt(|h|) Z_n` with `Z_n ~ N(0, I)`: strong order 1/2,
//! weak order 1. The flow sampler's drift follows from the Fokker-Planck equation: adding `g^2/2 * grad log p_t`
//! to the probability-flow velocity `v` and diffusion `g` leaves the marginals `p_t` unchanged (Song et al.
//! 2021, "Score-based generative modeling through SDEs", eq. 6 with the drift written as velocity plus score
//! correction). At `g = 0` it is exactly the Euler ODE sampler.

use ndarray::{Array, Dimension};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::SolverError;
use crate::field::Field;
use crate::ode::{Solution, SolverStats, check_times, grid_time};
use crate::state::State;

/// A source of standard normal noise shaped like a state.
///
/// Any `rand::Rng` is one for ndarray arrays (and, with the `tch` feature, for tensors: the draws are made in f64
/// on the CPU from that generator, then moved to the tensor's device and kind, so results do not depend on
/// libtorch's generator). `crate::tensor::TorchNoise` draws with libtorch's generator instead.
pub trait NoiseSource<S> {
    /// Independent `N(0, 1)` draws, one per component of `like`.
    fn standard_normal_like(&mut self, like: &S) -> S;
}

impl<R: Rng + ?Sized, D: Dimension> NoiseSource<Array<f64, D>> for R {
    fn standard_normal_like(&mut self, like: &Array<f64, D>) -> Array<f64, D> {
        Array::from_shape_simple_fn(like.raw_dim(), || self.sample(StandardNormal))
    }
}

/// A stochastic differential equation `dX = mu(t, X) dt + sigma(t, X) dW` with diagonal (or scalar) noise.
pub trait Sde<S> {
    /// The drift `mu(t, x)`.
    fn drift(&mut self, t: f64, x: &S) -> Result<S, SolverError>;
    /// Replaces `noise` (standard normal draws) by `sigma(t, x) * noise`, elementwise.
    fn apply_diffusion(&mut self, t: f64, x: &S, noise: &mut S) -> Result<(), SolverError>;
}

/// An SDE with a state-independent scalar diffusion: `dX = drift(t, X) dt + sigma(t) dW`.
#[derive(Clone, Debug)]
pub struct ScalarNoise<F, G> {
    /// The drift field.
    pub drift: F,
    /// `sigma(t)`.
    pub sigma: G,
}

impl<S: State, F: Field<S>, G: FnMut(f64) -> f64> Sde<S> for ScalarNoise<F, G> {
    fn drift(&mut self, t: f64, x: &S) -> Result<S, SolverError> {
        self.drift.eval(t, x)
    }

    fn apply_diffusion(&mut self, t: f64, _x: &S, noise: &mut S) -> Result<(), SolverError> {
        noise.scale((self.sigma)(t));
        Ok(())
    }
}

/// An SDE with diagonal diffusion: `dX_i = drift_i(t, X) dt + sigma_i(t, X) dW_i`, `sigma` a field of the same
/// shape as the state.
#[derive(Clone, Debug)]
pub struct DiagonalNoise<F, G> {
    /// The drift field.
    pub drift: F,
    /// The diagonal of `sigma(t, x)`, shaped like the state.
    pub sigma: G,
}

impl<S: State, F: Field<S>, G: Field<S>> Sde<S> for DiagonalNoise<F, G> {
    fn drift(&mut self, t: f64, x: &S) -> Result<S, SolverError> {
        self.drift.eval(t, x)
    }

    fn apply_diffusion(&mut self, t: f64, x: &S, noise: &mut S) -> Result<(), SolverError> {
        let sigma = self.sigma.eval(t, x)?;
        noise.mul_elementwise(&sigma);
        Ok(())
    }
}

/// Which states a stochastic solve returns besides the final one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// Only the final state.
    #[default]
    Final,
    /// The state at every grid time, the initial one included.
    EveryStep,
}

/// Options of a fixed-grid stochastic solve.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdeOptions {
    /// Start time.
    pub t0: f64,
    /// End time (may be below `t0`; the noise is then scaled by `sqrt(|h|)`).
    pub t1: f64,
    /// Number of equal steps, at least 1.
    pub n_steps: usize,
    /// Which states to return.
    #[serde(default)]
    pub record: Record,
}

impl SdeOptions {
    /// `n_steps` steps from 0 to 1, final state only: the flow sampler's usual grid.
    pub fn unit_interval(n_steps: usize) -> Self {
        SdeOptions {
            t0: 0.0,
            t1: 1.0,
            n_steps,
            record: Record::Final,
        }
    }

    fn validate(&self) -> Result<(), SolverError> {
        if self.n_steps == 0 {
            return Err(SolverError::option("n_steps", self.n_steps, "at least 1"));
        }
        check_times(&[self.t0, self.t1])
    }
}

/// Euler-Maruyama on the equal grid of `options`. `stats.field_evals` counts drift evaluations.
pub fn euler_maruyama<S, E, N>(
    sde: &mut E,
    x0: S,
    options: &SdeOptions,
    noise: &mut N,
) -> Result<Solution<S>, SolverError>
where
    S: State,
    E: Sde<S> + ?Sized,
    N: NoiseSource<S> + ?Sized,
{
    options.validate()?;
    let mut recorder = Recorder::new(options, &x0);
    let mut x = x0;
    let mut evals = 0;
    for step_idx in 0..options.n_steps {
        let t = grid_time(options.t0, options.t1, step_idx, options.n_steps);
        let t_new = grid_time(options.t0, options.t1, step_idx + 1, options.n_steps);
        let h = t_new - t;
        let drift = sde.drift(t, &x)?;
        evals += 1;
        let mut increment = noise.standard_normal_like(&x);
        sde.apply_diffusion(t, &x, &mut increment)?;
        x.add_scaled(h, &drift);
        x.add_scaled(h.abs().sqrt(), &increment);
        if !x.all_finite() {
            return Err(SolverError::NonFiniteState {
                t_reached: t,
                t_attempted: t_new,
            });
        }
        recorder.push(t_new, &x);
    }
    Ok(recorder.finish(x, options.n_steps, evals))
}

/// The stochastic sampler of a flow model: Euler-Maruyama on
/// `dX = [v(t, X) + g(t)^2 / 2 * score(t, X)] dt + g(t) dW` between `options.t0` and `options.t1`, both in
/// `[0, 1]`.
///
/// With `t1 < t0` (data towards noise) it integrates the time-reversed equation
/// `dX = [v - g^2 / 2 * score] dt + g dW` (with `dt < 0`), which keeps the same marginals `p_t`: in both
/// directions the step is `x + h v + |h| g^2 / 2 * score + g sqrt(|h|) z`.
///
/// `score(t, x)` is `grad_x log p_t(x)`, supplied by the caller (for Gaussian paths, from the velocity by
/// `ferroflow_paths`' velocity-to-score conversion). Where `g(t) = 0` the score is not evaluated and no noise is
/// drawn, so with `g = 0` this is the Euler ODE sampler, bit for bit. Both fields are evaluated at the left end
/// of each step only, so a score that is singular at `t = 1` is never called there when integrating from 0 to 1.
/// `stats.field_evals` counts velocity and score evaluations.
pub fn sample_flow_sde<S, V, Sc, G, N>(
    velocity: &mut V,
    score: &mut Sc,
    mut diffusion: G,
    x0: S,
    options: &SdeOptions,
    noise: &mut N,
) -> Result<Solution<S>, SolverError>
where
    S: State,
    V: Field<S> + ?Sized,
    Sc: Field<S> + ?Sized,
    G: FnMut(f64) -> f64,
    N: NoiseSource<S> + ?Sized,
{
    options.validate()?;
    for (key, value) in [("t0", options.t0), ("t1", options.t1)] {
        if !(0.0..=1.0).contains(&value) {
            return Err(SolverError::option(
                key,
                value,
                "a time in [0, 1] for a flow sampler",
            ));
        }
    }
    let mut recorder = Recorder::new(options, &x0);
    let mut x = x0;
    let mut evals = 0;
    for step_idx in 0..options.n_steps {
        let t = grid_time(options.t0, options.t1, step_idx, options.n_steps);
        let t_new = grid_time(options.t0, options.t1, step_idx + 1, options.n_steps);
        let h = t_new - t;
        let g = diffusion(t);
        if !g.is_finite() {
            return Err(SolverError::option(
                "diffusion",
                format!("g({t}) = {g}"),
                "a finite diffusion coefficient",
            ));
        }
        let mut drift = velocity.eval(t, &x)?;
        evals += 1;
        if g != 0.0 {
            let score_value = score.eval(t, &x)?;
            evals += 1;
            // Backwards in time (h < 0) the score term keeps pulling towards high density: it enters with |h|.
            drift.add_scaled(0.5 * g * g * h.signum(), &score_value);
        }
        x.add_scaled(h, &drift);
        if g != 0.0 {
            let increment = noise.standard_normal_like(&x);
            x.add_scaled(g * h.abs().sqrt(), &increment);
        }
        if !x.all_finite() {
            return Err(SolverError::NonFiniteState {
                t_reached: t,
                t_attempted: t_new,
            });
        }
        recorder.push(t_new, &x);
    }
    Ok(recorder.finish(x, options.n_steps, evals))
}

/// Collects the trajectory of a fixed-grid stochastic solve when asked to.
struct Recorder<S> {
    record: Record,
    times: Vec<f64>,
    states: Vec<S>,
}

impl<S: State> Recorder<S> {
    fn new(options: &SdeOptions, x0: &S) -> Self {
        let mut recorder = Recorder {
            record: options.record,
            times: Vec::new(),
            states: Vec::new(),
        };
        recorder.push(options.t0, x0);
        recorder
    }

    fn push(&mut self, t: f64, x: &S) {
        if self.record == Record::EveryStep {
            self.times.push(t);
            self.states.push(x.clone_state());
        }
    }

    fn finish(self, state: S, steps: usize, field_evals: usize) -> Solution<S> {
        Solution {
            state,
            times: self.times,
            trajectory: self.states,
            stats: SolverStats {
                steps,
                rejected_steps: 0,
                field_evals,
            },
        }
    }
}
