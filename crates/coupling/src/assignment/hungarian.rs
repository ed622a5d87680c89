//! [`Hungarian`]: `pathfinding::kuhn_munkres_min` on fixed-point `i64` costs.
//!
//! # Scaling
//! `pathfinding`'s Kuhn-Munkres needs `Ord` weights, so each cost is mapped to an integer
//! `w_ij = round((C_ij - c_min) * s)` in `[0, W]`, with `s = W / (c_max - c_min)` and
//! `W = min(2^40, floor(2^62 / (2 (m + 1)^2)))` for `m = n_cols` (the map is the identity shift when all
//! costs are equal).
//!
//! # No overflow
//! `kuhn_munkres_min` negates the weights and maximises; write `w' = -w` in `[-W, 0]`. Its labels start at
//! `lx_x = max_y w'_xy` in `[-W, 0]`, `ly_y = 0`, and every update lowers `lx` on the set `S` of the current
//! alternating tree and raises `ly` on its columns `T` by the same `delta > 0`, with `|S| = |T| + 1`. So the
//! dual objective `D = sum lx + sum ly` drops by exactly `delta` per update. `D` starts `>= -n W` and, by weak
//! duality, never falls below the optimal weight `>= -n W`; hence the sum of all `delta`s is at most `n W`.
//! Each label therefore stays in `[-(n + 1) W, n W]`, every slack in `[-(2n + 2) W, (2n + 2) W]`, and the
//! final sum of `n + m` labels below `2 (m + 1)^2 W <= 2^62`: no `i64` overflow.
//!
//! # Optimality gap
//! Let `e_ij = C_ij - (c_min + w_ij / s)`. Rounding to nearest gives `|e_ij| <= 1/(2s)`, plus the
//! floating-point error of `(C_ij - c_min) * s <= 2^41`, below `2^-11`, so `|e_ij| <= 0.51 / s`. Every
//! assignment's cost changes by the constant `n c_min` plus `sum_i e_{i sigma(i)}`. If `sigma` is optimal
//! for the rounded costs and `sigma*` for the true ones,
//! `C(sigma) - C(sigma*) = [C(sigma) - C~(sigma)] + [C~(sigma) - C~(sigma*)] + [C~(sigma*) - C(sigma*)]
//! <= n max|e| + 0 + n max|e| <= 1.02 n / s = 1.02 n (c_max - c_min) / W`
//! ([`Hungarian::gap_bound`]). With `W = 2^40` that is about `1e-12 n (c_max - c_min)`.
//!
//! Kuhn-Munkres loops forever on NaN or infinite weights and panics when rows exceed columns; both are
//! refused by [`validate_cost`] before it runs. It costs O(n^3) with a large constant: use [`super::Jv`].

use ndarray::ArrayView2;
use pathfinding::{kuhn_munkres::kuhn_munkres_min, matrix::Matrix};

use super::{Assignment, AssignmentSolver, min_max, validate_cost};
use crate::error::Result;

/// Kuhn-Munkres (pathfinding) on fixed-point costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hungarian;

impl Hungarian {
    /// The integer range `W` used for a matrix with `n_cols` columns.
    pub fn integer_range(n_cols: usize) -> i64 {
        let m = n_cols as u128 + 1;
        let by_overflow = (1u128 << 62) / (2 * m * m);
        by_overflow.min(1u128 << 40) as i64
    }

    /// Upper bound on `C(returned) - C(optimal)` caused by rounding, `1.02 n (c_max - c_min) / W`.
    pub fn gap_bound(n_rows: usize, n_cols: usize, cost_range: f64) -> f64 {
        1.02 * n_rows as f64 * cost_range / Self::integer_range(n_cols) as f64
    }
}

impl AssignmentSolver for Hungarian {
    fn solve(&self, cost: ArrayView2<f64>) -> Result<Assignment> {
        validate_cost(cost)?;
        let (rows, cols) = cost.dim();
        let (lo, hi) = min_max(cost);
        let range = hi - lo;
        let top = Self::integer_range(cols);
        let scale = if range > 0.0 { top as f64 / range } else { 1.0 };
        let weights = Matrix::from_fn(rows, cols, |(i, j)| {
            (((cost[[i, j]] - lo) * scale).round() as i64).min(top)
        });
        let (_, row_to_col) = kuhn_munkres_min(&weights);
        Ok(Assignment::from_cost(cost, row_to_col))
    }

    fn name(&self) -> &'static str {
        "hungarian (pathfinding, i64)"
    }
}
