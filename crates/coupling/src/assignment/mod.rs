//! Linear assignment: the seam between a cost matrix and a one-to-one pairing.
//!
//! Given an `(n_rows, n_cols)` cost matrix with `n_rows <= n_cols`, find the injection `sigma` of rows
//! into columns minimising `sum_i C[i, sigma(i)]` (the linear sum assignment problem; Burkard,
//! Dell'Amico and Martello, *Assignment Problems*, 2009). Solvers:
//! - [`Jv`]: a Jonker-Volgenant solver on `f64`, Dijkstra-like shortest augmenting paths after either the
//!   paper's initialisation (column reduction, reduction transfer, augmenting row reduction) or prices from
//!   an epsilon-scaled forward auction (Bertsekas); exact in both cases, the default and the fastest here.
//! - [`Hungarian`]: the `pathfinding` crate's Kuhn-Munkres on fixed-point `i64` costs, with a proven bound
//!   on the optimality gap the rounding can cause.
//!
//! Every exact solver agrees on the optimal cost (checked by property tests); none loops forever on bad
//! input: NaN or infinite costs, empty matrices and `n_rows > n_cols` are refused with a [`CouplingError`].

mod auction;
mod hungarian;
mod jv;

pub use hungarian::Hungarian;
pub use jv::{Jv, JvConfig, JvInit, JvWorkspace};

use ndarray::ArrayView2;

use crate::cost::check_finite;
use crate::error::{CouplingError, Result};

/// Largest cost magnitude the solvers accept: differences and sums of `4 * n` such values stay finite.
pub const MAX_COST_MAGNITUDE: f64 = 1e150;

/// An optimal (or, for [`Hungarian`], provably near-optimal) assignment of rows to columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// `row_to_col[i]` is the column assigned to row `i`; all distinct.
    pub row_to_col: Vec<usize>,
    /// `sum_i C[i, row_to_col[i]]`, summed from the original `f64` costs.
    pub total_cost: f64,
}

impl Assignment {
    /// Builds an assignment and sums its cost from the matrix.
    pub fn from_cost(cost: ArrayView2<f64>, row_to_col: Vec<usize>) -> Self {
        let total_cost = row_to_col
            .iter()
            .enumerate()
            .map(|(row, &col)| cost[[row, col]])
            .sum();
        Assignment {
            row_to_col,
            total_cost,
        }
    }

    /// Whether `row_to_col` is an injection into `0..n_cols` (no column used twice).
    pub fn is_injective(&self, n_cols: usize) -> bool {
        let mut used = vec![false; n_cols];
        self.row_to_col
            .iter()
            .all(|&col| col < n_cols && !std::mem::replace(&mut used[col], true))
    }
}

/// Solves the linear sum assignment problem on a cost matrix with `rows <= cols`.
pub trait AssignmentSolver: Send + Sync {
    /// Finds the assignment of minimal total cost.
    fn solve(&self, cost: ArrayView2<f64>) -> Result<Assignment>;

    /// A short name for tables and logs.
    fn name(&self) -> &'static str;
}

/// The checks every solver runs first: non-empty, `rows <= cols`, finite, bounded in magnitude.
pub fn validate_cost(cost: ArrayView2<f64>) -> Result<()> {
    let (rows, cols) = cost.dim();
    if rows == 0 || cols == 0 {
        return Err(CouplingError::Empty {
            what: "cost matrix",
            rows,
            cols,
        });
    }
    if rows > cols {
        return Err(CouplingError::MoreRowsThanColumns { rows, cols });
    }
    // One branch-free pass for the common case (`x * 0` is NaN exactly for NaN and infinite `x`, and a NaN
    // sum also fails the comparison); the entry at fault is searched only when it fails.
    let in_range = |flat: &[f64]| {
        // Independent lanes: a single running sum would be one add at a time.
        const LANES: usize = 8;
        let (mut nan, mut max_abs) = ([0.0; LANES], [0.0f64; LANES]);
        let chunks = flat.chunks_exact(LANES);
        let rest = chunks.remainder();
        for x in chunks {
            for lane in 0..LANES {
                let a = x[lane].abs();
                nan[lane] += x[lane] * 0.0;
                max_abs[lane] = if a > max_abs[lane] { a } else { max_abs[lane] };
            }
        }
        let ok = |x: &f64| *x * 0.0 == 0.0 && x.abs() <= MAX_COST_MAGNITUDE;
        nan.iter().all(|&s| s == 0.0) && max_abs.iter().all(ok) && rest.iter().all(ok)
    };
    if cost.as_slice().is_some_and(in_range) {
        return Ok(());
    }
    check_finite(cost, "cost matrix")?;
    if let Some(((row, col), &value)) = cost.indexed_iter().find(|(_, v)| v.abs() > MAX_COST_MAGNITUDE) {
        return Err(CouplingError::CostTooLarge {
            row,
            col,
            value,
            limit: MAX_COST_MAGNITUDE,
        });
    }
    Ok(())
}

/// The smallest and largest entry of a (non-empty) matrix.
pub(crate) fn min_max(cost: ArrayView2<f64>) -> (f64, f64) {
    if let Some(flat) = cost.as_slice() {
        return min_max_slice(flat);
    }
    cost.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The smallest and largest of finite values (`(inf, -inf)` for none), in independent lanes of plain
/// selects, which vectorise (`f64::min` and `max` do not, for their NaN rules); exact, like them.
pub(crate) fn min_max_slice(c: &[f64]) -> (f64, f64) {
    const LANES: usize = 8;
    let (mut lo, mut hi) = ([f64::INFINITY; LANES], [f64::NEG_INFINITY; LANES]);
    let chunks = c.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for lane in 0..LANES {
            lo[lane] = if x[lane] < lo[lane] { x[lane] } else { lo[lane] };
            hi[lane] = if x[lane] > hi[lane] { x[lane] } else { hi[lane] };
        }
    }
    let low = rest
        .iter()
        .chain(&lo)
        .fold(f64::INFINITY, |l, &x| if x < l { x } else { l });
    let high = rest
        .iter()
        .chain(&hi)
        .fold(f64::NEG_INFINITY, |h, &x| if x > h { x } else { h });
    (low, high)
}

/// The closed set of solvers, for configs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverKind {
    /// [`Jv`], the default.
    #[default]
    Jv,
    /// [`Hungarian`] (pathfinding's Kuhn-Munkres on fixed-point costs).
    Hungarian,
}

impl SolverKind {
    /// A solver of this kind with default settings.
    pub fn build(self) -> Box<dyn AssignmentSolver> {
        match self {
            SolverKind::Jv => Box::new(Jv::default()),
            SolverKind::Hungarian => Box::new(Hungarian),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn min_max_slice_matches_a_plain_fold() {
        for n in [0, 1, 2, 7, 8, 9, 17, 100] {
            let values: Vec<f64> = (0..n).map(|i| ((i * 37 + 11) % 23) as f64 - 9.5).collect();
            let expected = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                    (l.min(x), h.max(x))
                });
            assert_eq!(super::min_max_slice(&values), expected, "n = {n}");
        }
    }
}
