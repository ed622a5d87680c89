//! Densities with closed forms: each integrates to one (Gauss-Legendre on `S^2`, a midpoint grid on the
//! torus), samples match closed-form moments (the vMF mean resultant length `coth kappa - 1/kappa`, the
//! wrapped Gaussian's `E[cos(theta - mu)] = exp(-sigma^2 / 2)`), Monte Carlo entropies match closed forms,
//! and bad parameters or points are refused by name.

mod common;

use std::f64::consts::PI;

use common::{assert_close, config, integrate_sphere, integrate_torus, rng, s2_t1};
use ferroflow_manifolds::{
    BoxedDensity, Checkerboard, Manifold, ManifoldDensity, ManifoldError, Mixture, ProductDensity, Sphere,
    VonMisesFisher, WrappedGaussian, wrap_angle, wrapped_normal_terms,
};
use ndarray::{Array1, array, s};
use proptest::prelude::*;

fn vmf(mean: [f64; 3], concentration: f64) -> VonMisesFisher {
    let mean = Array1::from(mean.to_vec());
    let unit = &mean / mean.dot(&mean).sqrt();
    VonMisesFisher::new(unit.view(), concentration).unwrap()
}

fn density_integral_on_s2(density: &dyn ManifoldDensity, n_z: usize, n_azimuth: usize) -> f64 {
    integrate_sphere(n_z, n_azimuth, |x| density.log_density(x.view()).unwrap().exp())
}

proptest! {
    #![proptest_config(config(12))]

    #[test]
    fn von_mises_fisher_integrates_to_one(mean in prop::array::uniform3(-1.0_f64..1.0), concentration in 0.0_f64..40.0) {
        let norm = Array1::from(mean.to_vec()).dot(&Array1::from(mean.to_vec())).sqrt();
        prop_assume!(norm > 0.1);
        let density = vmf(mean, concentration);
        assert_close(density_integral_on_s2(&density, 120, 240), 1.0, 1e-9, "vMF mass");
    }
}

#[test]
fn von_mises_fisher_is_stable_at_extreme_concentrations() {
    // Aligned with the pole, the integrand depends on z alone, so Gauss-Legendre resolves sharp peaks.
    for concentration in [0.0, 1e-12, 1e-3, 0.02, 1.0, 100.0, 700.0] {
        let density = vmf([0.0, 0.0, 1.0], concentration);
        assert_close(
            density_integral_on_s2(&density, 400, 4),
            1.0,
            1e-9,
            &format!("mass at kappa = {concentration}"),
        );
    }
    // kappa = 0 is uniform; huge kappa peaks at kappa / (2 pi) without overflow.
    let uniform = vmf([1.0, 0.0, 0.0], 0.0);
    assert_close(
        uniform.log_density(array![0.0, 1.0, 0.0].view()).unwrap(),
        -(4.0 * PI).ln(),
        1e-15,
        "uniform",
    );
    assert_close(uniform.entropy(), (4.0 * PI).ln(), 1e-15, "uniform entropy");
    let sharp = vmf([0.0, 1.0, 0.0], 1e8);
    assert_close(
        sharp.log_density(array![0.0, 1.0, 0.0].view()).unwrap(),
        (1e8 / (2.0 * PI)).ln(),
        1e-12,
        "peak",
    );
    assert!(sharp.log_density(array![0.0, -1.0, 0.0].view()).unwrap() < -1e8);
    assert!(sharp.entropy().is_finite());
    let samples = sharp.sample(100, &mut rng(1));
    assert!(samples.iter().all(|v| v.is_finite()));
    assert!(samples.column(1).iter().all(|&y| y > 1.0 - 1e-6));
}

