//! Shared fixtures for the property suites: every scheduler, every path, random mixtures and finite differences.

#![allow(dead_code)]

use ferroflow_paths::{
    AffinePath, CondOtScheduler, ConditionalPath, CosineScheduler, GaussianMixture, LinearVpScheduler,
    OneSidedGaussianPath, PolynomialScheduler, Scheduler, SchedulerKind, SchrodingerBridgePath,
    VariancePreservingPath, VpScheduler,
};
use ndarray::{Array1, Array2, Array3};
use proptest::test_runner::{Config, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A proptest configuration with a fixed seed and no persistence files, so every run checks the same cases.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_f10f),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Every scheduler, with parameters that exercise each branch (sub-linear and super-linear polynomial,
/// the default and a mild VP).
pub fn schedulers() -> Vec<Box<dyn Scheduler + Send + Sync>> {
    vec![
        Box::new(CondOtScheduler),
        Box::new(PolynomialScheduler::new(0.5).unwrap()),
        Box::new(PolynomialScheduler::new(3.0).unwrap()),
        Box::new(VpScheduler::default()),
        Box::new(VpScheduler::new(0.5, 5.0).unwrap()),
        Box::new(LinearVpScheduler),
        Box::new(CosineScheduler),
        SchedulerKind::Polynomial { exponent: 2.0 }.build().unwrap(),
    ]
}

/// Every conditional path: the affine path of every scheduler, I-CFM, Lipman's one-sided path (and its
/// `sigma_min = 0` limit), the Schrödinger bridge and the trigonometric VP path, with and without extra noise.
pub fn paths() -> Vec<Box<dyn ConditionalPath>> {
    let mut paths: Vec<Box<dyn ConditionalPath>> = schedulers()
        .into_iter()
        .map(|s| Box::new(AffinePath::without_noise(s)) as Box<dyn ConditionalPath>)
        .collect();
    paths.push(Box::new(AffinePath::new(CondOtScheduler, 0.3).unwrap()));
    paths.push(Box::new(AffinePath::new(CosineScheduler, 0.2).unwrap()));
    paths.push(Box::new(OneSidedGaussianPath::new(0.05).unwrap()));
    paths.push(Box::new(OneSidedGaussianPath::linear()));
    paths.push(Box::new(SchrodingerBridgePath::new(0.7).unwrap()));
    paths.push(Box::new(VariancePreservingPath::new(0.0).unwrap()));
    paths.push(Box::new(VariancePreservingPath::new(0.25).unwrap()));
    paths
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn normal_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |_| rng.sample(StandardNormal))
}

/// A random symmetric positive-definite matrix `L L^T + floor I`.
pub fn random_spd(rng: &mut ChaCha8Rng, dim: usize, floor: f64) -> Array2<f64> {
    let factor = normal_matrix(rng, dim, dim) * 0.7;
    factor.dot(&factor.t()) + Array2::<f64>::eye(dim) * floor
}

/// A random mixture with `n_components` components in `dim` dimensions, full covariances.
pub fn random_mixture(seed: u64, n_components: usize, dim: usize) -> GaussianMixture {
    let mut rng = rng(seed);
    let raw: Vec<f64> = (0..n_components).map(|_| rng.random_range(0.2..1.0)).collect();
    let total: f64 = raw.iter().sum();
    let weights = Array1::from_iter(raw.iter().map(|w| w / total));
    let means = Array2::from_shape_fn((n_components, dim), |_| rng.random_range(-2.0..2.0));
    let mut covariances = Array3::zeros((n_components, dim, dim));
    for mut covariance in covariances.outer_iter_mut() {
        covariance.assign(&random_spd(&mut rng, dim, 0.15));
    }
    GaussianMixture::new(weights, means, covariances).unwrap()
}

/// Fourth-order central difference `(f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / (12 h)`.
pub fn derivative(f: impl Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x - 2.0 * h) - 8.0 * f(x - h) + 8.0 * f(x + h) - f(x + 2.0 * h)) / (12.0 * h)
}

/// Asserts `|actual - expected| <= tolerance * (1 + |expected|)` with a message naming the case.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let error = (actual - expected).abs();
    assert!(
        error <= tolerance * (1.0 + expected.abs()),
        "{what}: got {actual}, expected {expected}, error {error:e} > {tolerance:e} (1 + |expected|)"
    );
}
