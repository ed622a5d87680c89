//! Conversions between the parameterisations of an affine Gaussian path, and re-timing a trained field from
//! one scheduler to another.
//!
//! For `x_t = alpha x1 + sigma z` ([`GaussianCoefficients`], `z ~ N(0, I)`), a network may predict the velocity
//! `v = d_alpha x1 + d_sigma z`, the data `x1` ("target"), the noise `z` ("epsilon"; the source sample `x0`
//! itself when the source is `N(0, I)`) or the score `-z / sigma`. Each is affine in `(x_t, x1)`, so each
//! converts to each other as `to = a x_t + b from`; the same formulas hold for the marginal quantities
//! (conditional expectations given `x_t`), which is why a model trained for one can be sampled as another.
//! The formulas for velocity, target and epsilon are those of `flow_matching`'s `AffineProbPath`
//! (Lipman et al. 2024, section on affine paths, "velocity parameterisations"):
//! - `target_to_velocity`:  `a = d_sigma / sigma`, `b = (d_alpha sigma - d_sigma alpha) / sigma`;
//! - `epsilon_to_velocity`: `a = d_alpha / alpha`, `b = (d_sigma alpha - d_alpha sigma) / alpha`;
//! - `velocity_to_target`:  `a = -d_sigma / D`, `b = sigma / D` with `D = d_alpha sigma - d_sigma alpha`;
//! - `velocity_to_epsilon`: `a = d_alpha / D`, `b = -alpha / D`;
//! - `target_to_epsilon`:   `a = 1 / sigma`, `b = -alpha / sigma`;
//! - `epsilon_to_target`:   `a = 1 / alpha`, `b = -sigma / alpha`;
//!
//! and the score is `-epsilon / sigma` (Tweedie's formula; Lipman et al. 2024, relation of the score to the
//! epsilon-prediction for Gaussian paths). A conversion whose formula divides by zero at `t` (for example
//! `target_to_velocity` at `sigma = 0`) is refused with [`PathsError::SingularTime`].
//!
//! [`ScheduleTransform`] re-times a velocity field trained under one scheduler so it samples another one
//! (Lipman et al. 2024, "scheduler change"; `flow_matching`'s `ScheduleTransformedModel`), see its docs.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Zip};
use serde::{Deserialize, Serialize};

use crate::path::{ConditionalPath, GaussianCoefficients};
use crate::scheduler::Scheduler;
use crate::{PathsError, TimeEnd, check};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The velocity `v = d_alpha x1 + d_sigma z`.
    Velocity,
    /// The data sample `x1` (`"x1"` is accepted for it in configs).
    #[serde(alias = "x1")]
    Target,
    /// The standardised noise `z` (the source sample `x0` for a standard Gaussian source).
    Epsilon,
    /// The score `grad_x log p_t(x)`, which for a Gaussian path is `-z / sigma`.
    Score,
}

impl Prediction {
    /// Every parameterisation, for exhaustive loops.
    pub const ALL: [Prediction; 4] = [Self::Velocity, Self::Target, Self::Epsilon, Self::Score];

    fn as_str(self) -> &'static str {
        match self {
            Self::Velocity => "velocity",
            Self::Target => "target",
            Self::Epsilon => "epsilon",
            Self::Score => "score",
        }
    }
}

/// The affine map `to = x_t_coefficient * x_t + value_coefficient * from` of one conversion at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// The weight of `x_t`.
    pub x_t_coefficient: f64,
    /// The weight of the value being converted.
    pub value_coefficient: f64,
}

impl Conversion {
    const IDENTITY: Conversion = Conversion {
        x_t_coefficient: 0.0,
        value_coefficient: 1.0,
    };

    /// First `self`, then `then`.
    fn then(self, then: Conversion) -> Conversion {
        Conversion {
            x_t_coefficient: then.x_t_coefficient + then.value_coefficient * self.x_t_coefficient,
            value_coefficient: then.value_coefficient * self.value_coefficient,
        }
    }

    /// Applies the map to one coordinate.
    pub fn apply(&self, x_t: f64, value: f64) -> f64 {
        self.x_t_coefficient * x_t + self.value_coefficient * value
    }
}

