//! Property suite for geodesic conditional paths, the Riemannian flow-matching loss and geodesic costs: the
//! path's endpoints, its velocity against central differences in t and against the log form
//! `dkappa log_{x_t}(x1) / (1 - kappa)`, and the loss's indifference to normal components.

mod common;

use common::{assert_all_close, assert_close, config, manifolds, point, rng, s2_t1};
use ferroflow_manifolds::{
    FlatTorus, Kappa, Manifold, ManifoldError, Sphere, cfm_loss, cfm_loss_per_sample, conditional_batch,
    conditional_point, cost_matrix,
};
use ndarray::{Array1, Array2, Axis, array};
use proptest::prelude::*;

/// A smooth schedule with a non-constant derivative: `kappa = 3 t^2 - 2 t^3`.
fn smoothstep(t: f64) -> Kappa {
    Kappa {
        value: t * t * (3.0 - 2.0 * t),
        derivative: 6.0 * t * (1.0 - t),
    }
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn endpoints_are_the_conditioning_points(seed in any::<u64>()) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let (x0, x1) = (point(manifold, &mut rng), point(manifold, &mut rng));
            let start = conditional_point(manifold, x0.view(), x1.view(), Kappa { value: 0.0, derivative: 1.0 }).unwrap();
            let end = conditional_point(manifold, x0.view(), x1.view(), Kappa { value: 1.0, derivative: 1.0 }).unwrap();
            assert_close(manifold.dist(start.x_t.view(), x0.view()).unwrap(), 0.0, 1e-12, &format!("{}: x_t at kappa = 0", manifold.name()));
            assert_close(manifold.dist(end.x_t.view(), x1.view()).unwrap(), 0.0, 1e-9, &format!("{}: x_t at kappa = 1", manifold.name()));
            // At the source the velocity is the log itself (times dkappa).
            assert_all_close(&start.u_t, &manifold.log(x0.view(), x1.view()).unwrap(), 1e-12, "u_0 = log_{x0}(x1)");
        }
    }

    #[test]
    fn velocity_is_the_time_derivative_of_the_path(seed in any::<u64>(), t in 0.02_f64..0.98) {
        let mut rng = rng(seed);
        let h = 1e-4;
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let name = manifold.name();
            let (x0, x1) = (point(manifold, &mut rng), point(manifold, &mut rng));
            let at = |t: f64| conditional_point(manifold, x0.view(), x1.view(), smoothstep(t)).unwrap();
            let here = at(t);
            manifold.check_point(here.x_t.view(), 1e-12).unwrap();
            // Intrinsic central difference: blind to the wrapping of torus coordinates.
            let forward = manifold.log(here.x_t.view(), at(t + h).x_t.view()).unwrap();
            let backward = manifold.log(here.x_t.view(), at(t - h).x_t.view()).unwrap();
            let difference = (forward - backward) / (2.0 * h);
            assert_all_close(&here.u_t, &difference, 1e-6, &format!("{name}: u_t vs d x_t / dt"));
            // u_t is tangent at x_t, with speed dkappa dist(x0, x1).
            assert_all_close(&manifold.project_tangent(here.x_t.view(), here.u_t.view()).unwrap(), &here.u_t, 1e-12, "u_t is tangent");
            let speed = smoothstep(t).derivative * manifold.dist(x0.view(), x1.view()).unwrap();
            assert_close(manifold.norm(here.x_t.view(), here.u_t.view()).unwrap(), speed, 1e-9, "speed");
        }
    }

    #[test]
    fn velocity_equals_the_log_form_before_the_end(seed in any::<u64>(), kappa in 0.0_f64..0.95, d_kappa in -3.0_f64..3.0) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let (x0, x1) = (point(manifold, &mut rng), point(manifold, &mut rng));
            let here = conditional_point(manifold, x0.view(), x1.view(), Kappa { value: kappa, derivative: d_kappa }).unwrap();
            let log_form = manifold.log(here.x_t.view(), x1.view()).unwrap() * (d_kappa / (1.0 - kappa));
            assert_all_close(&here.u_t, &log_form, 1e-8, &format!("{}: dkappa log_{{x_t}}(x1) / (1 - kappa)", manifold.name()));
        }
    }

    #[test]
    fn loss_ignores_normal_components_and_vanishes_at_the_target(seed in any::<u64>(), t in 0.0_f64..1.0) {
        let mut rng = rng(seed);
        let n_samples = 6;
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let x0 = manifold.sample_uniform(n_samples, &mut rng);
            let x1 = manifold.sample_uniform(n_samples, &mut rng);
            let kappa = Array1::from_elem(n_samples, t);
            let d_kappa = Array1::from_elem(n_samples, 1.0);
            let batch = conditional_batch(manifold, x0.view(), x1.view(), kappa.view(), d_kappa.view()).unwrap();
            assert_close(cfm_loss(manifold, batch.x_t.view(), batch.u_t.view(), batch.u_t.view()).unwrap(), 0.0, 1e-20, "loss at v = u_t");
            // Adding a normal component (x_t itself on a sphere factor) to the prediction changes nothing.
            let noise = Array2::from_shape_fn((n_samples, manifold.ambient_dim()), |_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng));
            let mut normal = noise.clone();
            for (mut row, x) in normal.axis_iter_mut(Axis(0)).zip(batch.x_t.rows()) {
                let tangent = manifold.project_tangent(x, row.view()).unwrap();
                row -= &tangent;
            }
            let prediction = &batch.u_t + &noise;
            let with_normal = &prediction + &(&normal * 5.0);
            let base = cfm_loss_per_sample(manifold, batch.x_t.view(), prediction.view(), batch.u_t.view()).unwrap();
            let shifted = cfm_loss_per_sample(manifold, batch.x_t.view(), with_normal.view(), batch.u_t.view()).unwrap();
            assert_all_close(&base, &shifted, 1e-10, "normal components are projected away");
            // And it is the squared norm of the tangent part of the noise.
            for ((loss, x), z) in base.iter().zip(batch.x_t.rows()).zip(noise.rows()) {
                let tangent = manifold.project_tangent(x, z).unwrap();
                assert_close(*loss, tangent.dot(&tangent), 1e-10, "|P v - u|^2");
            }
            assert_close(cfm_loss(manifold, batch.x_t.view(), prediction.view(), batch.u_t.view()).unwrap(), base.mean().unwrap(), 1e-12, "mean loss");
        }
    }

    #[test]
    fn batch_paths_match_single_points(seed in any::<u64>()) {
        let mut rng = rng(seed);
        let manifold = s2_t1();
        let x0 = manifold.sample_uniform(5, &mut rng);
        let x1 = manifold.sample_uniform(5, &mut rng);
        let kappa = array![0.0, 0.25, 0.5, 0.75, 1.0];
        let d_kappa = array![1.0, 0.5, 2.0, -1.0, 1.0];
        let batch = conditional_batch(&manifold, x0.view(), x1.view(), kappa.view(), d_kappa.view()).unwrap();
        for i in 0..5 {
            let single = conditional_point(&manifold, x0.row(i), x1.row(i), Kappa { value: kappa[i], derivative: d_kappa[i] }).unwrap();
            assert_all_close(&batch.x_t.row(i).to_owned(), &single.x_t, 0.0, "x_t row");
            assert_all_close(&batch.u_t.row(i).to_owned(), &single.u_t, 0.0, "u_t row");
        }
    }

    #[test]
    fn cost_matrix_holds_squared_geodesic_distances(seed in any::<u64>()) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let a = manifold.sample_uniform(5, &mut rng);
            let b = manifold.sample_uniform(3, &mut rng);
            let cost = cost_matrix(manifold, a.view(), b.view()).unwrap();
            assert_eq!(cost.shape(), [5, 3]);
            for i in 0..5 {
                for j in 0..3 {
                    let d = manifold.dist(a.row(i), b.row(j)).unwrap();
                    assert_close(cost[[i, j]], d * d, 0.0, "entry");
                }
            }
            let square = cost_matrix(manifold, a.view(), a.view()).unwrap();
            for i in 0..5 {
                assert_close(square[[i, i]], 0.0, 1e-20, "zero diagonal");
                for j in 0..5 {
                    assert_close(square[[i, j]], square[[j, i]], 1e-12, "symmetric");
                }
            }
        }
    }
}

