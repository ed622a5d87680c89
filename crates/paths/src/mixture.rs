//! Closed-form marginals of Gaussian-mixture targets under affine Gaussian paths.
//!
//! Target `q(x1) = sum_k w_k N(x1; m_k, C_k)` (full covariances), source `N(0, s0^2 I)`, independent coupling,
//! and a path whose law of `x_t` given `x1` is `N(alpha_t x1, sigma_t^2 I)` ([`GaussianCoefficients`]; any
//! [`ConditionalPath`] gives these). Then (Lipman et al. 2023, section 3, eq. (6)-(8); Lipman et al. 2024,
//! marginal probability paths and velocities for Gaussian paths):
//! - the marginal is again a mixture, `p_t(x) = sum_k w_k N(x; alpha m_k, S_k)` with
//!   `S_k = alpha^2 C_k + sigma^2 I`; writing `C_k = U_k diag(lambda_k) U_k^T` once, `S_k = U_k diag(alpha^2
//!   lambda_k + sigma^2) U_k^T` at every `t` without a new factorisation;
//! - its score is `grad log p_t(x) = -sum_k r_k(x) S_k^{-1} (x - alpha m_k)` with responsibilities
//!   `r_k(x) = w_k N(x; alpha m_k, S_k) / p_t(x)`;
//! - the posterior of `x1` given `x_t = x` is the mixture of the Gaussian posteriors of the components,
//!   weights `r_k(x)`, means `E[x1 | x, k] = m_k + alpha C_k S_k^{-1} (x - alpha m_k)`;
//! - the marginal velocity `v*(x, t) = E[u_t(x | x1) | x_t = x]`, the minimiser of the conditional flow
//!   matching loss, is for `u_t(x | x1) = alpha' x1 + (sigma' / sigma) (x - alpha x1)` (the conditional
//!   velocity of `x_t = alpha x1 + sigma z` written as a field of `x`) the posterior average
//!   `v*(x, t) = alpha' E[x1 | x] + (sigma' / sigma) (x - alpha E[x1 | x])`.
//!
//! The velocity is singular where `sigma_t = 0` (the data end of a path without extra noise).

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2};

use crate::linalg::SymmetricEigen;
use crate::path::{ConditionalPath, GaussianCoefficients, check_source_std};
use crate::{PathsError, TimeEnd, check};

/// Tolerance on `|sum w - 1|`.
const WEIGHT_SUM_TOLERANCE: f64 = 1e-9;

/// A Gaussian mixture `sum_k w_k N(m_k, C_k)` with validated weights and covariances.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    weights: Array1<f64>,
    means: Array2<f64>,
    covariances: Array3<f64>,
    log_weights: Array1<f64>,
    eigen: Vec<SymmetricEigen>,
}

