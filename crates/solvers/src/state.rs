//! The state trait the integrators run on, its implementations for ndarray arrays, and the augmented
//! (state, per-sample scalar) pair used by the likelihood integration.
//!
//! The solvers only need a vector space with a copy, an axpy, a scaling and a weighted error norm, so the same
//! code runs on `ndarray` arrays (tested against closed forms) and on `tch::Tensor`s (behind the `tch` feature,
//! see `crate::tensor`).

use ndarray::{Array, Array1, Array2, Axis, Dimension, Zip};

/// A vector-space element the integrators can step.
///
/// `tch::Tensor` is not `Clone` (its `clone` would share storage), so copying is the explicit
/// [`State::clone_state`], a deep copy.
pub trait State: Sized {
    /// A deep copy.
    fn clone_state(&self) -> Self;
    /// Overwrites `self` with `other` (same shape), reusing `self`'s storage.
    fn copy_from(&mut self, other: &Self);
    /// `self += a * other` (axpy).
    fn add_scaled(&mut self, a: f64, other: &Self);
    /// `self *= a`.
    fn scale(&mut self, a: f64);
    /// `self *= other`, elementwise (used for diagonal diffusion).
    fn mul_elementwise(&mut self, other: &Self);
    /// Number of scalar components (the denominator of the RMS error norm).
    fn n_elements(&self) -> usize;
    /// Whether no component is NaN or infinite.
    fn all_finite(&self) -> bool;
    /// `sum_i (e_i / (atol + rtol * max(|y0_i|, |y1_i|)))^2`: the numerator of [`State::error_norm`], kept
    /// separate so composite states (see [`Augmented`]) can form one RMS over all their parts.
    fn error_sum_squares(err: &Self, y0: &Self, y1: &Self, atol: f64, rtol: f64) -> f64;

    /// The weighted RMS norm of adaptive step control (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4,
    /// eq. 4.11): `sqrt(mean_i (e_i / (atol + rtol * max(|y0_i|, |y1_i|)))^2)`. A step is accepted when it is
    /// at most 1. An empty state has norm 0.
    fn error_norm(err: &Self, y0: &Self, y1: &Self, atol: f64, rtol: f64) -> f64 {
        let n_elements = err.n_elements();
        if n_elements == 0 {
            return 0.0;
        }
        (Self::error_sum_squares(err, y0, y1, atol, rtol) / n_elements as f64).sqrt()
    }
}

impl<D: Dimension> State for Array<f64, D> {
    fn clone_state(&self) -> Self {
        self.clone()
    }

    fn copy_from(&mut self, other: &Self) {
        self.assign(other);
    }

    fn add_scaled(&mut self, a: f64, other: &Self) {
        self.scaled_add(a, other);
    }

    fn scale(&mut self, a: f64) {
        self.mapv_inplace(|value| value * a);
    }

    fn mul_elementwise(&mut self, other: &Self) {
        *self *= other;
    }

    fn n_elements(&self) -> usize {
        self.len()
    }

    fn all_finite(&self) -> bool {
        self.iter().all(|value| value.is_finite())
    }

    fn error_sum_squares(err: &Self, y0: &Self, y1: &Self, atol: f64, rtol: f64) -> f64 {
        Zip::from(err).and(y0).and(y1).fold(0.0, |acc, &e, &a, &b| {
            let ratio = e / (atol + rtol * a.abs().max(b.abs()));
            acc + ratio * ratio
        })
    }
}

/// A batch of samples along the first axis, with a per-sample scalar type (log-densities, divergences).
///
/// Implemented for `Array2<f64>` (rows are samples) and, behind the `tch` feature, for `tch::Tensor` (dimension 0
/// is the batch; every other dimension is flattened into the sample).
pub trait SampleBatch: State {
    /// One scalar per sample: `Array1<f64>` for `Array2<f64>`, a 1-D tensor for a tensor.
    type PerSample: State;
    /// Number of samples in the batch.
    fn n_samples(&self) -> usize;
    /// Dimension of one sample (`D` in log-densities and bits per dimension).
    fn sample_dim(&self) -> usize;
    /// Zero for every sample, on the same device and in the same precision as `self`.
    fn zeros_per_sample(&self) -> Self::PerSample;
    /// `log N(x; 0, I) = -|x|^2 / 2 - (D / 2) ln(2 pi)` for every sample.
    fn standard_normal_log_density(&self) -> Self::PerSample;
}

