//! Verifiers: does a given `(rho_t, v_t)` (or `(rho_t, mu, D)`) solve the continuity (or Fokker-Planck) equation?
//!
//! The residual of [`crate::residual`] is evaluated on a sequence of grids with `n` cells per axis for each `n` in
//! `resolutions`, with the time step tied to the grid, `dt = time_step_per_spacing * min_a h_a`, so that the whole
//! residual is `O(h^2)`. The reported norm is the cell-volume-weighted discrete L2 norm over all cells of the
//! domain, `sqrt(sum_i r_i^2 |C_i|)` (the max norm is reported too). Between consecutive resolutions `n_k < n_{k+1}`
//! the observed order is
//!
//! `p_k = ln(e_k / e_{k+1}) / ln(n_{k+1} / n_k)`
//!
//! (Roache, *Verification and Validation in Computational Science*, 1998, ch. 5): close to 2 for an exact
//! solution once the grids resolve it, close to 0 when the pair is not a solution (the residual then tends to the
//! nonzero defect). A zero norm gives an infinite or NaN order, as the formula says. The time and space errors
//! can cancel at leading order for special pairs (a pure translation with `|v| dt = h / 2` does so), which shows
//! up as an order above 2; change [`ConvergenceConfig::time_step_per_spacing`] to see the generic order.

use crate::error::{ContinuityError, Result, check_positive};
use crate::flux::Diffusion;
use crate::grid::{Domain, Grid};
use crate::residual::{continuity_residual, fokker_planck_residual, residual_norms};

/// The fewest resolutions a convergence study accepts (two are needed for one observed order).
pub const MIN_RESOLUTIONS: usize = 2;

/// Settings for a convergence study.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvergenceConfig {
    /// The centred time-difference step as a multiple of the smallest cell width; must be > 0. Lower it when the
    /// density changes fast in time compared to space, or when `t - dt` would leave the density's time range.
    pub time_step_per_spacing: f64,
}

impl Default for ConvergenceConfig {
    fn default() -> Self {
        Self {
            time_step_per_spacing: 1.0,
        }
    }
}

/// Residual norms on refined grids and the orders they imply.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvergenceReport {
    /// Cells per axis of each grid, strictly increasing.
    pub resolutions: Vec<usize>,
    /// The cell-volume-weighted L2 norm of the residual on each grid.
    pub residual_norms: Vec<f64>,
    /// `p_k = ln(e_k / e_{k+1}) / ln(n_{k+1} / n_k)` from the L2 norms, one fewer than `resolutions`.
    pub observed_orders: Vec<f64>,
    /// The max norm of the residual on each grid.
    pub max_residuals: Vec<f64>,
    /// The time step used on each grid.
    pub time_steps: Vec<f64>,
}

impl ConvergenceReport {
    /// The last observed order (from the two finest grids), the best estimate of the asymptotic order.
    pub fn final_order(&self) -> f64 {
        self.observed_orders.last().copied().unwrap_or(f64::NAN)
    }
}

/// Deterministic flow: the convergence of the continuity residual `d rho/dt + div(v rho)` at time `t`.
/// `density(x, t)`, `velocity(x, t, out)` writes the velocity into `out` (len = dims). Uses
/// [`ConvergenceConfig::default`].
pub fn continuity_convergence<R, V>(
    domain: &Domain,
    resolutions: &[usize],
    t: f64,
    density: R,
    velocity: V,
) -> Result<ConvergenceReport>
where
    R: Fn(&[f64], f64) -> f64,
    V: Fn(&[f64], f64, &mut [f64]),
{
    continuity_convergence_with(
        domain,
        resolutions,
        t,
        &ConvergenceConfig::default(),
        density,
        velocity,
    )
}

