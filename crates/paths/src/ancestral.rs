//! DDPM's ancestral step on any affine Gaussian path: the posterior `q(x_s | x_t, x1)` of a cleaner time `s`
//! given a noisier time `t` and the data point (Ho et al. 2020, eq. (6)-(7); Kingma et al. 2021, "Variational
//! Diffusion Models", appendix A, for general `(alpha, sigma)`).
//!
//! With `x_t = alpha_t x1 + sigma_t z` and `s` cleaner than `t` (a larger signal-to-noise ratio
//! `alpha / sigma`), the path's law is that of the forward kernel `x_t = r x_s + sqrt(q) w` with
//! `r = alpha_t / alpha_s` and `q = sigma_t^2 - r^2 sigma_s^2 >= 0`, and
//! `q(x_s | x_t, x1) = N(r sigma_s^2 / sigma_t^2 x_t + alpha_s q / sigma_t^2 x1, q sigma_s^2 / sigma_t^2 I)`.
//! A DDPM sampler steps from `t` to `s` by drawing from it with `x1` replaced by the model's estimate
//! `E[x1 | x_t]` (any parameterisation converts to it, see [`mod@crate::convert`]). For the variance-preserving
//! schedule (`alpha^2 + sigma^2 = 1`) these are Ho et al.'s `mu~_t` and `beta~_t` with
//! `alpha-bar = alpha^2`; the time convention is this crate's (`t = 0` noise, `t = 1` data), so a DDPM
//! sampler steps forwards in `t`.

use crate::path::GaussianCoefficients;
use crate::{PathsError, TimeEnd};

/// One ancestral step: `x_s = x_t_coefficient x_t + target_coefficient x1_hat + std z`, `z ~ N(0, I)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AncestralStep {
    /// The weight of the current point `x_t`.
    pub x_t_coefficient: f64,
    /// The weight of the data estimate `x1_hat`.
    pub target_coefficient: f64,
    /// The standard deviation of the fresh noise.
    pub std: f64,
}

