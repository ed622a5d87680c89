//! Typed errors for every fallible function of the crate.
//!
//! Nothing in this crate panics on user input: shapes, times, weights, covariances and non-finite values are
//! checked and refused with a [`PathsError`] that names what was wrong.

use std::fmt;

/// Which end of the time interval `[0, 1]` a quantity is singular at.
///
/// Convention of the whole crate (as in Meta's `flow_matching`): `t = 0` is the source (noise), `t = 1` the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEnd {
    /// `t = 0`, the source (noise) end.
    Source,
    /// `t = 1`, the data end.
    Data,
}

impl TimeEnd {
    /// The end nearest to `t`; used to say where a singular coefficient blew up.
    pub fn nearest(t: f64) -> Self {
        if t < 0.5 { Self::Source } else { Self::Data }
    }
}

impl fmt::Display for TimeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source => write!(f, "source end t = 0"),
            Self::Data => write!(f, "data end t = 1"),
        }
    }
}

/// Everything that can go wrong in `ferroflow-paths`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PathsError {
    /// An array had the wrong shape.
    #[error("shape mismatch: `{name}` has shape {found:?}, expected {expected}")]
    ShapeMismatch {
        /// The argument whose shape was wrong.
        name: &'static str,
        /// The shape that was passed.
        found: Vec<usize>,
        /// The expected shape, in words (for example `"[n_samples, 3]"`).
        expected: String,
    },
    /// A time lay outside `[0, 1]` (or was NaN).
    #[error("time t = {t} (sample {sample_idx}) is outside [0, 1]")]
    TimeOutOfRange {
        /// The offending time.
        t: f64,
        /// The row of the batch it belonged to (0 for scalar calls).
        sample_idx: usize,
    },
    /// A quantity is singular (divides by zero) at this time.
    #[error("{quantity} is singular at t = {t}, the {end}")]
    SingularTime {
        /// The time that was asked for.
        t: f64,
        /// The end of `[0, 1]` at which the quantity is singular.
        end: TimeEnd,
        /// What could not be evaluated, for example `"conversion from velocity to target"`.
        quantity: String,
    },
    /// A covariance matrix was not symmetric.
    #[error("covariance `{name}` is not symmetric: |C - C^T| reaches {max_asymmetry}")]
    NotSymmetric {
        /// Which covariance (for example `"covariances[2]"`).
        name: String,
        /// Largest absolute entry of `C - C^T`.
        max_asymmetry: f64,
    },
    /// A covariance matrix was not (numerically) positive definite.
    #[error("covariance `{name}` is not positive definite: smallest eigenvalue {min_eigenvalue}")]
    NotPositiveDefinite {
        /// Which covariance (for example `"covariances[2]"`).
        name: String,
        /// Its smallest eigenvalue (NaN where the factorisation itself failed).
        min_eigenvalue: f64,
    },
    /// A mixture weight was negative.
    #[error("mixture weight {index} is negative: {weight}")]
    NegativeWeight {
        /// Index of the component.
        index: usize,
        /// Its weight.
        weight: f64,
    },
    /// Mixture weights did not sum to one.
    #[error("mixture weights sum to {sum}, expected 1 (tolerance {tolerance})")]
    WeightsDoNotSumToOne {
        /// The sum that was found.
        sum: f64,
        /// The allowed deviation from one.
        tolerance: f64,
    },
    /// A value was NaN or infinite.
    #[error("`{name}` holds a non-finite value at flat index {index}")]
    NonFinite {
        /// The argument that held it.
        name: &'static str,
        /// Position of the first non-finite entry, in logical (row-major) order.
        index: usize,
    },
    /// A parameter (of a scheduler, a path or a configuration) lay outside its allowed range.
    #[error("parameter `{name}` = {value} is outside its allowed range {allowed}")]
    InvalidParameter {
        /// The key's name.
        name: &'static str,
        /// The value that was given.
        value: f64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// A signal-to-noise ratio could not be inverted by a scheduler (outside the scheduler's range).
    #[error("signal-to-noise ratio {snr} is outside the range of scheduler {scheduler}")]
    SnrOutOfRange {
        /// The ratio alpha / sigma that was asked for.
        snr: f64,
        /// The scheduler's name.
        scheduler: &'static str,
    },
    /// An ancestral step that does not raise the signal-to-noise ratio `alpha / sigma` (from a cleaner time
    /// to a noisier one, or on a path that is not monotone there).
    #[error(
        "an ancestral step from t = {from_t} to t = {to_t} does not raise the signal-to-noise ratio alpha / sigma; \
         steps go from noise (t = 0) towards data (t = 1) on a path whose ratio grows"
    )]
    SnrNotIncreasing {
        /// The noisier time the step starts from.
        from_t: f64,
        /// The time it was asked to reach.
        to_t: f64,
    },
    /// LAPACK refused a factorisation.
    #[error("linear algebra failed on `{name}`: {message}")]
    Linalg {
        /// The matrix that was factorised.
        name: String,
        /// LAPACK's message.
        message: String,
    },
}
