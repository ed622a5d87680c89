//! Conditional probability paths and their conditional velocities.
//!
//! Every path here has the form
//! `x_t = a_t x0 + b_t x1 + c_t eps`, `u_t = a'_t x0 + b'_t x1 + c'_t eps`
//! with `x0` a source sample, `x1` a data sample and `eps ~ N(0, I)` extra noise, passed in explicitly
//! ([`ExtraNoise`]) so the result is deterministic given the inputs. `u_t` is the time derivative of `x_t` at
//! fixed `(x0, x1, eps)`, the conditional velocity that conditional flow matching regresses on
//! (Lipman et al. 2023, eq. (14)-(15); Tong et al. 2023, section 3.2, eq. (14)). The coefficients of one path
//! are its [`PathCoefficients`]; [`ConditionalPath::sample`] turns batches `(x0, x1, t)` into `(x_t, u_t)`.
//!
//! The paths:
//! - [`AffinePath`]: `x_t = alpha_t x1 + sigma_t x0 + s eps` for any [`Scheduler`] (Lipman et al. 2024,
//!   affine conditional flows); with [`CondOtScheduler`](crate::CondOtScheduler) and noise std `s` this is
//!   the I-CFM path of Tong et al. 2023 (section 3.2.2): `x_t = t x1 + (1 - t) x0 + s eps`, `u_t = x1 - x0`.
//! - [`OneSidedGaussianPath`]: Lipman et al. 2023 (section 4.1, example II, eq. (20)-(21)),
//!   `mu_t = t x1`, `sigma_t = 1 - (1 - sigma_min) t`, `u_t(x | x1) = (x1 - (1 - sigma_min) x) / sigma_t`;
//!   `sigma_min = 0` gives the limit `u_t(x | x1) = (x1 - x) / (1 - t)`.
//! - [`SchrodingerBridgePath`]: Tong et al. 2023 (section 3.2.4, eq. (19)-(20)), `mu_t = t x1 + (1 - t) x0`,
//!   `sigma_t = s sqrt(t (1 - t))`, `u_t = (1 - 2t) / (2 t (1 - t)) (x_t - mu_t) + x1 - x0`.
//! - [`VariancePreservingPath`]: the trigonometric interpolant of Tong et al. 2023 (their
//!   `VariancePreservingConditionalFlowMatcher`), `x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1 + s eps`.
//!
//! Under an independent coupling with source `N(0, s0^2 I)`, each path's law of `x_t` given `x1` is
//! Gaussian, `N(b_t x1, (a_t^2 s0^2 + c_t^2) I)`; [`ConditionalPath::gaussian_coefficients`] gives that law as
//! [`GaussianCoefficients`], which the conversions and the Gaussian-mixture marginals work with.

use std::f64::consts::FRAC_PI_2;

use ndarray::{Array2, ArrayView1, ArrayView2, Zip};

use crate::scheduler::Scheduler;
use crate::{PathsError, TimeEnd, check};

/// The coefficients of `x_t = source x0 + target x1 + noise eps` and their time derivatives at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathCoefficients {
    /// The time they were evaluated at.
    pub t: f64,
    /// `a_t`, the weight of the source sample `x0`.
    pub source: f64,
    /// `b_t`, the weight of the data sample `x1`.
    pub target: f64,
    /// `c_t >= 0`, the weight of the extra noise `eps`.
    pub noise: f64,
    /// `d a_t / dt`.
    pub d_source: f64,
    /// `d b_t / dt`.
    pub d_target: f64,
    /// `d c_t / dt`.
    pub d_noise: f64,
}

