//! The unit sphere `S^(d-1)` embedded in `R^d`, with the metric induced by the ambient Euclidean one.
//!
//! Closed forms (for unit `x` and `v` tangent at `x`, `n = |v|`, `c = <x, y>`, `theta = dist(x, y)`):
//! - `exp_x(v) = cos(n) x + sin(n) / n v`, with `sin(n) / n -> 1` as `n -> 0` (a zero vector gives `x`);
//! - `log_x(y) = theta / sin(theta) (y - c x)`, `theta = atan2(|y - c x|, c)` (accurate near 0 and near pi,
//!   unlike `acos(c)`);
//! - the geodesic `gamma(s) = cos(s n) x + sin(s n) / n v` with velocity `-n sin(s n) x + cos(s n) v`, the
//!   parallel transport of `v` along it;
//! - the tangent projection `P_x v = v - <x, v> x` and an orthonormal tangent basis from the Householder
//!   reflection that maps `x` to a coordinate axis.
//!
//! **The antipodal log (cut locus).** Every great half-circle joins `x` to `-x`, so `log_x(-x)` has no
//! canonical value. This crate refuses it: [`Manifold::log`] (and whatever is built on it, such as the
//! geodesic conditional path) returns [`ManifoldError::CutLocus`] when `|y - <x, y> x| <= CUT_LOCUS_TOLERANCE`
//! with `<x, y> < 0`, that is when `y` is within about `1e-9` of `-x`. Closer than that the direction of
//! `y - <x, y> x` is dominated by round-off, so any answer would be an arbitrary direction dressed up as a
//! result. Uniformly drawn pairs land there with probability about `1e-18` per pair on `S^2`; a caller that
//! must never fail can redraw. [`Manifold::dist`] is total (it returns pi there).
//!
//! Volume: `|S^(d-1)| = 2 pi^(d/2) / Gamma(d/2)` (`4 pi` for `S^2`).

use ndarray::{Array1, Array2, ArrayView1};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

use crate::manifold::GeodesicPoint;
use crate::special::{ln_gamma_half, log_differential_coefficient, sinc, t_over_sin};
use crate::{Manifold, ManifoldError, Result, check};

/// How close to antipodal two points may be before [`Manifold::log`] on a [`Sphere`] refuses them with
/// [`ManifoldError::CutLocus`]: the bound on `|y - <x, y> x|` (the sine of the distance's supplement).
pub const CUT_LOCUS_TOLERANCE: f64 = 1e-9;

/// The unit sphere `S^(d-1) = { x in R^d : |x| = 1 }` with `d = ambient_dim >= 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sphere {
    ambient_dim: usize,
}

impl Sphere {
    /// The sphere `S^(ambient_dim - 1)` in `R^ambient_dim`; `Sphere::new(3)` is `S^2`. Refuses
    /// `ambient_dim < 2` (`S^0` is two points, not a manifold with geodesics).
    pub fn new(ambient_dim: usize) -> Result<Self> {
        check::parameter("ambient_dim", ambient_dim as f64, "an integer >= 2", |d| d >= 2.0)?;
        Ok(Self { ambient_dim })
    }

    fn check(&self, what: &'static str, v: ArrayView1<f64>) -> Result<()> {
        check::vector(self, what, v)
    }

    fn all_coordinates(&self) -> std::ops::Range<usize> {
        0..self.ambient_dim
    }

    /// `v` minus its component along `x`, for unit `x` (round-off in `|x|` is divided out).
    fn tangent_part(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        let norm_squared = x.dot(&x);
        if norm_squared == 0.0 {
            return Err(ManifoldError::ZeroNorm {
                coordinates: self.all_coordinates(),
            });
        }
        let mut out = v.to_owned();
        out.scaled_add(-x.dot(&v) / norm_squared, &x);
        Ok(out)
    }

    /// The pieces of the log map from `x` to `y`: `u = y - <x, y> x`, its norm, the cosine and the angle.
    fn log_parts(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> LogParts {
        let cosine = x.dot(&y);
        let mut u = y.to_owned();
        u.scaled_add(-cosine, &x);
        let sine = u.dot(&u).sqrt();
        LogParts {
            angle: sine.atan2(cosine),
            cosine,
            sine,
            u,
        }
    }

    fn refuse_antipodal(&self, parts: &LogParts) -> Result<()> {
        if parts.sine <= CUT_LOCUS_TOLERANCE && parts.cosine < 0.0 {
            Err(ManifoldError::CutLocus {
                coordinates: self.all_coordinates(),
                distance: parts.angle,
            })
        } else {
            Ok(())
        }
    }
}

struct LogParts {
    /// `theta = dist(x, y)`.
    angle: f64,
    /// `<x, y>`.
    cosine: f64,
    /// `|y - <x, y> x|`.
    sine: f64,
    /// `y - <x, y> x`.
    u: Array1<f64>,
}

impl LogParts {
    /// `sin theta` and `cos theta` from `|u|` and `<x, y>`, divided by `hypot(|u|, <x, y>)` (1 for unit inputs)
    /// so that they are consistent with the angle; near pi these are accurate where `theta.sin()` is not.
    fn unit_sine_cosine(&self) -> (f64, f64) {
        let radius = self.sine.hypot(self.cosine);
        (self.sine / radius, self.cosine / radius)
    }

