//! The Riemannian divergence of a tangent vector field, for likelihoods by the change of variables
//! `d/dt ln p_t(x(t)) = -div_M v(t, x(t))` (Mathieu & Nickel 2020, "Riemannian Continuous Normalizing
//! Flows"; Chen & Lipman 2024).
//!
//! `div_M v(x) = sum_i <e_i, nabla_{e_i} v>` over an orthonormal basis `e_i` of `T_x M`
//! ([`Manifold::tangent_basis`]). For a submanifold of `R^d` with the induced metric (the sphere) and a
//! tangent field `v` extended to a neighbourhood with ambient Jacobian `J`, the Levi-Civita derivative is the
//! tangential part of the ambient one, `nabla_e v = P J e`, so `div_M v = sum_i e_i^T J e_i = tr(P J P)` with
//! `P` the tangent projection; the extension off the manifold does not matter because only tangent directions
//! are differentiated. On the flat torus `P = I` and this is the ordinary divergence.
//!
//! Three ways to compute it:
//! - [`divergence_from_jacobian`]: exact, from the ambient Jacobian of the tangent field at `x`;
//! - [`divergence_finite_difference`]: central differences of the field along the geodesics
//!   `exp_x(+-h e_i)` (error `O(h^2)`), needing the field only on the manifold;
//! - [`hutchinson_divergence`]: the unbiased estimator `mean_k z_k^T J z_k` with tangent-projected Gaussian
//!   probes `z = sum_i g_i e_i`, `g ~ N(0, I)`, that is `z ~ N(0, P)`, so `E[z^T J z] = tr(J P) = tr(P J P)`;
//!   it needs only Jacobian-vector products (by autograd in the torch crates, or [`directional_derivative`]).
//!
//! Fields here are closures of a point; fields that are not tangent are made so first: the finite-difference
//! functions differentiate `y -> P_y v(y)`, the divergence of the field the ODE solvers integrate.

use ndarray::{Array1, ArrayView1, ArrayView2};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

use crate::{Manifold, ManifoldError, ON_MANIFOLD_TOLERANCE, Result, check};

/// `div_M v(x) = sum_i e_i^T J e_i` from the ambient Jacobian `J[i][j] = d v_i / d x_j` (shape
/// `[ambient_dim, ambient_dim]`) of a tangent field at `x`.
pub fn divergence_from_jacobian<M: Manifold + ?Sized>(
    manifold: &M,
    x: ArrayView1<f64>,
    jacobian: ArrayView2<f64>,
) -> Result<f64> {
    manifold.check_point(x, ON_MANIFOLD_TOLERANCE)?;
    let ambient_dim = manifold.ambient_dim();
    if jacobian.shape() != [ambient_dim, ambient_dim] {
        return Err(ManifoldError::ShapeMismatch {
            what: "jacobian",
            found: jacobian.shape().to_vec(),
            expected: format!("[{ambient_dim}, {ambient_dim}] for {}", manifold.name()),
        });
    }
    if let Some((index, &value)) = jacobian.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ManifoldError::NonFinite {
            what: "jacobian",
            coordinate: index,
            value,
        });
    }
    let basis = manifold.tangent_basis(x)?;
    Ok(basis.rows().into_iter().map(|e| e.dot(&jacobian.dot(&e))).sum())
}

/// The derivative of the tangent field `y -> P_y v(y)` at `x` in the tangent direction `direction`, by a
/// central difference of step `step` along the geodesic `exp_x(s direction)`: an approximate Jacobian-vector
/// product `J direction` (error `O(step^2)`), for [`hutchinson_divergence`].
pub fn directional_derivative<M, F>(
    manifold: &M,
    field: &mut F,
    x: ArrayView1<f64>,
    direction: ArrayView1<f64>,
    step: f64,
) -> Result<Array1<f64>>
where
    M: Manifold + ?Sized,
    F: FnMut(ArrayView1<f64>) -> Array1<f64>,
{
    check::parameter("step", step, "(0, inf)", |h| h > 0.0 && h.is_finite())?;
    check::vector(manifold, "direction", direction)?;
    let mut tangent_value = |s: f64| -> Result<Array1<f64>> {
        let point = manifold.exp(x, (&direction * s).view())?;
        let value = field(point.view());
        if value.len() != manifold.ambient_dim() || value.iter().any(|v| !v.is_finite()) {
            return Err(ManifoldError::BadEvaluation {
                what: "vector field",
                problem: format!("{value} at {point}"),
                time: f64::NAN,
            });
        }
        manifold.project_tangent(point.view(), value.view())
    };
    let forward = tangent_value(step)?;
    let backward = tangent_value(-step)?;
    Ok((forward - backward) / (2.0 * step))
}

/// `div_M v(x)` by central differences of step `step` along the geodesics in each tangent-basis direction
/// (`2 intrinsic_dim` field evaluations, error `O(step^2)`; `1e-4` to `1e-5` suits smooth fields).
pub fn divergence_finite_difference<M, F>(
    manifold: &M,
    mut field: F,
    x: ArrayView1<f64>,
    step: f64,
) -> Result<f64>
where
    M: Manifold + ?Sized,
    F: FnMut(ArrayView1<f64>) -> Array1<f64>,
{
    manifold.check_point(x, ON_MANIFOLD_TOLERANCE)?;
    let basis = manifold.tangent_basis(x)?;
    let mut divergence = 0.0;
    for e in basis.rows() {
        divergence += e.dot(&directional_derivative(manifold, &mut field, x, e, step)?);
    }
    Ok(divergence)
}

/// Hutchinson's estimate of `div_M v(x)` from `n_probes` probes `z ~ N(0, P)` (see the module documentation):
/// `mean_k z_k^T jvp(z_k)`, where `jvp(z)` returns the Jacobian-vector product `J z` of the tangent field at
/// `x`. Its variance is `2 |P J_sym P|_F^2 / n_probes` (`J_sym` the symmetric part of `J`).
pub fn hutchinson_divergence<M, F>(
    manifold: &M,
    x: ArrayView1<f64>,
    mut jvp: F,
    n_probes: usize,
    rng: &mut dyn RngCore,
) -> Result<f64>
where
    M: Manifold + ?Sized,
    F: FnMut(ArrayView1<f64>) -> Result<Array1<f64>>,
{
    manifold.check_point(x, ON_MANIFOLD_TOLERANCE)?;
    check::parameter("n_probes", n_probes as f64, "an integer >= 1", |n| n >= 1.0)?;
    let basis = manifold.tangent_basis(x)?;
    let mut total = 0.0;
    for _ in 0..n_probes {
        let weights: Array1<f64> = (0..basis.nrows()).map(|_| StandardNormal.sample(rng)).collect();
        let probe = basis.t().dot(&weights);
        let product = jvp(probe.view())?;
        check::vector(manifold, "jacobian-vector product", product.view())?;
        total += probe.dot(&product);
    }
    Ok(total / n_probes as f64)
}