impl GaussianCoefficients {
    /// The ancestral step from these (noisier) coefficients to `cleaner`'s, the posterior
    /// `q(x_s | x_t, x1)` of the path.
    ///
    /// Refuses a step that does not raise the signal-to-noise ratio
    /// ([`PathsError::SnrNotIncreasing`]; a path that is not monotone there, or the wrong order), and a
    /// noisier end with `sigma_t = 0` ([`PathsError::SingularTime`]: the data end itself, nothing to step
    /// from). Rounding that makes `q` negative by less than `1e-12 sigma_t^2` counts as `q = 0`.
    pub fn ancestral_step(&self, cleaner: &GaussianCoefficients) -> Result<AncestralStep, PathsError> {
        let (alpha_t, sigma_t) = (self.alpha, self.sigma);
        let (alpha_s, sigma_s) = (cleaner.alpha, cleaner.sigma);
        if sigma_t <= 0.0 {
            return Err(PathsError::SingularTime {
                t: self.t,
                end: TimeEnd::nearest(self.t),
                quantity: "an ancestral step from a time without noise".into(),
            });
        }
        let not_increasing = || PathsError::SnrNotIncreasing {
            from_t: self.t,
            to_t: cleaner.t,
        };
        // alpha_s = 0 is only reachable from alpha_t = 0 (pure noise to pure noise): x_t tells nothing.
        let ratio = if alpha_s == 0.0 {
            if alpha_t != 0.0 {
                return Err(not_increasing());
            }
            0.0
        } else {
            alpha_t / alpha_s
        };
        let sigma_t_sq = sigma_t * sigma_t;
        let mut kernel_variance = sigma_t_sq - ratio * ratio * sigma_s * sigma_s;
        if kernel_variance < 0.0 {
            if kernel_variance < -1e-12 * sigma_t_sq {
                return Err(not_increasing());
            }
            kernel_variance = 0.0;
        }
        Ok(AncestralStep {
            x_t_coefficient: ratio * sigma_s * sigma_s / sigma_t_sq,
            target_coefficient: alpha_s * kernel_variance / sigma_t_sq,
            std: (kernel_variance * sigma_s * sigma_s / sigma_t_sq).sqrt(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{AffinePath, ConditionalPath, VariancePreservingPath};
    use crate::scheduler::{CondOtScheduler, CosineScheduler, LinearVpScheduler};

    fn paths() -> Vec<Box<dyn ConditionalPath>> {
        vec![
            Box::new(AffinePath::without_noise(CondOtScheduler)),
            Box::new(AffinePath::without_noise(CosineScheduler)),
            Box::new(AffinePath::without_noise(LinearVpScheduler)),
            Box::new(VariancePreservingPath::new(0.0).unwrap()),
        ]
    }

    /// The defining property: if `x_t ~ N(alpha_t x1, sigma_t^2)` then the step's `x_s` has the path's law at
    /// `s`, `N(alpha_s x1, sigma_s^2)` (mean and variance by the law of total expectation and variance).
    #[test]
    fn a_step_carries_the_law_at_t_to_the_law_at_s() {
        for path in paths() {
            for (t, s) in [
                (0.0, 0.01),
                (0.0, 0.5),
                (0.2, 0.21),
                (0.3, 0.7),
                (0.9, 0.99),
                (0.5, 1.0),
            ] {
                let from = path.gaussian_coefficients(t, 1.0).unwrap();
                let to = path.gaussian_coefficients(s, 1.0).unwrap();
                let step = from.ancestral_step(&to).unwrap();
                let mean = step.x_t_coefficient * from.alpha + step.target_coefficient;
                let variance = step.x_t_coefficient.powi(2) * from.sigma.powi(2) + step.std.powi(2);
                assert!(
                    (mean - to.alpha).abs() < 1e-12,
                    "{} {t}->{s}: mean {mean} vs {}",
                    path.name(),
                    to.alpha
                );
                assert!(
                    (variance - to.sigma.powi(2)).abs() < 1e-12,
                    "{} {t}->{s}: variance {variance} vs {}",
                    path.name(),
                    to.sigma.powi(2)
                );
            }
        }
    }

    /// Against Ho et al. 2020 eq. (7) on a variance-preserving path, with `alpha-bar = alpha^2`.
    #[test]
    fn on_a_variance_preserving_path_it_is_ho_et_al_posterior() {
        let path = VariancePreservingPath::new(0.0).unwrap();
        for (t, s) in [(0.1, 0.2), (0.4, 0.45), (0.7, 0.95)] {
            let from = path.gaussian_coefficients(t, 1.0).unwrap();
            let to = path.gaussian_coefficients(s, 1.0).unwrap();
            let (abar_t, abar_prev) = (from.alpha.powi(2), to.alpha.powi(2));
            let beta = 1.0 - abar_t / abar_prev;
            let x0_coefficient = abar_prev.sqrt() * beta / (1.0 - abar_t);
            let x_t_coefficient = (1.0 - beta).sqrt() * (1.0 - abar_prev) / (1.0 - abar_t);
            let variance = (1.0 - abar_prev) / (1.0 - abar_t) * beta;
            let step = from.ancestral_step(&to).unwrap();
            assert!((step.target_coefficient - x0_coefficient).abs() < 1e-12);
            assert!((step.x_t_coefficient - x_t_coefficient).abs() < 1e-12);
            assert!((step.std.powi(2) - variance).abs() < 1e-12);
        }
    }

    #[test]
    fn the_ends_pure_noise_in_and_the_data_out() {
        let path = AffinePath::without_noise(CondOtScheduler);
        // From alpha_t = 0: x_t carries nothing about x1, the step is a fresh draw of the law at s.
        let from = path.gaussian_coefficients(0.0, 1.0).unwrap();
        let to = path.gaussian_coefficients(0.25, 1.0).unwrap();
        let step = from.ancestral_step(&to).unwrap();
        assert_eq!(step.x_t_coefficient, 0.0);
        assert!((step.target_coefficient - 0.25).abs() < 1e-15);
        assert!((step.std - 0.75).abs() < 1e-15);
        // To sigma_s = 0: the data estimate itself, no noise.
        let from = path.gaussian_coefficients(0.9, 1.0).unwrap();
        let to = path.gaussian_coefficients(1.0, 1.0).unwrap();
        let step = from.ancestral_step(&to).unwrap();
        assert_eq!((step.x_t_coefficient, step.std), (0.0, 0.0));
        assert!((step.target_coefficient - 1.0).abs() < 1e-15);
    }

    #[test]
    fn backwards_and_from_the_data_end_are_refused() {
        let path = AffinePath::without_noise(CondOtScheduler);
        let at = |t| path.gaussian_coefficients(t, 1.0).unwrap();
        let err = at(0.6).ancestral_step(&at(0.4)).unwrap_err();
        assert!(matches!(err, PathsError::SnrNotIncreasing { .. }), "{err}");
        assert!(
            err.to_string().contains("0.6") && err.to_string().contains("0.4"),
            "{err}"
        );
        let err = at(1.0).ancestral_step(&at(1.0)).unwrap_err();
        assert!(matches!(err, PathsError::SingularTime { .. }), "{err}");
        // The same time is no step at all, but it is allowed: x_s = x_t.
        let step = at(0.5).ancestral_step(&at(0.5)).unwrap();
        assert!((step.x_t_coefficient - 1.0).abs() < 1e-12 && step.std.abs() < 1e-6);
    }
}
