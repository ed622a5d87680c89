//! ODE steps on manifolds against exact solutions: a rotation of `S^2` (samples stay on the sphere after 100
//! RK4 steps and match the rotation), the observed orders of Euler, midpoint and RK4, constant fields on the
//! torus, products, backwards integration, evaluation counts and bad fields.

mod common;

use common::{assert_all_close, config, rng, rotation, s2_t1, skew};
use ferroflow_manifolds::{
    BatchFn, FlatTorus, Manifold, ManifoldError, ManifoldOdeMethod, PointFn, Product, Sphere, TangentField,
    solve, step, wrap_angle,
};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, array, s};
use proptest::prelude::*;

const METHODS: [ManifoldOdeMethod; 3] = [
    ManifoldOdeMethod::Euler,
    ManifoldOdeMethod::Midpoint,
    ManifoldOdeMethod::Rk4,
];

/// The rotation field `v(x) = A x` with `A x = omega x x`, on a batch of points of `S^2`, with the ambient
/// extension returned unprojected (the solver projects; it is tangent anyway).
fn rotation_field(omega: Array1<f64>) -> impl TangentField {
    let a = skew(&omega);
    BatchFn(move |_t: f64, x: ArrayView2<f64>| x.dot(&a.t()))
}

/// The largest geodesic distance between corresponding rows.
fn worst_distance(manifold: &dyn Manifold, a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| manifold.dist(x, y).unwrap())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn rk4_follows_a_rotation_and_stays_on_the_sphere(seed in any::<u64>(), axis in prop::array::uniform3(-2.0_f64..2.0)) {
        let omega = Array1::from(axis.to_vec());
        prop_assume!(omega.dot(&omega) > 0.01);
        let sphere = Sphere::new(3).unwrap();
        let x0 = sphere.sample_uniform(8, &mut rng(seed));
        let mut field = rotation_field(omega.clone());
        let solution = solve(&sphere, &mut field, ManifoldOdeMethod::Rk4, x0.view(), 0.0, 1.0, 100).unwrap();
        sphere.check_points(solution.x.view(), 1e-12).unwrap();
        let exact = x0.dot(&rotation(&omega, 1.0).t());
        prop_assert!(worst_distance(&sphere, &solution.x, &exact) < 1e-8, "RK4 error {}", worst_distance(&sphere, &solution.x, &exact));
        prop_assert_eq!((solution.steps, solution.field_evaluations), (100, 400));
        for method in METHODS {
            let other = solve(&sphere, &mut field, method, x0.view(), 0.0, 1.0, 100).unwrap();
            for row in other.x.rows() {
                prop_assert!((row.dot(&row).sqrt() - 1.0).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn methods_converge_at_their_orders() {
    // A time-dependent rotation rate, v(t, x) = (1 + t) A x: exact solution exp((t + t^2 / 2) A) x0.
    let sphere = Sphere::new(3).unwrap();
    let omega = array![0.3, -1.1, 0.7];
    let a = skew(&omega);
    let x0 = sphere.sample_uniform(4, &mut rng(11));
    let exact = x0.dot(&rotation(&omega, 1.5).t());
    let mut field = BatchFn(move |t: f64, x: ArrayView2<f64>| x.dot(&a.t()) * (1.0 + t));
    for method in METHODS {
        let errors: Vec<f64> = [10, 20, 40]
            .iter()
            .map(|&steps| {
                let solution = solve(&sphere, &mut field, method, x0.view(), 0.0, 1.0, steps).unwrap();
                worst_distance(&sphere, &solution.x, &exact)
            })
            .collect();
        for pair in errors.windows(2) {
            let observed = (pair[0] / pair[1]).log2();
            assert!(
                (observed - method.order() as f64).abs() < 0.3,
                "{method:?}: observed order {observed} from errors {errors:?}"
            );
        }
    }
}

#[test]
fn rk4_keeps_its_order_for_a_field_that_is_not_a_killing_field() {
    // The gradient flow of f(x) = <a, x> on S^2, v = P_x a, moves points along meridians towards a; with
    // a = e_3 and the polar angle theta, theta' = -sin(theta), so tan(theta / 2) decays like e^{-t}.
    let sphere = Sphere::new(3).unwrap();
    let a = array![0.0, 0.0, 1.0];
    let theta0: f64 = 2.5;
    let x0 = array![[theta0.sin(), 0.0, theta0.cos()]];
    let theta1 = 2.0 * ((theta0 / 2.0).tan() * (-1.0_f64).exp()).atan();
    let exact = array![[theta1.sin(), 0.0, theta1.cos()]];
    let mut field = PointFn(move |_t: f64, x: ArrayView1<f64>| &a - &(&x * x.dot(&a)));
    let errors: Vec<f64> = [8, 16, 32]
        .iter()
        .map(|&steps| {
            let solution = solve(
                &sphere,
                &mut field,
                ManifoldOdeMethod::Rk4,
                x0.view(),
                0.0,
                1.0,
                steps,
            )
            .unwrap();
            worst_distance(&sphere, &solution.x, &exact)
        })
        .collect();
    for pair in errors.windows(2) {
        let observed = (pair[0] / pair[1]).log2();
        assert!(
            (observed - 4.0).abs() < 0.35,
            "observed order {observed} from errors {errors:?}"
        );
    }
}

#[test]
fn constant_fields_on_the_torus_are_integrated_exactly_and_wrapped() {
    let torus = FlatTorus::new(2).unwrap();
    let x0 = array![[3.0, -3.0], [0.0, 0.0]];
    let velocity = array![1.0, -2.0];
    let mut field = BatchFn(|_t: f64, x: ArrayView2<f64>| {
        let mut out = Array2::zeros(x.raw_dim());
        out.rows_mut()
            .into_iter()
            .for_each(|mut row| row.assign(&velocity));
        out
    });
    for method in METHODS {
        let solution = solve(&torus, &mut field, method, x0.view(), 0.0, 2.0, 7).unwrap();
        torus.check_points(solution.x.view(), 0.0).unwrap();
        let exact = (&x0 + &(&velocity * 2.0)).mapv(wrap_angle);
        assert!(worst_distance(&torus, &solution.x, &exact) < 1e-13, "{method:?}");
    }
}

#[test]
fn products_integrate_each_block_and_backwards_integration_returns() {
    let product = s2_t1();
    let omega = array![0.0, 0.0, 2.0];
    let a = skew(&omega);
    // The sphere block rotates about e_3, the angle moves at speed 1 + sin of the sphere's first coordinate.
    let mut field = PointFn(move |_t: f64, x: ArrayView1<f64>| {
        let sphere = x.slice(s![0..3]);
        let mut out = Array1::zeros(4);
        out.slice_mut(s![0..3]).assign(&a.dot(&sphere));
        out[3] = 1.0 + sphere[0].sin();
        out
    });
    let x0 = product.sample_uniform(5, &mut rng(5));
    let forward = solve(
        &product,
        &mut field,
        ManifoldOdeMethod::Rk4,
        x0.view(),
        0.0,
        1.0,
        100,
    )
    .unwrap();
    product.check_points(forward.x.view(), 1e-12).unwrap();
    let exact_sphere = x0.slice(s![.., 0..3]).dot(&rotation(&omega, 1.0).t());
    let sphere = Sphere::new(3).unwrap();
    let sphere_error = worst_distance(&sphere, &forward.x.slice(s![.., 0..3]).to_owned(), &exact_sphere);
    assert!(sphere_error < 1e-8, "sphere block error {sphere_error}");
    let back = solve(
        &product,
        &mut field,
        ManifoldOdeMethod::Rk4,
        forward.x.view(),
        1.0,
        0.0,
        100,
    )
    .unwrap();
    assert!(
        worst_distance(&product, &back.x, &x0) < 1e-7,
        "round trip {}",
        worst_distance(&product, &back.x, &x0)
    );
    // The general product: the nested three-factor one integrates a zero field to the identity.
    let nested = Product::new(vec![Box::new(s2_t1()), Box::new(Sphere::new(2).unwrap())]).unwrap();
    let start = nested.sample_uniform(3, &mut rng(6));
    let mut zero = BatchFn(|_t: f64, x: ArrayView2<f64>| Array2::zeros(x.raw_dim()));
    let still = solve(
        &nested,
        &mut zero,
        ManifoldOdeMethod::Midpoint,
        start.view(),
        0.0,
        1.0,
        3,
    )
    .unwrap();
    assert!(worst_distance(&nested, &still.x, &start) < 1e-14);
}

#[test]
fn single_points_are_batches_of_one_and_step_matches_solve() {
    let sphere = Sphere::new(3).unwrap();
    let x = array![0.6, 0.0, 0.8];
    let mut field = rotation_field(array![1.0, 0.0, 0.0]);
    let one = solve(
        &sphere,
        &mut field,
        ManifoldOdeMethod::Rk4,
        x.view().insert_axis(Axis(0)),
        0.0,
        0.5,
        1,
    )
    .unwrap();
    let stepped = step(
        &sphere,
        &mut field,
        ManifoldOdeMethod::Rk4,
        0.0,
        0.5,
        x.view().insert_axis(Axis(0)),
    )
    .unwrap();
    assert_all_close(
        &one.x.row(0).to_owned(),
        &stepped.row(0).to_owned(),
        0.0,
        "one step",
    );
}

#[test]
fn bad_fields_and_arguments_are_refused() {
    let sphere = Sphere::new(3).unwrap();
    let x0 = array![[1.0, 0.0, 0.0]];
    let mut nan = BatchFn(|_t: f64, x: ArrayView2<f64>| Array2::from_elem(x.raw_dim(), f64::NAN));
    let error = solve(
        &sphere,
        &mut nan,
        ManifoldOdeMethod::Euler,
        x0.view(),
        0.0,
        1.0,
        2,
    )
    .unwrap_err();
    assert!(
        matches!(error, ManifoldError::BadEvaluation { time, .. } if time == 0.0),
        "{error}"
    );
    let mut wrong_shape = BatchFn(|_t: f64, _x: ArrayView2<f64>| Array2::zeros((1, 2)));
    let error = solve(
        &sphere,
        &mut wrong_shape,
        ManifoldOdeMethod::Rk4,
        x0.view(),
        0.0,
        1.0,
        2,
    )
    .unwrap_err();
    assert!(matches!(error, ManifoldError::BadEvaluation { .. }), "{error}");
    let mut short_point = PointFn(|_t: f64, _x: ArrayView1<f64>| array![1.0]);
    assert!(matches!(
        solve(
            &sphere,
            &mut short_point,
            ManifoldOdeMethod::Rk4,
            x0.view(),
            0.0,
            1.0,
            2
        ),
        Err(ManifoldError::BadEvaluation { .. })
    ));
    let mut field = rotation_field(array![0.0, 0.0, 1.0]);
    assert!(matches!(
        solve(
            &sphere,
            &mut field,
            ManifoldOdeMethod::Rk4,
            x0.view(),
            0.0,
            1.0,
            0
        ),
        Err(ManifoldError::InvalidParameter { name: "steps", .. })
    ));
    assert!(matches!(
        solve(
            &sphere,
            &mut field,
            ManifoldOdeMethod::Rk4,
            x0.view(),
            0.0,
            f64::NAN,
            3
        ),
        Err(ManifoldError::InvalidParameter { name: "t1", .. })
    ));
    let off = array![[1.0, 0.1, 0.0]];
    let error = solve(
        &sphere,
        &mut field,
        ManifoldOdeMethod::Rk4,
        off.view(),
        0.0,
        1.0,
        3,
    )
    .unwrap_err();
    assert!(
        matches!(error, ManifoldError::InSample { sample_idx: 0, .. }),
        "{error}"
    );
    // A fallible closure's own error comes back unchanged.
    let mut failing = |_t: f64, _x: ArrayView2<f64>| -> ferroflow_manifolds::Result<Array2<f64>> {
        Err(ManifoldError::InvalidParameter {
            name: "network",
            value: 0.0,
            allowed: "anything",
        })
    };
    assert!(matches!(
        solve(
            &sphere,
            &mut failing,
            ManifoldOdeMethod::Euler,
            x0.view(),
            0.0,
            1.0,
            1
        ),
        Err(ManifoldError::InvalidParameter { name: "network", .. })
    ));
}

/// The sphere with its log differential replaced by the tangent projection at the base point: what a scheme
/// that brings stage velocities back by projection computes.
struct ProjectedStages(Sphere);

impl Manifold for ProjectedStages {
    fn name(&self) -> String {
        self.0.name()
    }
    fn ambient_dim(&self) -> usize {
        self.0.ambient_dim()
    }
    fn intrinsic_dim(&self) -> usize {
        self.0.intrinsic_dim()
    }
    fn check_point(&self, x: ArrayView1<f64>, tolerance: f64) -> ferroflow_manifolds::Result<()> {
        self.0.check_point(x, tolerance)
    }
    fn project(&self, x: ArrayView1<f64>) -> ferroflow_manifolds::Result<Array1<f64>> {
        self.0.project(x)
    }
    fn project_tangent(
        &self,
        x: ArrayView1<f64>,
        v: ArrayView1<f64>,
    ) -> ferroflow_manifolds::Result<Array1<f64>> {
        self.0.project_tangent(x, v)
    }
    fn exp(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> ferroflow_manifolds::Result<Array1<f64>> {
        self.0.exp(x, v)
    }
    fn log(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> ferroflow_manifolds::Result<Array1<f64>> {
        self.0.log(x, y)
    }
    fn inner(
        &self,
        x: ArrayView1<f64>,
        u: ArrayView1<f64>,
        v: ArrayView1<f64>,
    ) -> ferroflow_manifolds::Result<f64> {
        self.0.inner(x, u, v)
    }
    fn log_volume(&self) -> f64 {
        self.0.log_volume()
    }
    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn rand::RngCore) -> Array2<f64> {
        self.0.sample_uniform(n_samples, rng)
    }
    fn log_differential(
        &self,
        x: ArrayView1<f64>,
        _y: ArrayView1<f64>,
        w: ArrayView1<f64>,
    ) -> ferroflow_manifolds::Result<Array1<f64>> {
        self.0.project_tangent(x, w)
    }
}

#[test]
fn pulling_stages_back_by_the_log_differential_is_what_keeps_order_four() {
    // A gradient field plus a rotation about e_1: neither a Killing field nor a geodesic flow. Errors against
    // a 4000-step reference.
    let sphere = Sphere::new(3).unwrap();
    let a = array![0.0, 0.0, 1.0];
    let rotation = skew(&array![0.8, 0.0, 0.0]);
    let field = move |_t: f64, x: ArrayView1<f64>| {
        let raw = &a + &rotation.dot(&x);
        &raw - &(&x * x.dot(&raw))
    };
    let theta: f64 = 2.5;
    let x0 = array![[theta.sin(), 0.0, theta.cos()]];
    let solve_with = |manifold: &dyn Manifold, steps: usize| {
        solve(
            manifold,
            &mut PointFn(field.clone()),
            ManifoldOdeMethod::Rk4,
            x0.view(),
            0.0,
            1.0,
            steps,
        )
        .unwrap()
        .x
    };
    let reference = solve_with(&sphere, 4000);
    let orders = |manifold: &dyn Manifold| -> Vec<f64> {
        let errors: Vec<f64> = [8, 16, 32]
            .iter()
            .map(|&steps| worst_distance(&sphere, &solve_with(manifold, steps), &reference))
            .collect();
        errors.windows(2).map(|pair| (pair[0] / pair[1]).log2()).collect()
    };
    assert!(
        orders(&sphere).iter().all(|order| (order - 4.0).abs() < 0.2),
        "{:?}",
        orders(&sphere)
    );
    let projected = orders(&ProjectedStages(sphere));
    assert!(
        projected.iter().all(|order| (order - 2.0).abs() < 0.2),
        "{projected:?}"
    );
}
