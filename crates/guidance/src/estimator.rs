//! The divergence gradient `g(x, t) = grad_x [-div v(x, t)]` by autograd, batched over samples.
//!
//! Both estimators take the velocity at a fixed time as a closure `x -> v(x)` that records the autograd graph
//! (a network's forward pass, a U-Net, or an analytic field written in tensor operations). Samples must not
//! interact (dimension 0 is the batch, the rest of a sample is flattened): then the gradient of the sum of
//! the per-sample divergences gives every sample's own gradient in one backward pass.
//!
//! Cost, in backward passes through one forward pass: exact `D + 1` (`D` vector-Jacobian products with
//! `create_graph`, each building a graph for the second derivative, then one backward pass through all of
//! them); Hutchinson `K + 1` for `K` probes. A field whose divergence does not depend on `x` (a linear field,
//! or a network whose Jacobian is constant) has `g = 0`; that case never starts a backward pass from a root
//! without a gradient, which would crash libtorch.

use ferroflow_models::autograd::{divergence_exact, divergence_hutchinson, vjp};
use tch::Tensor;

use crate::GuidanceError;

/// The velocity, divergence and divergence gradient at one batch, all detached from the graph.
#[derive(Debug)]
pub struct DivergenceGradient {
    /// `v(x)`, shaped like `x`.
    pub velocity: Tensor,
    /// `div v(x)` (exact or Hutchinson's estimate), shaped `[batch]`.
    pub divergence: Tensor,
    /// `g = grad_x [-div v(x)]` (exact, or the gradient of the estimate), shaped like `x`.
    pub gradient: Tensor,
}

/// `g = grad_x [-div v(x)]` exactly: the divergence by `D` vector-Jacobian products with `create_graph`,
/// then the gradient of minus its sum over the batch.
pub fn divergence_gradient_exact<F>(velocity: F, x: &Tensor) -> Result<DivergenceGradient, GuidanceError>
where
    F: FnOnce(&Tensor) -> Tensor,
{
    let x = leaf(x);
    let (v, divergence) = divergence_exact(velocity, &x, true)?;
    finish(v, divergence, &x)
}

/// `g` by Hutchinson's estimator: the divergence estimated as `mean_k e_k^T (dv/dx) e_k` over `probes`
/// (`[K, batch, ...]`, each shaped like `x`; draw them with `ferroflow_models::ProbeDistribution::draw`),
/// then the gradient of minus that estimate. Unbiased for `g` when `E[e e^T] = I`: the estimate is linear in
/// `e e^T`, and differentiation commutes with the expectation.
pub fn divergence_gradient_hutchinson<F>(
    velocity: F,
    x: &Tensor,
    probes: &Tensor,
) -> Result<DivergenceGradient, GuidanceError>
where
    F: FnOnce(&Tensor) -> Tensor,
{
    let x = leaf(x);
    let (v, divergence) = divergence_hutchinson(velocity, &x, probes, true)?;
    finish(v, divergence, &x)
}

/// A detached leaf copy of `x` that records gradients, so the caller's `x` stays free of the graph.
fn leaf(x: &Tensor) -> Tensor {
    x.detach().set_requires_grad(true)
}

/// The gradient of `-sum(divergence)` with respect to `x`. `vjp` returns zeros, without a backward pass,
/// when the divergence has no gradient or does not depend on `x`.
fn finish(v: Tensor, divergence: Tensor, x: &Tensor) -> Result<DivergenceGradient, GuidanceError> {
    let minus_ones = tch::no_grad(|| divergence.ones_like().neg());
    let gradient = vjp(&divergence, x, &minus_ones, false)?;
    Ok(DivergenceGradient {
        velocity: v.detach(),
        divergence: divergence.detach(),
        gradient: gradient.detach(),
    })
}
