//! The [`Manifold`] seam: a Riemannian manifold whose points are rows of ambient coordinates.
//!
//! A point is an `ArrayView1<f64>` of `ambient_dim` coordinates (a batch is an `ArrayView2<f64>` with one point
//! per row); a tangent vector at `x` is also an ambient vector, in the tangent space `T_x M` (for the sphere the
//! vectors orthogonal to `x`, for the flat torus all of `R^d`). The metric of every manifold here is the
//! ambient Euclidean inner product restricted to the tangent space (the sphere is embedded isometrically in
//! `R^d`, the flat torus is a quotient of `R^d`); the trait does not assume it, so another implementation may
//! have its own [`Manifold::inner`].
//!
//! Contract of the methods that take points and vectors: they check that every argument has `ambient_dim`
//! coordinates and holds only finite numbers (refused with [`ManifoldError::DimensionMismatch`] and
//! [`ManifoldError::NonFinite`]); they do **not** check that a point lies on the manifold, which costs a norm
//! and is the caller's business ([`Manifold::check_point`], [`Manifold::check_points`]). The higher-level
//! functions of this crate (paths, costs, solvers, densities) check their input points with
//! [`ON_MANIFOLD_TOLERANCE`].
//!
//! Required methods are the geometry a new manifold must supply; the provided ones (geodesic distance, the
//! geodesic with its velocity, the differential of the log map, an orthonormal tangent basis, batch checks)
//! have generic definitions that the implementations here override with closed forms.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::RngCore;

use crate::{ManifoldError, Result, check};

/// How far (in the manifold's own measure: `| |x| - 1 |` on a sphere, distance outside `[-pi, pi)` on a torus) a
/// point given to a path, cost, solver or density may lie off the manifold. Loose enough for points that went
/// through `f32` (relative round-off about `6e-8` per coordinate), tight enough to catch unnormalised data.
pub const ON_MANIFOLD_TOLERANCE: f64 = 1e-6;

/// A point on a geodesic `gamma(s) = exp_x(s v)` and its velocity `gamma'(s)`, a tangent vector at the point.
#[derive(Debug, Clone, PartialEq)]
pub struct GeodesicPoint {
    /// `gamma(s)`.
    pub position: Array1<f64>,
    /// `gamma'(s)`, the parallel transport of `v` along the geodesic to `gamma(s)`.
    pub velocity: Array1<f64>,
}

/// A Riemannian manifold embedded in (or a quotient of) `R^ambient_dim`, with the maps flow matching needs.
///
/// See the module documentation for the contract on arguments. Implementations in this crate:
/// [`crate::Sphere`], [`crate::FlatTorus`] and [`crate::Product`].
pub trait Manifold {
    /// A short name for messages, for example `S^2`, `T^1` or `S^2 x T^1`.
    fn name(&self) -> String;
    /// The number of ambient coordinates of a point (the length of a row).
    fn ambient_dim(&self) -> usize;
    /// The dimension of the manifold (of every tangent space).
    fn intrinsic_dim(&self) -> usize;

