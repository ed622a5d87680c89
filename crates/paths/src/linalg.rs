//! Symmetric positive-definite matrix helpers: validation (symmetry, Cholesky), eigendecomposition and
//! matrix powers such as the symmetric square root `S^{1/2} = U diag(sqrt(lambda)) U^T`.
//!
//! These wrap `ndarray-linalg` (LAPACK through OpenBLAS) and turn its failures into [`PathsError`]s.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use ndarray_linalg::{Cholesky, Eigh, UPLO};

use crate::{PathsError, check};

/// Relative tolerance for `|C - C^T|` against the largest entry of `C`.
const SYMMETRY_TOLERANCE: f64 = 1e-9;

/// The eigendecomposition `S = U diag(lambda) U^T` of a validated symmetric positive-definite matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// Eigenvalues `lambda`, ascending, all positive.
    pub eigenvalues: Array1<f64>,
    /// Orthonormal eigenvectors `U`, one per column.
    pub eigenvectors: Array2<f64>,
}

impl SymmetricEigen {
    /// Validates `matrix` as square, finite, symmetric and positive definite (its Cholesky factorisation
    /// exists and its smallest eigenvalue exceeds `1e-12` times its largest) and decomposes it.
    /// `name` appears in the error.
    pub fn new(name: &str, matrix: ArrayView2<f64>) -> Result<Self, PathsError> {
        let (rows, cols) = matrix.dim();
        if rows != cols || rows == 0 {
            return Err(PathsError::ShapeMismatch {
                name: "covariance",
                found: vec![rows, cols],
                expected: format!("a non-empty square matrix (`{name}`)"),
            });
        }
        check::finite("covariance", matrix.iter())?;
        let scale = matrix.iter().fold(0.0_f64, |acc, v| acc.max(v.abs()));
        let max_asymmetry = matrix
            .iter()
            .zip(matrix.t().iter())
            .fold(0.0_f64, |acc, (a, b)| acc.max((a - b).abs()));
        if max_asymmetry > SYMMETRY_TOLERANCE * scale.max(1.0) {
            return Err(PathsError::NotSymmetric {
                name: name.to_string(),
                max_asymmetry,
            });
        }
        // Symmetrise exactly so LAPACK's choice of triangle cannot matter.
        let symmetric = (&matrix + &matrix.t()) * 0.5;
        let (eigenvalues, eigenvectors) = symmetric.eigh(UPLO::Lower).map_err(|err| PathsError::Linalg {
            name: name.to_string(),
            message: err.to_string(),
        })?;
        let min_eigenvalue = eigenvalues.iter().copied().fold(f64::INFINITY, f64::min);
        let max_eigenvalue = eigenvalues.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let cholesky_ok = symmetric.cholesky(UPLO::Lower).is_ok();
        // Written as `is_gt` so a NaN eigenvalue also counts as not positive definite.
        let well_conditioned = min_eigenvalue
            .partial_cmp(&(1e-12 * max_eigenvalue))
            .is_some_and(|o| o.is_gt());
        if !cholesky_ok || !well_conditioned {
            return Err(PathsError::NotPositiveDefinite {
                name: name.to_string(),
                min_eigenvalue,
            });
        }
        Ok(Self {
            eigenvalues,
            eigenvectors,
        })
    }

    /// `U diag(f(lambda)) U^T`.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Array2<f64> {
        let mut scaled = self.eigenvectors.clone();
        for (mut column, &lambda) in scaled.axis_iter_mut(Axis(1)).zip(&self.eigenvalues) {
            column *= f(lambda);
        }
        scaled.dot(&self.eigenvectors.t())
    }

    /// `S^power` (for example `0.5` for the symmetric square root, `-0.5` for its inverse).
    pub fn power(&self, power: f64) -> Array2<f64> {
        self.map(|lambda| lambda.powf(power))
    }

    /// `ln det S`.
    pub fn log_determinant(&self) -> f64 {
        self.eigenvalues.iter().map(|lambda| lambda.ln()).sum()
    }
}

/// The symmetric square root `S^{1/2}` of a symmetric positive-definite matrix.
pub fn spd_sqrt(name: &str, matrix: ArrayView2<f64>) -> Result<Array2<f64>, PathsError> {
    Ok(SymmetricEigen::new(name, matrix)?.power(0.5))
}