    /// `theta / sin theta`, the length of `log_x(y)` over `|y - <x, y> x|` (up to the radius), with its limit 1
    /// as `y -> x`.
    fn angle_over_sine(&self) -> f64 {
        let radius = self.sine.hypot(self.cosine);
        t_over_sin(self.angle, self.sine / radius) / radius
    }
}

impl Manifold for Sphere {
    fn name(&self) -> String {
        format!("S^{}", self.ambient_dim - 1)
    }
    fn ambient_dim(&self) -> usize {
        self.ambient_dim
    }
    fn intrinsic_dim(&self) -> usize {
        self.ambient_dim - 1
    }

    fn check_point(&self, x: ArrayView1<f64>, tolerance: f64) -> Result<()> {
        let tolerance = check::tolerance(tolerance)?;
        self.check("x", x)?;
        let norm = x.dot(&x).sqrt();
        if (norm - 1.0).abs() <= tolerance {
            Ok(())
        } else {
            Err(ManifoldError::OffSphere {
                coordinates: self.all_coordinates(),
                norm,
                tolerance,
            })
        }
    }

    fn project(&self, x: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        let norm = x.dot(&x).sqrt();
        if norm == 0.0 {
            return Err(ManifoldError::ZeroNorm {
                coordinates: self.all_coordinates(),
            });
        }
        Ok(&x / norm)
    }

    fn project_tangent(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("v", v)?;
        self.tangent_part(x, v)
    }

    fn exp(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        Ok(self.geodesic(x, v, 1.0)?.position)
    }

    fn log(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("y", y)?;
        let parts = self.log_parts(x, y);
        self.refuse_antipodal(&parts)?;
        let scale = parts.angle_over_sine();
        Ok(parts.u * scale)
    }

    fn inner(&self, x: ArrayView1<f64>, u: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("u", u)?;
        self.check("v", v)?;
        Ok(u.dot(&v))
    }

    fn log_volume(&self) -> f64 {
        let d = self.ambient_dim as f64;
        std::f64::consts::LN_2 + 0.5 * d * std::f64::consts::PI.ln() - ln_gamma_half(self.ambient_dim)
    }

    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        // A standard Gaussian is rotation invariant, so its direction is uniform on the sphere.
        let mut out = Array2::zeros((n_samples, self.ambient_dim));
        for mut row in out.rows_mut() {
            loop {
                row.map_inplace(|v: &mut f64| *v = StandardNormal.sample(rng));
                let norm = row.dot(&row).sqrt();
                if norm > 1e-12 {
                    row /= norm;
                    break;
                }
            }
        }
        out
    }

    fn dist(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("y", y)?;
        // The angle of log_parts, atan2(|y - cos x|, cos), without building the vector: cost matrices call
        // this n^2 times.
        let cosine = x.dot(&y);
        let sine = x
            .iter()
            .zip(y.iter())
            .map(|(a, b)| (b - cosine * a).powi(2))
            .sum::<f64>()
            .sqrt();
        Ok(sine.atan2(cosine))
    }

    fn geodesic(&self, x: ArrayView1<f64>, v: ArrayView1<f64>, s: f64) -> Result<GeodesicPoint> {
        self.check("x", x)?;
        self.check("v", v)?;
        check::parameter("s", s, "a finite number", f64::is_finite)?;
        let v = self.tangent_part(x, v)?;
        let speed = v.dot(&v).sqrt();
        let angle = s * speed;
        let (sin, cos) = angle.sin_cos();
        let mut position = &x * cos;
        position.scaled_add(s * sinc(angle), &v);
        // Renormalising removes the round-off of many composed steps; the velocity is tangent in exact
        // arithmetic and is left as computed.
        let norm = position.dot(&position).sqrt();
        position /= norm;
        let mut velocity = &v * cos;
        velocity.scaled_add(-speed * sin, &x);
        Ok(GeodesicPoint { position, velocity })
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
        let w = self.tangent_part(y, w)?;
        let parts = self.log_parts(x, y);
        self.refuse_antipodal(&parts)?;
        // d/de [theta / sin theta (y - c x)] with c' = <x, w>, |u|' = <u, w> / |u|, theta' = c |u|' - |u| c':
        // [<u, w> a(theta) - <x, w>] u + theta / sin theta (w - <x, w> x), a = (sin cos - theta) / sin^3.
        let x_dot_w = x.dot(&w);
        let (sine, cosine) = parts.unit_sine_cosine();
        let radial = parts.u.dot(&w) * log_differential_coefficient(parts.angle, sine, cosine) - x_dot_w;
        let scale = parts.angle_over_sine();
        let mut out = parts.u * radial;
        out.scaled_add(scale, &w);
        out.scaled_add(-scale * x_dot_w, &x);
        Ok(out)
    }

    fn tangent_basis(&self, x: ArrayView1<f64>) -> Result<Array2<f64>> {
        self.check("x", x)?;
        let x = self.project(x)?;
        // The Householder reflection H = I - 2 w w^T / |w|^2 with w = x + sign(x_j) e_j maps x to -sign(x_j) e_j;
        // with j the largest coordinate |w_j| = |x_j| + 1 >= 1, so nothing cancels. H is orthogonal and an
        // involution, so its columns other than j are an orthonormal basis of the complement of
        // H e_j = -sign(x_j) x.
        let pivot = (0..self.ambient_dim)
            .max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
            .unwrap_or(0);
        let mut w = x.clone();
        w[pivot] += x[pivot].signum();
        let w_norm_squared = w.dot(&w);
        let mut basis = Array2::zeros((self.ambient_dim - 1, self.ambient_dim));
        for (row_idx, axis) in (0..self.ambient_dim).filter(|&a| a != pivot).enumerate() {
            let mut row = basis.row_mut(row_idx);
            row[axis] = 1.0;
            row.scaled_add(-2.0 * w[axis] / w_norm_squared, &w);
        }
        Ok(basis)
    }
}