#[test]
fn von_mises_fisher_samples_match_the_closed_form_moments() {
    let mut rng = rng(2);
    for concentration in [0.0, 0.3, 2.0, 15.0, 300.0] {
        let density = vmf([1.0, -2.0, 0.5], concentration);
        let n_samples = 20_000;
        let samples = density.sample(n_samples, &mut rng);
        Sphere::new(3)
            .unwrap()
            .check_points(samples.view(), 1e-12)
            .unwrap();
        let w = samples.dot(&density.mean_direction());
        let mean_w = w.mean().unwrap();
        let standard_error = (w.var(1.0) / n_samples as f64).sqrt().max(1e-12);
        let expected = density.mean_resultant_length();
        assert!(
            (mean_w - expected).abs() < 4.0 * standard_error,
            "kappa {concentration}: mean <mu, x> {mean_w} vs coth k - 1/k = {expected}"
        );
        // E[w^2] = 1 - 2 L(kappa) / kappa, and the resultant points along mu.
        if concentration > 0.0 {
            let second = w.mapv(|v| v * v).mean().unwrap();
            let expected_second = 1.0 - 2.0 * expected / concentration;
            let error = (w.mapv(|v| v * v).var(1.0) / n_samples as f64).sqrt();
            assert!(
                (second - expected_second).abs() < 4.0 * error + 1e-12,
                "kappa {concentration}: E[w^2] {second} vs {expected_second}"
            );
        }
        let resultant = samples.mean_axis(ndarray::Axis(0)).unwrap();
        let orthogonal = &resultant - &(&density.mean_direction() * resultant.dot(&density.mean_direction()));
        assert!(
            orthogonal.dot(&orthogonal).sqrt() < 0.03,
            "kappa {concentration}: resultant {resultant}"
        );
    }
}

#[test]
fn monte_carlo_entropies_match_closed_forms() {
    let mut rng = rng(3);
    for concentration in [0.5, 5.0, 50.0] {
        let density = vmf([0.0, 1.0, 1.0], concentration);
        let estimate = density.entropy_monte_carlo(20_000, &mut rng).unwrap();
        assert!(
            (estimate.estimate - density.entropy()).abs() < 4.0 * estimate.standard_error,
            "kappa {concentration}: MC {estimate:?} vs closed form {}",
            density.entropy()
        );
    }
    let checkerboard = Checkerboard::default();
    let estimate = checkerboard.entropy_monte_carlo(1000, &mut rng).unwrap();
    assert_close(
        estimate.estimate,
        checkerboard.entropy(),
        1e-12,
        "checkerboard entropy ln(2 pi^2)",
    );
    assert_close(estimate.standard_error, 0.0, 1e-12, "constant log-density");
}

#[test]
fn vmf_mixtures_integrate_to_one_and_sample_their_weights() {
    let components: Vec<BoxedDensity> = vec![
        Box::new(vmf([1.0, 0.0, 0.0], 50.0)),
        Box::new(vmf([-1.0, 0.0, 0.0], 20.0)),
        Box::new(vmf([0.0, 0.0, 1.0], 0.5)),
    ];
    let mixture = Mixture::new(components, &[0.3, 0.5, 0.2]).unwrap();
    assert_close(
        density_integral_on_s2(&mixture, 160, 320),
        1.0,
        1e-8,
        "mixture mass",
    );
    // Log-density is the log of the weighted sum of the components' densities.
    let x = array![0.6, 0.0, 0.8];
    let by_hand: f64 = mixture
        .components()
        .iter()
        .zip(mixture.weights())
        .map(|(c, w)| w * c.log_density(x.view()).unwrap().exp())
        .sum();
    assert_close(
        mixture.log_density(x.view()).unwrap(),
        by_hand.ln(),
        1e-13,
        "mixture log-density",
    );
    let samples = mixture.sample(10_000, &mut rng(4));
    let near_first = samples.column(0).iter().filter(|&&v| v > 0.8).count() as f64 / 10_000.0;
    // The first component has essentially all its mass at x_0 > 0.8; the broad third adds about 0.2 * 0.1.
    assert!(
        (near_first - 0.3 - 0.2 * 0.1).abs() < 0.02,
        "fraction near the first mean {near_first}"
    );
    let entropy = mixture.entropy_monte_carlo(5000, &mut rng(5)).unwrap();
    assert!(entropy.estimate.is_finite() && entropy.standard_error > 0.0);
}