/// The law of `x_t` given `x1` under an affine Gaussian path: `N(alpha x1, sigma^2 I)`, so
/// `x_t = alpha x1 + sigma z` with `z ~ N(0, I)`, and the conditional velocity is `d_alpha x1 + d_sigma z`.
///
/// For a path with source `N(0, s0^2 I)` this folds `s0` and any extra noise into `sigma`:
/// `sigma = sqrt(a^2 s0^2 + c^2)` and `d_sigma = (a a' s0^2 + c c') / sigma`.
///
/// `alpha` and `sigma` are always finite; `d_alpha` and `d_sigma` are not finite at a singular end of the
/// path (for example `t = 1` of the VP scheduler), which every user of them reports as
/// [`PathsError::SingularTime`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianCoefficients {
    /// The time they were evaluated at.
    pub t: f64,
    /// `alpha_t`, the scale of the data.
    pub alpha: f64,
    /// `sigma_t >= 0`, the standard deviation of the noise.
    pub sigma: f64,
    /// `d alpha_t / dt`.
    pub d_alpha: f64,
    /// `d sigma_t / dt`.
    pub d_sigma: f64,
}

impl GaussianCoefficients {
    /// The coefficients of `scheduler` at `t` for a source `N(0, source_std^2 I)`.
    pub fn from_scheduler<S: Scheduler + ?Sized>(
        scheduler: &S,
        t: f64,
        source_std: f64,
    ) -> Result<Self, PathsError> {
        check::time(t, 0)?;
        check_source_std(source_std)?;
        let out = scheduler.evaluate(t);
        finite_or_singular(
            Self {
                t,
                alpha: out.alpha,
                sigma: out.sigma * source_std,
                d_alpha: out.d_alpha,
                d_sigma: out.d_sigma * source_std,
            },
            scheduler.name(),
        )
    }
}

/// Refuses non-finite `alpha` or `sigma`. The derivatives may be infinite (or NaN as `0 * inf`) at a singular
/// end; the density, score and posterior do not need them, and whatever does (velocities, conversions to or
/// from a velocity) checks them and reports [`PathsError::SingularTime`].
fn finite_or_singular(
    coefficients: GaussianCoefficients,
    name: &str,
) -> Result<GaussianCoefficients, PathsError> {
    let GaussianCoefficients { t, alpha, sigma, .. } = coefficients;
    if alpha.is_finite() && sigma.is_finite() {
        Ok(coefficients)
    } else {
        Err(PathsError::SingularTime {
            t,
            end: TimeEnd::nearest(t),
            quantity: format!("path `{name}`"),
        })
    }
}

pub(crate) fn check_source_std(source_std: f64) -> Result<(), PathsError> {
    check::parameter("source_std", source_std, "(0, inf)", |s| s > 0.0)
}

/// Extra Gaussian noise `eps` of a path, passed explicitly so sampling is deterministic given its inputs.
#[derive(Debug, Clone, Copy)]
pub enum ExtraNoise<'a> {
    /// `eps = 0`: `x_t` is the conditional mean `mu_t`.
    Zero,
    /// One standard-normal row per sample, `[n_samples, dim]`.
    Samples(ArrayView2<'a, f64>),
}

/// A batch of points on a path and their conditional velocities, both `[n_samples, dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSample {
    /// `x_t`.
    pub x_t: Array2<f64>,
    /// `u_t`, the conditional velocity (the time derivative of `x_t` at fixed `x0`, `x1`, `eps`).
    pub u_t: Array2<f64>,
}

/// A conditional probability path: coefficients `(a_t, b_t, c_t)` of `x_t = a_t x0 + b_t x1 + c_t eps`.
pub trait ConditionalPath {
    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// The coefficients at `t` in `[0, 1]`; a derivative may be infinite at a singular end, which the
    /// provided methods report as [`PathsError::SingularTime`].
    fn coefficients(&self, t: f64) -> PathCoefficients;

