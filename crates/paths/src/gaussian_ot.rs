//! Optimal transport between two Gaussians, in closed form.
//!
//! For `N(m0, S0)` and `N(m1, S1)` with full covariances (Dowson & Landau 1982; Olkin & Pukelsheim 1982;
//! Peyré & Cuturi 2019, "Computational Optimal Transport", remark 2.31):
//! - the optimal map for the squared Euclidean cost is affine, `T(x) = m1 + A (x - m0)` with the symmetric
//!   positive-definite `A = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2}`, which satisfies `A S0 A = S1`;
//! - the squared 2-Wasserstein (Bures-Wasserstein) distance is
//!   `W2^2 = |m0 - m1|^2 + tr(S0 + S1 - 2 (S0^{1/2} S1 S0^{1/2})^{1/2})`, equal to `E |T(x) - x|^2`;
//! - McCann's displacement interpolation `x_t = (1 - t) x + t T(x)` has the laws `N(m_t, M_t S0 M_t)` with
//!   `m_t = (1 - t) m0 + t m1`, `M_t = (1 - t) I + t A`, and is driven by the velocity field
//!   `v_t(y) = (m1 - m0) + (A - I) M_t^{-1} (y - m_t)`. This is the marginal velocity of the CondOT path under
//!   the optimal coupling (Tong et al. 2023, section 3.2.3: OT-CFM's marginal path is the displacement
//!   interpolation). `M_t` is symmetric positive definite for every `t` in `[0, 1]`, so `v_t` is finite there.
//!
//! Square roots are symmetric ones, `S^{1/2} = U diag(sqrt(lambda)) U^T` from the eigendecomposition.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Zip};

use crate::linalg::SymmetricEigen;
use crate::{PathsError, check};

/// A Gaussian `N(mean, covariance)` with a validated symmetric positive-definite covariance.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    mean: Array1<f64>,
    covariance: Array2<f64>,
    eigen: SymmetricEigen,
}

impl Gaussian {
    /// `N(mean, covariance)`; `covariance` must be `[dim, dim]`, symmetric and positive definite.
    pub fn new(mean: Array1<f64>, covariance: Array2<f64>) -> Result<Self, PathsError> {
        let dim = mean.len();
        check::finite("mean", mean.iter())?;
        if covariance.dim() != (dim, dim) {
            return Err(PathsError::ShapeMismatch {
                name: "covariance",
                found: covariance.shape().to_vec(),
                expected: format!("[{dim}, {dim}] (the length of `mean`)"),
            });
        }
        let eigen = SymmetricEigen::new("covariance", covariance.view())?;
        Ok(Self {
            mean,
            covariance,
            eigen,
        })
    }
    /// The mean.
    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.mean.view()
    }
    /// The covariance.
    pub fn covariance(&self) -> ArrayView2<'_, f64> {
        self.covariance.view()
    }
    /// The dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
    /// `ln N(x; mean, covariance)`.
    pub fn log_density_at(&self, x: &[f64]) -> Result<f64, PathsError> {
        check::slice_len("x", x, self.dim())?;
        check::finite("x", x)?;
        let difference: Array1<f64> = x.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        let projected = self.eigen.eigenvectors.t().dot(&difference);
        let quadratic: f64 = projected
            .iter()
            .zip(&self.eigen.eigenvalues)
            .map(|(p, l)| p * p / l)
            .sum();
        let dim = self.dim() as f64;
        Ok(-0.5 * (quadratic + self.eigen.log_determinant() + dim * (2.0 * std::f64::consts::PI).ln()))
    }
}

fn check_same_dim(source: &Gaussian, target: &Gaussian) -> Result<(), PathsError> {
    if source.dim() == target.dim() {
        Ok(())
    } else {
        Err(PathsError::ShapeMismatch {
            name: "target.mean",
            found: vec![target.dim()],
            expected: format!("[{}] (the source's dimension)", source.dim()),
        })
    }
}

/// `(S0^{1/2} S1 S0^{1/2})^{1/2}` and `S0^{1/2}`, shared by the distance and the map.
fn cross_root(source: &Gaussian, target: &Gaussian) -> Result<(Array2<f64>, SymmetricEigen), PathsError> {
    let root0 = source.eigen.power(0.5);
    let middle = root0.dot(&target.covariance).dot(&root0);
    let middle = (&middle + &middle.t()) * 0.5;
    let middle_eigen = SymmetricEigen::new("S0^{1/2} S1 S0^{1/2}", middle.view())?;
    Ok((root0, middle_eigen))
}

/// The squared Bures-Wasserstein distance `|m0 - m1|^2 + tr(S0 + S1 - 2 (S0^{1/2} S1 S0^{1/2})^{1/2})`.
pub fn bures_wasserstein_squared(source: &Gaussian, target: &Gaussian) -> Result<f64, PathsError> {
    check_same_dim(source, target)?;
    let (_, middle_eigen) = cross_root(source, target)?;
    let mean_term: f64 = source
        .mean
        .iter()
        .zip(&target.mean)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let cross_trace: f64 = middle_eigen.eigenvalues.iter().map(|l| l.sqrt()).sum();
    let trace = source.covariance.diag().sum() + target.covariance.diag().sum() - 2.0 * cross_trace;
    // The trace is >= 0 in exact arithmetic; clamp the round-off of nearly equal covariances.
    Ok(mean_term + trace.max(0.0))
}

