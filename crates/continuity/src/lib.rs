//! Continuity-equation math on regular grids: densities, fluxes, finite-volume residuals, Fokker-Planck
//! drift-diffusion, and the Lagrangian log-density along trajectories.
//!
//! A density `rho(x, t)` moved by a velocity field `v` obeys the continuity equation `d rho/dt + div J = 0` with
//! `J = v rho`; under a drift-diffusion `dX = mu dt + sigma dW` it obeys the Fokker-Planck equation, the same
//! conservation law with `J = mu rho - div(D rho)`, `D = sigma sigma^T / 2`. This crate checks such pairs
//! numerically, in three equivalent forms that can be checked against each other:
//!
//! - local (Eulerian): the residual `d rho/dt + div J` per grid cell ([`residual`], built on the conservative
//!   finite-volume divergence of [`difference`] and the fluxes of [`flux`]);
//! - integral: `d/dt int_R rho = -oint_{dR} J . n` over a box of cells ([`region`]);
//! - Lagrangian: `d/dt ln rho(x(t), t) = -div v` along trajectories ([`lagrangian`]).
//!
//! [`convergence`] turns the local form into a verifier: residual norms on refined grids and the observed order of
//! convergence (2 for an exact solution, 0 otherwise). Grids ([`grid`]) have 1 to 3 dimensions; closures take
//! points as `&[f64]` of length `dims` and write vectors into `&mut [f64]`. Every failure is a
//! [`ContinuityError`]; nothing panics on user input.
//!
//! ```
//! use ferroflow_continuity::{Domain, continuity_convergence};
//!
//! // A unit Gaussian translated by the constant field v = 1: rho(x, t) = N(x; t, 1).
//! let density = |x: &[f64], t: f64| (-0.5 * (x[0] - t).powi(2)).exp() / (2.0 * std::f64::consts::PI).sqrt();
//! let velocity = |_x: &[f64], _t: f64, out: &mut [f64]| out[0] = 1.0;
//! let domain = Domain::new(vec![-5.0], vec![5.0])?;
//! let report = continuity_convergence(&domain, &[40, 80, 160], 1.0, density, velocity)?;
//! assert!((report.final_order() - 2.0).abs() < 0.1);
//! # Ok::<(), ferroflow_continuity::ContinuityError>(())
//! ```

pub mod convergence;
pub mod difference;
pub mod error;
pub mod flux;
pub mod grid;
pub mod lagrangian;
pub mod region;
pub mod residual;

pub use convergence::{
    ConvergenceConfig, ConvergenceReport, continuity_convergence, continuity_convergence_with,
    fokker_planck_convergence, fokker_planck_convergence_with,
};
pub use difference::{central_divergence, central_gradient, faces_from_cells, fv_divergence};
pub use error::{ContinuityError, Result};
pub use flux::{Diffusion, advective_flux, diffusion_from_noise, fokker_planck_flux};
pub use grid::{Domain, FaceField, Grid};
pub use lagrangian::{
    LagrangianEnd, TimeSpan, integrate_log_density, integrate_log_density_numeric, numeric_divergence,
};
pub use region::{CellRegion, MassBalance, boundary_outflow, mass_balance, region_integral};
pub use residual::{
    ResidualNorms, continuity_residual, density_time_derivative, eulerian_residual, fokker_planck_residual,
    residual_norms,
};