#[test]
fn wrapped_gaussians_integrate_to_one_and_match_the_truncation_bound() {
    let density = WrappedGaussian::new(array![2.5, -3.0].view(), array![0.4, 2.0].view()).unwrap();
    assert_eq!(density.terms(), &[1, 3]);
    assert_close(
        integrate_torus(2, 300, |x| density.log_density(x.view()).unwrap().exp()),
        1.0,
        1e-12,
        "wrapped Gaussian mass",
    );
    // Against a brute-force sum with 400 shifts on each side, at many points: the truncation error bound
    // (relative 1e-16 per coordinate) shows up only as round-off.
    for std in [0.05, 0.5, 1.0, 1.5, 3.0, 20.0, 100.0] {
        let density = WrappedGaussian::new(array![0.3].view(), array![std].view()).unwrap();
        for k in 0..50 {
            let angle = -PI + 2.0 * PI * k as f64 / 50.0;
            let delta = wrap_angle(angle - 0.3);
            let brute: f64 = (-400..=400_i32)
                .map(|shift| {
                    let z = (delta + 2.0 * PI * shift as f64) / std;
                    (-0.5 * z * z).exp() / (std * (2.0 * PI).sqrt())
                })
                .sum();
            let value = density.log_density(array![angle].view()).unwrap();
            if brute > 0.0 {
                assert_close(value, brute.ln(), 1e-13, &format!("std {std}, angle {angle}"));
            }
        }
        assert_close(
            integrate_torus(1, 4000, |x| density.log_density(x.view()).unwrap().exp()),
            1.0,
            1e-10,
            &format!("mass at std {std}"),
        );
    }
    for (std, terms) in [(0.5, 1), (1.02, 1), (1.03, 2), (2.0, 3), (10.0, 14), (100.0, 139)] {
        assert_eq!(wrapped_normal_terms(std), terms, "std {std}");
    }
}

#[test]
fn wrapped_gaussian_samples_match_the_circular_moments() {
    let mean = array![1.0, -2.8];
    let stds = array![0.5, 1.7];
    let density = WrappedGaussian::new(mean.view(), stds.view()).unwrap();
    let n_samples = 20_000;
    let samples = density.sample(n_samples, &mut rng(6));
    ferroflow_manifolds::FlatTorus::new(2)
        .unwrap()
        .check_points(samples.view(), 0.0)
        .unwrap();
    for coordinate in 0..2 {
        let offsets = samples.column(coordinate).mapv(|a| a - mean[coordinate]);
        let cosine = offsets.mapv(f64::cos);
        let sine = offsets.mapv(f64::sin);
        let tolerance = 4.0 / (n_samples as f64).sqrt();
        assert_close(
            cosine.mean().unwrap(),
            (-stds[coordinate] * stds[coordinate] / 2.0).exp(),
            tolerance,
            "E[cos(theta - mu)]",
        );
        assert_close(sine.mean().unwrap(), 0.0, tolerance, "E[sin(theta - mu)]");
    }
    let components: Vec<BoxedDensity> = vec![
        Box::new(density.clone()),
        Box::new(WrappedGaussian::new(array![-1.0, 1.0].view(), array![0.3, 0.3].view()).unwrap()),
    ];
    let mixture = Mixture::new(components, &[0.6, 0.4]).unwrap();
    assert_close(
        integrate_torus(2, 300, |x| mixture.log_density(x.view()).unwrap().exp()),
        1.0,
        1e-12,
        "wrapped mixture mass",
    );
}

