//! Optimal-transport couplings for minibatch flow matching: cost matrices, exact assignment solvers,
//! Sinkhorn, and Wasserstein / MMD metrics.
//!
//! Arrays are `ndarray` 0.16 `f64` with rows = samples. Layers: [`cost`] builds ground-cost matrices;
//! [`assignment`] turns a cost matrix into a permutation ([`Jv`] is the fast exact solver);
//! [`sinkhorn`] solves entropic OT in a stabilised log domain; [`coupling`] pairs two batches for
//! flow-matching training; [`metrics`] measures distances between samples.

pub mod assignment;
pub mod cost;
pub mod error;

pub use assignment::{Assignment, AssignmentSolver, Hungarian, Jv, JvConfig, JvInit, JvWorkspace, SolverKind};
pub use cost::{GroundCost, cost_matrix, cost_matrix_into, squared_euclidean};
pub use error::{CouplingError, Result};