/// [`continuity_convergence`] with explicit settings.
pub fn continuity_convergence_with<R, V>(
    domain: &Domain,
    resolutions: &[usize],
    t: f64,
    config: &ConvergenceConfig,
    density: R,
    velocity: V,
) -> Result<ConvergenceReport>
where
    R: Fn(&[f64], f64) -> f64,
    V: Fn(&[f64], f64, &mut [f64]),
{
    study(domain, resolutions, config, |grid, time_step| {
        continuity_residual(grid, t, time_step, &density, &velocity)
    })
}

/// Drift-diffusion: the convergence of the Fokker-Planck residual `d rho/dt + div(mu rho - div(D rho))` at time
/// `t`. `drift(x, t, out)` writes `mu`; the diffusion closure writes `D` as [`Diffusion`] says. Uses
/// [`ConvergenceConfig::default`].
pub fn fokker_planck_convergence<R, M, S>(
    domain: &Domain,
    resolutions: &[usize],
    t: f64,
    density: R,
    drift: M,
    diffusion: Diffusion<S>,
) -> Result<ConvergenceReport>
where
    R: Fn(&[f64], f64) -> f64,
    M: Fn(&[f64], f64, &mut [f64]),
    S: Fn(&[f64], f64, &mut [f64]),
{
    fokker_planck_convergence_with(
        domain,
        resolutions,
        t,
        &ConvergenceConfig::default(),
        density,
        drift,
        diffusion,
    )
}

/// [`fokker_planck_convergence`] with explicit settings.
pub fn fokker_planck_convergence_with<R, M, S>(
    domain: &Domain,
    resolutions: &[usize],
    t: f64,
    config: &ConvergenceConfig,
    density: R,
    drift: M,
    diffusion: Diffusion<S>,
) -> Result<ConvergenceReport>
where
    R: Fn(&[f64], f64) -> f64,
    M: Fn(&[f64], f64, &mut [f64]),
    S: Fn(&[f64], f64, &mut [f64]),
{
    study(domain, resolutions, config, |grid, time_step| {
        fokker_planck_residual(grid, t, time_step, &density, &drift, &diffusion)
    })
}

/// Validates the study's inputs, evaluates `residual(grid, time_step)` on each grid and derives the orders.
fn study<F>(
    domain: &Domain,
    resolutions: &[usize],
    config: &ConvergenceConfig,
    mut residual: F,
) -> Result<ConvergenceReport>
where
    F: FnMut(&Grid, f64) -> Result<ndarray::ArrayD<f64>>,
{
    domain.validate()?;
    check_positive("time_step_per_spacing", config.time_step_per_spacing)?;
    if resolutions.len() < MIN_RESOLUTIONS {
        return Err(ContinuityError::TooFewResolutions {
            given: resolutions.len(),
            min: MIN_RESOLUTIONS,
        });
    }
    for (position, pair) in resolutions.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            return Err(ContinuityError::ResolutionsNotIncreasing {
                position: position + 1,
                previous: pair[0],
                next: pair[1],
            });
        }
    }
    // Build every grid first so a bad resolution is refused before any (possibly long) evaluation.
    let grids = resolutions
        .iter()
        .map(|&cells| Grid::uniform(domain, cells))
        .collect::<Result<Vec<_>>>()?;
    let mut report = ConvergenceReport {
        resolutions: resolutions.to_vec(),
        residual_norms: Vec::with_capacity(grids.len()),
        observed_orders: Vec::with_capacity(grids.len() - 1),
        max_residuals: Vec::with_capacity(grids.len()),
        time_steps: Vec::with_capacity(grids.len()),
    };
    for grid in &grids {
        let time_step = config.time_step_per_spacing * grid.min_spacing();
        let values = residual(grid, time_step)?;
        let norms = residual_norms(grid, values.view())?;
        report.residual_norms.push(norms.l2);
        report.max_residuals.push(norms.max);
        report.time_steps.push(time_step);
    }
    for (norms, cells) in report.residual_norms.windows(2).zip(resolutions.windows(2)) {
        report
            .observed_orders
            .push((norms[0] / norms[1]).ln() / (cells[1] as f64 / cells[0] as f64).ln());
    }
    Ok(report)
}