impl GaussianCoefficients {
    /// The affine map from the `from` parameterisation to the `to` parameterisation at these coefficients.
    pub fn conversion(&self, from: Prediction, to: Prediction) -> Result<Conversion, PathsError> {
        use Prediction::{Epsilon, Score, Target, Velocity};
        let Self {
            alpha,
            sigma,
            d_alpha,
            d_sigma,
            ..
        } = *self;
        let determinant = d_alpha * sigma - d_sigma * alpha;
        let map = |x_t_coefficient, value_coefficient| Conversion {
            x_t_coefficient,
            value_coefficient,
        };
        // Score enters and leaves through epsilon: score = -epsilon / sigma.
        let epsilon_to_score = map(0.0, -1.0 / sigma);
        let score_to_epsilon = map(0.0, -sigma);
        let conversion = match (from, to) {
            (Velocity, Velocity) | (Target, Target) | (Epsilon, Epsilon) | (Score, Score) => {
                Conversion::IDENTITY
            }
            (Target, Velocity) => map(d_sigma / sigma, determinant / sigma),
            (Epsilon, Velocity) => map(d_alpha / alpha, -determinant / alpha),
            (Velocity, Target) => map(-d_sigma / determinant, sigma / determinant),
            (Velocity, Epsilon) => map(d_alpha / determinant, -alpha / determinant),
            (Target, Epsilon) => map(1.0 / sigma, -alpha / sigma),
            (Epsilon, Target) => map(1.0 / alpha, -sigma / alpha),
            (Score, Epsilon) => score_to_epsilon,
            (Epsilon, Score) => epsilon_to_score,
            (Score, other) => score_to_epsilon.then(self.conversion(Epsilon, other)?),
            (other, Score) => self.conversion(other, Epsilon)?.then(epsilon_to_score),
        };
        if conversion.x_t_coefficient.is_finite() && conversion.value_coefficient.is_finite() {
            Ok(conversion)
        } else {
            Err(PathsError::SingularTime {
                t: self.t,
                end: TimeEnd::nearest(self.t),
                quantity: format!("the conversion from {} to {}", from.as_str(), to.as_str()),
            })
        }
    }
}

/// Converts a batch of predictions `value` (`[n_samples, dim]`) at points `x_t` and times `t` from one
/// parameterisation to another, for `path` with source `N(0, source_std^2 I)`.
pub fn convert<P: ConditionalPath + ?Sized>(
    path: &P,
    source_std: f64,
    from: Prediction,
    to: Prediction,
    value: ArrayView2<f64>,
    x_t: ArrayView2<f64>,
    t: ArrayView1<f64>,
) -> Result<Array2<f64>, PathsError> {
    let (n_samples, dim) = check::batch("x_t", &x_t, &t)?;
    check::same_shape("value", &value, n_samples, dim)?;
    let mut converted = Array2::zeros((n_samples, dim));
    for (sample_idx, mut row) in converted.rows_mut().into_iter().enumerate() {
        let conversion = path
            .gaussian_coefficients(t[sample_idx], source_std)?
            .conversion(from, to)?;
        Zip::from(&mut row)
            .and(x_t.row(sample_idx))
            .and(value.row(sample_idx))
            .for_each(|out, &x, &v| *out = conversion.apply(x, v));
    }
    Ok(converted)
}

/// Where and how a re-timed field reads the original one: at new time `r`, the original time `t` and the
/// scale `s` with `x_bar_r = s x_t`, and their derivatives in `r`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retiming {
    /// The new time `r`.
    pub r: f64,
    /// `t_r = snr_original^-1(snr_target(r))`.
    pub t: f64,
    /// `s_r = sigma_target(r) / sigma_original(t_r)`.
    pub scale: f64,
    /// `d t_r / dr`.
    pub d_t: f64,
    /// `d s_r / dr`.
    pub d_scale: f64,
}

