//! Probability fluxes on cell faces, built from closures: `J = v rho` for a deterministic flow and the
//! Fokker-Planck flux for a drift-diffusion.
//!
//! **Deterministic flow.** Particles moving with `dx/dt = v(x, t)` carry a density that obeys the continuity
//! equation `d rho/dt + div(rho v) = 0`, so the flux is `J = v rho` (the transport of mass, e.g. Villani,
//! *Optimal Transport*, 2009, ch. 1; Lipman et al., *Flow Matching for Generative Modeling*, 2023, eq. 3).
//!
//! **Drift-diffusion.** For the Ito SDE `dX = mu(X, t) dt + sigma(X, t) dW` the density obeys the Fokker-Planck
//! (forward Kolmogorov) equation `d rho/dt = -sum_i d_i(mu_i rho) + sum_ij d_i d_j(D_ij rho)` with
//! `D = sigma sigma^T / 2` (Risken, *The Fokker-Planck Equation*, 1989, eq. 4.95; Gardiner, *Stochastic Methods*,
//! sec. 4.3). In conservation form `d rho/dt + div J = 0` with
//!
//! `J_i = mu_i rho - sum_j d_j(D_ij rho)`,
//!
//! which is the familiar `J = mu rho - D grad rho` whenever `D` does not depend on `x` (the case of an
//! Ornstein-Uhlenbeck process or a heat equation). This crate evaluates the Ito form above, so a space-dependent
//! `D` is also handled correctly; for such `D`, `mu rho - D grad rho` would describe a different SDE (the
//! "anti-Ito" convention).
//!
//! On a face orthogonal to axis `a` with centre `x_f`, the derivative `d_b(D_ab rho)` is taken by the centred
//! difference `[(D_ab rho)(x_f + h_b e_b / 2) - (D_ab rho)(x_f - h_b e_b / 2)] / h_b` (error `h_b^2 / 24` times a
//! third derivative). For `b = a` the two points are the centres of the cells on either side of the face, for
//! `b != a` the centres of cell edges, all inside the closed domain.

use crate::error::{ContinuityError, Result, check_evaluation, check_evaluations, check_inputs};
use crate::grid::{FaceField, Grid, MAX_DIMS};

/// How the diffusion matrix `D = sigma sigma^T / 2` of a drift-diffusion is given.
///
/// The closure is called as `diffusion(x, t, out)`; it writes the entries of `D(x, t)` into `out`. An enum
/// rather than two functions because which entries exist is a closed choice.
#[derive(Debug, Clone, Copy)]
pub enum Diffusion<S> {
    /// The full matrix, row-major into `out` of length `dims * dims`.
    Full(S),
    /// Only the diagonal (a diagonal `sigma`), into `out` of length `dims`.
    Diagonal(S),
}

/// `D = sigma sigma^T / 2` for a row-major noise matrix `sigma` of shape `dims x noise_dims`, written row-major
/// into `out` (length `dims * dims`).
pub fn diffusion_from_noise(noise: &[f64], dims: usize, noise_dims: usize, out: &mut [f64]) -> Result<()> {
    if noise.len() != dims * noise_dims {
        return Err(ContinuityError::ShapeMismatch {
            what: "noise matrix sigma".into(),
            expected: vec![dims, noise_dims],
            actual: vec![noise.len()],
        });
    }
    if out.len() != dims * dims {
        return Err(ContinuityError::ShapeMismatch {
            what: "diffusion matrix output".into(),
            expected: vec![dims, dims],
            actual: vec![out.len()],
        });
    }
    check_inputs("noise matrix sigma", noise)?;
    for row in 0..dims {
        for col in 0..dims {
            let dot: f64 = (0..noise_dims)
                .map(|k| noise[row * noise_dims + k] * noise[col * noise_dims + k])
                .sum();
            out[row * dims + col] = 0.5 * dot;
        }
    }
    Ok(())
}

/// The advective flux `J = v rho` at every face centre at time `t`: `density(x, t)` is the density, and
/// `velocity(x, t, out)` writes the velocity (length `dims`) into `out`.
pub fn advective_flux<R, V>(grid: &Grid, t: f64, density: R, velocity: V) -> Result<FaceField>
where
    R: Fn(&[f64], f64) -> f64,
    V: Fn(&[f64], f64, &mut [f64]),
{
    check_inputs("time t", &[t])?;
    let dims = grid.dims();
    let mut vector = [0.0; MAX_DIMS];
    grid.faces_from_fn(|axis, point| {
        let rho = check_evaluation("density", point, t, density(point, t))?;
        velocity(point, t, &mut vector[..dims]);
        check_evaluations("velocity", point, t, &vector[..dims])?;
        Ok(vector[axis] * rho)
    })
}

/// The Fokker-Planck flux `J_a = mu_a rho - sum_b d_b(D_ab rho)` (see the module docs) at every face centre at
/// time `t`. `drift(x, t, out)` writes `mu` (length `dims`); the diffusion closure writes `D` as [`Diffusion`]
/// says.
pub fn fokker_planck_flux<R, M, S>(
    grid: &Grid,
    t: f64,
    density: R,
    drift: M,
    diffusion: &Diffusion<S>,
) -> Result<FaceField>
where
    R: Fn(&[f64], f64) -> f64,
    M: Fn(&[f64], f64, &mut [f64]),
    S: Fn(&[f64], f64, &mut [f64]),
{
    check_inputs("time t", &[t])?;
    let dims = grid.dims();
    let spacing = grid.spacing().to_vec();
    let mut drift_value = [0.0; MAX_DIMS];
    let mut matrix = [0.0; MAX_DIMS * MAX_DIMS];
    let mut shifted = [0.0; MAX_DIMS];
    // `D_ab rho` at a point, for the chosen layout of D; `None` when the entry is structurally zero.
    let mut weighted_density = |point: &[f64], row: usize, col: usize| -> Result<Option<f64>> {
        let entry = match diffusion {
            Diffusion::Full(function) => {
                function(point, t, &mut matrix[..dims * dims]);
                check_evaluations("diffusion matrix", point, t, &matrix[..dims * dims])?;
                matrix[row * dims + col]
            }
            Diffusion::Diagonal(function) => {
                if row != col {
                    return Ok(None);
                }
                function(point, t, &mut matrix[..dims]);
                check_evaluations("diffusion diagonal", point, t, &matrix[..dims])?;
                matrix[row]
            }
        };
        let rho = check_evaluation("density", point, t, density(point, t))?;
        Ok(Some(entry * rho))
    };
    grid.faces_from_fn(|axis, point| {
        let rho = check_evaluation("density", point, t, density(point, t))?;
        drift(point, t, &mut drift_value[..dims]);
        check_evaluations("drift", point, t, &drift_value[..dims])?;
        let mut flux = drift_value[axis] * rho;
        for (other, &step) in spacing.iter().enumerate() {
            shifted[..dims].copy_from_slice(point);
            shifted[other] = point[other] + 0.5 * step;
            let Some(upper) = weighted_density(&shifted[..dims], axis, other)? else {
                continue;
            };
            shifted[other] = point[other] - 0.5 * step;
            let lower = weighted_density(&shifted[..dims], axis, other)?.unwrap_or(0.0);
            // Divide by the distance actually between the two points, which rounding may make differ from h.
            let distance = (point[other] + 0.5 * step) - (point[other] - 0.5 * step);
            flux -= (upper - lower) / distance;
        }
        Ok(flux)
    })
}
