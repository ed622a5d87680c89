//! Riemannian divergences against closed forms: rotations of `S^2` are divergence free, the gradient field
//! of `f(x) = <a, x>` on `S^(d-1)` has `div(P a) = -(d - 1) <a, x>`, the torus divergence is the ordinary one;
//! exact (Jacobian), finite-difference and Hutchinson estimates agree.

mod common;

use common::{assert_close, config, point, rng, s2_t1, skew};
use ferroflow_manifolds::{
    FlatTorus, ManifoldError, Sphere, directional_derivative, divergence_finite_difference,
    divergence_from_jacobian, hutchinson_divergence,
};
use ndarray::{Array1, Array2, ArrayView1, array};
use proptest::prelude::*;

/// The ambient Jacobian of `x -> P_x a = a - <a, x> x` (extended to all of `R^d`): `-(x a^T + <a, x> I)`.
fn gradient_field_jacobian(a: &Array1<f64>, x: &Array1<f64>) -> Array2<f64> {
    let d = a.len();
    let outer = Array2::from_shape_fn((d, d), |(i, j)| x[i] * a[j]);
    -(outer + Array2::<f64>::eye(d) * a.dot(x))
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn rotations_of_the_sphere_are_divergence_free(seed in any::<u64>(), axis in prop::array::uniform3(-2.0_f64..2.0)) {
        let sphere = Sphere::new(3).unwrap();
        let x = point(&sphere, &mut rng(seed));
        let a = skew(&Array1::from(axis.to_vec()));
        prop_assert!(divergence_from_jacobian(&sphere, x.view(), a.view()).unwrap().abs() < 1e-12);
        let field = |y: ArrayView1<f64>| a.dot(&y);
        prop_assert!(divergence_finite_difference(&sphere, field, x.view(), 1e-4).unwrap().abs() < 1e-8);
    }

    #[test]
    fn gradient_fields_have_the_closed_form_divergence(seed in any::<u64>(), dim in 2_usize..6) {
        let mut rng = rng(seed);
        let sphere = Sphere::new(dim).unwrap();
        let x = point(&sphere, &mut rng);
        let a = common::ambient(dim, &mut rng);
        let expected = -((dim - 1) as f64) * a.dot(&x);
        let exact = divergence_from_jacobian(&sphere, x.view(), gradient_field_jacobian(&a, &x).view()).unwrap();
        assert_close(exact, expected, 1e-12 * (1.0 + a.dot(&a)), "tr(P J P)");
        let field = |y: ArrayView1<f64>| &a - &(&y * a.dot(&y));
        let by_differences = divergence_finite_difference(&sphere, field, x.view(), 1e-4).unwrap();
        assert_close(by_differences, expected, 1e-7 * (1.0 + a.dot(&a)), "finite differences");
        // A field given only through its ambient values (not tangent) is differentiated after projection: the
        // constant field a has tangent part P a, so the same divergence.
        let constant = |_y: ArrayView1<f64>| a.clone();
        assert_close(divergence_finite_difference(&sphere, constant, x.view(), 1e-4).unwrap(), expected, 1e-7 * (1.0 + a.dot(&a)), "projected constant field");
    }

    #[test]
    fn torus_divergence_is_the_ordinary_one(seed in any::<u64>()) {
        // v = (sin x_0 cos x_1, sin x_1 + cos x_2, sin 2x_2 cos x_0): div = cos x_0 cos x_1 + cos x_1 + 2 cos 2x_2 cos x_0.
        let torus = FlatTorus::new(3).unwrap();
        let x = point(&torus, &mut rng(seed));
        let field = |y: ArrayView1<f64>| array![y[0].sin() * y[1].cos(), y[1].sin() + y[2].cos(), (2.0 * y[2]).sin() * y[0].cos()];
        let expected = x[0].cos() * x[1].cos() + x[1].cos() + 2.0 * (2.0 * x[2]).cos() * x[0].cos();
        assert_close(divergence_finite_difference(&torus, field, x.view(), 1e-4).unwrap(), expected, 1e-7, "torus divergence");
        let jacobian = array![
            [x[0].cos() * x[1].cos(), -x[0].sin() * x[1].sin(), 0.0],
            [0.0, x[1].cos(), -x[2].sin()],
            [-(2.0 * x[2]).sin() * x[0].sin(), 0.0, 2.0 * (2.0 * x[2]).cos() * x[0].cos()],
        ];
        assert_close(divergence_from_jacobian(&torus, x.view(), jacobian.view()).unwrap(), expected, 1e-12, "trace");
    }

    #[test]
    fn product_divergence_adds_the_factors(seed in any::<u64>()) {
        let product = s2_t1();
        let mut rng = rng(seed);
        let x = point(&product, &mut rng);
        let a = common::ambient(3, &mut rng);
        // Gradient field on the sphere block, v(theta) = sin(theta) on the angle: div = -2 <a, s> + cos(theta).
        let field = |y: ArrayView1<f64>| {
            let s = y.slice(ndarray::s![0..3]);
            let sphere_part = &a - &(&s * a.dot(&s));
            array![sphere_part[0], sphere_part[1], sphere_part[2], y[3].sin()]
        };
        let expected = -2.0 * a.dot(&x.slice(ndarray::s![0..3])) + x[3].cos();
        assert_close(divergence_finite_difference(&product, field, x.view(), 1e-4).unwrap(), expected, 1e-7 * (1.0 + a.dot(&a)), "product divergence");
    }
}

