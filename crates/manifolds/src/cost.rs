//! Geodesic ground costs between two point sets, for minibatch optimal-transport couplings on a manifold.
//!
//! `cost_matrix(a, b)[i][j] = dist(a_i, b_j)^2`, the squared geodesic distance (the Riemannian analogue of the
//! squared Euclidean cost of Tong et al. 2023). The exact assignment solvers and Sinkhorn of
//! `ferroflow-coupling` take any cost matrix, so the engine pairs manifold batches by passing this matrix to
//! them; this crate does not depend on the coupling crate.

use ndarray::{Array2, ArrayView2};

use crate::manifold::check_on_manifold;
use crate::{Manifold, Result};

/// The `[a.nrows(), b.nrows()]` matrix of squared geodesic distances between the rows of `a` and `b`, both on
/// the manifold within [`crate::ON_MANIFOLD_TOLERANCE`].
pub fn cost_matrix<M: Manifold + ?Sized>(
    manifold: &M,
    a: ArrayView2<f64>,
    b: ArrayView2<f64>,
) -> Result<Array2<f64>> {
    check_on_manifold(manifold, "a", a)?;
    check_on_manifold(manifold, "b", b)?;
    let mut cost = Array2::zeros((a.nrows(), b.nrows()));
    for (i, row_a) in a.rows().into_iter().enumerate() {
        for (j, row_b) in b.rows().into_iter().enumerate() {
            let distance = manifold.dist(row_a, row_b).map_err(|e| e.in_sample(i))?;
            cost[[i, j]] = distance * distance;
        }
    }
    Ok(cost)
}
