//! Transport plans between uniform empirical measures, and pair sampling from a plan.
//!
//! For `n0 = n1 = n` points with uniform weights the linear program of optimal transport has a permutation
//! matrix `/ n` among its optimal vertices (Birkhoff-von Neumann), so an assignment solver gives an exact plan.
//! For unequal sizes, replicating every source point `L / n0` times and every target point `L / n1` times,
//! `L = lcm(n0, n1)`, turns the transport problem with weights `1/n0`, `1/n1` into an `L x L` assignment
//! with the same optimal value. Proof: scaled by `L` the marginals are the integers `L/n0` and `L/n1`; the
//! transportation polytope with integer marginals has integer vertices, so some optimal plan is `X / L` with
//! `X` integer, which splits into a perfect matching of the copies; conversely every matching of the copies
//! adds up to a feasible plan of the same cost. This is exact, and practical while `L` stays moderate
//! ([`exact_plan`] takes a limit).

use ndarray::{Array2, ArrayView2};
use rand::{Rng, RngCore, seq::SliceRandom};

use crate::assignment::{AssignmentSolver, Jv};
use crate::coupling::Pairing;
use crate::error::{CouplingError, Result};

/// Greatest common divisor.
fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `lcm(n0, n1)`, or `None` on overflow.
pub fn lcm(n0: usize, n1: usize) -> Option<usize> {
    (n0 / gcd(n0, n1)).checked_mul(n1)
}

/// The exact optimal plan between uniform weights on the rows and on the columns of `cost`, by assignment
/// on the replicated `L x L` problem, `L = lcm(rows, cols) <= max_replicated`. Entries sum to 1.
pub fn exact_plan(cost: ArrayView2<f64>, max_replicated: usize) -> Result<Array2<f64>> {
    let (rows, cols) = cost.dim();
    if rows == 0 || cols == 0 {
        return Err(CouplingError::Empty {
            what: "cost matrix",
            rows,
            cols,
        });
    }
    let size = lcm(rows, cols)
        .filter(|&l| l <= max_replicated)
        .ok_or(CouplingError::InvalidParameter {
            name: "max_replicated",
            value: max_replicated as f64,
            allowed: "at least lcm(n0, n1) for an exact plan between unequal sizes",
        })?;
    let (rep_rows, rep_cols) = (size / rows, size / cols);
    let replicated = if size == rows && size == cols {
        cost.to_owned()
    } else {
        Array2::from_shape_fn((size, size), |(i, j)| cost[[i / rep_rows, j / rep_cols]])
    };
    let assignment = Jv::default().solve(replicated.view())?;
    let mut plan = Array2::zeros((rows, cols));
    let mass = 1.0 / size as f64;
    for (i, &j) in assignment.row_to_col.iter().enumerate() {
        plan[[i / rep_rows, j / rep_cols]] += mass;
    }
    Ok(plan)
}

/// Draws `n_pairs` index pairs `(i, j)` with probability `plan[i, j] / sum(plan)`, with replacement
/// (torchcfm's `OTPlanSampler.sample_map`: some points repeat, others are dropped), in random order.
///
/// Sorted uniforms swept once along the cumulative plan: `O(rows * cols + n log n)`, no extra matrix.
pub fn sample_plan(plan: ArrayView2<f64>, n_pairs: usize, rng: &mut dyn RngCore) -> Result<Pairing> {
    let total: f64 = plan.sum();
    if !(total > 0.0 && total.is_finite()) || plan.iter().any(|&p| p < 0.0) {
        return Err(CouplingError::InvalidWeights {
            what: "plan",
            sum: total,
        });
    }
    let mut draws: Vec<f64> = (0..n_pairs).map(|_| rng.random::<f64>() * total).collect();
    draws.sort_by(f64::total_cmp);
    let cols = plan.ncols();
    let mut source_idx = Vec::with_capacity(n_pairs);
    let mut target_idx = Vec::with_capacity(n_pairs);
    let mut cumulative = 0.0;
    let mut next = 0;
    let mut last_positive = 0;
    for (flat, &p) in plan.iter().enumerate() {
        if p > 0.0 {
            last_positive = flat;
        }
        cumulative += p;
        while next < n_pairs && draws[next] < cumulative {
            source_idx.push(flat / cols);
            target_idx.push(flat % cols);
            next += 1;
        }
    }
    // Rounding can leave the last draws just above the accumulated sum: give them the last positive entry.
    while next < n_pairs {
        source_idx.push(last_positive / cols);
        target_idx.push(last_positive % cols);
        next += 1;
    }
    let mut order: Vec<usize> = (0..n_pairs).collect();
    order.shuffle(rng);
    Ok(Pairing {
        source_idx: order.iter().map(|&k| source_idx[k]).collect(),
        target_idx: order.iter().map(|&k| target_idx[k]).collect(),
    })
}