impl SampleBatch for Array2<f64> {
    type PerSample = Array1<f64>;

    fn n_samples(&self) -> usize {
        self.nrows()
    }

    fn sample_dim(&self) -> usize {
        self.ncols()
    }

    fn zeros_per_sample(&self) -> Array1<f64> {
        Array1::zeros(self.nrows())
    }

    fn standard_normal_log_density(&self) -> Array1<f64> {
        let log_normaliser = 0.5 * self.ncols() as f64 * (2.0 * std::f64::consts::PI).ln();
        self.map_axis(Axis(1), |row| -0.5 * row.dot(&row) - log_normaliser)
    }
}

/// A state carried together with a per-sample accumulator, stepped as one state: the likelihood integration
/// runs `(x, integral of div v)` through the same Runge-Kutta stepper, and the adaptive error norm is one RMS
/// over both parts.
#[derive(Debug)]
pub struct Augmented<S, D> {
    /// The samples.
    pub x: S,
    /// The per-sample accumulator (for likelihoods: the integral of the divergence since the start time).
    pub integral: D,
}

impl<S: State, D: State> State for Augmented<S, D> {
    fn clone_state(&self) -> Self {
        Augmented {
            x: self.x.clone_state(),
            integral: self.integral.clone_state(),
        }
    }

    fn copy_from(&mut self, other: &Self) {
        self.x.copy_from(&other.x);
        self.integral.copy_from(&other.integral);
    }

    fn add_scaled(&mut self, a: f64, other: &Self) {
        self.x.add_scaled(a, &other.x);
        self.integral.add_scaled(a, &other.integral);
    }

    fn scale(&mut self, a: f64) {
        self.x.scale(a);
        self.integral.scale(a);
    }

    fn mul_elementwise(&mut self, other: &Self) {
        self.x.mul_elementwise(&other.x);
        self.integral.mul_elementwise(&other.integral);
    }

    fn n_elements(&self) -> usize {
        self.x.n_elements() + self.integral.n_elements()
    }

    fn all_finite(&self) -> bool {
        self.x.all_finite() && self.integral.all_finite()
    }

    fn error_sum_squares(err: &Self, y0: &Self, y1: &Self, atol: f64, rtol: f64) -> f64 {
        S::error_sum_squares(&err.x, &y0.x, &y1.x, atol, rtol)
            + D::error_sum_squares(&err.integral, &y0.integral, &y1.integral, atol, rtol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn error_norm_is_weighted_rms() {
        let err = array![1e-3, -2e-3];
        let y0 = array![1.0, -3.0];
        let y1 = array![2.0, 1.0];
        let (atol, rtol): (f64, f64) = (1e-4, 1e-2);
        let first = 1e-3 / (atol + rtol * 2.0);
        let second = 2e-3 / (atol + rtol * 3.0);
        let expected = ((first * first + second * second) / 2.0).sqrt();
        let got = Array1::error_norm(&err, &y0, &y1, atol, rtol);
        assert!((got - expected).abs() < 1e-14 * expected, "{got} vs {expected}");
    }

    #[test]
    fn augmented_norm_is_one_rms_over_both_parts() {
        let state = Augmented {
            x: array![[1.0, 0.0]],
            integral: array![0.0],
        };
        let err = Augmented {
            x: array![[0.0, 0.0]],
            integral: array![3.0],
        };
        // One nonzero component out of three, scale atol = 1.
        let got = Augmented::error_norm(&err, &state, &state, 1.0, 0.0);
        assert!((got - (9.0f64 / 3.0).sqrt()).abs() < 1e-14);
        assert_eq!(err.n_elements(), 3);
    }

    #[test]
    fn standard_normal_log_density_matches_formula() {
        let x = array![[0.0, 0.0], [1.0, 2.0]];
        let got = x.standard_normal_log_density();
        let c = -(2.0 * std::f64::consts::PI).ln();
        assert!((got[0] - c).abs() < 1e-14);
        assert!((got[1] - (c - 2.5)).abs() < 1e-14);
    }
}
