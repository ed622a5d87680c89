//! Property suite for Gaussian-to-Gaussian optimal transport: the Bures-Wasserstein formula equals the cost of
//! the closed-form map, the map pushes the source onto the target, its matrix is symmetric positive definite,
//! it beats another transport map, and the displacement velocity transports the interpolated density.

mod common;

use common::{assert_close, config, derivative, normal_matrix, random_spd, rng};
use ferroflow_paths::{Gaussian, GaussianOtMap, PathsError, bures_wasserstein_squared};
use ndarray::{Array1, Array2, array};
use ndarray_linalg::{Cholesky, Inverse, UPLO};
use proptest::prelude::*;

fn random_gaussian(seed: u64, dim: usize) -> Gaussian {
    let mut rng = rng(seed);
    let mean = normal_matrix(&mut rng, 1, dim).row(0).to_owned() * 2.0;
    Gaussian::new(mean, random_spd(&mut rng, dim, 0.2)).unwrap()
}

fn max_abs_difference(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc.max((x - y).abs()))
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn bures_wasserstein_is_the_cost_of_the_map(seed in any::<u64>(), dim in 1_usize..5) {
        let (source, target) = (random_gaussian(seed, dim), random_gaussian(seed ^ 0xabc, dim));
        let map = GaussianOtMap::new(source.clone(), target.clone()).unwrap();
        let distance = bures_wasserstein_squared(&source, &target).unwrap();
        assert_close(map.transport_cost(), distance, 1e-9, "E|T(x) - x|^2 vs Bures-Wasserstein");
        // Symmetric in its arguments, zero on the diagonal.
        assert_close(bures_wasserstein_squared(&target, &source).unwrap(), distance, 1e-9, "symmetry");
        assert_close(bures_wasserstein_squared(&source, &source).unwrap(), 0.0, 1e-9, "W2(p, p)");

        // Another valid transport map, x -> m1 + L1 L0^{-1} (x - m0) with Cholesky factors, costs at least as much.
        let l0 = source.covariance().cholesky(UPLO::Lower).unwrap();
        let l1 = target.covariance().cholesky(UPLO::Lower).unwrap();
        let other = l1.dot(&l0.inv().unwrap()) - Array2::<f64>::eye(dim);
        let mean_term: f64 = source.mean().iter().zip(&target.mean()).map(|(a, b)| (a - b) * (a - b)).sum();
        let other_cost = mean_term + other.dot(&source.covariance()).dot(&other.t()).diag().sum();
        prop_assert!(distance <= other_cost + 1e-9 * (1.0 + other_cost), "{} > {}", distance, other_cost);
    }

    #[test]
    fn the_map_pushes_the_source_onto_the_target(seed in any::<u64>(), dim in 1_usize..5) {
        let (source, target) = (random_gaussian(seed, dim), random_gaussian(seed ^ 0xdef, dim));
        let map = GaussianOtMap::new(source.clone(), target.clone()).unwrap();
        let a = map.matrix().to_owned();
        // Symmetric positive definite.
        prop_assert!(max_abs_difference(&a, &a.t().to_owned()) < 1e-12);
        prop_assert!(map.matrix_eigenvalues().iter().all(|&mu| mu > 0.0));
        // T(m0) = m1 and A S0 A^T = S1.
        let mapped_mean = map.apply(source.mean().insert_axis(ndarray::Axis(0))).unwrap();
        for (a, b) in mapped_mean.iter().zip(&target.mean()) {
            assert_close(*a, *b, 1e-10, "T(m0) = m1");
        }
        let pushed = a.dot(&source.covariance()).dot(&a.t());
        let scale = 1.0 + target.covariance().iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        prop_assert!(max_abs_difference(&pushed, &target.covariance().to_owned()) < 1e-9 * scale);
        // The interpolation starts at the source and ends at the target.
        let start = map.interpolation(0.0).unwrap();
        let end = map.interpolation(1.0).unwrap();
        prop_assert!(max_abs_difference(&start.covariance().to_owned(), &source.covariance().to_owned()) < 1e-10 * scale);
        prop_assert!(max_abs_difference(&end.covariance().to_owned(), &target.covariance().to_owned()) < 1e-9 * scale);
    }

    #[test]
    fn displacement_velocity_transports_the_interpolated_density(seed in any::<u64>(), dim in 1_usize..4, t in 0.0_f64..1.0) {
        let (source, target) = (random_gaussian(seed, dim), random_gaussian(seed ^ 0x123, dim));
        let map = GaussianOtMap::new(source.clone(), target).unwrap();
        let h = 1e-4;
        let law = map.interpolation(t).unwrap();
        let y: Vec<f64> = law.mean().iter().enumerate().map(|(j, m)| m + 0.4 * (j as f64 + 1.0) - 0.5).collect();
        let log_density = |point: &[f64], s: f64| map.interpolation(s).unwrap().log_density_at(point).unwrap();
        // One-sided in time at the ends, where the interpolation is not defined outside [0, 1].
        let d_log_density = if t < 2.5 * h || t > 1.0 - 2.5 * h {
            let s = t.clamp(2.5 * h, 1.0 - 2.5 * h);
            derivative(|s| log_density(&y, s), s, h)
        } else {
            derivative(|s| log_density(&y, s), t, h)
        };
        let mut velocity = vec![0.0; dim];
        map.velocity_at(&y, t, &mut velocity).unwrap();
        let mut divergence = 0.0;
        let mut transport = 0.0;
        for axis in 0..dim {
            let moved = |s: f64| {
                let mut point = y.clone();
                point[axis] = s;
                point
            };
            divergence += derivative(|s| {
                let mut out = vec![0.0; dim];
                map.velocity_at(&moved(s), t, &mut out).unwrap();
                out[axis]
            }, y[axis], h);
            transport += velocity[axis] * derivative(|s| log_density(&moved(s), t), y[axis], h);
        }
        let residual = d_log_density + divergence + transport;
        let tolerance = if t < 2.5 * h || t > 1.0 - 2.5 * h { 1e-2 } else { 1e-6 };
        prop_assert!(
            residual.abs() < tolerance * (1.0 + d_log_density.abs() + divergence.abs() + transport.abs()),
            "residual {:e} at t = {}", residual, t
        );
        // Along a trajectory the velocity is constant: v_t(x + t (T(x) - x)) = T(x) - x.
        let x0 = source.mean().to_owned() + 0.3;
        let tx = map.apply(x0.view().insert_axis(ndarray::Axis(0))).unwrap().row(0).to_owned();
        let point: Vec<f64> = x0.iter().zip(&tx).map(|(a, b)| a + t * (b - a)).collect();
        map.velocity_at(&point, t, &mut velocity).unwrap();
        for ((v, a), b) in velocity.iter().zip(&x0).zip(&tx) {
            assert_close(*v, b - a, 1e-9, "velocity along a straight trajectory");
        }
    }
}

