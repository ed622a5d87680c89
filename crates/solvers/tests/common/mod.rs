//! Problems with closed-form solutions shared by the integration tests.
#![allow(dead_code)]

use ferroflow_solvers::{FnField, SolverError};
use ndarray::{Array1, array};

/// Angular velocity of the rotation problem.
pub const OMEGA: f64 = 2.0;

/// `y' = A y` with `A = [[0, -w], [w, 0]]`: a rotation by `w t`.
pub fn rotation() -> FnField<impl FnMut(f64, &Array1<f64>) -> Array1<f64>> {
    FnField(|_t: f64, y: &Array1<f64>| array![-OMEGA * y[1], OMEGA * y[0]])
}

/// The exact solution of [`rotation`].
pub fn rotation_exact(y0: &Array1<f64>, t: f64) -> Array1<f64> {
    let (c, s) = ((OMEGA * t).cos(), (OMEGA * t).sin());
    array![c * y0[0] - s * y0[1], s * y0[0] + c * y0[1]]
}

/// `y' = y^2`, solved by `y0 / (1 - y0 t)`.
pub fn riccati() -> FnField<impl FnMut(f64, &Array1<f64>) -> Array1<f64>> {
    FnField(|_t: f64, y: &Array1<f64>| y.mapv(|v| v * v))
}

/// The exact solution of [`riccati`].
pub fn riccati_exact(y0: &Array1<f64>, t: f64) -> Array1<f64> {
    y0.mapv(|v| v / (1.0 - v * t))
}

/// `y' = -2 t y^2`, solved by `y0 / (1 + y0 t^2)`: nonlinear and non-autonomous.
pub fn quadratic_decay() -> FnField<impl FnMut(f64, &Array1<f64>) -> Array1<f64>> {
    FnField(|t: f64, y: &Array1<f64>| y.mapv(|v| -2.0 * t * v * v))
}

/// The exact solution of [`quadratic_decay`].
pub fn quadratic_decay_exact(y0: &Array1<f64>, t: f64) -> Array1<f64> {
    y0.mapv(|v| v / (1.0 + v * t * t))
}

/// Max-norm distance.
pub fn max_error(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    (a - b).iter().fold(0.0, |acc, v| acc.max(v.abs()))
}

/// Observed orders `log2(e_k / e_{k+1})` of errors at step counts doubling each time.
pub fn observed_orders(errors: &[f64]) -> Vec<f64> {
    errors.windows(2).map(|pair| (pair[0] / pair[1]).log2()).collect()
}

/// The least-squares order over errors at step counts doubling each time: the slope of `log2 e` against
/// `-log2 n`, which for three errors is the mean of the two pairwise orders.
pub fn fitted_order(errors: &[f64]) -> f64 {
    let n_points = errors.len() as f64;
    let xs: Vec<f64> = (0..errors.len()).map(|idx| idx as f64).collect();
    let ys: Vec<f64> = errors.iter().map(|error| -error.log2()).collect();
    let x_mean = xs.iter().sum::<f64>() / n_points;
    let y_mean = ys.iter().sum::<f64>() / n_points;
    let covariance: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - x_mean) * (y - y_mean)).sum();
    let variance: f64 = xs.iter().map(|x| (x - x_mean) * (x - x_mean)).sum();
    covariance / variance
}

/// A field that always fails, for error-propagation tests.
pub fn failing(t: f64, _x: &Array1<f64>) -> Result<Array1<f64>, SolverError> {
    Err(SolverError::field(t, "boom"))
}

/// Formats errors for the test log.
pub fn scientific(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.3e}"))
        .collect::<Vec<_>>()
        .join(", ")
}