impl GaussianMixture {
    /// A mixture from `weights` (`[n_components]`, non-negative, summing to 1 within `1e-9`), `means`
    /// (`[n_components, dim]`) and symmetric positive-definite `covariances` (`[n_components, dim, dim]`).
    pub fn new(
        weights: Array1<f64>,
        means: Array2<f64>,
        covariances: Array3<f64>,
    ) -> Result<Self, PathsError> {
        let (n_components, dim) = means.dim();
        if n_components == 0 || dim == 0 {
            return Err(PathsError::ShapeMismatch {
                name: "means",
                found: means.shape().to_vec(),
                expected: "[n_components >= 1, dim >= 1]".to_string(),
            });
        }
        if weights.len() != n_components {
            return Err(PathsError::ShapeMismatch {
                name: "weights",
                found: weights.shape().to_vec(),
                expected: format!("[{n_components}] (one weight per row of `means`)"),
            });
        }
        if covariances.dim() != (n_components, dim, dim) {
            return Err(PathsError::ShapeMismatch {
                name: "covariances",
                found: covariances.shape().to_vec(),
                expected: format!("[{n_components}, {dim}, {dim}]"),
            });
        }
        check::finite("weights", weights.iter())?;
        check::finite("means", means.iter())?;
        check::finite("covariances", covariances.iter())?;
        if let Some((index, &weight)) = weights.iter().enumerate().find(|(_, w)| **w < 0.0) {
            return Err(PathsError::NegativeWeight { index, weight });
        }
        let sum = weights.sum();
        if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
            return Err(PathsError::WeightsDoNotSumToOne {
                sum,
                tolerance: WEIGHT_SUM_TOLERANCE,
            });
        }
        let eigen = covariances
            .outer_iter()
            .enumerate()
            .map(|(component_idx, covariance)| {
                SymmetricEigen::new(&format!("covariances[{component_idx}]"), covariance)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let log_weights = weights.mapv(f64::ln);
        Ok(Self {
            weights,
            means,
            covariances,
            log_weights,
            eigen,
        })
    }

    /// A mixture of isotropic components `N(m_k, variance_k I)`.
    pub fn isotropic(
        weights: Array1<f64>,
        means: Array2<f64>,
        variances: Array1<f64>,
    ) -> Result<Self, PathsError> {
        let (n_components, dim) = means.dim();
        if variances.len() != n_components {
            return Err(PathsError::ShapeMismatch {
                name: "variances",
                found: variances.shape().to_vec(),
                expected: format!("[{n_components}] (one variance per row of `means`)"),
            });
        }
        let mut covariances = Array3::zeros((n_components, dim, dim));
        for (mut covariance, &variance) in covariances.outer_iter_mut().zip(&variances) {
            covariance.diag_mut().fill(variance);
        }
        Self::new(weights, means, covariances)
    }

    /// The number of components.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }
    /// The dimension of the space.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }
    /// The weights `w_k`.
    pub fn weights(&self) -> ArrayView1<'_, f64> {
        self.weights.view()
    }
    /// The means `m_k`, one per row.
    pub fn means(&self) -> ArrayView2<'_, f64> {
        self.means.view()
    }
    /// The covariances `C_k`.
    pub fn covariances(&self) -> &Array3<f64> {
        &self.covariances
    }

    /// `ln p_t(x)` at one point for coefficients `c`; fills `score` with `grad ln p_t(x)` and
    /// `posterior_mean` with `E[x1 | x_t = x]` when given. `x` must have length `dim` and be finite.
    fn evaluate(
        &self,
        c: &GaussianCoefficients,
        x: &[f64],
        mut score: Option<&mut [f64]>,
        mut posterior_mean: Option<&mut [f64]>,
    ) -> f64 {
        let dim = self.dim();
        let (alpha, sigma_sq) = (c.alpha, c.sigma * c.sigma);
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        // whitened[k * dim + j] = (U_k^T (x - alpha m_k))_j / (alpha^2 lambda_kj + sigma^2), i.e. S_k^{-1} in the
        // eigenbasis; kept for the second pass.
        let mut whitened = vec![0.0; self.n_components() * dim];
        let mut log_joint = vec![0.0; self.n_components()];
        let mut difference = vec![0.0; dim];
        for (component_idx, eigen) in self.eigen.iter().enumerate() {
            let mean = self.means.row(component_idx);
            for ((d, &x), &m) in difference.iter_mut().zip(x).zip(&mean) {
                *d = x - alpha * m;
            }
            let mut quadratic = 0.0;
            let mut log_det = 0.0;
            for (j, (vector, &lambda)) in eigen
                .eigenvectors
                .columns()
                .into_iter()
                .zip(&eigen.eigenvalues)
                .enumerate()
            {
                let projected: f64 = vector.iter().zip(&difference).map(|(u, d)| u * d).sum();
                let variance = alpha * alpha * lambda + sigma_sq;
                quadratic += projected * projected / variance;
                log_det += variance.ln();
                whitened[component_idx * dim + j] = projected / variance;
            }
            log_joint[component_idx] =
                self.log_weights[component_idx] - 0.5 * (quadratic + log_det + dim as f64 * log_two_pi);
        }
        let max = log_joint.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_density = max + log_joint.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        if let Some(score) = score.as_deref_mut() {
            score.fill(0.0);
        }
        if let Some(posterior_mean) = posterior_mean.as_deref_mut() {
            posterior_mean.fill(0.0);
        }
        for (component_idx, eigen) in self.eigen.iter().enumerate() {
            let responsibility = (log_joint[component_idx] - log_density).exp();
            if responsibility == 0.0 {
                continue;
            }
            let mean = self.means.row(component_idx);
            for (j, (vector, &lambda)) in eigen
                .eigenvectors
                .columns()
                .into_iter()
                .zip(&eigen.eigenvalues)
                .enumerate()
            {
                let w = whitened[component_idx * dim + j];
                if let Some(score) = score.as_deref_mut() {
                    for (s, &u) in score.iter_mut().zip(&vector) {
                        *s -= responsibility * u * w;
                    }
                }
                if let Some(posterior_mean) = posterior_mean.as_deref_mut() {
                    for (p, &u) in posterior_mean.iter_mut().zip(&vector) {
                        *p += responsibility * u * alpha * lambda * w;
                    }
                }
            }
            if let Some(posterior_mean) = posterior_mean.as_deref_mut() {
                for (p, &m) in posterior_mean.iter_mut().zip(&mean) {
                    *p += responsibility * m;
                }
            }
        }
        log_density
    }
}

