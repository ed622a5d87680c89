//! The crate's one error type: every way user input can be refused, each with the fields that say what was wrong.
//!
//! Library code never panics on user input; it returns one of these variants instead. Messages start lower-case
//! and name the argument, axis or shape at fault.

use thiserror::Error;

/// Everything that can go wrong when building grids, evaluating residuals or integrating along trajectories.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ContinuityError {
    /// A grid or domain has a number of dimensions this crate does not handle (it handles 1, 2 and 3).
    #[error("{what} has {dims} dimensions; grids support 1..=3")]
    DimensionOutOfRange {
        /// Which argument had the wrong number of dimensions.
        what: &'static str,
        /// The number of dimensions it had.
        dims: usize,
    },

    /// A point given to a point-wise routine (trajectory start, divergence location) has no coordinates.
    #[error("{what} is empty; a point needs at least one coordinate")]
    EmptyPoint {
        /// Which argument was empty.
        what: &'static str,
    },

    /// An array or slice does not have the shape the grid (or another argument) requires.
    #[error("{what} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Which argument had the wrong shape.
        what: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        actual: Vec<usize>,
    },

    /// A number given directly by the caller (a domain bound, an array entry, a start point) is NaN or infinite.
    #[error("{what}[{index}] is {value}, expected a finite number")]
    NonFiniteInput {
        /// Which argument held the value.
        what: &'static str,
        /// The flat (row-major) index of the value inside that argument.
        index: usize,
        /// The offending value.
        value: f64,
    },

    /// A user closure (density, velocity, drift, diffusion, divergence) returned NaN or an infinity.
    #[error("{what} at x = {position:?}, t = {time} evaluated to {value}, expected a finite number")]
    NonFiniteEvaluation {
        /// Which closure produced the value.
        what: &'static str,
        /// Where it was evaluated.
        position: Vec<f64>,
        /// When it was evaluated; NaN for closures without a time argument (e.g. [`crate::Grid::sample_cells`]).
        time: f64,
        /// The offending value.
        value: f64,
    },

    /// A domain whose lower bound is not strictly below its upper bound along some axis.
    #[error("domain is degenerate along axis {axis}: lower {lower} must be strictly below upper {upper}")]
    DegenerateDomain {
        /// The axis at fault.
        axis: usize,
        /// The lower bound along that axis.
        lower: f64,
        /// The upper bound along that axis.
        upper: f64,
    },

    /// A grid (or a stencil on it) needs more cells along an axis than it has.
    #[error("{what} has {cells} cells along axis {axis}; at least {min} are needed")]
    TooFewCells {
        /// What needed the cells (a grid, a stencil, a resolution).
        what: &'static str,
        /// The axis at fault.
        axis: usize,
        /// The number of cells it had.
        cells: usize,
        /// The smallest number that works.
        min: usize,
    },

    /// A cell-index region that is empty or leaves the grid.
    #[error(
        "region spans cells {lower}..{upper} along axis {axis}; it must be a non-empty range within 0..{cells}"
    )]
    InvalidRegion {
        /// The axis at fault.
        axis: usize,
        /// The first cell index of the region along that axis.
        lower: usize,
        /// One past the last cell index of the region along that axis.
        upper: usize,
        /// The number of grid cells along that axis.
        cells: usize,
    },

    /// A scalar parameter (time step, finite-difference step, number of steps) outside its allowed range.
    #[error("{name} = {value} is invalid; expected {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given (counts are converted to `f64`).
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },

    /// A convergence study was given fewer resolutions than it needs to measure an order.
    #[error("{given} resolutions given; a convergence study needs at least {min}")]
    TooFewResolutions {
        /// How many resolutions were given.
        given: usize,
        /// The smallest number that works.
        min: usize,
    },

    /// A convergence study's resolutions do not strictly increase.
    #[error("resolutions must strictly increase, but resolutions[{position}] = {next} follows {previous}")]
    ResolutionsNotIncreasing {
        /// The index of the offending resolution.
        position: usize,
        /// The resolution before it.
        previous: usize,
        /// The offending resolution.
        next: usize,
    },
}

/// The crate's result type.
pub type Result<T, E = ContinuityError> = std::result::Result<T, E>;

/// Returns `value` if it is finite, otherwise a [`ContinuityError::NonFiniteEvaluation`] naming the closure.
pub(crate) fn check_evaluation(what: &'static str, position: &[f64], time: f64, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ContinuityError::NonFiniteEvaluation {
            what,
            position: position.to_vec(),
            time,
            value,
        })
    }
}

/// Checks every entry a closure wrote into `values`.
pub(crate) fn check_evaluations(
    what: &'static str,
    position: &[f64],
    time: f64,
    values: &[f64],
) -> Result<()> {
    for &value in values {
        check_evaluation(what, position, time, value)?;
    }
    Ok(())
}

/// Checks that every entry of a caller-given slice or array is finite.
pub(crate) fn check_inputs<'a>(what: &'static str, values: impl IntoIterator<Item = &'a f64>) -> Result<()> {
    for (index, &value) in values.into_iter().enumerate() {
        if !value.is_finite() {
            return Err(ContinuityError::NonFiniteInput { what, index, value });
        }
    }
    Ok(())
}

/// Checks that a step-like parameter is finite and strictly positive.
pub(crate) fn check_positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ContinuityError::InvalidParameter {
            name,
            value,
            expected: "a finite number > 0",
        })
    }
}
