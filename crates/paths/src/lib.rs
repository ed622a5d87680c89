//! Gaussian probability paths for flow matching: schedulers, conditional paths and velocities,
//! parameterisation conversions, and closed-form Gaussian-mixture marginals and Gaussian optimal transport.
//!
//! Time convention (Meta's `flow_matching`, Lipman et al. 2024 "Flow Matching Guide and Code"): `t = 0` is the
//! source (noise), `t = 1` the data. Batches are `[n_samples, dim]` arrays of `f64`, one sample per row, with
//! one time per sample (`[n_samples]`).
//!
//! Code map:
//! - [`scheduler`]: `(alpha_t, sigma_t)` schedules ([`Scheduler`], [`SchedulerKind`] for configs).
//! - [`path`]: conditional paths `(x0, x1, t) -> (x_t, u_t)` ([`ConditionalPath`]).
//! - [`mod@convert`]: velocity / target / epsilon / score conversions and scheduler re-timing.
//! - [`ancestral`]: DDPM's ancestral step `q(x_s | x_t, x1)` on any affine Gaussian path.
//! - [`mixture`]: Gaussian-mixture targets: marginal density, score, posterior and velocity.
//! - [`gaussian_ot`]: Gaussian-to-Gaussian optimal transport: map, Bures-Wasserstein distance, displacement
//!   interpolation.
//! - [`linalg`]: symmetric positive-definite helpers (validation, square roots).
//!
//! ```
//! use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture, MixtureMarginal};
//! use ndarray::array;
//!
//! // Two isotropic blobs, reached from N(0, I) along the CondOT path x_t = t x1 + (1 - t) x0.
//! let mixture = GaussianMixture::isotropic(array![0.5, 0.5], array![[-2.0, 0.0], [2.0, 0.0]], array![0.1, 0.1])?;
//! let marginal = MixtureMarginal::new(mixture, AffinePath::without_noise(CondOtScheduler), 1.0)?;
//! let mut velocity = [0.0; 2];
//! marginal.velocity_at(&[0.5, 0.0], 0.5, &mut velocity)?;
//! assert!(velocity[0] > 0.0); // pulled towards the nearer blob
//! # Ok::<(), ferroflow_paths::PathsError>(())
//! ```
//!
//! Sources: Lipman et al. 2023, "Flow Matching for Generative Modeling"; Lipman et al. 2024, "Flow Matching
//! Guide and Code"; Tong et al. 2023, "Improving and generalizing flow-based generative models with minibatch
//! optimal transport".

// Links the system OpenBLAS that ndarray-linalg's LAPACK calls need.
use openblas_src as _;

pub mod ancestral;
mod check;
pub mod convert;
pub mod error;
pub mod gaussian_ot;
pub mod linalg;
pub mod mixture;
pub mod path;
pub mod scheduler;

pub use ancestral::AncestralStep;
pub use convert::{Conversion, Prediction, Retiming, ScheduleTransform, convert};
pub use error::{PathsError, TimeEnd};
pub use gaussian_ot::{Gaussian, GaussianOtMap, bures_wasserstein_squared};
pub use linalg::{SymmetricEigen, spd_sqrt};
pub use mixture::{GaussianMixture, MixtureMarginal};
pub use path::{
    AffinePath, ConditionalPath, ExtraNoise, GaussianCoefficients, OneSidedGaussianPath, PathCoefficients,
    PathSample, SchrodingerBridgePath, VariancePreservingPath,
};
pub use scheduler::{
    CondOtScheduler, CosineScheduler, LinearVpScheduler, PolynomialScheduler, Scheduler, SchedulerKind,
    SchedulerOutput, VpScheduler,
};
