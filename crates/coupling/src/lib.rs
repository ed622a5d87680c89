//! Optimal-transport couplings for minibatch flow matching: cost matrices, exact assignment solvers,
//! Sinkhorn, and Wasserstein / MMD metrics.
//!
//! Arrays are `ndarray` 0.16 `f64` with rows = samples. Layers: [`cost`] builds ground-cost matrices;
//! [`assignment`] turns a cost matrix into a permutation ([`Jv`] is the fast exact solver);
//! [`sinkhorn`] solves entropic OT in a stabilised log domain; [`coupling`] pairs two batches for
//! flow-matching training; [`metrics`] measures distances between samples.

pub mod assignment;
pub mod cost;
pub mod coupling;
pub mod error;
mod fastexp;
pub mod metrics;
pub mod plan;
mod simd;
pub mod sinkhorn;

pub use assignment::{
    Assignment, AssignmentSolver, Hungarian, Jv, JvConfig, JvInit, JvWorkspace, SolverKind,
};
pub use cost::{GroundCost, cost_matrix, cost_matrix_into, squared_euclidean};
pub use coupling::{CostScaling, Coupling, CouplingConfig, IndependentOrder, Pairing, SinkhornReport};
pub use error::{CouplingError, Result};
pub use metrics::{
    MmdConfig, MmdEstimator, W2Config, W2Estimate, W2Method, mmd_rbf, sinkhorn_divergence, w1, w2, w2_general,
};
pub use plan::{exact_plan, sample_plan};
pub use sinkhorn::{SinkhornConfig, SinkhornSolution, sinkhorn, sinkhorn_weighted};
