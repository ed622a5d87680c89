//! Closed forms shared by the integration tests: Gaussian densities with full covariance, small matrix helpers and
//! a seeded generator.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::f64::consts::PI;

/// A square matrix of size up to 3, row-major.
pub type Matrix = Vec<Vec<f64>>;

/// The Cholesky factor `L` (lower triangular, `L L^T = cov`) of a symmetric positive-definite matrix.
pub fn cholesky(cov: &Matrix) -> Matrix {
    let dims = cov.len();
    let mut lower = vec![vec![0.0; dims]; dims];
    for row in 0..dims {
        for col in 0..=row {
            let partial: f64 = (0..col).map(|k| lower[row][k] * lower[col][k]).sum();
            if row == col {
                let pivot = cov[row][row] - partial;
                assert!(pivot > 0.0, "covariance is not positive definite: {cov:?}");
                lower[row][col] = pivot.sqrt();
            } else {
                lower[row][col] = (cov[row][col] - partial) / lower[col][col];
            }
        }
    }
    lower
}

/// `N(x; mean, cov)` for a full covariance (dimension 1 to 3).
pub fn gaussian_density(x: &[f64], mean: &[f64], cov: &Matrix) -> f64 {
    let dims = x.len();
    let lower = cholesky(cov);
    // Solve L z = x - mean by forward substitution; then the Mahalanobis term is |z|^2.
    let mut z = vec![0.0; dims];
    for row in 0..dims {
        let partial: f64 = (0..row).map(|k| lower[row][k] * z[k]).sum();
        z[row] = (x[row] - mean[row] - partial) / lower[row][row];
    }
    let log_det: f64 = (0..dims).map(|k| 2.0 * lower[k][k].ln()).sum();
    let quadratic: f64 = z.iter().map(|v| v * v).sum();
    (-0.5 * (quadratic + log_det + dims as f64 * (2.0 * PI).ln())).exp()
}

/// A diagonal matrix.
pub fn diag(entries: &[f64]) -> Matrix {
    let dims = entries.len();
    (0..dims)
        .map(|row| {
            (0..dims)
                .map(|col| if row == col { entries[row] } else { 0.0 })
                .collect()
        })
        .collect()
}

/// `a + scale * b`.
pub fn add_scaled(a: &Matrix, scale: f64, b: &Matrix) -> Matrix {
    a.iter()
        .zip(b)
        .map(|(ra, rb)| ra.iter().zip(rb).map(|(x, y)| x + scale * y).collect())
        .collect()
}

/// `a b`.
pub fn mat_mul(a: &Matrix, b: &Matrix) -> Matrix {
    let dims = a.len();
    (0..dims)
        .map(|row| {
            (0..dims)
                .map(|col| (0..dims).map(|k| a[row][k] * b[k][col]).sum())
                .collect()
        })
        .collect()
}

/// `a^T`.
pub fn transpose(a: &Matrix) -> Matrix {
    let dims = a.len();
    (0..dims)
        .map(|row| (0..dims).map(|col| a[col][row]).collect())
        .collect()
}

/// `a x`.
pub fn mat_vec(a: &Matrix, x: &[f64]) -> Vec<f64> {
    a.iter()
        .map(|row| row.iter().zip(x).map(|(m, v)| m * v).sum())
        .collect()
}

/// Row-major flattening.
pub fn flatten(a: &Matrix) -> Vec<f64> {
    a.iter().flatten().copied().collect()
}

/// SplitMix64: a tiny seeded generator so identities can be checked on reproducible random data.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `low..high`.
    pub fn index(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low) as u64) as usize
    }
}

/// Prints a convergence report in one line, so `--nocapture` shows the measured orders.
pub fn print_report(name: &str, report: &ferroflow_continuity::ConvergenceReport) {
    println!(
        "{name}: resolutions {:?}, L2 residuals [{}], observed orders {:.3?}",
        report.resolutions,
        scientific(&report.residual_norms),
        report.observed_orders
    );
}

/// `values` as comma-separated numbers in scientific notation.
pub fn scientific(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.3e}"))
        .collect::<Vec<_>>()
        .join(", ")
}