/// The marginal density, score, posterior and velocity of a [`GaussianMixture`] target under a path with an
/// independent source `N(0, source_std^2 I)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureMarginal<P> {
    mixture: GaussianMixture,
    path: P,
    source_std: f64,
}

impl<P: ConditionalPath> MixtureMarginal<P> {
    /// The marginals of `mixture` under `path` from the source `N(0, source_std^2 I)`, `source_std > 0`.
    pub fn new(mixture: GaussianMixture, path: P, source_std: f64) -> Result<Self, PathsError> {
        check_source_std(source_std)?;
        Ok(Self {
            mixture,
            path,
            source_std,
        })
    }
    /// The target mixture.
    pub fn mixture(&self) -> &GaussianMixture {
        &self.mixture
    }
    /// The path.
    pub fn path(&self) -> &P {
        &self.path
    }
    /// The source standard deviation `s0`.
    pub fn source_std(&self) -> f64 {
        self.source_std
    }
    /// The dimension of the space.
    pub fn dim(&self) -> usize {
        self.mixture.dim()
    }

    fn coefficients_at(&self, x: &[f64], t: f64) -> Result<GaussianCoefficients, PathsError> {
        check::slice_len("x", x, self.dim())?;
        check::finite("x", x)?;
        check::time(t, 0)?;
        let coefficients = self.path.gaussian_coefficients(t, self.source_std)?;
        if coefficients.alpha == 0.0 && coefficients.sigma == 0.0 {
            return Err(PathsError::SingularTime {
                t,
                end: TimeEnd::nearest(t),
                quantity: "the marginal density (alpha = sigma = 0)".to_string(),
            });
        }
        Ok(coefficients)
    }

    /// `ln p_t(x)` at one point.
    pub fn log_density_at(&self, x: &[f64], t: f64) -> Result<f64, PathsError> {
        let c = self.coefficients_at(x, t)?;
        Ok(self.mixture.evaluate(&c, x, None, None))
    }

    /// `grad_x ln p_t(x)` at one point, written to `score` (length `dim`).
    pub fn score_at(&self, x: &[f64], t: f64, score: &mut [f64]) -> Result<(), PathsError> {
        let c = self.coefficients_at(x, t)?;
        check::slice_len("score", score, self.dim())?;
        self.mixture.evaluate(&c, x, Some(score), None);
        Ok(())
    }

    /// `E[x1 | x_t = x]` at one point, written to `posterior_mean` (length `dim`).
    pub fn posterior_mean_at(&self, x: &[f64], t: f64, posterior_mean: &mut [f64]) -> Result<(), PathsError> {
        let c = self.coefficients_at(x, t)?;
        check::slice_len("posterior_mean", posterior_mean, self.dim())?;
        self.mixture.evaluate(&c, x, None, Some(posterior_mean));
        Ok(())
    }