    /// `(x_t, u_t)` for rows `x0`, `x1` (`[n_samples, dim]`), per-sample times `t` (`[n_samples]`) and noise.
    ///
    /// With [`ExtraNoise::Zero`] the noise terms are skipped, so a path whose `c'_t` is singular at an end
    /// (the Schrödinger bridge) still gives the finite `u_t = a' x0 + b' x1` there.
    fn sample(
        &self,
        x0: ArrayView2<f64>,
        x1: ArrayView2<f64>,
        t: ArrayView1<f64>,
        noise: ExtraNoise<'_>,
    ) -> Result<PathSample, PathsError> {
        let (n_samples, dim) = check::batch("x0", &x0, &t)?;
        check::same_shape("x1", &x1, n_samples, dim)?;
        if let ExtraNoise::Samples(eps) = noise {
            check::same_shape("noise", &eps, n_samples, dim)?;
        }
        let mut x_t = Array2::zeros((n_samples, dim));
        let mut u_t = Array2::zeros((n_samples, dim));
        for sample_idx in 0..n_samples {
            let c = self.coefficients(t[sample_idx]);
            let noise_used = matches!(noise, ExtraNoise::Samples(_));
            let finite = [c.source, c.target, c.d_source, c.d_target]
                .iter()
                .all(|value| value.is_finite())
                && (!noise_used || (c.noise.is_finite() && c.d_noise.is_finite()));
            if !finite {
                return Err(PathsError::SingularTime {
                    t: c.t,
                    end: TimeEnd::nearest(c.t),
                    quantity: format!("the conditional velocity of path `{}`", self.name()),
                });
            }
            let mut x_row = x_t.row_mut(sample_idx);
            let mut u_row = u_t.row_mut(sample_idx);
            Zip::from(&mut x_row)
                .and(&mut u_row)
                .and(x0.row(sample_idx))
                .and(x1.row(sample_idx))
                .for_each(|x, u, &source, &target| {
                    *x = c.source * source + c.target * target;
                    *u = c.d_source * source + c.d_target * target;
                });
            if let ExtraNoise::Samples(eps) = noise {
                Zip::from(&mut x_row)
                    .and(&mut u_row)
                    .and(eps.row(sample_idx))
                    .for_each(|x, u, &e| {
                        *x += c.noise * e;
                        *u += c.d_noise * e;
                    });
            }
        }
        Ok(PathSample { x_t, u_t })
    }

    /// The law `N(alpha x1, sigma^2 I)` of `x_t` given `x1` when `x0 ~ N(0, source_std^2 I)` is independent of
    /// `x1` and `eps`: `alpha = b_t`, `sigma^2 = a_t^2 s0^2 + c_t^2`.
    fn gaussian_coefficients(&self, t: f64, source_std: f64) -> Result<GaussianCoefficients, PathsError> {
        check::time(t, 0)?;
        check_source_std(source_std)?;
        let c = self.coefficients(t);
        let s0_sq = source_std * source_std;
        let (sigma, d_sigma) = if c.noise == 0.0 && c.d_noise == 0.0 {
            // Without extra noise sigma = |a| s0; taking the root would turn sigma = 0 at t = 1 into 0 / 0.
            (
                c.source.abs() * source_std,
                c.source.signum() * c.d_source * source_std,
            )
        } else {
            let sigma = (c.source * c.source * s0_sq + c.noise * c.noise).sqrt();
            (
                sigma,
                (c.source * c.d_source * s0_sq + c.noise * c.d_noise) / sigma,
            )
        };
        finite_or_singular(
            GaussianCoefficients {
                t,
                alpha: c.target,
                sigma,
                d_alpha: c.d_target,
                d_sigma,
            },
            self.name(),
        )
    }
}

impl<P: ConditionalPath + ?Sized> ConditionalPath for &P {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        (**self).coefficients(t)
    }
}

impl<P: ConditionalPath + ?Sized> ConditionalPath for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        (**self).coefficients(t)
    }
}

/// `x_t = alpha_t x1 + sigma_t x0 + s eps` for a [`Scheduler`] and a constant extra noise std `s >= 0`;
/// `u_t = d_alpha x1 + d_sigma x0` (Lipman et al. 2024, affine conditional flows; with the CondOT scheduler
/// and `s > 0`, I-CFM of Tong et al. 2023, section 3.2.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffinePath<S> {
    scheduler: S,
    noise_std: f64,
}

impl<S: Scheduler> AffinePath<S> {
    /// An affine path with extra noise std `noise_std` in `[0, inf)`.
    pub fn new(scheduler: S, noise_std: f64) -> Result<Self, PathsError> {
        check::parameter("noise_std", noise_std, "[0, inf)", |s| s >= 0.0)?;
        Ok(Self { scheduler, noise_std })
    }
    /// An affine path without extra noise.
    pub fn without_noise(scheduler: S) -> Self {
        Self {
            scheduler,
            noise_std: 0.0,
        }
    }
    /// The scheduler.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }
    /// The extra noise std `s`.
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }
}

