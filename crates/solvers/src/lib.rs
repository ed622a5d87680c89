//! ODE and SDE integrators over a small state trait (ndarray arrays, and `tch` tensors behind the `tch`
//! feature), and CNF log-likelihood integration.
//!
//! - [`state`]: the [`State`] trait (copy, axpy, scale, weighted error norm, finiteness) and [`SampleBatch`].
//! - [`field`]: [`Field`] (velocity), [`DivergenceField`] (velocity and divergence).
//! - [`tableau`]: explicit Runge-Kutta methods as Butcher tableaux ([`Method`]).
//! - [`ode`]: the one generic Runge-Kutta driver: fixed or adaptive steps, dense output, statistics.
//! - [`sde`]: Euler-Maruyama and the stochastic flow sampler.
//! - [`likelihood`]: log-likelihood by the instantaneous change of variables, bits per dimension.

pub mod error;
pub mod field;
pub mod likelihood;
pub mod ode;
pub mod sde;
pub mod state;
pub mod tableau;
#[cfg(feature = "tch")]
pub mod tensor;

pub use error::SolverError;
pub use field::{DivergenceField, Field, FnField};
pub use likelihood::{DataScaling, LogLikelihood, bits_per_dim, log_likelihood, standard_normal_log_density};
pub use ode::{
    AdaptiveOptions, OdeOptions, Solution, SolverStats, StepControl, solve, solve_with_trajectory,
};
pub use sde::{
    DiagonalNoise, NoiseSource, Record, ScalarNoise, Sde, SdeOptions, euler_maruyama, sample_flow_sde,
};
pub use state::{Augmented, SampleBatch, State};
pub use tableau::{ButcherTableau, Method};