    /// The marginal velocity `v*(x, t) = E[u_t(x | x1) | x_t = x]` at one point, written to `velocity`.
    pub fn velocity_at(&self, x: &[f64], t: f64, velocity: &mut [f64]) -> Result<(), PathsError> {
        let c = self.coefficients_at(x, t)?;
        check::slice_len("velocity", velocity, self.dim())?;
        if c.sigma == 0.0 || !c.d_alpha.is_finite() || !c.d_sigma.is_finite() {
            return Err(PathsError::SingularTime {
                t,
                end: TimeEnd::nearest(t),
                quantity: format!("the marginal velocity of path `{}`", self.path.name()),
            });
        }
        let gain = c.d_sigma / c.sigma;
        self.mixture.evaluate(&c, x, None, Some(velocity));
        // v* = alpha' E[x1|x] + gain (x - alpha E[x1|x]), computed in place over the posterior mean.
        for (v, &x) in velocity.iter_mut().zip(x) {
            *v = (c.d_alpha - gain * c.alpha) * *v + gain * x;
        }
        Ok(())
    }

    /// `ln p_t(x)` for a batch `x` (`[n_samples, dim]`) at per-sample times `t`.
    pub fn log_density(&self, x: ArrayView2<f64>, t: ArrayView1<f64>) -> Result<Array1<f64>, PathsError> {
        self.check_batch(&x, &t)?;
        let mut point = vec![0.0; self.dim()];
        let mut log_density = Array1::zeros(x.nrows());
        for (sample_idx, row) in x.rows().into_iter().enumerate() {
            point.iter_mut().zip(&row).for_each(|(p, &v)| *p = v);
            log_density[sample_idx] = self.log_density_at(&point, t[sample_idx])?;
        }
        Ok(log_density)
    }

    /// `grad_x ln p_t(x)` for a batch.
    pub fn score(&self, x: ArrayView2<f64>, t: ArrayView1<f64>) -> Result<Array2<f64>, PathsError> {
        self.batch_vector(x, t, |point, t, out| self.score_at(point, t, out))
    }

    /// `E[x1 | x_t = x]` for a batch.
    pub fn posterior_mean(&self, x: ArrayView2<f64>, t: ArrayView1<f64>) -> Result<Array2<f64>, PathsError> {
        self.batch_vector(x, t, |point, t, out| self.posterior_mean_at(point, t, out))
    }

    /// The marginal velocity `v*(x, t)` for a batch.
    pub fn velocity(&self, x: ArrayView2<f64>, t: ArrayView1<f64>) -> Result<Array2<f64>, PathsError> {
        self.batch_vector(x, t, |point, t, out| self.velocity_at(point, t, out))
    }

    fn check_batch(&self, x: &ArrayView2<f64>, t: &ArrayView1<f64>) -> Result<(), PathsError> {
        let (_, dim) = check::batch("x", x, t)?;
        if dim != self.dim() {
            return Err(PathsError::ShapeMismatch {
                name: "x",
                found: x.shape().to_vec(),
                expected: format!("[n_samples, {}]", self.dim()),
            });
        }
        Ok(())
    }

    fn batch_vector(
        &self,
        x: ArrayView2<f64>,
        t: ArrayView1<f64>,
        point_fn: impl Fn(&[f64], f64, &mut [f64]) -> Result<(), PathsError>,
    ) -> Result<Array2<f64>, PathsError> {
        self.check_batch(&x, &t)?;
        let dim = self.dim();
        let (mut point, mut out) = (vec![0.0; dim], vec![0.0; dim]);
        let mut result = Array2::zeros(x.raw_dim());
        for (sample_idx, row) in x.rows().into_iter().enumerate() {
            point.iter_mut().zip(&row).for_each(|(p, &v)| *p = v);
            point_fn(&point, t[sample_idx], &mut out)?;
            result
                .row_mut(sample_idx)
                .iter_mut()
                .zip(&out)
                .for_each(|(r, &v)| *r = v);
        }
        Ok(result)
    }
}
