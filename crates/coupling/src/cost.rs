//! Ground-cost matrices between two batches of points (rows = samples, columns = coordinates).
//!
//! `C[i, j] = c(x0_i, x1_j)` for the costs of [`GroundCost`]:
//! - squared Euclidean, `|x - y|_2^2`, the cost of the 2-Wasserstein distance and of minibatch OT-CFM
//!   (Tong et al. 2023, eq. 11);
//! - the Minkowski (`l_p`) distance `|x - y|_p = (sum_k |x_k - y_k|^p)^(1/p)`, `p >= 1` or `p = inf`;
//! - its p-th power `|x - y|_p^p`, the separable cost of `W_p` on an `l_p` ground metric.
//!
//! Small dimensions use a direct difference loop over a transposed copy of the target batch (exact,
//! duplicates cost exactly 0, vectorised over targets). Large dimensions of the squared cost use the
//! expansion `|x|^2 + |y|^2 - 2 x.y` through a matrix product (ndarray's `general_mat_mul`), clamped at 0;
//! its rounding error is about `1e-16 (|x|^2 + |y|^2)`. Rows of the output are split over rayon's pool only
//! when `n0 * n1 * d` exceeds [`PARALLEL_WORK_THRESHOLD`], below which thread hand-off costs more than it saves.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip, linalg::general_mat_mul};
use rayon::prelude::*;

use crate::error::{CouplingError, Result};

/// Work (`rows * cols * dim` multiply-adds) above which cost matrices are computed in parallel.
pub const PARALLEL_WORK_THRESHOLD: usize = 1 << 17;

/// Dimension above which the squared-Euclidean cost uses the matrix-product expansion.
const GEMM_MIN_DIM: usize = 24;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// The ground cost between two points.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GroundCost {
    /// `|x - y|_2^2`.
    SquaredEuclidean {},
    /// `|x - y|_p`, `p >= 1` (`p = inf` gives the maximum norm).
    Minkowski {
        /// The norm's exponent.
        p: f64,
    },
    /// `|x - y|_p^p = sum_k |x_k - y_k|^p`, `p >= 1` finite.
    MinkowskiPowered {
        /// The norm's exponent.
        p: f64,
    },
}

impl GroundCost {
    /// The Euclidean distance `|x - y|_2`, the ground cost of `W_1`.
    pub const EUCLIDEAN: GroundCost = GroundCost::Minkowski { p: 2.0 };

    /// Checks the exponent.
    pub fn validate(&self) -> Result<()> {
        match *self {
            GroundCost::SquaredEuclidean {} => Ok(()),
            GroundCost::Minkowski { p } if p >= 1.0 && !p.is_nan() => Ok(()),
            GroundCost::MinkowskiPowered { p } if p >= 1.0 && p.is_finite() => Ok(()),
            GroundCost::Minkowski { p } => Err(CouplingError::InvalidParameter {
                name: "p",
                value: p,
                allowed: "p >= 1 (or infinity)",
            }),
            GroundCost::MinkowskiPowered { p } => Err(CouplingError::InvalidParameter {
                name: "p",
                value: p,
                allowed: "finite p >= 1",
            }),
        }
    }

    /// The cost between two points given as slices (reference implementation, used by tests).
    pub fn between(&self, x: &[f64], y: &[f64]) -> f64 {
        match *self {
            GroundCost::SquaredEuclidean {} => x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum(),
            GroundCost::Minkowski { p } if p.is_infinite() => {
                x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
            }
            GroundCost::Minkowski { p } => {
                let s: f64 = x.iter().zip(y).map(|(a, b)| (a - b).abs().powf(p)).sum();
                s.powf(1.0 / p)
            }
            GroundCost::MinkowskiPowered { p } => x.iter().zip(y).map(|(a, b)| (a - b).abs().powf(p)).sum(),
        }
    }
}

/// Checks that a batch is non-empty, has at least one coordinate, and holds only finite values.
pub fn validate_batch(batch: ArrayView2<f64>, what: &'static str) -> Result<()> {
    let (rows, cols) = batch.dim();
    if rows == 0 || cols == 0 {
        return Err(CouplingError::Empty { what, rows, cols });
    }
    check_finite(batch, what)
}

