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
