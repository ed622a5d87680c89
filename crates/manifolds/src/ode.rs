//! Explicit Runge-Kutta steps for `dx/dt = f(t, x)` on a manifold, through the exponential map.
//!
//! **The scheme: Runge-Kutta in normal coordinates centred at the step's start.** A step from `x_n` at `t_n`
//! integrates the same ODE written in the chart `z -> exp_{x_n}(z)` of the tangent space `T_{x_n} M`:
//!
//! `z' = (d log_{x_n})_y [P_y f(t, y)]`, `y = exp_{x_n}(z)`, `z(t_n) = 0`,
//!
//! with the method's Butcher tableau in the flat space `T_{x_n} M` (stage `i` evaluates the field at
//! `y_i = exp_{x_n}(h sum_j a_ij k_j)`), and then sets `x_{n+1} = exp_{x_n}(h sum_i b_i k_i)` followed by
//! [`Manifold::project`] to remove round-off. Because the pulled-back ODE is the exact ODE in these
//! coordinates, each method keeps its classical order (Euler 1, midpoint 2, RK4 4) as long as `h |f|` stays
//! below the injectivity radius (pi on a sphere); the test suite measures the orders. The stage vectors are
//! combined in one tangent space by the differential of the log map ([`Manifold::log_differential`]). Bringing
//! them back by projection onto `T_{x_n} M` instead ignores the curvature term of `d exp`, an `O(h^2)` relative
//! error per stage, and RK4 drops to order 2 (a test measures both); parallel transport has the same defect.
//!
//! The field's output is projected onto the tangent space at its point first (`P_y f`), so a network may
//! return ambient vectors. Euler is `x_{n+1} = exp_{x_n}(h P f(t_n, x_n))`. Meta's `flow_matching`
//! `RiemannianODESolver` takes the other common route, "step then project": ambient steps `x + h v` with the
//! field projected (`proju`) and every stage point and result projected back (`projx`), RK4 being Kutta's 3/8
//! rule. That needs the manifold embedded in (or wrapped from) the ambient space; this scheme uses only exp,
//! log and the log differential, and agrees with it to the method's order.
//!
//! Fields are [`TangentField`]s over batches (one point per row); wrap an infallible batch closure in
//! [`BatchFn`] and a per-point closure in [`PointFn`]. A single point is a batch of one row
//! (`x.insert_axis(Axis(0))`).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::manifold::check_on_manifold;
use crate::{Manifold, ManifoldError, Result, check};

/// A time-dependent vector field on a batch of points: `f(t, x)` with one velocity per row of `x`.
///
/// Implemented for closures `FnMut(f64, ArrayView2<f64>) -> Result<Array2<f64>>`; see [`BatchFn`] and
/// [`PointFn`] for infallible closures. The output need not be tangent: the solver projects it.
pub trait TangentField {
    /// The velocities at time `t` of the points in the rows of `x` (same shape as `x`).
    fn eval(&mut self, t: f64, x: ArrayView2<f64>) -> Result<Array2<f64>>;
}

impl<F> TangentField for F
where
    F: FnMut(f64, ArrayView2<f64>) -> Result<Array2<f64>>,
{
    fn eval(&mut self, t: f64, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        self(t, x)
    }
}

/// Adapts an infallible batch closure `FnMut(f64, ArrayView2<f64>) -> Array2<f64>` to a [`TangentField`].
#[derive(Debug, Clone)]
pub struct BatchFn<F>(pub F);

impl<F> TangentField for BatchFn<F>
where
    F: FnMut(f64, ArrayView2<f64>) -> Array2<f64>,
{
    fn eval(&mut self, t: f64, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        Ok((self.0)(t, x))
    }
}

/// Adapts an infallible per-point closure `FnMut(f64, ArrayView1<f64>) -> Array1<f64>` to a [`TangentField`],
/// calling it once per row.
#[derive(Debug, Clone)]
pub struct PointFn<F>(pub F);

impl<F> TangentField for PointFn<F>
where
    F: FnMut(f64, ArrayView1<f64>) -> Array1<f64>,
{
    fn eval(&mut self, t: f64, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        let mut out = Array2::zeros(x.raw_dim());
        for (row, mut target) in x.rows().into_iter().zip(out.rows_mut()) {
            let value = (self.0)(t, row);
            if value.len() != row.len() {
                return Err(ManifoldError::BadEvaluation {
                    what: "vector field",
                    problem: format!("{} coordinates for a point with {}", value.len(), row.len()),
                    time: t,
                });
            }
            target.assign(&value);
        }
        Ok(out)
    }
}

/// The explicit Runge-Kutta methods, as Butcher tableaux run in normal coordinates (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifoldOdeMethod {
    /// Forward Euler, order 1, one field evaluation per step.
    Euler,
    /// The explicit midpoint rule, order 2, two evaluations per step.
    Midpoint,
    /// The classical fourth-order Runge-Kutta method (Kutta 1901), four evaluations per step.
    Rk4,
}

/// A Butcher tableau: stage times `c`, the strictly lower-triangular coupling `a` (row `i` has `i` entries) and
/// the weights `b`.
struct Tableau {
    c: &'static [f64],
    a: &'static [&'static [f64]],
    b: &'static [f64],
}

const EULER: Tableau = Tableau {
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
};

const MIDPOINT: Tableau = Tableau {
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
};

const RK4: Tableau = Tableau {
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
};