/// Returns the first non-finite entry of a matrix as an error.
pub(crate) fn check_finite(matrix: ArrayView2<f64>, what: &'static str) -> Result<()> {
    // `v * 0` is NaN exactly for NaN and infinite `v`; the branch-free fold is cheap, and the location is
    // searched only on failure.
    let all_finite = match matrix.as_slice() {
        Some(flat) => flat.iter().fold(0.0, |acc, &v| acc + v * 0.0) == 0.0,
        None => matrix.iter().all(|v| v.is_finite()),
    };
    if all_finite {
        return Ok(());
    }
    for ((row, col), &value) in matrix.indexed_iter() {
        if !value.is_finite() {
            return Err(CouplingError::NonFinite {
                what,
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}

fn validate_pair(x0: ArrayView2<f64>, x1: ArrayView2<f64>) -> Result<()> {
    validate_batch(x0, "source batch")?;
    validate_batch(x1, "target batch")?;
    if x0.ncols() != x1.ncols() {
        return Err(CouplingError::DimensionMismatch {
            source_dim: x0.ncols(),
            target_dim: x1.ncols(),
        });
    }
    Ok(())
}

/// The `(n0, n1)` matrix of `cost(x0_i, x1_j)`.
pub fn cost_matrix(x0: ArrayView2<f64>, x1: ArrayView2<f64>, cost: GroundCost) -> Result<Array2<f64>> {
    let mut out = Array2::zeros((x0.nrows(), x1.nrows()));
    cost_matrix_into(x0, x1, cost, out.view_mut())?;
    Ok(out)
}

/// The `(n0, n1)` matrix of squared Euclidean distances.
pub fn squared_euclidean(x0: ArrayView2<f64>, x1: ArrayView2<f64>) -> Result<Array2<f64>> {
    cost_matrix(x0, x1, GroundCost::SquaredEuclidean {})
}

/// Writes `cost(x0_i, x1_j)` into `out`, which must have shape `(n0, n1)`.
///
/// Allocates only a transposed copy of `x1` (`d * n1` values) for small dimensions, or the two vectors of
/// squared norms for the matrix-product path; the output is the caller's buffer.
pub fn cost_matrix_into(
    x0: ArrayView2<f64>,
    x1: ArrayView2<f64>,
    cost: GroundCost,
    mut out: ArrayViewMut2<f64>,
) -> Result<()> {
    validate_pair(x0, x1)?;
    cost.validate()?;
    if out.nrows() != x0.nrows() {
        return Err(CouplingError::SizeMismatch {
            what: "output rows",
            expected: x0.nrows(),
            found: out.nrows(),
        });
    }
    if out.ncols() != x1.nrows() {
        return Err(CouplingError::SizeMismatch {
            what: "output columns",
            expected: x1.nrows(),
            found: out.ncols(),
        });
    }
    let dim = x0.ncols();
    let parallel = x0.nrows() * x1.nrows() * dim > PARALLEL_WORK_THRESHOLD;
    if matches!(cost, GroundCost::SquaredEuclidean {}) && dim >= GEMM_MIN_DIM {
        squared_by_product(x0, x1, out.view_mut(), parallel);
    } else {
        // Coordinates of x1 as rows of a (d, n1) standard-layout array, so that the inner loop runs over targets.
        let x1_t = x1.t().as_standard_layout().into_owned();
        let fill = |x_row: ndarray::ArrayView1<f64>, mut out_row: ndarray::ArrayViewMut1<f64>| {
            let out_row = out_row
                .as_slice_mut()
                .expect("rows of a standard-layout chunk are contiguous");
            direct_row(x_row, x1_t.view(), cost, out_row);
        };
        if out.is_standard_layout() {
            run_rows(x0, out.view_mut(), parallel, &fill);
        } else {
            let mut tmp = Array2::zeros(out.dim());
            run_rows(x0, tmp.view_mut(), parallel, &fill);
            out.assign(&tmp);
        }
    }
    Ok(())
}

fn run_rows<F>(x0: ArrayView2<f64>, mut out: ArrayViewMut2<f64>, parallel: bool, fill: &F)
where
    F: Fn(ndarray::ArrayView1<f64>, ndarray::ArrayViewMut1<f64>) + Sync,
{
    if parallel {
        out.axis_chunks_iter_mut(Axis(0), ROWS_PER_TASK)
            .into_par_iter()
            .zip(x0.axis_chunks_iter(Axis(0), ROWS_PER_TASK).into_par_iter())
            .for_each(|(mut out_chunk, x_chunk)| {
                for (x_row, out_row) in x_chunk.rows().into_iter().zip(out_chunk.rows_mut()) {
                    fill(x_row, out_row);
                }
            });
    } else {
        for (x_row, out_row) in x0.rows().into_iter().zip(out.rows_mut()) {
            fill(x_row, out_row);
        }
    }
}

/// One output row by direct differences: `out[j] = cost(x, x1_j)` with `x1_t` of shape `(d, n1)`.
fn direct_row(x: ndarray::ArrayView1<f64>, x1_t: ArrayView2<f64>, cost: GroundCost, out: &mut [f64]) {
    out.fill(0.0);
    let coords = x1_t.rows().into_iter();
    match cost {
        GroundCost::SquaredEuclidean {} => {
            for (&xk, y_k) in x.iter().zip(coords) {
                let y_k = y_k.to_slice().expect("standard layout");
                for (o, &y) in out.iter_mut().zip(y_k) {
                    let diff = xk - y;
                    *o += diff * diff;
                }
            }
        }
        GroundCost::Minkowski { p } if p.is_infinite() => {
            for (&xk, y_k) in x.iter().zip(coords) {
                for (o, &y) in out.iter_mut().zip(y_k.to_slice().expect("standard layout")) {
                    *o = o.max((xk - y).abs());
                }
            }
        }
        GroundCost::Minkowski { p } | GroundCost::MinkowskiPowered { p } => {
            let add_power = |out: &mut [f64]| {
                for (&xk, y_k) in x.iter().zip(x1_t.rows()) {
                    let y_k = y_k.to_slice().expect("standard layout");
                    if p == 1.0 {
                        out.iter_mut().zip(y_k).for_each(|(o, &y)| *o += (xk - y).abs());
                    } else if p == 2.0 {
                        out.iter_mut()
                            .zip(y_k)
                            .for_each(|(o, &y)| *o += (xk - y) * (xk - y));
                    } else {
                        out.iter_mut()
                            .zip(y_k)
                            .for_each(|(o, &y)| *o += (xk - y).abs().powf(p));
                    }
                }
            };
            add_power(out);
            if matches!(cost, GroundCost::Minkowski { .. }) {
                if p == 2.0 {
                    out.iter_mut().for_each(|o| *o = o.sqrt());
                } else if p != 1.0 {
                    out.iter_mut().for_each(|o| *o = o.powf(1.0 / p));
                }
            }
        }
    }
}

/// `|x|^2 + |y|^2 - 2 x.y`, clamped at 0, by blocks of rows.
fn squared_by_product(x0: ArrayView2<f64>, x1: ArrayView2<f64>, mut out: ArrayViewMut2<f64>, parallel: bool) {
    let norms1: Vec<f64> = x1.rows().into_iter().map(|r| r.dot(&r)).collect();
    let block = |x_chunk: ArrayView2<f64>, mut out_chunk: ArrayViewMut2<f64>| {
        general_mat_mul(-2.0, &x_chunk, &x1.t(), 0.0, &mut out_chunk);
        for (x_row, mut out_row) in x_chunk.rows().into_iter().zip(out_chunk.rows_mut()) {
            let norm0 = x_row.dot(&x_row);
            Zip::from(&mut out_row)
                .and(&norms1[..])
                .for_each(|o, &n1| *o = (*o + norm0 + n1).max(0.0));
        }
    };
    if parallel {
        // Larger blocks here: the product packs x1 once per call.
        let rows = (x0.nrows() / (2 * rayon::current_num_threads().max(1))).clamp(ROWS_PER_TASK, 256);
        out.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(x0.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(out_chunk, x_chunk)| block(x_chunk, out_chunk));
    } else {
        block(x0, out);
    }
}