#[test]
fn checkerboard_is_uniform_on_alternating_cells() {
    let board = Checkerboard::default();
    assert_close(
        integrate_torus(2, 400, |x| board.log_density(x.view()).unwrap().exp()),
        1.0,
        1e-10,
        "checkerboard mass",
    );
    assert_eq!(
        board.log_density(array![-PI + 0.1, -PI + 0.1].view()).unwrap(),
        -(2.0 * PI * PI).ln()
    );
    assert_eq!(
        board
            .log_density(array![-PI + 0.1, -PI / 2.0 + 0.1].view())
            .unwrap(),
        f64::NEG_INFINITY
    );
    let samples = board.sample(8000, &mut rng(7));
    let mut counts = [[0usize; 4]; 4];
    for row in samples.rows() {
        assert!(
            board.log_density(row).unwrap().is_finite(),
            "sample {row} in an empty cell"
        );
        let cell = |a: f64| (((a + PI) / (PI / 2.0)).floor() as usize).min(3);
        counts[cell(row[0])][cell(row[1])] += 1;
    }
    for (i, row) in counts.iter().enumerate() {
        for (j, &count) in row.iter().enumerate() {
            if (i + j) % 2 == 0 {
                assert!(
                    (count as f64 - 1000.0).abs() < 120.0,
                    "cell ({i}, {j}) holds {count}"
                );
            } else {
                assert_eq!(count, 0);
            }
        }
    }
    let fine = Checkerboard::new(8).unwrap();
    assert_close(
        integrate_torus(2, 400, |x| fine.log_density(x.view()).unwrap().exp()),
        1.0,
        1e-10,
        "8 x 8 mass",
    );
}

#[test]
fn product_of_vmf_and_wrapped_gaussian_on_s2_x_t1() {
    let sphere_part = vmf([0.0, 1.0, 0.0], 4.0);
    let angle_part = WrappedGaussian::new(array![2.0].view(), array![0.7].view()).unwrap();
    let density =
        ProductDensity::new(vec![Box::new(sphere_part.clone()), Box::new(angle_part.clone())]).unwrap();
    assert_eq!(density.manifold().name(), s2_t1().name());
    let x = array![0.6, 0.8, 0.0, -3.0];
    let sum = sphere_part.log_density(x.slice(s![0..3])).unwrap()
        + angle_part.log_density(x.slice(s![3..4])).unwrap();
    assert_close(
        density.log_density(x.view()).unwrap(),
        sum,
        1e-15,
        "log-densities add",
    );
    // Mass over S^2 x T^1 by the product rule of the two quadratures.
    let mut total = 0.0;
    let angles: Vec<Array1<f64>> = (0..64)
        .map(|k| array![-PI + (k as f64 + 0.5) * 2.0 * PI / 64.0])
        .collect();
    total += integrate_sphere(40, 80, |s2| {
        angles
            .iter()
            .map(|theta| {
                let point = ndarray::concatenate![ndarray::Axis(0), s2.view(), theta.view()];
                density.log_density(point.view()).unwrap().exp() * 2.0 * PI / 64.0
            })
            .sum()
    });
    assert_close(total, 1.0, 1e-9, "product mass");
    let samples = density.sample(5000, &mut rng(8));
    s2_t1().check_points(samples.view(), 1e-12).unwrap();
    // Entropy adds: the vMF's closed form plus the circle's -int p ln p.
    let angle_entropy = -integrate_torus(1, 4000, |theta| {
        let log_p = angle_part.log_density(theta.view()).unwrap();
        log_p.exp() * log_p
    });
    let estimate = density.entropy_monte_carlo(20_000, &mut rng(9)).unwrap();
    let expected = sphere_part.entropy() + angle_entropy;
    assert!(
        (estimate.estimate - expected).abs() < 4.0 * estimate.standard_error,
        "MC {estimate:?} vs {expected}"
    );
}

