//! The flat torus `T^d = R^d / (2 pi Z)^d`, a point stored as `d` angles in `[-pi, pi)`.
//!
//! The metric is the Euclidean one of `R^d` (the torus is a quotient of `R^d` by translations), so tangent
//! spaces are all of `R^d`, geodesics are straight lines wrapped around, and:
//! - `exp_x(v) = wrap(x + v)`, `log_x(y) = wrap(y - x)`, `dist(x, y) = |wrap(y - x)|`,
//!   with `wrap(a) = a - 2 pi floor((a + pi) / (2 pi))` in `[-pi, pi)`;
//! - the divergence of a field is the ordinary one; the volume is `(2 pi)^d`.
//!
//! **Cut locus.** The cut locus of `x` is the set of points with some coordinate difference exactly pi (the
//! two straight paths around that circle have the same length). The log there is not refused: `wrap` sends a
//! difference of pi to `-pi`, so `log_x(y)` deterministically takes the negative way round in that
//! coordinate. `exp_x(log_x(y)) = y` still holds; `log` is discontinuous there, as it must be somewhere.
//!
//! Points outside `[-pi, pi)` are still valid torus points (every map wraps its result), but
//! [`Manifold::check_point`] asks for the canonical range, so that data stored in another convention (for
//! example `[0, 2 pi)`) is noticed rather than silently reinterpreted.

use std::f64::consts::PI;

use ndarray::{Array1, Array2, ArrayView1};
use rand::{Rng, RngCore};

use crate::manifold::GeodesicPoint;
use crate::{Manifold, ManifoldError, Result, check};

const TWO_PI: f64 = 2.0 * PI;

/// An angle moved into `[-pi, pi)` by a multiple of `2 pi`.
pub fn wrap_angle(angle: f64) -> f64 {
    let wrapped = angle - TWO_PI * ((angle + PI) / TWO_PI).floor();
    // Round-off in the division can leave the result a few ulps outside the interval.
    if wrapped >= PI {
        wrapped - TWO_PI
    } else if wrapped < -PI {
        wrapped + TWO_PI
    } else {
        wrapped
    }
}

/// The flat torus `T^dim`: `dim >= 1` angles, each in `[-pi, pi)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatTorus {
    dim: usize,
}

impl FlatTorus {
    /// The torus `T^dim`; `FlatTorus::new(1)` is the circle. Refuses `dim = 0`.
    pub fn new(dim: usize) -> Result<Self> {
        check::parameter("dim", dim as f64, "an integer >= 1", |d| d >= 1.0)?;
        Ok(Self { dim })
    }

    fn check(&self, what: &'static str, v: ArrayView1<f64>) -> Result<()> {
        check::vector(self, what, v)
    }
}

impl Manifold for FlatTorus {
    fn name(&self) -> String {
        format!("T^{}", self.dim)
    }
    fn ambient_dim(&self) -> usize {
        self.dim
    }
    fn intrinsic_dim(&self) -> usize {
        self.dim
    }

    fn check_point(&self, x: ArrayView1<f64>, tolerance: f64) -> Result<()> {
        let tolerance = check::tolerance(tolerance)?;
        self.check("x", x)?;
        match x.iter().position(|&a| a < -PI - tolerance || a >= PI + tolerance) {
            None => Ok(()),
            Some(coordinate) => Err(ManifoldError::AngleOutOfRange {
                coordinate,
                value: x[coordinate],
                tolerance,
            }),
        }
    }

    fn project(&self, x: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        Ok(x.mapv(wrap_angle))
    }

    fn project_tangent(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("v", v)?;
        Ok(v.to_owned())
    }

    fn exp(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("v", v)?;
        Ok((&x + &v).mapv(wrap_angle))
    }

    fn log(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("y", y)?;
        Ok((&y - &x).mapv(wrap_angle))
    }

    fn inner(&self, x: ArrayView1<f64>, u: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("u", u)?;
        self.check("v", v)?;
        Ok(u.dot(&v))
    }

    fn log_volume(&self) -> f64 {
        self.dim as f64 * TWO_PI.ln()
    }

    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        Array2::from_shape_simple_fn((n_samples, self.dim), || rng.random_range(-PI..PI))
    }

    fn dist(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("y", y)?;
        // |log_x(y)| without building the log vector: cost matrices call this n^2 times.
        Ok(x.iter()
            .zip(y.iter())
            .map(|(a, b)| wrap_angle(b - a).powi(2))
            .sum::<f64>()
            .sqrt())
    }

    fn geodesic(&self, x: ArrayView1<f64>, v: ArrayView1<f64>, s: f64) -> Result<GeodesicPoint> {
        self.check("x", x)?;
        self.check("v", v)?;
        check::parameter("s", s, "a finite number", f64::is_finite)?;
        let mut position = x.to_owned();
        position.scaled_add(s, &v);
        Ok(GeodesicPoint {
            position: position.mapv(wrap_angle),
            velocity: v.to_owned(),
        })
    }

    fn log_differential(
        &self,
        x: ArrayView1<f64>,
        y: ArrayView1<f64>,
        w: ArrayView1<f64>,
    ) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("y", y)?;
        self.check("w", w)?;
        Ok(w.to_owned())
    }

    fn tangent_basis(&self, x: ArrayView1<f64>) -> Result<Array2<f64>> {
        self.check("x", x)?;
        Ok(Array2::eye(self.dim))
    }
}
