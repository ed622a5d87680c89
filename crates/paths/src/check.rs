//! Input checks shared by the batch functions: shapes, times in `[0, 1]`, finite values.
//!
//! Every public entry point validates its arguments with these helpers before any arithmetic, so the numeric
//! code behind them can assume well-formed input and never panics.

use ndarray::{ArrayView1, ArrayView2};

use crate::PathsError;

/// Refuses a time outside `[0, 1]` (NaN included).
pub(crate) fn time(t: f64, sample_idx: usize) -> Result<(), PathsError> {
    if (0.0..=1.0).contains(&t) {
        Ok(())
    } else {
        Err(PathsError::TimeOutOfRange { t, sample_idx })
    }
}

/// Refuses any NaN or infinite entry of `values`.
pub(crate) fn finite<'a>(
    name: &'static str,
    values: impl IntoIterator<Item = &'a f64>,
) -> Result<(), PathsError> {
    match values.into_iter().position(|value| !value.is_finite()) {
        Some(index) => Err(PathsError::NonFinite { name, index }),
        None => Ok(()),
    }
}

/// Refuses a scalar parameter that is non-finite or fails `allowed_range`.
pub(crate) fn parameter(
    name: &'static str,
    value: f64,
    allowed: &'static str,
    in_range: impl Fn(f64) -> bool,
) -> Result<(), PathsError> {
    if value.is_finite() && in_range(value) {
        Ok(())
    } else {
        Err(PathsError::InvalidParameter { name, value, allowed })
    }
}

/// Checks a batch of points `[n_samples, dim]` and its times `[n_samples]`; returns `(n_samples, dim)`.
pub(crate) fn batch(
    points_name: &'static str,
    points: &ArrayView2<f64>,
    times: &ArrayView1<f64>,
) -> Result<(usize, usize), PathsError> {
    let (n_samples, dim) = points.dim();
    if times.len() != n_samples {
        return Err(PathsError::ShapeMismatch {
            name: "t",
            found: times.shape().to_vec(),
            expected: format!("[{n_samples}] (one time per row of `{points_name}`)"),
        });
    }
    finite(points_name, points.iter())?;
    for (sample_idx, &t) in times.iter().enumerate() {
        time(t, sample_idx)?;
    }
    Ok((n_samples, dim))
}

/// Checks that `other` has the shape `[n_samples, dim]` and finite entries.
pub(crate) fn same_shape(
    name: &'static str,
    other: &ArrayView2<f64>,
    n_samples: usize,
    dim: usize,
) -> Result<(), PathsError> {
    if other.dim() != (n_samples, dim) {
        return Err(PathsError::ShapeMismatch {
            name,
            found: other.shape().to_vec(),
            expected: format!("[{n_samples}, {dim}]"),
        });
    }
    finite(name, other.iter())
}

/// Checks that a slice has length `dim`.
pub(crate) fn slice_len(name: &'static str, values: &[f64], dim: usize) -> Result<(), PathsError> {
    if values.len() == dim {
        Ok(())
    } else {
        Err(PathsError::ShapeMismatch {
            name,
            found: vec![values.len()],
            expected: format!("[{dim}]"),
        })
    }
}