impl<S: Scheduler> ConditionalPath for AffinePath<S> {
    fn name(&self) -> &'static str {
        self.scheduler.name()
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        let out = self.scheduler.evaluate(t);
        PathCoefficients {
            t,
            source: out.sigma,
            target: out.alpha,
            noise: self.noise_std,
            d_source: out.d_sigma,
            d_target: out.d_alpha,
            d_noise: 0.0,
        }
    }
}

/// The one-sided Gaussian path of Lipman et al. 2023 (section 4.1, example II):
/// `p_t(x | x1) = N(t x1, (1 - (1 - sigma_min) t)^2 I)`, reached by `x_t = t x1 + (1 - (1 - sigma_min) t) x0`
/// from `x0 ~ N(0, I)`, with `u_t(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t)` (their eq. (21)),
/// equal to `x1 - (1 - sigma_min) x0` along the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneSidedGaussianPath {
    sigma_min: f64,
}

impl OneSidedGaussianPath {
    /// The path with `sigma_min` in `[0, 1)`.
    pub fn new(sigma_min: f64) -> Result<Self, PathsError> {
        check::parameter("sigma_min", sigma_min, "[0, 1)", |s| (0.0..1.0).contains(&s))?;
        Ok(Self { sigma_min })
    }
    /// The limit `sigma_min = 0`: `mu_t = t x1`, `sigma_t = 1 - t`, `u_t(x | x1) = (x1 - x) / (1 - t)`.
    pub fn linear() -> Self {
        Self { sigma_min: 0.0 }
    }
    /// `sigma_min`.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }
    /// The conditional velocity as a field of `x`: `u_t(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t)`.
    /// Singular at `t = 1` when `sigma_min = 0`.
    pub fn velocity_at(
        &self,
        x: ArrayView2<f64>,
        x1: ArrayView2<f64>,
        t: ArrayView1<f64>,
    ) -> Result<Array2<f64>, PathsError> {
        let (n_samples, dim) = check::batch("x", &x, &t)?;
        check::same_shape("x1", &x1, n_samples, dim)?;
        let shrink = 1.0 - self.sigma_min;
        let mut velocity = Array2::zeros((n_samples, dim));
        for (sample_idx, mut row) in velocity.rows_mut().into_iter().enumerate() {
            let t = t[sample_idx];
            let sigma_t = 1.0 - shrink * t;
            if sigma_t <= 0.0 {
                return Err(PathsError::SingularTime {
                    t,
                    end: TimeEnd::Data,
                    quantity: "u_t(x | x1) = (x1 - x) / (1 - t) with sigma_min = 0".to_string(),
                });
            }
            Zip::from(&mut row)
                .and(x.row(sample_idx))
                .and(x1.row(sample_idx))
                .for_each(|u, &x, &x1| *u = (x1 - shrink * x) / sigma_t);
        }
        Ok(velocity)
    }
}

impl ConditionalPath for OneSidedGaussianPath {
    fn name(&self) -> &'static str {
        "one_sided_gaussian"
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        let shrink = 1.0 - self.sigma_min;
        PathCoefficients {
            t,
            source: 1.0 - shrink * t,
            target: t,
            noise: 0.0,
            d_source: -shrink,
            d_target: 1.0,
            d_noise: 0.0,
        }
    }
}

/// The Schrödinger-bridge path of Tong et al. 2023 (section 3.2.4, eq. (19)-(20)) for the Brownian reference
/// with diffusion `s`: `mu_t = t x1 + (1 - t) x0`, `sigma_t = s sqrt(t (1 - t))`,
/// `u_t = (1 - 2t) / (2 t (1 - t)) (x_t - mu_t) + x1 - x0`. With `eps` given the velocity is singular at both
/// ends (`sigma_t'` is); with [`ExtraNoise::Zero`] it is `x1 - x0` everywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchrodingerBridgePath {
    sigma: f64,
}

