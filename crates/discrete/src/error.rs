//! The crate's one error type: every way user input can be refused, each with the fields that say what was wrong.
//!
//! Library code never panics on user input; it returns one of these variants instead. Messages start lower-case
//! and name the argument, the index (as a multi-index into the argument's array) and the value at fault.

use thiserror::Error;

/// Everything that can go wrong in `ferroflow-discrete`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DiscreteError {
    /// A token id is not a state the argument may hold (for example a data token `>= vocab_size`, or a state
    /// `>= n_states`).
    #[error("`{what}` holds token {token} at index {index:?}, outside the allowed range 0..{limit}")]
    TokenOutOfRange {
        /// The argument at fault.
        what: &'static str,
        /// Where in the argument's array.
        index: Vec<usize>,
        /// The offending token id.
        token: u64,
        /// The exclusive upper bound of the allowed ids.
        limit: usize,
    },

    /// Arrays whose shapes disagree with each other or with the path.
    #[error("`{what}` has shape {found:?}, expected {expected}")]
    ShapeMismatch {
        /// The argument at fault.
        what: &'static str,
        /// The shape given.
        found: Vec<usize>,
        /// The shape required, in words (for example `"[n_samples, length, 4]"`).
        expected: String,
    },

    /// A time outside the range the formula is defined on (rates divide by `1 - kappa_t`, so most functions
    /// need `t` in `[0, 1)`).
    #[error("`{what}` = {time} is outside {allowed}")]
    TimeOutOfRange {
        /// The argument at fault.
        what: &'static str,
        /// The time given.
        time: f64,
        /// The allowed range, in words.
        allowed: &'static str,
    },

    /// The schedule returned a value a mixture path cannot use at this time.
    #[error("the schedule gives kappa = {value}, d kappa / dt = {derivative} at t = {time}: {reason}")]
    InvalidKappa {
        /// The time it was evaluated at.
        time: f64,
        /// `kappa_t`.
        value: f64,
        /// `d kappa_t / dt`.
        derivative: f64,
        /// What is wrong, in words.
        reason: &'static str,
    },

    /// A row of probabilities (or of log-probabilities, exponentiated) does not sum to one.
    #[error("`{what}` at index {index:?} sums to {sum}, expected 1 within {tolerance}")]
    NotADistribution {
        /// The argument at fault.
        what: &'static str,
        /// The index of the row (the last axis is summed over).
        index: Vec<usize>,
        /// Its sum.
        sum: f64,
        /// The tolerance on `|sum - 1|`.
        tolerance: f64,
    },

    /// A probability below zero, or a log-probability above zero, beyond round-off.
    #[error("`{what}` holds the invalid value {value} at index {index:?} ({reason})")]
    InvalidProbability {
        /// The argument at fault.
        what: &'static str,
        /// Where.
        index: Vec<usize>,
        /// The value.
        value: f64,
        /// What is wrong, in words.
        reason: &'static str,
    },

    /// NaN, or an infinity where none is allowed.
    #[error("`{what}` holds the non-finite value {value} at index {index:?}")]
    NonFinite {
        /// The argument at fault.
        what: &'static str,
        /// Where.
        index: Vec<usize>,
        /// The value.
        value: f64,
    },

    /// A scalar parameter outside its allowed range.
    #[error("parameter `{name}` = {value} is outside its allowed range {allowed}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given (counts are converted to `f64`).
        value: f64,
        /// The allowed range, in words.
        allowed: &'static str,
    },

    /// An argument that must hold at least one element is empty.
    #[error("`{what}` is empty; it needs at least one {item}")]
    Empty {
        /// The argument at fault.
        what: &'static str,
        /// What it needs at least one of.
        item: &'static str,
    },

    /// A sequence the path gives probability zero at this time, so its posterior is undefined.
    #[error(
        "the sequence {sequence:?} has probability 0 under the path at t = {time}; its posterior is undefined"
    )]
    ImpossibleState {
        /// The sequence `x_t`.
        sequence: Vec<u64>,
        /// The time.
        time: f64,
    },

    /// An exact enumeration would visit more states than the caller allowed.
    #[error("enumerating {what} needs {states} states, more than the limit {limit}")]
    TooManyStates {
        /// What was being enumerated.
        what: &'static str,
        /// The number of states needed (saturating).
        states: u128,
        /// The limit.
        limit: usize,
    },

    /// A time grid that is not strictly increasing inside `[0, 1]`.
    #[error("time grid is invalid: {reason}")]
    InvalidGrid {
        /// What is wrong, in words.
        reason: String,
    },

    /// The divergence-free corrector was asked for at a time where `kappa_t = 0`, where its rate
    /// `beta_t kappa'_t / (kappa_t (1 - kappa_t))` is infinite.
    #[error(
        "the corrector coefficient is {coefficient} > 0 at t = {time}, where kappa = 0 makes its rate infinite"
    )]
    SingularCorrector {
        /// The time.
        time: f64,
        /// The corrector coefficient `beta_t` there.
        coefficient: f64,
    },
}

/// The crate's result type.
pub type Result<T, E = DiscreteError> = std::result::Result<T, E>;
