//! Input checks shared by every public entry point: coordinate counts, finite values, batch shapes and
//! parameter ranges.
//!
//! Each function validates before any arithmetic, so the numeric code behind it can assume well-formed input.
//! The manifold's name is only computed when an error is built.

use ndarray::{ArrayView1, ArrayView2};

use crate::{Manifold, ManifoldError, Result};

/// Refuses a vector whose length is not the manifold's ambient dimension, or which holds NaN or an infinity.
pub(crate) fn vector<M: Manifold + ?Sized>(
    manifold: &M,
    what: &'static str,
    v: ArrayView1<f64>,
) -> Result<()> {
    if v.len() != manifold.ambient_dim() {
        return Err(ManifoldError::DimensionMismatch {
            what,
            manifold: manifold.name(),
            expected: manifold.ambient_dim(),
            found: v.len(),
        });
    }
    finite(what, v)
}

/// Refuses NaN or an infinity anywhere in `v`, naming the first such coordinate.
pub(crate) fn finite(what: &'static str, v: ArrayView1<f64>) -> Result<()> {
    match v.iter().position(|value| !value.is_finite()) {
        None => Ok(()),
        Some(coordinate) => Err(ManifoldError::NonFinite {
            what,
            coordinate,
            value: v[coordinate],
        }),
    }
}

/// Refuses a batch whose rows are not points of the manifold's ambient space (shape `[n, ambient_dim]`).
pub(crate) fn batch<M: Manifold + ?Sized>(
    manifold: &M,
    what: &'static str,
    x: ArrayView2<f64>,
) -> Result<()> {
    if x.ncols() != manifold.ambient_dim() {
        return Err(ManifoldError::ShapeMismatch {
            what,
            found: x.shape().to_vec(),
            expected: format!("[n_samples, {}] for {}", manifold.ambient_dim(), manifold.name()),
        });
    }
    Ok(())
}

/// Refuses a second batch (or per-sample vector) whose number of rows differs from the first's.
pub(crate) fn same_rows(what: &'static str, found: &[usize], n_samples: usize) -> Result<()> {
    if found.first() == Some(&n_samples) {
        Ok(())
    } else {
        Err(ManifoldError::ShapeMismatch {
            what,
            found: found.to_vec(),
            expected: format!("{n_samples} rows, one per sample"),
        })
    }
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
        Err(ManifoldError::InvalidParameter { name, value, allowed })
    }
}

/// Refuses a tolerance that is negative or not finite.
pub(crate) fn tolerance(tolerance: f64) -> Result<f64> {
    parameter("tolerance", tolerance, "[0, inf)", |t| t.is_finite() && t >= 0.0)
}
