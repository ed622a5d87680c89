//! The wrapped Gaussian on the flat torus `T^d` with independent coordinates: `theta = wrap(mu + sigma z)`,
//! `z ~ N(0, I)`, whose density is a product of one-dimensional wrapped normals,
//!
//! `p(theta) = prod_i sum_{k in Z} N(delta_i + 2 pi k; 0, sigma_i^2)`, `delta_i = wrap(theta_i - mu_i)`.
//!
//! **Truncation.** Each sum is truncated to `|k| <= K_i`, `K_i = wrapped_normal_terms(sigma_i)`, the smallest
//! `K >= 1` for which the bound below is at most `1e-16`. With `delta` in `[-pi, pi)`, a dropped term
//! (`|k| >= K + 1`) has `|delta + 2 pi k| >= (2|k| - 1) pi` while the kept `k = 0` term has `|delta| <= pi`,
//! so the dropped mass relative to the kept sum is at most
//!
//! `eps(K) = 2 sum_{j >= K+1} exp(-2 pi^2 j (j - 1) / sigma^2) <= 2 e_{K+1} / (1 - exp(-4 pi^2 (K + 1) / sigma^2))`,
//!
//! `e_j = exp(-2 pi^2 j (j - 1) / sigma^2)` (consecutive terms shrink by at least that ratio). The relative error
//! of each factor is at most `eps(K_i) <= 1e-16` at every point, so the log-density is exact to round-off
//! (error `<= d 1e-16`). `K = 1` (three terms) suffices for `sigma <= 1.02`, `K = 3` for `sigma = 2`, `K = 14`
//! for `sigma = 10`; `K` grows like `1.4 sigma`, and `sigma` is limited to `(0, 100]` (`K = 139`, 279 terms).
//!
//! Moments: `E[exp(i (theta_j - mu_j))] = exp(-sigma_j^2 / 2)`.

use std::f64::consts::PI;

use ndarray::{Array1, Array2, ArrayView1};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

use super::ManifoldDensity;
use crate::product::BoxedManifold;
use crate::special::log_sum_exp;
use crate::{FlatTorus, Manifold, ManifoldError, ON_MANIFOLD_TOLERANCE, Result, check, wrap_angle};

/// The bound on the relative truncation error of one coordinate's wrapped-normal sum.
const TRUNCATION_ERROR: f64 = 1e-16;

/// The number `K` of `2 pi k` shifts on each side (`|k| <= K`) that makes the truncated wrapped-normal sum
/// with standard deviation `std` accurate to a relative `1e-16` everywhere (see the module documentation).
pub fn wrapped_normal_terms(std: f64) -> usize {
    let scale = 2.0 * PI * PI / (std * std);
    (1usize..)
        .find(|&k| {
            let next = k as f64 + 1.0;
            let first_dropped = (-scale * next * (next - 1.0)).exp();
            let ratio = (-2.0 * scale * next).exp();
            2.0 * first_dropped / (1.0 - ratio) <= TRUNCATION_ERROR
        })
        .unwrap_or(usize::MAX)
}

/// A wrapped Gaussian on `T^d` with mean angles `mu` and per-coordinate standard deviations `sigma`.
#[derive(Debug, Clone, PartialEq)]
pub struct WrappedGaussian {
    mean: Array1<f64>,
    stds: Array1<f64>,
    terms: Vec<usize>,
}

impl WrappedGaussian {
    /// The wrapped Gaussian with mean angles `mean` (a point of `T^d`, within [`ON_MANIFOLD_TOLERANCE`]) and
    /// standard deviations `stds` in `(0, 100]`, one per coordinate.
    pub fn new(mean: ArrayView1<f64>, stds: ArrayView1<f64>) -> Result<Self> {
        let torus = FlatTorus::new(mean.len())?;
        torus.check_point(mean, ON_MANIFOLD_TOLERANCE)?;
        if stds.len() != mean.len() {
            return Err(ManifoldError::ShapeMismatch {
                what: "stds",
                found: stds.shape().to_vec(),
                expected: format!("[{}], one per coordinate of the mean", mean.len()),
            });
        }
        for &std in &stds {
            check::parameter("std", std, "(0, 100]", |s| s > 0.0 && s <= 100.0)?;
        }
        Ok(Self {
            mean: mean.mapv(wrap_angle),
            terms: stds.iter().map(|&s| wrapped_normal_terms(s)).collect(),
            stds: stds.to_owned(),
        })
    }

    /// The mean angles.
    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.mean.view()
    }

    /// The standard deviations of the unwrapped Gaussian.
    pub fn stds(&self) -> ArrayView1<'_, f64> {
        self.stds.view()
    }

    /// The number of shifts on each side used for each coordinate.
    pub fn terms(&self) -> &[usize] {
        &self.terms
    }

    fn torus(&self) -> FlatTorus {
        FlatTorus::new(self.mean.len()).expect("a wrapped Gaussian has at least one coordinate")
    }
}

impl ManifoldDensity for WrappedGaussian {
    fn manifold(&self) -> BoxedManifold {
        Box::new(self.torus())
    }
    fn ambient_dim(&self) -> usize {
        self.mean.len()
    }

    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        let mut out = Array2::zeros((n_samples, self.mean.len()));
        for mut row in out.rows_mut() {
            for ((angle, &mean), &std) in row.iter_mut().zip(&self.mean).zip(&self.stds) {
                let z: f64 = StandardNormal.sample(rng);
                *angle = wrap_angle(mean + std * z);
            }
        }
        out
    }

    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64> {
        self.torus().check_point(x, ON_MANIFOLD_TOLERANCE)?;
        let mut total = 0.0;
        for (((&angle, &mean), &std), &terms) in x.iter().zip(&self.mean).zip(&self.stds).zip(&self.terms) {
            let delta = wrap_angle(angle - mean);
            let terms = terms as i64;
            let exponents = (-terms..=terms).map(|k| {
                let shifted = (delta + 2.0 * PI * k as f64) / std;
                -0.5 * shifted * shifted
            });
            total += log_sum_exp(exponents) - (std * (2.0 * PI).sqrt()).ln();
        }
        Ok(total)
    }
}