/// The optimal transport map `T(x) = m1 + A (x - m0)` between two Gaussians and its displacement interpolation.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianOtMap {
    source: Gaussian,
    target: Gaussian,
    matrix: Array2<f64>,
    matrix_eigen: SymmetricEigen,
}

impl GaussianOtMap {
    /// The map from `source` to `target` (same dimension).
    pub fn new(source: Gaussian, target: Gaussian) -> Result<Self, PathsError> {
        check_same_dim(&source, &target)?;
        let (_, middle_eigen) = cross_root(&source, &target)?;
        let inverse_root0 = source.eigen.power(-0.5);
        let matrix = inverse_root0.dot(&middle_eigen.power(0.5)).dot(&inverse_root0);
        let matrix = (&matrix + &matrix.t()) * 0.5;
        let matrix_eigen = SymmetricEigen::new("A", matrix.view())?;
        Ok(Self {
            source,
            target,
            matrix,
            matrix_eigen,
        })
    }
    /// The source Gaussian.
    pub fn source(&self) -> &Gaussian {
        &self.source
    }
    /// The target Gaussian.
    pub fn target(&self) -> &Gaussian {
        &self.target
    }
    /// The symmetric positive-definite matrix `A`.
    pub fn matrix(&self) -> ArrayView2<'_, f64> {
        self.matrix.view()
    }
    /// The eigenvalues of `A` (ascending, positive).
    pub fn matrix_eigenvalues(&self) -> ArrayView1<'_, f64> {
        self.matrix_eigen.eigenvalues.view()
    }

    /// `T(x)` for each row of `x` (`[n_samples, dim]`).
    pub fn apply(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, PathsError> {
        self.check_points(&x)?;
        let centred = &x - &self.source.mean;
        Ok(centred.dot(&self.matrix.t()) + &self.target.mean)
    }

    /// The transport cost of the map, `E |T(x) - x|^2 = |m1 - m0|^2 + tr((A - I) S0 (A - I))` for
    /// `x ~ N(m0, S0)`; equal to [`bures_wasserstein_squared`] because the map is optimal.
    pub fn transport_cost(&self) -> f64 {
        let mean_term: f64 = self
            .source
            .mean
            .iter()
            .zip(&self.target.mean)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let shifted = &self.matrix - &Array2::<f64>::eye(self.source.dim());
        mean_term + shifted.dot(&self.source.covariance).dot(&shifted).diag().sum()
    }

    /// The law `N(m_t, M_t S0 M_t)` of the displacement interpolation at `t` in `[0, 1]`.
    pub fn interpolation(&self, t: f64) -> Result<Gaussian, PathsError> {
        check::time(t, 0)?;
        let mean = &self.source.mean * (1.0 - t) + &self.target.mean * t;
        let blend = self.matrix_eigen.map(|mu| 1.0 - t + t * mu);
        let covariance = blend.dot(&self.source.covariance).dot(&blend);
        let covariance = (&covariance + &covariance.t()) * 0.5;
        Gaussian::new(mean, covariance)
    }

    /// The displacement-interpolation velocity `v_t(y) = (m1 - m0) + (A - I) M_t^{-1} (y - m_t)` at one point.
    pub fn velocity_at(&self, y: &[f64], t: f64, velocity: &mut [f64]) -> Result<(), PathsError> {
        let dim = self.source.dim();
        check::slice_len("y", y, dim)?;
        check::slice_len("velocity", velocity, dim)?;
        check::finite("y", y)?;
        check::time(t, 0)?;
        velocity.fill(0.0);
        let eigen = &self.matrix_eigen;
        for (vector, &mu) in eigen.eigenvectors.columns().into_iter().zip(&eigen.eigenvalues) {
            let projected: f64 = vector
                .iter()
                .zip(y)
                .zip(self.source.mean.iter().zip(&self.target.mean))
                .map(|((u, y), (m0, m1))| u * (y - ((1.0 - t) * m0 + t * m1)))
                .sum();
            let gain = (mu - 1.0) / (1.0 - t + t * mu);
            for (v, &u) in velocity.iter_mut().zip(&vector) {
                *v += gain * projected * u;
            }
        }
        for ((v, m0), m1) in velocity.iter_mut().zip(&self.source.mean).zip(&self.target.mean) {
            *v += m1 - m0;
        }
        Ok(())
    }

    /// [`GaussianOtMap::velocity_at`] for a batch `y` (`[n_samples, dim]`) at per-sample times `t`.
    pub fn velocity(&self, y: ArrayView2<f64>, t: ArrayView1<f64>) -> Result<Array2<f64>, PathsError> {
        self.check_points(&y)?;
        check::batch("y", &y, &t)?;
        let dim = self.source.dim();
        let (mut point, mut out) = (vec![0.0; dim], vec![0.0; dim]);
        let mut velocity = Array2::zeros(y.raw_dim());
        for (sample_idx, row) in y.rows().into_iter().enumerate() {
            point.iter_mut().zip(&row).for_each(|(p, &v)| *p = v);
            self.velocity_at(&point, t[sample_idx], &mut out)?;
            Zip::from(velocity.row_mut(sample_idx))
                .and(&out[..])
                .for_each(|v, &o| *v = o);
        }
        Ok(velocity)
    }

    fn check_points(&self, x: &ArrayView2<f64>) -> Result<(), PathsError> {
        if x.ncols() != self.source.dim() {
            return Err(PathsError::ShapeMismatch {
                name: "x",
                found: x.shape().to_vec(),
                expected: format!("[n_samples, {}]", self.source.dim()),
            });
        }
        check::finite("x", x.iter())
    }
}
