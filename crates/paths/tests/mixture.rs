//! Property suite for the Gaussian-mixture marginals: the score is the gradient of the log-density, the
//! marginal velocity satisfies the continuity equation in log form, the density is normalised, and a single
//! Gaussian matches a hand-derived closed form.

mod common;

use common::{assert_close, config, derivative, paths, random_mixture, rng};
use ferroflow_paths::{
    AffinePath, CondOtScheduler, GaussianMixture, MixtureMarginal, OneSidedGaussianPath, PathsError, TimeEnd,
};
use ndarray::{Array1, Array2, Array3, ShapeBuilder, array};
use proptest::prelude::*;
use rand::Rng;

const H: f64 = 1e-4;

fn random_point(seed: u64, dim: usize) -> Vec<f64> {
    let mut rng = rng(seed);
    (0..dim).map(|_| rng.random_range(-2.5..2.5)).collect()
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn score_is_the_gradient_of_the_log_density(
        seed in any::<u64>(), n_components in 1_usize..4, dim in 1_usize..4, t in 0.0_f64..1.0,
    ) {
        let mixture = random_mixture(seed, n_components, dim);
        let x = random_point(seed ^ 5, dim);
        let mut max_error = 0.0_f64;
        for path in paths() {
            let name = path.name();
            let marginal = MixtureMarginal::new(mixture.clone(), path, 1.2).unwrap();
            let mut score = vec![0.0; dim];
            marginal.score_at(&x, t, &mut score).unwrap();
            for axis in 0..dim {
                let along = |s: f64| {
                    let mut moved = x.clone();
                    moved[axis] = s;
                    marginal.log_density_at(&moved, t).unwrap()
                };
                let fd = derivative(along, x[axis], H);
                max_error = max_error.max((score[axis] - fd).abs());
                assert_close(score[axis], fd, 1e-7, &format!("{name}: score[{axis}] at t = {t}"));
            }
        }
        prop_assert!(max_error < 1e-6);
    }

    #[test]
    fn marginal_velocity_satisfies_the_log_continuity_equation(
        seed in any::<u64>(), n_components in 1_usize..4, dim in 1_usize..4, t in 0.03_f64..0.97,
    ) {
        // d/dt ln p_t + div v* + v* . grad ln p_t = 0, i.e. d p_t/dt + div(p_t v*) = 0 divided by p_t.
        let mixture = random_mixture(seed, n_components, dim);
        let x = random_point(seed ^ 11, dim);
        for path in paths() {
            let name = path.name();
            let marginal = MixtureMarginal::new(mixture.clone(), path, 1.0).unwrap();
            let d_log_density = derivative(|s| marginal.log_density_at(&x, s).unwrap(), t, H);
            let mut velocity = vec![0.0; dim];
            let mut score = vec![0.0; dim];
            marginal.velocity_at(&x, t, &mut velocity).unwrap();
            marginal.score_at(&x, t, &mut score).unwrap();
            let mut divergence = 0.0;
            for axis in 0..dim {
                divergence += derivative(
                    |s| {
                        let mut moved = x.clone();
                        moved[axis] = s;
                        let mut moved_velocity = vec![0.0; dim];
                        marginal.velocity_at(&moved, t, &mut moved_velocity).unwrap();
                        moved_velocity[axis]
                    },
                    x[axis],
                    H,
                );
            }
            let transport: f64 = velocity.iter().zip(&score).map(|(v, s)| v * s).sum();
            let residual = d_log_density + divergence + transport;
            let scale = 1.0 + d_log_density.abs() + divergence.abs() + transport.abs();
            prop_assert!(
                residual.abs() < 1e-6 * scale,
                "{}: residual {:e} (d/dt ln p = {}, div v = {}, v.grad ln p = {}) at t = {}",
                name, residual, d_log_density, divergence, transport, t
            );
        }
    }
}

#[test]
fn density_integrates_to_one() {
    let mixture = random_mixture(17, 3, 1);
    for path in paths() {
        let name = path.name();
        let marginal = MixtureMarginal::new(mixture.clone(), path, 1.0).unwrap();
        for t in [0.0, 0.4, 1.0] {
            let (lower, upper, n_points) = (-15.0, 15.0, 6000);
            let step = (upper - lower) / n_points as f64;
            let mass: f64 = (0..=n_points)
                .map(|i| {
                    let weight = if i == 0 || i == n_points { 0.5 } else { 1.0 };
                    weight
                        * marginal
                            .log_density_at(&[lower + i as f64 * step], t)
                            .unwrap()
                            .exp()
                })
                .sum::<f64>()
                * step;
            assert_close(mass, 1.0, 1e-8, &format!("{name}: mass at t = {t}"));
        }
    }
}

