//! Distances between two samples (rows = points): exact Wasserstein, RBF MMD, Sinkhorn divergence.
//!
//! - `W_p(mu, nu) = (min_pi E_pi |x - y|^p)^(1/p)` between uniform empirical measures; for equal sizes an
//!   optimal plan is a permutation (Birkhoff-von Neumann), so `W_p^p = min_sigma (1/n) sum_i |x_i - y_sigma(i)|^p`
//!   ([`w1`], [`w2`], by the [`Jv`] solver). Unequal sizes: [`w2_general`] is exact through the replicated
//!   assignment of [`crate::plan`] while `lcm(n0, n1)` is at most `max_replicated`, and otherwise falls back to
//!   the entropic transport cost `<P_eps, C>` with a small `reg` (relative to the largest cost), which
//!   overestimates `W2^2` by at most `reg * (ln n0 + ln n1)` (the entropic plan minimises `<P, C> - eps H(P)`,
//!   so `<P_eps, C> - <P*, C> <= eps (H(P_eps) - H(P*)) <= eps ln(n0 n1)`); the returned [`W2Method`] says
//!   which one was used.
//! - MMD with the kernel `k(x, y) = sum_s exp(-|x - y|^2 / (2 s^2))` over bandwidths `s` (Gretton et al. 2012,
//!   "A kernel two-sample test", JMLR, eqs. 3 and 5): the biased (V-statistic) estimate
//!   `mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)` and the unbiased (U-statistic) one, which leaves out
//!   the diagonals of the within-sample sums. Both return MMD^2 (the unbiased one can be slightly negative).
//! - Sinkhorn divergence `S_eps = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2` with
//!   `OT_eps = <a, f> + <b, g>` (Feydy et al. 2019, eq. 5-7) on the squared Euclidean cost: non-negative,
//!   zero iff the samples agree, and close to `W2^2` for small `eps`; it debiases the entropic cost, for large
//!   samples where the exact solver is too slow.

use ndarray::ArrayView2;

use crate::assignment::{AssignmentSolver, Jv};
use crate::cost::{GroundCost, cost_matrix, squared_euclidean};
use crate::error::{CouplingError, Result};
use crate::plan::exact_plan;
use crate::sinkhorn::{SinkhornConfig, sinkhorn, uniform};

fn equal_sizes(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<()> {
    // A distance between empty samples is not 0 but undefined (the mean over no pairs).
    for (what, (rows, cols)) in [("first sample", x.dim()), ("second sample", y.dim())] {
        if rows == 0 || cols == 0 {
            return Err(CouplingError::Empty { what, rows, cols });
        }
    }
    if x.nrows() != y.nrows() {
        return Err(CouplingError::SizeMismatch {
            what: "sample sizes",
            expected: x.nrows(),
            found: y.nrows(),
        });
    }
    Ok(())
}

/// Exact `W1` (Euclidean ground distance) between two samples of equal size.
pub fn w1(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    equal_sizes(x, y)?;
    let cost = cost_matrix(x, y, GroundCost::EUCLIDEAN)?;
    Ok(Jv::default().solve(cost.view())?.total_cost / x.nrows() as f64)
}

/// Exact `W2` between two samples of equal size.
pub fn w2(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    equal_sizes(x, y)?;
    let cost = squared_euclidean(x, y)?;
    Ok((Jv::default().solve(cost.view())?.total_cost / x.nrows() as f64)
        .max(0.0)
        .sqrt())
}

/// How [`w2_general`] computed its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum W2Method {
    /// Exact, by assignment on `replicated` copies (`lcm(n0, n1)`).
    Exact {
        /// Size of the replicated assignment.
        replicated: usize,
    },
    /// Entropic transport cost with this regularisation (in squared-distance units); an overestimate.
    Entropic {
        /// The regularisation used.
        reg: f64,
    },
}

/// A `W2` value and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct W2Estimate {
    /// The distance.
    pub value: f64,
    /// Exact or entropic.
    pub method: W2Method,
}

/// Settings of [`w2_general`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct W2Config {
    /// Largest `lcm(n0, n1)` solved exactly.
    pub max_replicated: usize,
    /// Fallback regularisation, relative to the largest squared distance.
    pub relative_reg: f64,
}

impl Default for W2Config {
    fn default() -> Self {
        W2Config {
            max_replicated: 4096,
            relative_reg: 1e-3,
        }
    }
}