/// Re-times a velocity field trained under `original` so it is the marginal velocity under `target`
/// (Lipman et al. 2024, "scheduler change"; `flow_matching`'s `ScheduleTransformedModel`).
///
/// Both schedules share the same source and data, so `x_bar_r = alpha_r x1 + sigma_r x0` equals
/// `s_r x_{t_r}` for the original time `t_r` with the same signal-to-noise ratio,
/// `t_r = snr^-1(alpha_r / sigma_r)`, and scale `s_r = sigma_r / sigma_{t_r}`. Differentiating,
/// `u_bar_r(x) = (s_r' / s_r) x + s_r t_r' u_{t_r}(x / s_r)` with
/// `t_r' = sigma_t^2 (sigma_r alpha_r' - alpha_r sigma_r') / (sigma_r^2 (sigma_t alpha_t' - alpha_t sigma_t'))`
/// (from `snr'(t) t_r' = snr_target'(r)`) and `s_r' = (sigma_t sigma_r' - sigma_r sigma_t' t_r') / sigma_t^2`.
/// The map needs `snr_target(r)` inside the original scheduler's SNR range
/// ([`PathsError::SnrOutOfRange`] otherwise) and `r < 1` (`s_r` is 0 / 0 at `r = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleTransform<A, B> {
    original: A,
    target: B,
}

impl<A: Scheduler, B: Scheduler> ScheduleTransform<A, B> {
    /// Re-times fields trained under `original` to the schedule `target`.
    pub fn new(original: A, target: B) -> Self {
        Self { original, target }
    }

    /// The original time, scale and their derivatives for the new time `r`.
    pub fn retime(&self, r: f64) -> Result<Retiming, PathsError> {
        check::time(r, 0)?;
        let new = self.target.evaluate(r);
        if new.sigma <= 0.0 {
            return Err(PathsError::SingularTime {
                t: r,
                end: TimeEnd::Data,
                quantity: "the schedule transform (sigma_r = 0)".to_string(),
            });
        }
        let t = self.original.time_for_snr(new.alpha / new.sigma)?;
        let old = self.original.evaluate(t);
        let d_t = old.sigma * old.sigma * (new.sigma * new.d_alpha - new.alpha * new.d_sigma)
            / (new.sigma * new.sigma * (old.sigma * old.d_alpha - old.alpha * old.d_sigma));
        let retiming = Retiming {
            r,
            t,
            scale: new.sigma / old.sigma,
            d_t,
            d_scale: (old.sigma * new.d_sigma - new.sigma * old.d_sigma * d_t) / (old.sigma * old.sigma),
        };
        if [retiming.t, retiming.scale, retiming.d_t, retiming.d_scale]
            .iter()
            .all(|v| v.is_finite())
        {
            Ok(retiming)
        } else {
            Err(PathsError::SingularTime {
                t: r,
                end: TimeEnd::nearest(r),
                quantity: format!(
                    "the schedule transform from `{}` to `{}`",
                    self.original.name(),
                    self.target.name()
                ),
            })
        }
    }

    /// The re-timed field at points `x` (`[n_samples, dim]`) and new times `r`, given the original field as a
    /// batch function `field(x, t) -> [n_samples, dim]`, called once.
    pub fn velocity<F>(
        &self,
        x: ArrayView2<f64>,
        r: ArrayView1<f64>,
        mut field: F,
    ) -> Result<Array2<f64>, PathsError>
    where
        F: FnMut(ArrayView2<f64>, ArrayView1<f64>) -> Result<Array2<f64>, PathsError>,
    {
        let (n_samples, dim) = check::batch("x", &x, &r)?;
        let retimings = r.iter().map(|&r| self.retime(r)).collect::<Result<Vec<_>, _>>()?;
        let mut scaled = x.to_owned();
        for (mut row, retiming) in scaled.rows_mut().into_iter().zip(&retimings) {
            row /= retiming.scale;
        }
        let original_times: Array1<f64> = retimings.iter().map(|retiming| retiming.t).collect();
        let original_velocity = field(scaled.view(), original_times.view())?;
        if original_velocity.dim() != (n_samples, dim) {
            return Err(PathsError::ShapeMismatch {
                name: "field(x, t)",
                found: original_velocity.shape().to_vec(),
                expected: format!("[{n_samples}, {dim}]"),
            });
        }
        let mut velocity = Array2::zeros((n_samples, dim));
        for (sample_idx, retiming) in retimings.iter().enumerate() {
            let Retiming {
                scale, d_t, d_scale, ..
            } = *retiming;
            Zip::from(velocity.row_mut(sample_idx))
                .and(x.row(sample_idx))
                .and(original_velocity.row(sample_idx))
                .for_each(|out, &x, &u| *out = d_scale / scale * x + scale * d_t * u);
        }
        Ok(velocity)
    }
}
