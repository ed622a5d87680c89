//! ODE and SDE integrators over a small state trait (ndarray arrays, and `tch` tensors behind the `tch`
//! feature), and CNF log-likelihood integration.
