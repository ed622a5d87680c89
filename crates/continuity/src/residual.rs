//! The Eulerian (local) form of mass conservation, `d rho/dt + div J = 0`, evaluated cell by cell.
//!
//! The residual in cell `i` is
//!
//! `r_i = [rho(x_i, t + dt) - rho(x_i, t - dt)] / (2 dt) + (div_h J)_i`,
//!
//! a centred difference in time (error `dt^2 rho''' / 6`) plus the conservative finite-volume divergence of the
//! face flux ([`crate::difference::fv_divergence`], error `O(h^2)`). For an exact solution of the continuity or
//! Fokker-Planck equation the residual therefore falls like `h^2 + dt^2`; for anything else it tends to the
//! nonzero defect `d rho/dt + div J`.
//!
//! Norms of a residual ([`residual_norms`]) are taken over every cell of the grid. All cells are interior to the
//! domain and no ghost values are needed, because the fluxes come from closures evaluated on the faces. The L2
//! norm is weighted by the cell volume, `sqrt(sum_i r_i^2 |C_i|)`, so it approximates the continuous
//! `||r||_{L2(domain)}` and is comparable across resolutions; the max norm is `max_i |r_i|`.

use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

use crate::difference::fv_divergence;
use crate::error::{Result, check_evaluation, check_inputs, check_positive};
use crate::flux::{Diffusion, advective_flux, fokker_planck_flux};
use crate::grid::{FaceField, Grid, MAX_DIMS};

/// `[rho(x_i, t + dt) - rho(x_i, t - dt)] / (2 dt)` at every cell centre `x_i`.
pub fn density_time_derivative<R>(grid: &Grid, t: f64, time_step: f64, density: R) -> Result<ArrayD<f64>>
where
    R: Fn(&[f64], f64) -> f64,
{
    check_inputs("time t", &[t])?;
    check_positive("time_step", time_step)?;
    let dims = grid.dims();
    let (later, earlier) = (t + time_step, t - time_step);
    // The distance between the two sample times as represented, which rounding may make differ from 2 dt.
    let interval = later - earlier;
    let mut point = [0.0; MAX_DIMS];
    let mut rate = ArrayD::zeros(IxDyn(grid.cells()));
    for (index, slot) in rate.indexed_iter_mut() {
        grid.cell_center(ndarray::Dimension::slice(&index), &mut point[..dims]);
        let upper = check_evaluation("density", &point[..dims], later, density(&point[..dims], later))?;
        let lower = check_evaluation(
            "density",
            &point[..dims],
            earlier,
            density(&point[..dims], earlier),
        )?;
        *slot = (upper - lower) / interval;
    }
    Ok(rate)
}

/// The residual `d rho/dt + div_h J` per cell from a sampled time derivative (a cell array) and a face flux.
pub fn eulerian_residual(
    grid: &Grid,
    density_rate: ArrayViewD<'_, f64>,
    flux: &FaceField,
) -> Result<ArrayD<f64>> {
    grid.check_cell_shape("density rate", density_rate.shape())?;
    check_inputs("density rate", density_rate.iter())?;
    let mut residual = fv_divergence(grid, flux)?;
    Zip::from(&mut residual)
        .and(&density_rate)
        .for_each(|out, &rate| *out += rate);
    Ok(residual)
}

/// The continuity-equation residual `d rho/dt + div(v rho)` per cell at time `t` for a deterministic flow.
pub fn continuity_residual<R, V>(
    grid: &Grid,
    t: f64,
    time_step: f64,
    density: R,
    velocity: V,
) -> Result<ArrayD<f64>>
where
    R: Fn(&[f64], f64) -> f64,
    V: Fn(&[f64], f64, &mut [f64]),
{
    let rate = density_time_derivative(grid, t, time_step, &density)?;
    let flux = advective_flux(grid, t, &density, velocity)?;
    eulerian_residual(grid, rate.view(), &flux)
}

/// The Fokker-Planck residual `d rho/dt + div(mu rho - div(D rho))` per cell at time `t` for a drift-diffusion
/// (see [`crate::flux`] for the flux).
pub fn fokker_planck_residual<R, M, S>(
    grid: &Grid,
    t: f64,
    time_step: f64,
    density: R,
    drift: M,
    diffusion: &Diffusion<S>,
) -> Result<ArrayD<f64>>
where
    R: Fn(&[f64], f64) -> f64,
    M: Fn(&[f64], f64, &mut [f64]),
    S: Fn(&[f64], f64, &mut [f64]),
{
    let rate = density_time_derivative(grid, t, time_step, &density)?;
    let flux = fokker_planck_flux(grid, t, &density, drift, diffusion)?;
    eulerian_residual(grid, rate.view(), &flux)
}

/// The two norms this crate reports for a residual (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualNorms {
    /// `sqrt(sum_i r_i^2 |C_i|)`, the cell-volume-weighted discrete L2 norm over all cells.
    pub l2: f64,
    /// `max_i |r_i|` over all cells.
    pub max: f64,
}

/// The volume-weighted L2 norm and the max norm of a cell array.
pub fn residual_norms(grid: &Grid, residual: ArrayViewD<'_, f64>) -> Result<ResidualNorms> {
    grid.check_cell_shape("residual", residual.shape())?;
    check_inputs("residual", residual.iter())?;
    let sum_of_squares: f64 = residual.iter().map(|value| value * value).sum();
    let max = residual.iter().fold(0.0_f64, |max, value| max.max(value.abs()));
    Ok(ResidualNorms {
        l2: (sum_of_squares * grid.cell_volume()).sqrt(),
        max,
    })
}
