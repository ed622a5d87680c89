//! The von Mises-Fisher distribution on `S^2`: `p(x) = kappa / (4 pi sinh kappa) exp(kappa <mu, x>)` with
//! respect to area, mean direction `mu` and concentration `kappa >= 0` (`kappa = 0` is uniform).
//!
//! Numerics: the log-density is evaluated as `-kappa |x - mu|^2 / 2 + ln p(mu)` (for unit vectors
//! `kappa (<mu, x> - 1) = -kappa |x - mu|^2 / 2`, accurate near the mode), with the log-density at the mode
//! `ln p(mu) = -ln(4 pi) - [ln(sinh(kappa) / kappa) - kappa]` and
//! `ln sinh kappa - kappa = ln(1 - e^{-2 kappa}) - ln 2`, so nothing overflows for large `kappa` (no `sinh`,
//! no `exp(kappa)`) or cancels for small `kappa` (a series). Sampling uses the closed-form inverse
//! CDF of `w = <mu, x>` on `S^2` (the `S^2` case of Wood 1994, without rejection):
//! `w = 1 + ln(1 + (1 - u) (e^{-2 kappa} - 1)) / kappa`, `u ~ U(0, 1]`, written with `ln_1p` and `exp_m1`,
//! then a uniform angle around `mu`. Moments: `E[<mu, x>] = coth kappa - 1/kappa` (the mean resultant length),
//! and the entropy is `H = ln(4 pi) + ln(sinh(kappa)/kappa) + 1 - kappa coth kappa`.

use std::f64::consts::PI;

use ndarray::{Array1, Array2, ArrayView1};
use rand::{Rng, RngCore};

use super::ManifoldDensity;
use crate::product::BoxedManifold;
use crate::special::{k_coth_k, langevin, ln_sinhc, ln_sinhc_minus_k};
use crate::{Manifold, ON_MANIFOLD_TOLERANCE, Result, Sphere, check};

/// The von Mises-Fisher distribution on `S^2` (ambient coordinates in `R^3`).
#[derive(Debug, Clone, PartialEq)]
pub struct VonMisesFisher {
    mean_direction: Array1<f64>,
    concentration: f64,
    /// `ln p(mu)`, the log-density at the mode.
    log_density_at_mode: f64,
    /// An orthonormal basis of the plane orthogonal to the mean direction, for sampling.
    basis: Array2<f64>,
}

impl VonMisesFisher {
    /// The vMF with unit `mean_direction` (within [`ON_MANIFOLD_TOLERANCE`]; renormalised) and
    /// `concentration` in `[0, 1e8]`.
    pub fn new(mean_direction: ArrayView1<f64>, concentration: f64) -> Result<Self> {
        let sphere = sphere();
        sphere.check_point(mean_direction, ON_MANIFOLD_TOLERANCE)?;
        let concentration = check::parameter("concentration", concentration, "[0, 1e8]", |k| {
            (0.0..=1e8).contains(&k)
        })?;
        let mean_direction = sphere.project(mean_direction)?;
        let basis = sphere.tangent_basis(mean_direction.view())?;
        Ok(Self {
            log_density_at_mode: -(4.0 * PI).ln() - ln_sinhc_minus_k(concentration),
            mean_direction,
            concentration,
            basis,
        })
    }

    /// The unit mean direction `mu`.
    pub fn mean_direction(&self) -> ArrayView1<'_, f64> {
        self.mean_direction.view()
    }

    /// The concentration `kappa`.
    pub fn concentration(&self) -> f64 {
        self.concentration
    }

    /// `E[<mu, x>] = coth kappa - 1/kappa`, the length of the mean of the samples as vectors of `R^3`.
    pub fn mean_resultant_length(&self) -> f64 {
        langevin(self.concentration)
    }

    /// The entropy in closed form, `ln(4 pi) + ln(sinh(kappa)/kappa) + 1 - kappa coth kappa` (nats).
    pub fn entropy(&self) -> f64 {
        let kappa = self.concentration;
        (4.0 * PI).ln() + ln_sinhc(kappa) + 1.0 - k_coth_k(kappa)
    }
}

fn sphere() -> Sphere {
    Sphere::new(3).expect("S^2 is a valid sphere")
}

impl ManifoldDensity for VonMisesFisher {
    fn manifold(&self) -> BoxedManifold {
        Box::new(sphere())
    }
    fn ambient_dim(&self) -> usize {
        3
    }

    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        let kappa = self.concentration;
        let mut out = Array2::zeros((n_samples, 3));
        for mut row in out.rows_mut() {
            // u in (0, 1], so that 1 - u is in [0, 1) and the logarithm stays finite for any kappa.
            let u = 1.0 - rng.random::<f64>();
            let w = if kappa == 0.0 {
                2.0 * u - 1.0
            } else {
                1.0 + ((1.0 - u) * (-2.0 * kappa).exp_m1()).ln_1p() / kappa
            }
            .clamp(-1.0, 1.0);
            let angle = rng.random_range(0.0..2.0 * PI);
            let radius = (1.0 - w * w).max(0.0).sqrt();
            row.assign(&(&self.mean_direction * w));
            row.scaled_add(radius * angle.cos(), &self.basis.row(0));
            row.scaled_add(radius * angle.sin(), &self.basis.row(1));
        }
        out
    }

    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64> {
        let sphere = sphere();
        sphere.check_point(x, ON_MANIFOLD_TOLERANCE)?;
        let offset = sphere.project(x)? - &self.mean_direction;
        Ok(-0.5 * self.concentration * offset.dot(&offset) + self.log_density_at_mode)
    }
}
