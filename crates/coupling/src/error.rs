//! The typed error every fallible function of this crate returns.
//!
//! Each variant names what was wrong (which batch, which entry, which parameter) so that the
//! caller can report it without guessing; messages start in lower case, as the workspace's style asks.

use thiserror::Error;

/// Why a cost matrix, assignment, coupling or metric could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CouplingError {
    /// A batch (or cost matrix) has no rows, or its points have no coordinates.
    #[error("{what} is empty: shape ({rows}, {cols})")]
    Empty {
        /// Which input was empty, e.g. "source batch" or "cost matrix".
        what: &'static str,
        /// Number of rows found.
        rows: usize,
        /// Number of columns found.
        cols: usize,
    },
    /// The two batches hold points of different dimensions.
    #[error(
        "dimension mismatch: source points have {source_dim} coordinates, target points have {target_dim}"
    )]
    DimensionMismatch {
        /// Coordinates per source point.
        source_dim: usize,
        /// Coordinates per target point.
        target_dim: usize,
    },
    /// A coordinate, cost or weight is NaN or infinite.
    #[error("{what} has a non-finite value {value} at ({row}, {col})")]
    NonFinite {
        /// Which input, e.g. "source batch" or "cost matrix".
        what: &'static str,
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// A finite cost so large that differences of costs would overflow.
    #[error("cost matrix entry {value} at ({row}, {col}) exceeds the supported magnitude {limit:e}")]
    CostTooLarge {
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
        /// The offending value.
        value: f64,
        /// Largest supported magnitude.
        limit: f64,
    },
    /// An assignment needs at least as many columns as rows.
    #[error("cost matrix has more rows ({rows}) than columns ({cols}); transpose it or use a coupling")]
    MoreRowsThanColumns {
        /// Rows of the cost matrix.
        rows: usize,
        /// Columns of the cost matrix.
        cols: usize,
    },
    /// Two sizes that must agree do not.
    #[error("size mismatch: {what} expected {expected}, found {found}")]
    SizeMismatch {
        /// What was being compared, e.g. "output rows" or "sample sizes".
        what: &'static str,
        /// The size that was needed.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// A parameter lies outside its allowed range.
    #[error("parameter `{name}` = {value} is out of range: {allowed}")]
    InvalidParameter {
        /// The parameter's name, as in the config.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// A weight vector does not describe a probability distribution.
    #[error("{what} weights must be non-negative and sum to 1 (sum = {sum})")]
    InvalidWeights {
        /// Which marginal, "source" or "target".
        what: &'static str,
        /// Their sum.
        sum: f64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, CouplingError>;