/// `W2` between samples of any sizes: exact when `lcm(n0, n1) <= max_replicated`, else entropic.
pub fn w2_general(x: ArrayView2<f64>, y: ArrayView2<f64>, config: &W2Config) -> Result<W2Estimate> {
    let cost = squared_euclidean(x, y)?;
    if let Some(replicated) = crate::plan::lcm(x.nrows(), y.nrows()).filter(|&l| l <= config.max_replicated) {
        let plan = exact_plan(cost.view(), config.max_replicated)?;
        let value = ndarray::Zip::from(&plan)
            .and(&cost)
            .fold(0.0, |acc, &p, &c| acc + p * c);
        return Ok(W2Estimate {
            value: value.max(0.0).sqrt(),
            method: W2Method::Exact { replicated },
        });
    }
    let max = cost.fold(0.0f64, |m, &c| m.max(c));
    let reg = (config.relative_reg * max).max(f64::MIN_POSITIVE);
    let solution = sinkhorn(
        cost.view(),
        &SinkhornConfig {
            reg,
            max_iterations: 5000,
            tolerance: 1e-6,
        },
    )?;
    Ok(W2Estimate {
        value: solution.transport_cost(cost.view()).max(0.0).sqrt(),
        method: W2Method::Entropic { reg },
    })
}

/// MMD estimator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmdEstimator {
    /// V-statistic (includes `k(x_i, x_i)`), always >= 0.
    #[default]
    Biased,
    /// U-statistic (leaves out the diagonals); needs at least 2 points per sample.
    Unbiased,
}

/// Settings of [`mmd_rbf`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmdConfig {
    /// Bandwidths `s` of the summed Gaussian kernels (each > 0).
    pub bandwidths: Vec<f64>,
    /// Biased or unbiased.
    pub estimator: MmdEstimator,
}

impl Default for MmdConfig {
    /// A multi-scale sum, as commonly used for 2D benchmarks.
    fn default() -> Self {
        MmdConfig {
            bandwidths: vec![0.1, 0.5, 1.0, 2.0, 5.0],
            estimator: MmdEstimator::Biased,
        }
    }
}

/// Squared MMD between two samples with a sum of RBF kernels.
pub fn mmd_rbf(x: ArrayView2<f64>, y: ArrayView2<f64>, config: &MmdConfig) -> Result<f64> {
    if config.bandwidths.is_empty() {
        return Err(CouplingError::InvalidParameter {
            name: "bandwidths",
            value: 0.0,
            allowed: "at least one bandwidth",
        });
    }
    if let Some(&s) = config.bandwidths.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
        return Err(CouplingError::InvalidParameter {
            name: "bandwidths",
            value: s,
            allowed: "each finite and > 0",
        });
    }
    let (n, m) = (x.nrows(), y.nrows());
    if config.estimator == MmdEstimator::Unbiased && (n < 2 || m < 2) {
        return Err(CouplingError::InvalidParameter {
            name: "estimator",
            value: n.min(m) as f64,
            allowed: "unbiased MMD needs at least 2 points per sample",
        });
    }
    let kernel_sum = |d2: &ndarray::Array2<f64>, skip_diagonal: bool| -> f64 {
        let mut total = 0.0;
        for ((i, j), &d) in d2.indexed_iter() {
            if skip_diagonal && i == j {
                continue;
            }
            total += config
                .bandwidths
                .iter()
                .map(|s| (-d / (2.0 * s * s)).exp())
                .sum::<f64>();
        }
        total
    };
    let dxx = squared_euclidean(x, x)?;
    let dyy = squared_euclidean(y, y)?;
    let dxy = squared_euclidean(x, y)?;
    let (n, m) = (n as f64, m as f64);
    let cross = kernel_sum(&dxy, false) / (n * m);
    Ok(match config.estimator {
        MmdEstimator::Biased => {
            kernel_sum(&dxx, false) / (n * n) + kernel_sum(&dyy, false) / (m * m) - 2.0 * cross
        }
        MmdEstimator::Unbiased => {
            kernel_sum(&dxx, true) / (n * (n - 1.0)) + kernel_sum(&dyy, true) / (m * (m - 1.0)) - 2.0 * cross
        }
    })
}

/// Debiased Sinkhorn divergence on the squared Euclidean cost with regularisation `config.reg`
/// (in squared-distance units).
pub fn sinkhorn_divergence(x: ArrayView2<f64>, y: ArrayView2<f64>, config: &SinkhornConfig) -> Result<f64> {
    let ot = |p: ArrayView2<f64>, q: ArrayView2<f64>| -> Result<f64> {
        let cost = squared_euclidean(p, q)?;
        let solution = sinkhorn(cost.view(), config)?;
        Ok(solution.dual_value(uniform(p.nrows()).view(), uniform(q.nrows()).view()))
    };
    Ok(ot(x, y)? - 0.5 * (ot(x, x)? + ot(y, y)?))
}
