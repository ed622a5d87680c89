//! Shared fixtures for the property suites: the manifolds under test, random points and tangent vectors,
//! Gauss-Legendre quadrature and tolerance checks.

#![allow(dead_code)]

use ferroflow_manifolds::{BoxedManifold, FlatTorus, Manifold, Product, Sphere};
use ndarray::{Array1, Array2};
use proptest::test_runner::{Config, RngSeed};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A proptest configuration with a fixed seed and no persistence files, so every run checks the same cases.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_5fe4),
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Every manifold under test: circles and spheres of several dimensions, tori, and the products the issue
/// names (`S^2 x T^1`) plus one with two sphere factors.
pub fn manifolds() -> Vec<BoxedManifold> {
    vec![
        Box::new(Sphere::new(2).unwrap()),
        Box::new(Sphere::new(3).unwrap()),
        Box::new(Sphere::new(5).unwrap()),
        Box::new(FlatTorus::new(1).unwrap()),
        Box::new(FlatTorus::new(3).unwrap()),
        Box::new(s2_t1()),
        Box::new(
            Product::new(vec![
                Box::new(Sphere::new(3).unwrap()),
                Box::new(FlatTorus::new(2).unwrap()),
                Box::new(Sphere::new(2).unwrap()),
            ])
            .unwrap(),
        ),
    ]
}

/// `S^2 x T^1`.
pub fn s2_t1() -> Product {
    Product::new(vec![
        Box::new(Sphere::new(3).unwrap()),
        Box::new(FlatTorus::new(1).unwrap()),
    ])
    .unwrap()
}

/// A uniformly drawn point of the manifold.
pub fn point(manifold: &dyn Manifold, rng: &mut ChaCha8Rng) -> Array1<f64> {
    manifold.sample_uniform(1, rng).row(0).to_owned()
}

/// A standard Gaussian ambient vector.
pub fn ambient(dim: usize, rng: &mut ChaCha8Rng) -> Array1<f64> {
    (0..dim).map(|_| StandardNormal.sample(rng)).collect()
}

/// A tangent vector at `x` with Riemannian norm exactly `length` (zero if `length` is zero).
pub fn tangent(manifold: &dyn Manifold, x: &Array1<f64>, length: f64, rng: &mut ChaCha8Rng) -> Array1<f64> {
    let v = manifold
        .project_tangent(x.view(), ambient(manifold.ambient_dim(), rng).view())
        .unwrap();
    let norm = manifold.norm(x.view(), v.view()).unwrap();
    v * (length / norm)
}

/// A tangent vector at `x` whose every factor block is shorter than `max_block` (so that on every sphere
/// factor it stays inside the injectivity radius when `max_block < pi`), with total length at most
/// `max_block * sqrt(number of factors)`.
pub fn short_tangent(
    manifold: &Product,
    x: &Array1<f64>,
    max_block: f64,
    rng: &mut ChaCha8Rng,
) -> Array1<f64> {
    let mut v = manifold
        .project_tangent(x.view(), ambient(manifold.ambient_dim(), rng).view())
        .unwrap();
    for block in manifold.blocks() {
        let mut part = v.slice_mut(ndarray::s![block.clone()]);
        let norm = part.dot(&part).sqrt();
        part *= max_block / norm.max(max_block);
    }
    v
}

/// Panics with a message unless `|actual - expected| <= tolerance`.
pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} vs {expected} (difference {}, tolerance {tolerance})",
        (actual - expected).abs()
    );
}

/// Panics unless every entry of `actual - expected` is within `tolerance`.
pub fn assert_all_close(actual: &Array1<f64>, expected: &Array1<f64>, tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let worst = (actual - expected).iter().fold(0.0_f64, |m, d| m.max(d.abs()));
    assert!(
        worst <= tolerance,
        "{what}: {actual} vs {expected} (worst {worst}, tolerance {tolerance})"
    );
}

/// Gauss-Legendre nodes and weights on `[-1, 1]` (Newton's method on the Legendre recurrence).
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(n, x);
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(n, x);
        nodes[i] = x;
        weights[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    (nodes, weights)
}

/// `P_n(x)` and its derivative.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    for k in 2..=n {
        let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
        p0 = p1;
        p1 = p2;
    }
    let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, dp)
}

/// `int_{S^2} f dA` by Gauss-Legendre in `z = cos(polar angle)` (`n_z` nodes) times the trapezoid rule in the
/// azimuth (`n_azimuth` nodes, spectrally accurate for a periodic integrand).
pub fn integrate_sphere(n_z: usize, n_azimuth: usize, mut f: impl FnMut(&Array1<f64>) -> f64) -> f64 {
    let (nodes, weights) = gauss_legendre(n_z);
    let step = 2.0 * std::f64::consts::PI / n_azimuth as f64;
    let mut total = 0.0;
    for (&z, &w) in nodes.iter().zip(&weights) {
        let radius = (1.0 - z * z).sqrt();
        for k in 0..n_azimuth {
            let phi = k as f64 * step;
            let x = Array1::from(vec![radius * phi.cos(), radius * phi.sin(), z]);
            total += w * step * f(&x);
        }
    }
    total
}

/// `int_{T^d} f` by the midpoint rule on `n^d` cells of `[-pi, pi)^d`.
pub fn integrate_torus(dim: usize, n: usize, mut f: impl FnMut(&Array1<f64>) -> f64) -> f64 {
    let step = 2.0 * std::f64::consts::PI / n as f64;
    let mut total = 0.0;
    let mut index = vec![0usize; dim];
    loop {
        let x: Array1<f64> = index
            .iter()
            .map(|&i| -std::f64::consts::PI + (i as f64 + 0.5) * step)
            .collect();
        total += f(&x);
        let mut axis = 0;
        loop {
            if axis == dim {
                return total * step.powi(dim as i32);
            }
            index[axis] += 1;
            if index[axis] < n {
                break;
            }
            index[axis] = 0;
            axis += 1;
        }
    }
}

/// The rotation matrix `exp(t A)` of the skew matrix `A x = omega x x` (Rodrigues' formula).
pub fn rotation(omega: &Array1<f64>, t: f64) -> Array2<f64> {
    let speed = omega.dot(omega).sqrt();
    let k = omega / speed;
    let cross = ndarray::array![[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]];
    let angle = speed * t;
    Array2::eye(3) + &cross * angle.sin() + cross.dot(&cross) * (1.0 - angle.cos())
}

/// The skew matrix `A` with `A x = omega x x`.
pub fn skew(omega: &Array1<f64>) -> Array2<f64> {
    ndarray::array![
        [0.0, -omega[2], omega[1]],
        [omega[2], 0.0, -omega[0]],
        [-omega[1], omega[0], 0.0]
    ]
}
