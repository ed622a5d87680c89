//! The one error type of the solvers: every failure names the time reached or the option that was wrong.

use std::error::Error;

/// Why a solve stopped.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// The state, a stage or the field's value stopped being finite (NaN or infinite).
    #[error(
        "state became non-finite in the step from t = {t_reached} towards t = {t_attempted} \
         (last finite state at t = {t_reached})"
    )]
    NonFiniteState {
        /// Time of the last state that was finite.
        t_reached: f64,
        /// End of the step that produced the non-finite value.
        t_attempted: f64,
    },
    /// The adaptive controller asked for a step below `min_step` (or one that no longer moves `t`).
    #[error("step size underflow at t = {t}: |h| = {step:e} is below min_step = {min_step:e}")]
    StepSizeUnderflow {
        /// Time reached.
        t: f64,
        /// The step the controller asked for.
        step: f64,
        /// The smallest step allowed.
        min_step: f64,
    },
    /// More step attempts (accepted plus rejected) than `max_steps`.
    #[error("max_steps = {max_steps} exceeded at t = {t} before reaching t = {t_end}")]
    MaxStepsExceeded {
        /// The limit.
        max_steps: usize,
        /// Time reached.
        t: f64,
        /// The time the solve was asked to reach.
        t_end: f64,
    },
    /// An option is out of its allowed range.
    #[error("invalid option `{key}` = {value}: expected {allowed}")]
    InvalidOption {
        /// The option's name, as in the options struct.
        key: &'static str,
        /// The value given, formatted.
        value: String,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// The requested times are empty, not finite, not monotone, or outside the allowed interval.
    #[error("invalid time grid: {reason}")]
    InvalidTimeGrid {
        /// What was wrong, naming the offending index and value.
        reason: String,
    },
    /// The field (or drift, diffusion, score) failed.
    #[error("field evaluation failed at t = {t}: {source}")]
    Field {
        /// Time at which the field was called.
        t: f64,
        /// The field's own error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// A step observer ([`StepObserver`](crate::ode::StepObserver)) stopped the solve.
    #[error("step observer stopped the solve after the step to t = {t}: {source}")]
    Observer {
        /// End time of the step the observer was shown.
        t: f64,
        /// The observer's own error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
}

impl SolverError {
    /// Wraps a field's own error, recording the time at which it was called.
    pub fn field(t: f64, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        SolverError::Field {
            t,
            source: source.into(),
        }
    }

    /// Wraps a step observer's own error, recording the end time of the step it was shown.
    pub fn observer(t: f64, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        SolverError::Observer {
            t,
            source: source.into(),
        }
    }

    pub(crate) fn option(key: &'static str, value: impl std::fmt::Display, allowed: &'static str) -> Self {
        SolverError::InvalidOption {
            key,
            value: value.to_string(),
            allowed,
        }
    }
}
