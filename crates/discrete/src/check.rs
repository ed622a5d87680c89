//! Input checks shared by every public entry point: token ranges, array shapes, probability rows, times and
//! parameters.
//!
//! Each function validates before any arithmetic, so the numeric code behind it can assume well-formed input.

use ndarray::{ArrayView, ArrayView1, Axis, Dimension, IntoDimension};

use crate::{DiscreteError, Result, Token};

/// How far a row of probabilities may sum from one. Network outputs arrive as `f32` softmaxes over vocabularies of
/// tens of thousands of tokens, whose sums stray by about `1e-6`; a wrong input (unnormalised logits, a missing
/// softmax) strays by far more.
pub const PROBABILITY_TOLERANCE: f64 = 1e-4;

/// Refuses a token `>= limit`, naming the first one.
pub(crate) fn tokens<D: Dimension>(
    what: &'static str,
    tokens: ArrayView<Token, D>,
    limit: usize,
) -> Result<()> {
    match tokens.indexed_iter().find(|(_, token)| **token as usize >= limit) {
        None => Ok(()),
        Some((index, token)) => Err(DiscreteError::TokenOutOfRange {
            what,
            index: index.into_dimension().slice().to_vec(),
            token: u64::from(*token),
            limit,
        }),
    }
}

/// Refuses an array whose shape is not `expected`; `words` says the expected shape by name.
pub(crate) fn shape(what: &'static str, found: &[usize], expected: &[usize], words: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(DiscreteError::ShapeMismatch {
            what,
            found: found.to_vec(),
            expected: format!("{words} = {expected:?}"),
        })
    }
}

/// Refuses NaN or `+inf`, and `-inf` unless `allow_minus_infinity` (logits and log-probabilities of impossible
/// tokens), naming the first such entry.
pub(crate) fn finite<D: Dimension>(
    what: &'static str,
    values: ArrayView<f64, D>,
    allow_minus_infinity: bool,
) -> Result<()> {
    let bad = |v: f64| v.is_nan() || v == f64::INFINITY || (v == f64::NEG_INFINITY && !allow_minus_infinity);
    match values.indexed_iter().find(|(_, v)| bad(**v)) {
        None => Ok(()),
        Some((index, value)) => Err(DiscreteError::NonFinite {
            what,
            index: index.into_dimension().slice().to_vec(),
            value: *value,
        }),
    }
}

/// Refuses probabilities that are negative, non-finite, or whose rows (the last axis) do not sum to one within
/// [`PROBABILITY_TOLERANCE`].
pub(crate) fn probability_rows<D: Dimension>(what: &'static str, probs: ArrayView<f64, D>) -> Result<()> {
    finite(what, probs.view(), false)?;
    if let Some((index, value)) = probs.indexed_iter().find(|(_, p)| **p < 0.0) {
        return Err(DiscreteError::InvalidProbability {
            what,
            index: index.into_dimension().slice().to_vec(),
            value: *value,
            reason: "a probability below 0",
        });
    }
    rows_sum_to_one(what, probs, |p| p)
}

/// Refuses log-probabilities that are NaN, `+inf` or above zero beyond round-off, or whose rows do not
/// exponentiate to a distribution.
pub(crate) fn log_probability_rows<D: Dimension>(
    what: &'static str,
    log_probs: ArrayView<f64, D>,
) -> Result<()> {
    finite(what, log_probs.view(), true)?;
    if let Some((index, value)) = log_probs
        .indexed_iter()
        .find(|(_, l)| **l > PROBABILITY_TOLERANCE)
    {
        return Err(DiscreteError::InvalidProbability {
            what,
            index: index.into_dimension().slice().to_vec(),
            value: *value,
            reason: "a log-probability above 0",
        });
    }
    rows_sum_to_one(what, log_probs, f64::exp)
}