impl ManifoldOdeMethod {
    fn tableau(self) -> &'static Tableau {
        match self {
            Self::Euler => &EULER,
            Self::Midpoint => &MIDPOINT,
            Self::Rk4 => &RK4,
        }
    }

    /// The number of field evaluations per step.
    pub fn stages(self) -> usize {
        self.tableau().b.len()
    }

    /// The classical order of the method (kept on manifolds by this scheme).
    pub fn order(self) -> usize {
        match self {
            Self::Euler => 1,
            Self::Midpoint => 2,
            Self::Rk4 => 4,
        }
    }
}

/// The result of [`solve`]: the final points and what the solve cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifoldSolution {
    /// The points at `t1`, one per row, projected onto the manifold.
    pub x: Array2<f64>,
    /// The number of steps taken.
    pub steps: usize,
    /// The number of calls of the field (each on the whole batch).
    pub field_evaluations: usize,
}

/// Calls the field and refuses a wrong shape or a non-finite value.
fn evaluate<F: TangentField + ?Sized>(field: &mut F, t: f64, x: ArrayView2<f64>) -> Result<Array2<f64>> {
    let value = field.eval(t, x)?;
    if value.shape() != x.shape() {
        return Err(ManifoldError::BadEvaluation {
            what: "vector field",
            problem: format!("shape {:?} for points of shape {:?}", value.shape(), x.shape()),
            time: t,
        });
    }
    if let Some((index, bad)) = value.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ManifoldError::BadEvaluation {
            what: "vector field",
            problem: format!(
                "{bad} at sample {}, coordinate {}",
                index / x.ncols().max(1),
                index % x.ncols().max(1)
            ),
            time: t,
        });
    }
    Ok(value)
}

/// One step of size `h` (negative to integrate backwards) from the points `x` at time `t`.
///
/// The points are not checked against the manifold here (a solve checks its start once); the result is
/// projected onto it.
pub fn step<M, F>(
    manifold: &M,
    field: &mut F,
    method: ManifoldOdeMethod,
    t: f64,
    h: f64,
    x: ArrayView2<f64>,
) -> Result<Array2<f64>>
where
    M: Manifold + ?Sized,
    F: TangentField + ?Sized,
{
    check::batch(manifold, "x", x)?;
    check::parameter("t", t, "a finite number", f64::is_finite)?;
    check::parameter("h", h, "a finite number", f64::is_finite)?;
    let tableau = method.tableau();
    // k[i] holds stage i's velocity pulled back to the tangent space at each row's start point.
    let mut k: Vec<Array2<f64>> = Vec::with_capacity(tableau.b.len());
    for (stage, (&c, a)) in tableau.c.iter().zip(tableau.a).enumerate() {
        let offsets = combine(a, &k, h, x.raw_dim());
        let points = if stage == 0 {
            x.to_owned()
        } else {
            map_rows(x, |sample_idx, row| manifold.exp(row, offsets.row(sample_idx)))?
        };
        let velocity = evaluate(field, t + c * h, points.view())?;
        let pulled_back = map_rows(x, |sample_idx, row| {
            let y = points.row(sample_idx);
            let tangent = manifold.project_tangent(y, velocity.row(sample_idx))?;
            if stage == 0 {
                Ok(tangent)
            } else {
                manifold.log_differential(row, y, tangent.view())
            }
        })?;
        k.push(pulled_back);
    }
    let increment = combine(tableau.b, &k, h, x.raw_dim());
    map_rows(x, |sample_idx, row| {
        let next = manifold.exp(row, increment.row(sample_idx))?;
        manifold.project(next.view())
    })
}

/// Integrates from `t0` to `t1` (either direction) in `steps` equal steps, from the points `x0` (on the
/// manifold within [`crate::ON_MANIFOLD_TOLERANCE`]).
pub fn solve<M, F>(
    manifold: &M,
    field: &mut F,
    method: ManifoldOdeMethod,
    x0: ArrayView2<f64>,
    t0: f64,
    t1: f64,
    steps: usize,
) -> Result<ManifoldSolution>
where
    M: Manifold + ?Sized,
    F: TangentField + ?Sized,
{
    check_on_manifold(manifold, "x0", x0)?;
    check::parameter("t0", t0, "a finite number", f64::is_finite)?;
    check::parameter("t1", t1, "a finite number", f64::is_finite)?;
    check::parameter("steps", steps as f64, "an integer >= 1", |s| s >= 1.0)?;
    let h = (t1 - t0) / steps as f64;
    let mut x = x0.to_owned();
    for step_idx in 0..steps {
        // Times from the index, not by accumulation, so the last step ends exactly at t1.
        let t = t0 + step_idx as f64 * h;
        x = step(manifold, field, method, t, h, x.view())?;
    }
    Ok(ManifoldSolution {
        x,
        steps,
        field_evaluations: steps * method.stages(),
    })
}

/// `h sum_j weights_j k_j`, zero when there are no weights.
fn combine(weights: &[f64], k: &[Array2<f64>], h: f64, shape: ndarray::Ix2) -> Array2<f64> {
    let mut out = Array2::zeros(shape);
    for (&weight, stage) in weights.iter().zip(k) {
        if weight != 0.0 {
            out.scaled_add(h * weight, stage);
        }
    }
    out
}

/// Builds a batch row by row from `map(sample_idx, row of x)`, naming the row of a failure.
fn map_rows(
    x: ArrayView2<f64>,
    mut map: impl FnMut(usize, ArrayView1<f64>) -> Result<Array1<f64>>,
) -> Result<Array2<f64>> {
    let mut out = Array2::zeros(x.raw_dim());
    for (sample_idx, (row, mut target)) in x.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))).enumerate() {
        target.assign(&map(sample_idx, row).map_err(|e| e.in_sample(sample_idx))?);
    }
    Ok(out)
}