impl SchrodingerBridgePath {
    /// The path with diffusion `sigma` in `[0, inf)`.
    pub fn new(sigma: f64) -> Result<Self, PathsError> {
        check::parameter("sigma", sigma, "[0, inf)", |s| s >= 0.0)?;
        Ok(Self { sigma })
    }
    /// The diffusion `s`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }
    /// Tong et al.'s form of the conditional velocity, as a field of `x_t`:
    /// `u_t = (1 - 2t) / (2 t (1 - t)) (x_t - mu_t) + x1 - x0`; singular at `t = 0` and `t = 1`.
    pub fn velocity_at(
        &self,
        x_t: ArrayView2<f64>,
        x0: ArrayView2<f64>,
        x1: ArrayView2<f64>,
        t: ArrayView1<f64>,
    ) -> Result<Array2<f64>, PathsError> {
        let (n_samples, dim) = check::batch("x_t", &x_t, &t)?;
        check::same_shape("x0", &x0, n_samples, dim)?;
        check::same_shape("x1", &x1, n_samples, dim)?;
        let mut velocity = Array2::zeros((n_samples, dim));
        for (sample_idx, mut row) in velocity.rows_mut().into_iter().enumerate() {
            let t = t[sample_idx];
            if t == 0.0 || t == 1.0 {
                return Err(PathsError::SingularTime {
                    t,
                    end: TimeEnd::nearest(t),
                    quantity:
                        "the Schrödinger-bridge velocity (1 - 2t) / (2t (1 - t)) (x_t - mu_t) + x1 - x0"
                            .to_string(),
                });
            }
            let gain = (1.0 - 2.0 * t) / (2.0 * t * (1.0 - t));
            Zip::from(&mut row)
                .and(x_t.row(sample_idx))
                .and(x0.row(sample_idx))
                .and(x1.row(sample_idx))
                .for_each(|u, &x, &x0, &x1| {
                    let mean = t * x1 + (1.0 - t) * x0;
                    *u = gain * (x - mean) + x1 - x0;
                });
        }
        Ok(velocity)
    }
}

impl ConditionalPath for SchrodingerBridgePath {
    fn name(&self) -> &'static str {
        "schrodinger_bridge"
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        let root = (t * (1.0 - t)).sqrt();
        PathCoefficients {
            t,
            source: 1.0 - t,
            target: t,
            noise: self.sigma * root,
            d_source: -1.0,
            d_target: 1.0,
            // d/dt sqrt(t (1 - t)) = (1 - 2t) / (2 sqrt(t (1 - t))): infinite at both ends when sigma > 0.
            d_noise: if self.sigma == 0.0 {
                0.0
            } else {
                self.sigma * (1.0 - 2.0 * t) / (2.0 * root)
            },
        }
    }
}

/// The variance-preserving trigonometric path of Tong et al. 2023 (`VariancePreservingConditionalFlowMatcher`
/// of `torchcfm`): `x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1 + s eps`,
/// `u_t = pi / 2 (cos(pi t / 2) x1 - sin(pi t / 2) x0)`. Without noise it is the [`AffinePath`] of the
/// [`CosineScheduler`](crate::CosineScheduler).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariancePreservingPath {
    noise_std: f64,
}

impl VariancePreservingPath {
    /// The path with extra noise std `noise_std` in `[0, inf)`.
    pub fn new(noise_std: f64) -> Result<Self, PathsError> {
        check::parameter("noise_std", noise_std, "[0, inf)", |s| s >= 0.0)?;
        Ok(Self { noise_std })
    }
    /// The extra noise std `s`.
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }
}

impl ConditionalPath for VariancePreservingPath {
    fn name(&self) -> &'static str {
        "variance_preserving"
    }
    fn coefficients(&self, t: f64) -> PathCoefficients {
        let angle = FRAC_PI_2 * t;
        // cos(angle) written as sin(pi/2 - angle) so the source weight is exactly 0 at t = 1.
        let (sin, cos) = (angle.sin(), (FRAC_PI_2 * (1.0 - t)).sin());
        PathCoefficients {
            t,
            source: cos,
            target: sin,
            noise: self.noise_std,
            d_source: -FRAC_PI_2 * sin,
            d_target: FRAC_PI_2 * cos,
            d_noise: 0.0,
        }
    }
}