fn rows_sum_to_one<D: Dimension>(
    what: &'static str,
    values: ArrayView<f64, D>,
    to_probability: impl Fn(f64) -> f64,
) -> Result<()> {
    let last = Axis(values.ndim().saturating_sub(1));
    if values.ndim() == 0 {
        return Ok(());
    }
    for (row_idx, row) in values.lanes(last).into_iter().enumerate() {
        let sum: f64 = row.iter().map(|v| to_probability(*v)).sum();
        if (sum - 1.0).abs() > PROBABILITY_TOLERANCE {
            return Err(DiscreteError::NotADistribution {
                what,
                index: row_index(values.shape(), row_idx),
                sum,
                tolerance: PROBABILITY_TOLERANCE,
            });
        }
    }
    Ok(())
}

/// The multi-index (all axes but the last) of the `row_idx`-th row in row-major order.
pub(crate) fn row_index(shape: &[usize], mut row_idx: usize) -> Vec<usize> {
    let outer = &shape[..shape.len().saturating_sub(1)];
    let mut index = vec![0; outer.len()];
    for (axis, extent) in outer.iter().enumerate().rev() {
        let extent = (*extent).max(1);
        index[axis] = row_idx % extent;
        row_idx /= extent;
    }
    index
}

/// Refuses a time outside `[0, 1)` (or NaN).
pub(crate) fn time_before_end(what: &'static str, time: f64) -> Result<f64> {
    if (0.0..1.0).contains(&time) {
        Ok(time)
    } else {
        Err(DiscreteError::TimeOutOfRange {
            what,
            time,
            allowed: "[0, 1)",
        })
    }
}

/// Refuses a time outside `[0, 1]` (or NaN).
pub(crate) fn time_closed(what: &'static str, time: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&time) {
        Ok(time)
    } else {
        Err(DiscreteError::TimeOutOfRange {
            what,
            time,
            allowed: "[0, 1]",
        })
    }
}

/// Refuses per-sample times outside `[0, 1)`.
pub(crate) fn times_before_end(what: &'static str, times: ArrayView1<f64>) -> Result<()> {
    for time in times {
        time_before_end(what, *time)?;
    }
    Ok(())
}

/// Refuses a scalar parameter that does not satisfy `valid` (NaN never does).
pub(crate) fn parameter(
    name: &'static str,
    value: f64,
    allowed: &'static str,
    valid: impl Fn(f64) -> bool,
) -> Result<f64> {
    if !value.is_nan() && valid(value) {
        Ok(value)
    } else {
        Err(DiscreteError::InvalidParameter { name, value, allowed })
    }
}

/// Refuses a time grid that does not increase strictly inside `[0, 1]` or has fewer than two points.
pub(crate) fn grid(grid: &[f64]) -> Result<()> {
    if grid.len() < 2 {
        return Err(DiscreteError::InvalidGrid {
            reason: format!("it has {} points, at least 2 are needed", grid.len()),
        });
    }
    if let Some((idx, time)) = grid.iter().enumerate().find(|(_, t)| !(0.0..=1.0).contains(*t)) {
        return Err(DiscreteError::InvalidGrid {
            reason: format!("point {idx} is {time}, outside [0, 1]"),
        });
    }
    if let Some(idx) = grid.windows(2).position(|pair| pair[1] <= pair[0]) {
        return Err(DiscreteError::InvalidGrid {
            reason: format!(
                "point {} ({}) is not after point {idx} ({})",
                idx + 1,
                grid[idx + 1],
                grid[idx]
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_index_walks_all_but_the_last_axis_in_row_major_order() {
        assert_eq!(row_index(&[2, 3, 5], 0), vec![0, 0]);
        assert_eq!(row_index(&[2, 3, 5], 4), vec![1, 1]);
        assert_eq!(row_index(&[2, 3, 5], 5), vec![1, 2]);
        assert_eq!(row_index(&[7], 0), Vec::<usize>::new());
    }

    #[test]
    fn a_row_off_by_more_than_the_tolerance_is_named() {
        let probs = ndarray::array![[0.5, 0.5], [0.5, 0.6]];
        let err = probability_rows("probs", probs.view()).unwrap_err();
        assert!(
            matches!(err, DiscreteError::NotADistribution { ref index, .. } if index == &vec![1]),
            "{err}"
        );
    }
}
