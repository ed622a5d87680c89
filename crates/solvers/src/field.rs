//! Fields: anything that maps `(t, x)` to a velocity, and likelihood fields that also give the divergence.

use crate::error::SolverError;
use crate::state::SampleBatch;

/// A time-dependent vector field `v(t, x)`: the right-hand side of `dx/dt = v(t, x)`.
///
/// Implemented for closures `FnMut(f64, &S) -> Result<S, SolverError>`; wrap an infallible closure in
/// [`FnField`]. The solver calls `eval` at every stage time, in order, and never keeps a reference to `x`.
pub trait Field<S> {
    /// The velocity at time `t` and state `x` (same shape as `x`).
    fn eval(&mut self, t: f64, x: &S) -> Result<S, SolverError>;
}

impl<S, F> Field<S> for F
where
    F: FnMut(f64, &S) -> Result<S, SolverError>,
{
    fn eval(&mut self, t: f64, x: &S) -> Result<S, SolverError> {
        self(t, x)
    }
}

/// Adapts an infallible closure `FnMut(f64, &S) -> S` to a [`Field`].
#[derive(Clone, Debug)]
pub struct FnField<F>(pub F);

impl<S, F> Field<S> for FnField<F>
where
    F: FnMut(f64, &S) -> S,
{
    fn eval(&mut self, t: f64, x: &S) -> Result<S, SolverError> {
        Ok((self.0)(t, x))
    }
}

/// A field that also gives the divergence `div v(t, x) = tr(dv/dx)` of every sample, for likelihood
/// integration (Chen et al. 2018, "Neural Ordinary Differential Equations", eq. 4).
///
/// # Contract
/// - `eval_with_divergence(t, x)` returns `(v(t, x), div v(t, x))` with one divergence per sample of `x`.
/// - The divergence may be exact or an unbiased estimate (Hutchinson: `e^T (dv/dx) e` with `E[e e^T] = I`);
///   the implementor decides. The integrator only sees `t`: it calls the field at every Runge-Kutta stage
///   time, possibly several times per step, and with adaptive methods also for rejected steps. An estimator
///   whose probe vectors stay fixed for a whole solve turns the integrand into one smooth ODE, which adaptive
///   step control needs; re-drawing probes (per call, or when `t` moves to a new step) is allowed but makes
///   the right-hand side random, so use it with fixed-step methods. Neither choice is the solver's business.
/// - Torch implementations (autograd divergence) live in `ferroflow-models`.
pub trait DivergenceField<S: SampleBatch> {
    /// The velocity and the per-sample divergence at `(t, x)`.
    fn eval_with_divergence(&mut self, t: f64, x: &S) -> Result<(S, S::PerSample), SolverError>;
}

impl<S, F> DivergenceField<S> for F
where
    S: SampleBatch,
    F: FnMut(f64, &S) -> Result<(S, S::PerSample), SolverError>,
{
    fn eval_with_divergence(&mut self, t: f64, x: &S) -> Result<(S, S::PerSample), SolverError> {
        self(t, x)
    }
}
