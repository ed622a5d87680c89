//! ODE and SDE integrators over a small state trait (ndarray arrays, and `tch` tensors behind the `tch`
//! feature), and CNF log-likelihood integration.
//!
//! - [`state`]: the [`State`] trait (copy, axpy, scale, weighted error norm, finiteness) and [`SampleBatch`].
//! - [`field`]: [`Field`] (velocity), [`DivergenceField`] (velocity and divergence).
//! - [`tableau`]: explicit Runge-Kutta methods as Butcher tableaux ([`Method`]).
//! - [`ode`]: the one generic Runge-Kutta driver: fixed or adaptive steps, dense output, statistics; public as
//!   a stepper ([`OdeStepper`], one accepted step per call, seen as a [`StepView`]) and with a per-step hook
//!   ([`StepObserver`], [`solve_observed`]) for quantities along the path such as the path energy.
//! - [`sde`]: Euler-Maruyama and the stochastic flow sampler.
//! - [`likelihood`]: log-likelihood by the instantaneous change of variables, bits per dimension.
//! - `tensor` (feature `tch`): the traits for `tch::Tensor`, and `TorchNoise`.
//!
//! Architecture invariant: without the `tch` feature this crate neither links nor needs libtorch
//! (checked by `tests/tidy.rs`).
//!
//! ```
//! use ferroflow_solvers::{FnField, Method, OdeOptions, solve_with_trajectory};
//! use ndarray::{Array2, array};
//!
//! // dx/dt = -x on a batch of two 1-D samples, adaptive Dormand-Prince, states at t = 0, 0.5, 1.
//! let mut field = FnField(|_t: f64, x: &Array2<f64>| -x);
//! let options = OdeOptions::adaptive(Method::Dopri5, 1e-9, 1e-9);
//! let solution = solve_with_trajectory(&mut field, array![[1.0], [2.0]], &[0.0, 0.5, 1.0], &options)?;
//! assert!((solution.trajectory[1][[1, 0]] - 2.0 * (-0.5f64).exp()).abs() < 1e-7);
//! assert!((solution.state[[0, 0]] - (-1.0f64).exp()).abs() < 1e-7);
//! # Ok::<(), ferroflow_solvers::SolverError>(())
//! ```

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
    AdaptiveOptions, FnObserver, OdeOptions, OdeStepper, Solution, SolverStats, StepControl, StepObserver,
    StepView, grid_time, solve, solve_observed, solve_observed_with_trajectory, solve_with_trajectory,
};
pub use sde::{
    DiagonalNoise, NoiseSource, Record, ScalarNoise, Sde, SdeOptions, euler_maruyama, sample_flow_sde,
};
pub use state::{Augmented, SampleBatch, State};
pub use tableau::{ButcherTableau, Method};