#[test]
fn quarter_circle_on_s2_has_the_closed_form() {
    let sphere = Sphere::new(3).unwrap();
    let (x0, x1) = (array![1.0, 0.0, 0.0], array![0.0, 0.0, 1.0]);
    let kappa = Kappa {
        value: 1.0 / 3.0,
        derivative: 2.0,
    };
    let point = conditional_point(&sphere, x0.view(), x1.view(), kappa).unwrap();
    let angle = std::f64::consts::FRAC_PI_6;
    assert_all_close(
        &point.x_t,
        &array![angle.cos(), 0.0, angle.sin()],
        1e-15,
        "x_t on the great circle",
    );
    let speed = 2.0 * std::f64::consts::FRAC_PI_2;
    assert_all_close(
        &point.u_t,
        &array![-angle.sin(), 0.0, angle.cos()].mapv(|v| v * speed),
        1e-14,
        "u_t",
    );
}

#[test]
fn torus_path_is_a_wrapped_straight_line() {
    let torus = FlatTorus::new(2).unwrap();
    // The short way from 3 to -3 crosses the seam: the difference is 2 pi - 6 = 0.283..., not -6.
    let (x0, x1) = (array![3.0, 0.0], array![-3.0, 1.0]);
    let point = conditional_point(
        &torus,
        x0.view(),
        x1.view(),
        Kappa {
            value: 0.5,
            derivative: 1.0,
        },
    )
    .unwrap();
    let step = 2.0 * std::f64::consts::PI - 6.0;
    assert_all_close(
        &point.x_t,
        &array![ferroflow_manifolds::wrap_angle(3.0 + step / 2.0), 0.5],
        1e-15,
        "midpoint",
    );
    assert_all_close(&point.u_t, &array![step, 1.0], 1e-15, "constant velocity");
}