#[test]
fn hutchinson_is_unbiased_with_tangent_probes() {
    // A field with a non-symmetric, non-trivial Jacobian on S^3 (d = 4): v = P (B x + a).
    let sphere = Sphere::new(4).unwrap();
    let mut rng = rng(21);
    let x = point(&sphere, &mut rng);
    let b = Array2::from_shape_fn((4, 4), |(i, j)| ((i * 4 + j) as f64 * 0.7).sin());
    let a = array![0.3, -0.2, 0.5, 0.1];
    let field = |y: ArrayView1<f64>| {
        let raw = b.dot(&y) + &a;
        &raw - &(&y * y.dot(&raw))
    };
    let exact = divergence_finite_difference(&sphere, field, x.view(), 1e-4).unwrap();
    let mut jvp_field = field;
    let n_probes = 20_000;
    let estimate = hutchinson_divergence(
        &sphere,
        x.view(),
        |z: ArrayView1<f64>| directional_derivative(&sphere, &mut jvp_field, x.view(), z, 1e-4),
        n_probes,
        &mut rng,
    )
    .unwrap();
    // Standard error sqrt(2 |P J_sym P|_F^2 / n) is below 0.03 for this field; allow five of them.
    assert!(
        (estimate - exact).abs() < 0.15,
        "Hutchinson {estimate} vs exact {exact}"
    );
    // With the exact Jacobian of a gradient field, one probe is unbiased too: the mean over seeds converges.
    let g = array![0.0, 1.0, -1.0, 2.0];
    let jacobian = gradient_field_jacobian(&g, &x);
    let closed = -3.0 * g.dot(&x);
    let estimate = hutchinson_divergence(
        &sphere,
        x.view(),
        |z: ArrayView1<f64>| Ok(jacobian.dot(&z)),
        n_probes,
        &mut rng,
    )
    .unwrap();
    assert!(
        (estimate - closed).abs() < 0.15,
        "Hutchinson {estimate} vs closed form {closed}"
    );
}

#[test]
fn hutchinson_probes_are_tangent() {
    let sphere = Sphere::new(3).unwrap();
    let x = array![0.0, 0.6, 0.8];
    let mut rng = rng(2);
    hutchinson_divergence(
        &sphere,
        x.view(),
        |z: ArrayView1<f64>| {
            assert!(z.dot(&x).abs() < 1e-14, "probe {z} has a normal component");
            Ok(z.to_owned())
        },
        50,
        &mut rng,
    )
    .unwrap();
    // The identity Jacobian restricted to T_x S^2 has trace 2: the estimator's mean over many probes.
    let estimate = hutchinson_divergence(
        &sphere,
        x.view(),
        |z: ArrayView1<f64>| Ok(z.to_owned()),
        20_000,
        &mut rng,
    )
    .unwrap();
    assert!((estimate - 2.0).abs() < 0.05, "{estimate}");
}

#[test]
fn bad_divergence_inputs_are_refused() {
    let sphere = Sphere::new(3).unwrap();
    let x = array![1.0, 0.0, 0.0];
    let error = divergence_from_jacobian(&sphere, x.view(), Array2::<f64>::eye(2).view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::ShapeMismatch { what: "jacobian", .. }),
        "{error}"
    );
    let mut nan = Array2::<f64>::eye(3);
    nan[[1, 2]] = f64::NAN;
    let error = divergence_from_jacobian(&sphere, x.view(), nan.view()).unwrap_err();
    assert!(
        matches!(
            error,
            ManifoldError::NonFinite {
                what: "jacobian",
                coordinate: 5,
                ..
            }
        ),
        "{error}"
    );
    let error = divergence_from_jacobian(
        &sphere,
        array![1.0, 1.0, 0.0].view(),
        Array2::<f64>::eye(3).view(),
    )
    .unwrap_err();
    assert!(matches!(error, ManifoldError::OffSphere { .. }), "{error}");
    let error =
        divergence_finite_difference(&sphere, |y: ArrayView1<f64>| y.to_owned(), x.view(), 0.0).unwrap_err();
    assert!(
        matches!(error, ManifoldError::InvalidParameter { name: "step", .. }),
        "{error}"
    );
    let error = divergence_finite_difference(
        &sphere,
        |_y: ArrayView1<f64>| array![f64::NAN, 0.0, 0.0],
        x.view(),
        1e-4,
    )
    .unwrap_err();
    assert!(matches!(error, ManifoldError::BadEvaluation { .. }), "{error}");
    let error = hutchinson_divergence(
        &sphere,
        x.view(),
        |z: ArrayView1<f64>| Ok(z.to_owned()),
        0,
        &mut rng(0),
    )
    .unwrap_err();
    assert!(
        matches!(error, ManifoldError::InvalidParameter { name: "n_probes", .. }),
        "{error}"
    );
    let error = hutchinson_divergence(
        &sphere,
        x.view(),
        |_z: ArrayView1<f64>| Ok(array![1.0]),
        3,
        &mut rng(0),
    )
    .unwrap_err();
    assert!(
        matches!(error, ManifoldError::DimensionMismatch { .. }),
        "{error}"
    );
}
