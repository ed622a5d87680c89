//! The closed-form marginal velocity of a Gaussian-mixture target as a differentiable tensor field.
//!
//! For a target `sum_k w_k N(m_k, C_k)`, a Gaussian path with coefficients `alpha_t, sigma_t` and the source
//! `N(0, s0^2 I)`, the marginal is the mixture `sum_k w_k N(alpha m_k, S_k)` with
//! `S_k = alpha^2 C_k + sigma^2 I`, and the marginal velocity is
//! `v*(x, t) = (alpha' - gain alpha) E[x1 | x] + gain x`, `gain = sigma' / sigma`, where
//! `E[x1 | x] = sum_k r_k(x) (m_k + alpha C_k S_k^{-1} (x - alpha m_k))` with the responsibilities `r_k`.
//! These are the formulas of `ferroflow_paths::MixtureMarginal`, written in tensor operations so autograd
//! differentiates them: guidance studied on `v*` is free of training error.

use ferroflow_paths::{ConditionalPath, GaussianMixture, PathsError, TimeEnd};
use tch::{Device, Kind, Tensor};

use crate::GuidanceError;

/// The marginal velocity and density of a Gaussian mixture under a conditional path, in tensor operations.
pub struct MixtureVelocity<P> {
    path: P,
    source_std: f64,
    dim: i64,
    means: Tensor,
    covariances: Tensor,
    log_weights: Tensor,
}

impl<P: ConditionalPath> MixtureVelocity<P> {
    /// The field of `mixture` under `path` from the source `N(0, source_std^2 I)`.
    pub fn new(mixture: &GaussianMixture, path: P, source_std: f64) -> Result<Self, GuidanceError> {
        if !source_std.is_finite() || source_std <= 0.0 {
            return Err(GuidanceError::InvalidConfig {
                key: "source_std",
                detail: format!("{source_std} must be finite and > 0"),
            });
        }
        let (n_components, dim) = (mixture.n_components() as i64, mixture.dim() as i64);
        let to_tensor = |values: Vec<f64>, shape: &[i64]| Tensor::from_slice(&values).reshape(shape);
        let means = to_tensor(mixture.means().iter().copied().collect(), &[n_components, dim]);
        let covariances = to_tensor(
            mixture.covariances().iter().copied().collect(),
            &[n_components, dim, dim],
        );
        let log_weights = to_tensor(
            mixture.weights().iter().map(|w| w.ln()).collect(),
            &[n_components],
        );
        Ok(Self {
            path,
            source_std,
            dim,
            means,
            covariances,
            log_weights,
        })
    }

    /// The path.
    pub fn path(&self) -> &P {
        &self.path
    }

    /// `v*(x, t)` for a batch `x` (`[batch, dim]`), in the kind and on the device of `x`, differentiable with
    /// respect to `x`. Refuses times where `sigma_t = 0` (the velocity is singular there, e.g. t = 1 of the
    /// CondOT path without noise).
    pub fn velocity(&self, x: &Tensor, t: f64) -> Result<Tensor, GuidanceError> {
        let c = self.path.gaussian_coefficients(t, self.source_std)?;
        if c.sigma == 0.0 || !c.d_alpha.is_finite() || !c.d_sigma.is_finite() {
            return Err(PathsError::SingularTime {
                t,
                end: TimeEnd::nearest(t),
                quantity: format!("the marginal velocity of path `{}`", self.path.name()),
            }
            .into());
        }
        self.check(x)?;
        let terms = self.terms(x, c.alpha, c.sigma);
        let responsibilities = terms.log_joint.softmax(1, None::<Kind>).unsqueeze(-1);
        let component_means = self.cast(&self.means, x).unsqueeze(0);
        let covariances = self.cast(&self.covariances, x);
        // alpha C_k S_k^{-1} (x - alpha m_k), per sample and component.
        let shift = Tensor::einsum("kde,bke->bkd", &[&covariances, &terms.whitened], None::<i64>) * c.alpha;
        let posterior_mean = ((component_means + shift) * responsibilities).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            x.kind(),
        );
        let gain = c.d_sigma / c.sigma;
        Ok(posterior_mean * (c.d_alpha - gain * c.alpha) + x * gain)
    }

    /// `ln p_t(x)` for a batch `x` (`[batch, dim]`), shaped `[batch]`.
    pub fn log_density(&self, x: &Tensor, t: f64) -> Result<Tensor, GuidanceError> {
        let c = self.path.gaussian_coefficients(t, self.source_std)?;
        self.check(x)?;
        let terms = self.terms(x, c.alpha, c.sigma);
        Ok(terms.log_joint.logsumexp([1i64].as_slice(), false))
    }

    /// The posterior probabilities `P(component k | x_t = x)` for a batch, shaped `[batch, n_components]`; at
    /// `t = 1` they assign samples to the mixture's components.
    pub fn responsibilities(&self, x: &Tensor, t: f64) -> Result<Tensor, GuidanceError> {
        let c = self.path.gaussian_coefficients(t, self.source_std)?;
        self.check(x)?;
        let terms = self.terms(x, c.alpha, c.sigma);
        Ok(terms.log_joint.softmax(1, None::<Kind>))
    }

    fn check(&self, x: &Tensor) -> Result<(), GuidanceError> {
        let size = x.size();
        if size.len() != 2 || size[1] != self.dim {
            return Err(PathsError::ShapeMismatch {
                name: "x",
                found: size.iter().map(|&s| s as usize).collect(),
                expected: format!("[n_samples, {}]", self.dim),
            }
            .into());
        }
        Ok(())
    }

    fn cast(&self, tensor: &Tensor, like: &Tensor) -> Tensor {
        tensor.to_kind(like.kind()).to_device(like.device())
    }

    /// The per-component log joint densities `ln w_k + ln N(x; alpha m_k, S_k)` (`[batch, K]`) and the
    /// whitened differences `S_k^{-1} (x - alpha m_k)` (`[batch, K, dim]`).
    fn terms(&self, x: &Tensor, alpha: f64, sigma: f64) -> MixtureTerms {
        // The covariances of the marginal components do not depend on x: inverted in double precision.
        let identity = Tensor::eye(self.dim, (Kind::Double, Device::Cpu));
        let marginal_covariances = &self.covariances * (alpha * alpha) + identity * (sigma * sigma);
        let inverses = self.cast(&Tensor::linalg_inv(&marginal_covariances), x);
        let log_dets = self.cast(&marginal_covariances.logdet(), x);
        let difference = x.unsqueeze(1) - self.cast(&self.means, x).unsqueeze(0) * alpha;
        let whitened = Tensor::einsum("kde,bke->bkd", &[&inverses, &difference], None::<i64>);
        let quadratic = (&difference * &whitened).sum_dim_intlist([2i64].as_slice(), false, x.kind());
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        let log_joint = self.cast(&self.log_weights, x).unsqueeze(0)
            - (quadratic + log_dets.unsqueeze(0) + self.dim as f64 * log_two_pi) * 0.5;
        MixtureTerms { log_joint, whitened }
    }
}

struct MixtureTerms {
    log_joint: Tensor,
    whitened: Tensor,
}