    /// Refuses a point that is not on the manifold within `tolerance`, with an error naming the coordinates
    /// (and the norm or angle) at fault; also refuses wrong lengths, NaN and infinities.
    fn check_point(&self, x: ArrayView1<f64>, tolerance: f64) -> Result<()>;
    /// The nearest point of the manifold (radial projection on a sphere, wrapping into `[-pi, pi)` on a torus).
    fn project(&self, x: ArrayView1<f64>) -> Result<Array1<f64>>;
    /// The orthogonal projection of the ambient vector `v` onto the tangent space at `x`.
    fn project_tangent(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>>;
    /// The exponential map `exp_x(v)`: where the geodesic from `x` with initial velocity `v` is at time 1. The
    /// normal component of `v`, if any, is removed first (so `exp_x(v) = exp_x(project_tangent(x, v))`).
    fn exp(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>>;
    /// The logarithm map `log_x(y)`: the tangent vector at `x` of the minimising geodesic to `y`, with length
    /// `dist(x, y)`. Where `y` is on the cut locus of `x` each implementation documents its choice.
    fn log(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<Array1<f64>>;
    /// The Riemannian inner product `g_x(u, v)` of two tangent vectors at `x`.
    fn inner(&self, x: ArrayView1<f64>, u: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<f64>;
    /// The natural log of the manifold's Riemannian volume.
    fn log_volume(&self) -> f64;
    /// `n_samples` points drawn from the uniform (normalised Riemannian volume) distribution, one per row.
    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64>;

    /// The Riemannian volume.
    fn volume(&self) -> f64 {
        self.log_volume().exp()
    }
    /// The log-density of the uniform distribution with respect to the Riemannian volume: `-ln volume`.
    fn log_uniform_density(&self) -> f64 {
        -self.log_volume()
    }
    /// The Riemannian norm `sqrt(g_x(v, v))` of a tangent vector at `x`.
    fn norm(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<f64> {
        Ok(self.inner(x, v, v)?.max(0.0).sqrt())
    }
    /// The geodesic distance. Provided as `|log_x(y)|`, which fails where the log does; the implementations
    /// here use closed forms that are total.
    fn dist(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<f64> {
        let v = self.log(x, y)?;
        self.norm(x, v.view())
    }
    /// The geodesic `gamma(s) = exp_x(s v)` at `s`, with its velocity `gamma'(s)`.
    ///
    /// Provided through the log map: `gamma'(s) = -log_{gamma(s)}(x) / s` (and `project_tangent(x, v)` at
    /// `s = 0`), valid while `|s v|` is below the injectivity radius; the implementations here override it with
    /// closed forms valid for every `s`.
    fn geodesic(&self, x: ArrayView1<f64>, v: ArrayView1<f64>, s: f64) -> Result<GeodesicPoint> {
        check::parameter("s", s, "a finite number", f64::is_finite)?;
        if s == 0.0 {
            return Ok(GeodesicPoint {
                position: self.project(x)?,
                velocity: self.project_tangent(x, v)?,
            });
        }
        let position = self.exp(x, (&v * s).view())?;
        let velocity = self.log(position.view(), x)? / -s;
        Ok(GeodesicPoint { position, velocity })
    }
    /// The differential of `log_x` at `y` applied to the tangent vector `w` at `y`: `d/de log_x(c(e))` at
    /// `e = 0` for any curve `c` with `c(0) = y`, `c'(0) = w`. It pulls a field back to normal coordinates
    /// centred at `x`, which is how the ODE steps of [`crate::ode`] keep the order of their Runge-Kutta method.
    ///
    /// Provided by a central difference along the geodesic through `y` (step `1e-5 (1 + |w|)`, error
    /// `O(1e-10)`); the implementations here override it with closed forms.
    fn log_differential(
        &self,
        x: ArrayView1<f64>,
        y: ArrayView1<f64>,
        w: ArrayView1<f64>,
    ) -> Result<Array1<f64>> {
        let w_norm = self.norm(y, w)?;
        let step = 1e-5 / (1.0 + w_norm);
        let forward = self.log(x, self.exp(y, (&w * step).view())?.view())?;
        let backward = self.log(x, self.exp(y, (&w * -step).view())?.view())?;
        Ok((forward - backward) / (2.0 * step))
    }
    /// An orthonormal basis of the tangent space at `x`, as `intrinsic_dim` rows of ambient coordinates.
    ///
    /// Provided by Gram-Schmidt under [`Manifold::inner`] on the projected ambient unit vectors; the
    /// implementations here override it.
    fn tangent_basis(&self, x: ArrayView1<f64>) -> Result<Array2<f64>> {
        let ambient_dim = self.ambient_dim();
        let mut basis: Vec<Array1<f64>> = Vec::with_capacity(self.intrinsic_dim());
        for axis in 0..ambient_dim {
            if basis.len() == self.intrinsic_dim() {
                break;
            }
            let mut unit = Array1::zeros(ambient_dim);
            unit[axis] = 1.0;
            let mut candidate = self.project_tangent(x, unit.view())?;
            // Two passes of Gram-Schmidt keep the basis orthonormal to round-off.
            for _ in 0..2 {
                for e in &basis {
                    let overlap = self.inner(x, candidate.view(), e.view())?;
                    candidate.scaled_add(-overlap, e);
                }
            }
            let length = self.norm(x, candidate.view())?;
            // A projected unit vector shorter than this is (nearly) normal; another axis gives a better direction.
            if length > 0.5 / (ambient_dim as f64).sqrt() {
                basis.push(candidate / length);
            }
        }
        let mut rows = Array2::zeros((basis.len(), ambient_dim));
        for (mut row, e) in rows.axis_iter_mut(Axis(0)).zip(&basis) {
            row.assign(e);
        }
        Ok(rows)
    }
    /// [`Manifold::check_point`] for every row of a batch, naming the first row at fault.
    fn check_points(&self, x: ArrayView2<f64>, tolerance: f64) -> Result<()> {
        check::batch(self, "points", x)?;
        for (sample_idx, row) in x.axis_iter(Axis(0)).enumerate() {
            self.check_point(row, tolerance)
                .map_err(|e| e.in_sample(sample_idx))?;
        }
        Ok(())
    }
    /// [`Manifold::project`] for every row of a batch.
    fn project_batch(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        check::batch(self, "points", x)?;
        let mut out = Array2::zeros(x.raw_dim());
        for (sample_idx, (row, mut target)) in
            x.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))).enumerate()
        {
            target.assign(&self.project(row).map_err(|e| e.in_sample(sample_idx))?);
        }
        Ok(out)
    }
}

/// Checks a whole batch of points against [`ON_MANIFOLD_TOLERANCE`], with `what` naming the argument when the
/// batch has the wrong width.
pub(crate) fn check_on_manifold<M: Manifold + ?Sized>(
    manifold: &M,
    what: &'static str,
    x: ArrayView2<f64>,
) -> Result<()> {
    check::batch(manifold, what, x)?;
    manifold.check_points(x, ON_MANIFOLD_TOLERANCE)
}

/// Refuses an empty list of parts: shared by products and mixtures, which need at least one.
pub(crate) fn non_empty<T>(items: &[T], what: &'static str, item: &'static str) -> Result<()> {
    if items.is_empty() {
        Err(ManifoldError::Empty { what, item })
    } else {
        Ok(())
    }
}
