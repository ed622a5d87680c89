//! Riemannian flow-matching math on spheres, flat tori and their products: exp and log maps, geodesic
//! conditional paths, manifold ODE steps, Riemannian divergences and densities with closed forms.
//!
//! Points are `ndarray` rows of ambient coordinates (a batch is an `ArrayView2<f64>`, one point per row), as in
//! Meta's `flow_matching` manifolds and Chen & Lipman 2024, "Flow Matching on General Geometries":
//!
//! - [`manifold`]: the [`Manifold`] trait (exp, log, geodesic distance, tangent projection, inner product,
//!   uniform measure, point checks) with [`Sphere`] (`S^(d-1)` in `R^d`), [`FlatTorus`] (`T^d`, angles in
//!   `[-pi, pi)`) and [`Product`] (blocks of coordinates, for example `S^2 x T^1`);
//! - [`path`]: the geodesic conditional path `x_t = exp_{x0}(kappa_t log_{x0}(x1))`, its conditional velocity
//!   and the Riemannian conditional flow-matching loss;
//! - [`cost`]: squared geodesic distances between two point sets, for the OT solvers of `ferroflow-coupling`;
//! - [`ode`]: Euler, midpoint and RK4 steps through the exponential map, and [`solve`];
//! - [`divergence`]: the Riemannian divergence of a tangent field (exact, finite differences, Hutchinson);
//! - [`density`]: von Mises-Fisher, wrapped Gaussian, checkerboard, mixtures and products, each with samples,
//!   log-densities and entropies.
//!
//! The crate depends on no other workspace crate: schedules enter paths as two numbers ([`Kappa`]), cost
//! matrices leave as plain arrays. Every failure is a [`ManifoldError`]; nothing panics on user input.
//!
//! ```
//! use ferroflow_manifolds::{Kappa, Manifold, Sphere, conditional_point};
//! use ndarray::array;
//!
//! let sphere = Sphere::new(3)?;
//! let (x0, x1) = (array![1.0, 0.0, 0.0], array![0.0, 1.0, 0.0]);
//! let point = conditional_point(&sphere, x0.view(), x1.view(), Kappa { value: 0.5, derivative: 1.0 })?;
//! // Halfway along the quarter circle, moving at speed pi / 2.
//! let half = std::f64::consts::FRAC_1_SQRT_2;
//! assert!((&point.x_t - &array![half, half, 0.0]).iter().all(|e| e.abs() < 1e-12));
//! assert!((sphere.norm(point.x_t.view(), point.u_t.view())? - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
//! # Ok::<(), ferroflow_manifolds::ManifoldError>(())
//! ```

mod check;
pub mod cost;
pub mod density;
pub mod divergence;
pub mod error;
pub mod manifold;
pub mod ode;
pub mod path;
pub mod product;
mod special;
pub mod sphere;
pub mod torus;

pub use cost::cost_matrix;
pub use density::{
    BoxedDensity, Checkerboard, ManifoldDensity, Mixture, MonteCarloEstimate, ProductDensity, VonMisesFisher,
    WrappedGaussian, wrapped_normal_terms,
};
pub use divergence::{
    directional_derivative, divergence_finite_difference, divergence_from_jacobian, hutchinson_divergence,
};
pub use error::{ManifoldError, Result};
pub use manifold::{GeodesicPoint, Manifold, ON_MANIFOLD_TOLERANCE};
pub use ode::{BatchFn, ManifoldOdeMethod, ManifoldSolution, PointFn, TangentField, solve, step};
pub use path::{
    ConditionalBatch, ConditionalPoint, Kappa, cfm_loss, cfm_loss_per_sample, conditional_batch,
    conditional_point,
};
pub use product::{BoxedManifold, Product};
pub use sphere::{CUT_LOCUS_TOLERANCE, Sphere};
pub use torus::{FlatTorus, wrap_angle};