#[test]
fn single_gaussian_matches_the_hand_derived_field() {
    // x1 ~ N(m, c) in 1-D, CondOT with source N(0, 1): x_t ~ N(t m, s_t^2), s_t^2 = t^2 c + (1 - t)^2, and
    // v*(x) = m + (t c - (1 - t)) / s_t^2 (x - t m) (the affine map that carries N(0, 1) onto N(m, c) along t).
    let (m, c) = (1.5, 0.3);
    let mixture = GaussianMixture::isotropic(array![1.0], array![[m]], array![c]).unwrap();
    let marginal = MixtureMarginal::new(mixture, AffinePath::without_noise(CondOtScheduler), 1.0).unwrap();
    for (t, x) in [(0.1, -0.4), (0.5, 0.9), (0.9, 2.0)] {
        let variance = t * t * c + (1.0 - t) * (1.0 - t);
        let expected = m + (t * c - (1.0 - t)) / variance * (x - t * m);
        let mut velocity = [0.0];
        marginal.velocity_at(&[x], t, &mut velocity).unwrap();
        assert_close(velocity[0], expected, 1e-13, "single-Gaussian velocity");
        let log_density =
            -0.5 * ((x - t * m).powi(2) / variance + (2.0 * std::f64::consts::PI * variance).ln());
        assert_close(
            marginal.log_density_at(&[x], t).unwrap(),
            log_density,
            1e-13,
            "single-Gaussian density",
        );
    }
}

#[test]
fn batch_functions_agree_with_point_functions() {
    let mixture = random_mixture(23, 2, 2);
    let marginal = MixtureMarginal::new(mixture, OneSidedGaussianPath::new(0.01).unwrap(), 1.0).unwrap();
    // A column-major batch exercises non-contiguous rows.
    let x = Array2::from_shape_vec((2, 3).f(), vec![0.1, -0.3, 0.5, 0.7, -1.1, 0.2])
        .unwrap()
        .reversed_axes();
    let t = array![0.2, 0.6, 0.95];
    let velocity = marginal.velocity(x.view(), t.view()).unwrap();
    let log_density = marginal.log_density(x.view(), t.view()).unwrap();
    for sample_idx in 0..3 {
        let point = x.row(sample_idx).to_vec();
        let mut expected = [0.0; 2];
        marginal
            .velocity_at(&point, t[sample_idx], &mut expected)
            .unwrap();
        assert_eq!(velocity.row(sample_idx).to_vec(), expected.to_vec());
        assert_eq!(
            log_density[sample_idx],
            marginal.log_density_at(&point, t[sample_idx]).unwrap()
        );
    }
}

#[test]
fn invalid_mixtures_and_inputs_are_refused() {
    let means = array![[0.0, 0.0], [1.0, 1.0]];
    let covariances = {
        let mut c = Array3::zeros((2, 2, 2));
        c.outer_iter_mut().for_each(|mut m| m.assign(&Array2::eye(2)));
        c
    };
    let build = |w: Array1<f64>, m: Array2<f64>, c: Array3<f64>| GaussianMixture::new(w, m, c);
    assert!(matches!(
        build(array![0.5, 0.4], means.clone(), covariances.clone()),
        Err(PathsError::WeightsDoNotSumToOne { .. })
    ));
    assert_eq!(
        build(array![1.5, -0.5], means.clone(), covariances.clone()).unwrap_err(),
        PathsError::NegativeWeight {
            index: 1,
            weight: -0.5
        }
    );
    assert!(matches!(
        build(array![1.0], means.clone(), covariances.clone()),
        Err(PathsError::ShapeMismatch { name: "weights", .. })
    ));
    let mut not_pd = covariances.clone();
    not_pd[[1, 0, 1]] = 2.0;
    not_pd[[1, 1, 0]] = 2.0;
    match build(array![0.5, 0.5], means.clone(), not_pd) {
        Err(PathsError::NotPositiveDefinite { name, min_eigenvalue }) => {
            assert_eq!(name, "covariances[1]");
            assert_close(min_eigenvalue, -1.0, 1e-12, "eigenvalue of [[1, 2], [2, 1]]");
        }
        other => panic!("expected a non-positive-definite error, got {other:?}"),
    }
    let mut asymmetric = covariances.clone();
    asymmetric[[0, 0, 1]] = 0.3;
    assert!(matches!(
        build(array![0.5, 0.5], means.clone(), asymmetric),
        Err(PathsError::NotSymmetric { .. })
    ));
    let mut nan_means = means.clone();
    nan_means[[1, 0]] = f64::NAN;
    assert_eq!(
        build(array![0.5, 0.5], nan_means, covariances.clone()).unwrap_err(),
        PathsError::NonFinite {
            name: "means",
            index: 2
        }
    );
    let mixture = build(array![0.5, 0.5], means, covariances).unwrap();
    let marginal = MixtureMarginal::new(mixture, AffinePath::without_noise(CondOtScheduler), 1.0).unwrap();
    let mut out = [0.0; 2];
    assert!(matches!(
        marginal.velocity_at(&[0.0, 0.0], 1.0, &mut out),
        Err(PathsError::SingularTime {
            end: TimeEnd::Data,
            ..
        })
    ));
    assert!(marginal.log_density_at(&[0.0, 0.0], 1.0).is_ok());
    assert!(matches!(
        marginal.log_density_at(&[0.0], 0.5),
        Err(PathsError::ShapeMismatch { name: "x", .. })
    ));
    assert!(matches!(
        marginal.log_density_at(&[0.0, 0.0], -0.1),
        Err(PathsError::TimeOutOfRange { .. })
    ));
    let batch = Array2::<f64>::zeros((2, 3));
    assert!(matches!(
        marginal.score(batch.view(), array![0.5, 0.5].view()),
        Err(PathsError::ShapeMismatch { name: "x", .. })
    ));
}