#[test]
fn known_closed_forms() {
    // 1-D: W2^2 = (m0 - m1)^2 + (s0 - s1)^2 and A = s1 / s0.
    let source = Gaussian::new(array![1.0], array![[4.0]]).unwrap();
    let target = Gaussian::new(array![-2.0], array![[0.25]]).unwrap();
    assert_close(
        bures_wasserstein_squared(&source, &target).unwrap(),
        9.0 + 1.5 * 1.5,
        1e-14,
        "1-D W2",
    );
    let map = GaussianOtMap::new(source, target).unwrap();
    assert_close(map.matrix()[[0, 0]], 0.25, 1e-14, "1-D slope");
    // Commuting (diagonal) covariances: the trace term is sum (sqrt(a_i) - sqrt(b_i))^2.
    let source = Gaussian::new(array![0.0, 0.0], array![[1.0, 0.0], [0.0, 9.0]]).unwrap();
    let target = Gaussian::new(array![0.0, 0.0], array![[4.0, 0.0], [0.0, 1.0]]).unwrap();
    assert_close(
        bures_wasserstein_squared(&source, &target).unwrap(),
        1.0 + 4.0,
        1e-13,
        "diagonal W2",
    );
}

#[test]
fn invalid_gaussians_are_refused() {
    assert!(matches!(
        Gaussian::new(array![0.0, 0.0], array![[1.0, 2.0], [2.0, 1.0]]),
        Err(PathsError::NotPositiveDefinite { .. })
    ));
    assert!(matches!(
        Gaussian::new(array![0.0, 0.0], Array2::eye(3)),
        Err(PathsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Gaussian::new(array![f64::NAN], Array2::eye(1)),
        Err(PathsError::NonFinite { name: "mean", .. })
    ));
    let one = Gaussian::new(Array1::zeros(1), Array2::eye(1)).unwrap();
    let two = Gaussian::new(Array1::zeros(2), Array2::eye(2)).unwrap();
    assert!(matches!(
        GaussianOtMap::new(one.clone(), two.clone()),
        Err(PathsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bures_wasserstein_squared(&one, &two),
        Err(PathsError::ShapeMismatch { .. })
    ));
    let map = GaussianOtMap::new(two.clone(), two).unwrap();
    assert!(matches!(
        map.interpolation(1.2),
        Err(PathsError::TimeOutOfRange { .. })
    ));
    assert!(matches!(
        map.apply(Array2::zeros((3, 1)).view()),
        Err(PathsError::ShapeMismatch { name: "x", .. })
    ));
}
