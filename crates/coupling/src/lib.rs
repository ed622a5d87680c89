//! Optimal-transport couplings for minibatch flow matching: cost matrices, exact assignment solvers,
//! Sinkhorn, and Wasserstein / MMD metrics.
