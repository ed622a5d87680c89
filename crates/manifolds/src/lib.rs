//! Riemannian flow-matching math on spheres, flat tori and their products: exp and log maps, geodesic
//! distances, tangent projections, tangent bases and uniform measures.
//!
//! Points are `ndarray` rows of ambient coordinates (a batch is an `ArrayView2<f64>`, one point per row), as in
//! Meta's `flow_matching` manifolds and Chen & Lipman 2024, "Flow Matching on General Geometries":
//! [`manifold`] holds the [`Manifold`] trait (exp, log, geodesic distance, tangent projection, inner product,
//! uniform measure, point checks) with [`Sphere`] (`S^(d-1)` in `R^d`), [`FlatTorus`] (`T^d`, angles in
//! `[-pi, pi)`) and [`Product`] (blocks of coordinates, for example `S^2 x T^1`).
//!
//! The crate depends on no other workspace crate. Every failure is a [`ManifoldError`]; nothing panics on user
//! input.
//!
//! ```
//! use ferroflow_manifolds::{Manifold, Sphere};
//! use ndarray::array;
//!
//! let sphere = Sphere::new(3)?;
//! let (x, y) = (array![1.0, 0.0, 0.0], array![0.0, 1.0, 0.0]);
//! let v = sphere.log(x.view(), y.view())?;
//! assert!((sphere.norm(x.view(), v.view())? - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
//! assert!((&sphere.exp(x.view(), v.view())? - &y).iter().all(|e| e.abs() < 1e-12));
//! # Ok::<(), ferroflow_manifolds::ManifoldError>(())
//! ```

mod check;
pub mod error;
pub mod manifold;
pub mod product;
mod special;
pub mod sphere;
pub mod torus;

pub use error::{ManifoldError, Result};
pub use manifold::{GeodesicPoint, Manifold, ON_MANIFOLD_TOLERANCE};
pub use product::{BoxedManifold, Product};
pub use sphere::{CUT_LOCUS_TOLERANCE, Sphere};
pub use torus::{FlatTorus, wrap_angle};
