//! Geodesic conditional paths and the Riemannian conditional flow-matching loss (Chen & Lipman 2024,
//! "Flow Matching on General Geometries", geodesic conditional flows on simple manifolds).
//!
//! Between a source point `x0` and a data point `x1` the conditional path follows the geodesic,
//! `x_t = exp_{x0}(kappa_t log_{x0}(x1))`, with a schedule `kappa_t` from 0 at the source to 1 at the data (for
//! example `alpha_t` of any scheduler of `ferroflow-paths`; this crate takes the two numbers, not the
//! scheduler, so that it depends on no other workspace crate). Its time derivative, the conditional velocity, is
//!
//! `u_t = dkappa_t gamma'(kappa_t)`, `gamma(s) = exp_{x0}(s log_{x0}(x1))`,
//!
//! the parallel transport of `dkappa_t log_{x0}(x1)` along the geodesic to `x_t`; it is tangent at `x_t`. For
//! `kappa_t < 1` it equals `dkappa_t log_{x_t}(x1) / (1 - kappa_t)` (the geodesic from `x_t` to `x1` is the rest
//! of the same geodesic), the form Chen & Lipman write it in; the closed form used here,
//! [`Manifold::geodesic`], is also exact at `kappa_t = 1`. On a sphere `x0` and `x1` must not be antipodal
//! ([`crate::ManifoldError::CutLocus`]; see [`crate::sphere`]).
//!
//! The loss is `mean_i |P_{x_t,i} v_i - u_{t,i}|^2_g`: the model's output is first projected onto the tangent
//! space at `x_t` (a network outputs ambient vectors), then the squared Riemannian norm of the difference is
//! taken. On the sphere and the flat torus (and their products) the metric is the ambient Euclidean inner
//! product restricted to the tangent space, so this is the Euclidean squared norm of the tangent difference.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::manifold::check_on_manifold;
use crate::{Manifold, ManifoldError, ON_MANIFOLD_TOLERANCE, Result, check};

/// The schedule at one time: `kappa_t` (0 at the source, 1 at the data) and its time derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kappa {
    /// `kappa_t` in `[0, 1]`.
    pub value: f64,
    /// `d kappa_t / dt`, finite.
    pub derivative: f64,
}

impl Kappa {
    fn check(self) -> Result<Self> {
        check::parameter("kappa", self.value, "[0, 1]", |k| (0.0..=1.0).contains(&k))?;
        check::parameter("d_kappa", self.derivative, "a finite number", f64::is_finite)?;
        Ok(self)
    }
}

/// One point of a conditional path and its conditional velocity.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalPoint {
    /// `x_t = exp_{x0}(kappa_t log_{x0}(x1))`.
    pub x_t: Array1<f64>,
    /// `u_t = d x_t / dt`, tangent at `x_t`.
    pub u_t: Array1<f64>,
}

/// A batch of conditional points, one per row.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalBatch {
    /// `x_t`, one row per sample.
    pub x_t: Array2<f64>,
    /// `u_t`, one row per sample, each tangent at its row of `x_t`.
    pub u_t: Array2<f64>,
}

/// `x_t` and `u_t` on the geodesic from `x0` to `x1` at schedule `kappa`. Both points must be on the manifold
/// within [`ON_MANIFOLD_TOLERANCE`].
pub fn conditional_point<M: Manifold + ?Sized>(
    manifold: &M,
    x0: ArrayView1<f64>,
    x1: ArrayView1<f64>,
    kappa: Kappa,
) -> Result<ConditionalPoint> {
    let kappa = kappa.check()?;
    manifold.check_point(x0, ON_MANIFOLD_TOLERANCE)?;
    manifold.check_point(x1, ON_MANIFOLD_TOLERANCE)?;
    let direction = manifold.log(x0, x1)?;
    let point = manifold.geodesic(x0, direction.view(), kappa.value)?;
    Ok(ConditionalPoint {
        x_t: point.position,
        u_t: point.velocity * kappa.derivative,
    })
}

/// [`conditional_point`] for every row: `x0` and `x1` of shape `[n_samples, ambient_dim]`, one schedule value
/// and derivative per sample. An error names the row at fault.
pub fn conditional_batch<M: Manifold + ?Sized>(
    manifold: &M,
    x0: ArrayView2<f64>,
    x1: ArrayView2<f64>,
    kappa: ArrayView1<f64>,
    d_kappa: ArrayView1<f64>,
) -> Result<ConditionalBatch> {
    check::batch(manifold, "x0", x0)?;
    check::batch(manifold, "x1", x1)?;
    let n_samples = x0.nrows();
    check::same_rows("x1", x1.shape(), n_samples)?;
    check::same_rows("kappa", kappa.shape(), n_samples)?;
    check::same_rows("d_kappa", d_kappa.shape(), n_samples)?;
    let mut x_t = Array2::zeros(x0.raw_dim());
    let mut u_t = Array2::zeros(x0.raw_dim());
    for sample_idx in 0..n_samples {
        let kappa = Kappa {
            value: kappa[sample_idx],
            derivative: d_kappa[sample_idx],
        };
        let point = conditional_point(manifold, x0.row(sample_idx), x1.row(sample_idx), kappa)
            .map_err(|e| e.in_sample(sample_idx))?;
        x_t.row_mut(sample_idx).assign(&point.x_t);
        u_t.row_mut(sample_idx).assign(&point.u_t);
    }
    Ok(ConditionalBatch { x_t, u_t })
}

/// The per-sample Riemannian flow-matching loss `|P_{x_t} v - u_t|^2_g` (see the module documentation).
pub fn cfm_loss_per_sample<M: Manifold + ?Sized>(
    manifold: &M,
    x_t: ArrayView2<f64>,
    v: ArrayView2<f64>,
    u_t: ArrayView2<f64>,
) -> Result<Array1<f64>> {
    check_on_manifold(manifold, "x_t", x_t)?;
    check::batch(manifold, "v", v)?;
    check::batch(manifold, "u_t", u_t)?;
    let n_samples = x_t.nrows();
    check::same_rows("v", v.shape(), n_samples)?;
    check::same_rows("u_t", u_t.shape(), n_samples)?;
    let mut losses = Array1::zeros(n_samples);
    for (sample_idx, loss) in losses.iter_mut().enumerate() {
        let x = x_t.row(sample_idx);
        let per_sample = || -> Result<f64> {
            let difference = manifold.project_tangent(x, v.row(sample_idx))? - u_t.row(sample_idx);
            manifold.inner(x, difference.view(), difference.view())
        };
        *loss = per_sample().map_err(|e: ManifoldError| e.in_sample(sample_idx))?;
    }
    Ok(losses)
}

/// The mean over the batch of [`cfm_loss_per_sample`]; refuses an empty batch.
pub fn cfm_loss<M: Manifold + ?Sized>(
    manifold: &M,
    x_t: ArrayView2<f64>,
    v: ArrayView2<f64>,
    u_t: ArrayView2<f64>,
) -> Result<f64> {
    check::parameter("n_samples", x_t.nrows() as f64, "an integer >= 1", |n| n >= 1.0)?;
    Ok(cfm_loss_per_sample(manifold, x_t, v, u_t)?.mean().unwrap_or(0.0))
}
