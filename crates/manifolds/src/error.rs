//! The crate's one error type: every way user input can be refused, each with the fields that say what was wrong.
//!
//! Library code never panics on user input; it returns one of these variants instead. Messages start lower-case
//! and name the argument, coordinate or shape at fault. Coordinates are ambient coordinates of the manifold the
//! caller used: an error raised inside one factor of a [`crate::Product`] names the product's coordinates, not the
//! factor's.

use std::ops::Range;

use thiserror::Error;

/// Everything that can go wrong in `ferroflow-manifolds`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ManifoldError {
    /// A point or vector has a number of coordinates other than the manifold's ambient dimension.
    #[error("`{what}` has {found} coordinates, expected {expected} (the ambient dimension of {manifold})")]
    DimensionMismatch {
        /// The argument at fault.
        what: &'static str,
        /// The manifold's name, for example `S^2`.
        manifold: String,
        /// The ambient dimension.
        expected: usize,
        /// The number of coordinates given.
        found: usize,
    },

    /// Two batches (or a batch and a vector of per-sample values) do not have matching shapes.
    #[error("`{what}` has shape {found:?}, expected {expected}")]
    ShapeMismatch {
        /// The argument at fault.
        what: &'static str,
        /// The shape given.
        found: Vec<usize>,
        /// The shape required, in words (for example `"[n_samples, 3]"`).
        expected: String,
    },

    /// An input holds NaN or an infinity.
    #[error("`{what}` holds the non-finite value {value} at coordinate {coordinate}")]
    NonFinite {
        /// The argument at fault.
        what: &'static str,
        /// The ambient coordinate of the first non-finite entry (for a matrix, its flat row-major index).
        coordinate: usize,
        /// The offending value.
        value: f64,
    },

    /// A point meant to lie on a sphere does not have unit norm within the tolerance.
    #[error(
        "point is off the sphere: coordinates {coordinates:?} have norm {norm}, expected 1 within {tolerance:e}"
    )]
    OffSphere {
        /// The ambient coordinates of the sphere factor.
        coordinates: Range<usize>,
        /// Their Euclidean norm.
        norm: f64,
        /// The tolerance on `| |x| - 1 |`.
        tolerance: f64,
    },

    /// A point meant to lie on a flat torus has an angle outside `[-pi, pi)` beyond the tolerance.
    #[error(
        "point is off the torus: angle {value} at coordinate {coordinate} is outside [-pi, pi) by more than {tolerance}"
    )]
    AngleOutOfRange {
        /// The ambient coordinate of the angle.
        coordinate: usize,
        /// The angle.
        value: f64,
        /// The tolerance.
        tolerance: f64,
    },

    /// The logarithm map is undefined: the target point is on the cut locus of the base point (antipodal on a
    /// sphere), where no unique minimising geodesic exists.
    #[error(
        "log is undefined on the cut locus: the points are antipodal on the sphere at coordinates {coordinates:?} (geodesic distance {distance})"
    )]
    CutLocus {
        /// The ambient coordinates of the sphere factor.
        coordinates: Range<usize>,
        /// The geodesic distance between the two points (pi up to round-off).
        distance: f64,
    },

    /// A vector that must be projected radially (onto a sphere) is zero.
    #[error("cannot project onto the sphere: coordinates {coordinates:?} are all zero")]
    ZeroNorm {
        /// The ambient coordinates of the sphere factor.
        coordinates: Range<usize>,
    },

    /// A scalar parameter lies outside its allowed range.
    #[error("parameter `{name}` = {value} is outside its allowed range {allowed}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given (counts are converted to `f64`).
        value: f64,
        /// The allowed range, in words.
        allowed: &'static str,
    },

    /// Mixture weights that are negative, non-finite or do not sum to one.
    #[error("mixture weights are invalid: {reason}")]
    InvalidWeights {
        /// What was wrong, in words.
        reason: String,
    },

    /// A product or mixture was given no factors or components.
    #[error("{what} needs at least one {item}")]
    Empty {
        /// What was being built (`"product"`, `"mixture"`).
        what: &'static str,
        /// What it needs at least one of.
        item: &'static str,
    },

    /// Mixture components or product factors that do not fit together (different ambient dimensions).
    #[error("{what}: {reason}")]
    Incompatible {
        /// What was being built.
        what: &'static str,
        /// What does not fit, in words.
        reason: String,
    },

    /// A user closure (a vector field, a Jacobian) returned a non-finite value or a wrong shape.
    #[error("{what} returned {problem} at t = {time}")]
    BadEvaluation {
        /// Which closure.
        what: &'static str,
        /// What was wrong, in words (for example `"NaN at coordinate 2"`).
        problem: String,
        /// When it was evaluated (NaN for closures without a time).
        time: f64,
    },

    /// An error about one sample (row) of a batch.
    #[error("sample {sample_idx}: {source}")]
    InSample {
        /// The row of the batch.
        sample_idx: usize,
        /// What was wrong with it.
        #[source]
        source: Box<ManifoldError>,
    },
}

impl ManifoldError {
    /// The same error with every ambient coordinate it names moved by `offset`: how a [`crate::Product`] reports
    /// an error raised by one of its factors in its own coordinates.
    pub(crate) fn shifted(self, offset: usize) -> Self {
        let shift = |range: Range<usize>| range.start + offset..range.end + offset;
        match self {
            Self::NonFinite {
                what,
                coordinate,
                value,
            } => Self::NonFinite {
                what,
                coordinate: coordinate + offset,
                value,
            },
            Self::OffSphere {
                coordinates,
                norm,
                tolerance,
            } => Self::OffSphere {
                coordinates: shift(coordinates),
                norm,
                tolerance,
            },
            Self::AngleOutOfRange {
                coordinate,
                value,
                tolerance,
            } => Self::AngleOutOfRange {
                coordinate: coordinate + offset,
                value,
                tolerance,
            },
            Self::CutLocus {
                coordinates,
                distance,
            } => Self::CutLocus {
                coordinates: shift(coordinates),
                distance,
            },
            Self::ZeroNorm { coordinates } => Self::ZeroNorm {
                coordinates: shift(coordinates),
            },
            Self::InSample { sample_idx, source } => Self::InSample {
                sample_idx,
                source: Box::new(source.shifted(offset)),
            },
            other => other,
        }
    }

    /// Wraps the error with the row of the batch it came from.
    pub(crate) fn in_sample(self, sample_idx: usize) -> Self {
        Self::InSample {
            sample_idx,
            source: Box::new(self),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = ManifoldError> = std::result::Result<T, E>;