#[test]
fn antipodal_endpoints_are_refused_with_the_cut_locus() {
    let sphere = Sphere::new(3).unwrap();
    let (x0, x1) = (array![0.0, 1.0, 0.0], array![0.0, -1.0, 0.0]);
    let error = conditional_point(
        &sphere,
        x0.view(),
        x1.view(),
        Kappa {
            value: 0.5,
            derivative: 1.0,
        },
    )
    .unwrap_err();
    assert!(matches!(error, ManifoldError::CutLocus { .. }), "{error}");
    // In a batch the row is named; in a product the sphere's coordinates are.
    let product = s2_t1();
    let x0 = array![[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]];
    let x1 = array![[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.5]];
    let error = conditional_batch(
        &product,
        x0.view(),
        x1.view(),
        array![0.5, 0.5].view(),
        array![1.0, 1.0].view(),
    )
    .unwrap_err();
    match error {
        ManifoldError::InSample {
            sample_idx: 1,
            source,
        } => {
            assert!(
                matches!(*source, ManifoldError::CutLocus { ref coordinates, .. } if *coordinates == (0..3)),
                "{source}"
            )
        }
        other => panic!("expected the second sample's cut locus, got {other}"),
    }
}

#[test]
fn bad_schedules_and_shapes_are_refused() {
    let sphere = Sphere::new(3).unwrap();
    let x = array![1.0, 0.0, 0.0];
    for kappa in [
        Kappa {
            value: -0.1,
            derivative: 1.0,
        },
        Kappa {
            value: 1.5,
            derivative: 1.0,
        },
        Kappa {
            value: f64::NAN,
            derivative: 1.0,
        },
    ] {
        assert!(matches!(
            conditional_point(&sphere, x.view(), x.view(), kappa),
            Err(ManifoldError::InvalidParameter { name: "kappa", .. })
        ));
    }
    let infinite = Kappa {
        value: 0.5,
        derivative: f64::INFINITY,
    };
    assert!(matches!(
        conditional_point(&sphere, x.view(), x.view(), infinite),
        Err(ManifoldError::InvalidParameter { name: "d_kappa", .. })
    ));
    let x0 = Array2::from_shape_vec((2, 3), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    let error = conditional_batch(
        &sphere,
        x0.view(),
        x0.view(),
        array![0.5].view(),
        array![1.0, 1.0].view(),
    )
    .unwrap_err();
    assert!(
        matches!(error, ManifoldError::ShapeMismatch { what: "kappa", .. }),
        "{error}"
    );
    let wide = Array2::<f64>::zeros((2, 4));
    let error = cost_matrix(&sphere, x0.view(), wide.view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::ShapeMismatch { what: "b", .. }),
        "{error}"
    );
    let off = array![[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
    let error = cost_matrix(&sphere, off.view(), x0.view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::InSample { sample_idx: 1, .. }),
        "{error}"
    );
    let empty = Array2::<f64>::zeros((0, 3));
    assert!(matches!(
        cfm_loss(&sphere, empty.view(), empty.view(), empty.view()),
        Err(ManifoldError::InvalidParameter {
            name: "n_samples",
            ..
        })
    ));
}