#[test]
fn bad_parameters_and_points_are_refused() {
    let error = VonMisesFisher::new(array![1.0, 1.0, 0.0].view(), 1.0).unwrap_err();
    assert!(matches!(error, ManifoldError::OffSphere { .. }), "{error}");
    let error = VonMisesFisher::new(array![1.0, 0.0].view(), 1.0).unwrap_err();
    assert!(
        matches!(
            error,
            ManifoldError::DimensionMismatch {
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{error}"
    );
    for concentration in [-1.0, f64::NAN, f64::INFINITY] {
        let error = VonMisesFisher::new(array![1.0, 0.0, 0.0].view(), concentration).unwrap_err();
        assert!(
            matches!(
                error,
                ManifoldError::InvalidParameter {
                    name: "concentration",
                    ..
                }
            ),
            "{error}"
        );
    }
    let error = WrappedGaussian::new(array![0.0, 4.0].view(), array![1.0, 1.0].view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 1, .. }),
        "{error}"
    );
    let error = WrappedGaussian::new(array![0.0].view(), array![0.0].view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::InvalidParameter { name: "std", .. }),
        "{error}"
    );
    let error = WrappedGaussian::new(array![0.0].view(), array![1.0, 2.0].view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::ShapeMismatch { what: "stds", .. }),
        "{error}"
    );
    assert!(matches!(
        Checkerboard::new(3),
        Err(ManifoldError::InvalidParameter {
            name: "cells_per_side",
            ..
        })
    ));
    assert!(matches!(
        Checkerboard::new(0),
        Err(ManifoldError::InvalidParameter {
            name: "cells_per_side",
            ..
        })
    ));

    let two = || -> Vec<BoxedDensity> {
        vec![
            Box::new(vmf([1.0, 0.0, 0.0], 1.0)),
            Box::new(vmf([0.0, 1.0, 0.0], 1.0)),
        ]
    };
    for weights in [vec![0.5], vec![0.7, 0.7], vec![-0.5, 1.5], vec![f64::NAN, 1.0]] {
        assert!(
            matches!(
                Mixture::new(two(), &weights),
                Err(ManifoldError::InvalidWeights { .. })
            ),
            "{weights:?}"
        );
    }
    assert!(matches!(
        Mixture::new(vec![], &[]),
        Err(ManifoldError::Empty { .. })
    ));
    let mixed: Vec<BoxedDensity> = vec![
        Box::new(vmf([1.0, 0.0, 0.0], 1.0)),
        Box::new(Checkerboard::default()),
    ];
    assert!(matches!(
        Mixture::new(mixed, &[0.5, 0.5]),
        Err(ManifoldError::Incompatible { .. })
    ));
    assert!(matches!(
        ProductDensity::new(vec![]),
        Err(ManifoldError::Empty { .. })
    ));

    // Points off the manifold, NaN and wrong lengths, with the product naming its own coordinates.
    let sphere_density = vmf([0.0, 0.0, 1.0], 2.0);
    let error = sphere_density
        .log_density(array![0.0, 0.0, 1.1].view())
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::OffSphere { norm, .. } if (norm - 1.1).abs() < 1e-12),
        "{error}"
    );
    let error = sphere_density
        .log_density(array![0.0, f64::NAN, 1.0].view())
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::NonFinite { coordinate: 1, .. }),
        "{error}"
    );
    let product =
        ProductDensity::new(vec![Box::new(sphere_density), Box::new(Checkerboard::default())]).unwrap();
    let error = product
        .log_density(array![0.0, 0.0, 1.0, 0.0, 7.0].view())
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 4, .. }),
        "{error}"
    );
    let error = product.log_density(array![0.0, 0.0, 1.0].view()).unwrap_err();
    assert!(
        matches!(
            error,
            ManifoldError::DimensionMismatch {
                expected: 5,
                found: 3,
                ..
            }
        ),
        "{error}"
    );
    let error = product
        .log_density_batch(ndarray::Array2::<f64>::zeros((2, 5)).view())
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::InSample { sample_idx: 0, .. }),
        "{error}"
    );
    assert!(matches!(
        product.entropy_monte_carlo(1, &mut rng(0)),
        Err(ManifoldError::InvalidParameter {
            name: "n_samples",
            ..
        })
    ));
}
