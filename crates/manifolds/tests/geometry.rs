//! Property suite for the manifolds themselves: exp/log round trips, geodesic distances against closed
//! forms, projections, tangent bases, the geodesic velocity and the log differential against finite
//! differences, the trait's provided methods against the closed forms that override them, and volumes.

mod common;

use std::f64::consts::PI;

use common::{assert_all_close, assert_close, config, manifolds, point, rng, s2_t1, tangent};
use ferroflow_manifolds::{FlatTorus, Manifold, Product, Sphere, wrap_angle};
use ndarray::{Array1, Array2, ArrayView1, array};
use proptest::prelude::*;
use rand::RngCore;

/// A tangent vector at `x` of length `fraction * 3` (below pi, so inside every factor's injectivity radius
/// and, on a torus, below pi in every coordinate).
fn short(
    manifold: &dyn Manifold,
    x: &Array1<f64>,
    fraction: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Array1<f64> {
    tangent(manifold, x, 3.0 * fraction, rng)
}

/// The intrinsic central difference `(log_p(c(s + h)) - log_p(c(s - h))) / 2h` at `p = c(s)`: a velocity that
/// is blind to the torus's wrapping.
fn velocity_by_differences(
    manifold: &dyn Manifold,
    curve: impl Fn(f64) -> Array1<f64>,
    s: f64,
) -> Array1<f64> {
    let h = 1e-4;
    let here = curve(s);
    let forward = manifold.log(here.view(), curve(s + h).view()).unwrap();
    let backward = manifold.log(here.view(), curve(s - h).view()).unwrap();
    (forward - backward) / (2.0 * h)
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn exp_inverts_log_and_log_inverts_exp(seed in any::<u64>(), fraction in 0.0_f64..0.999) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let x = point(manifold, &mut rng);
            let y = point(manifold, &mut rng);
            let back = manifold.exp(x.view(), manifold.log(x.view(), y.view()).unwrap().view()).unwrap();
            assert_close(manifold.dist(back.view(), y.view()).unwrap(), 0.0, 1e-9, &format!("{}: exp(log)", manifold.name()));
            let v = short(manifold, &x, fraction, &mut rng);
            let moved = manifold.exp(x.view(), v.view()).unwrap();
            manifold.check_point(moved.view(), 1e-12).unwrap();
            assert_all_close(&manifold.log(x.view(), moved.view()).unwrap(), &v, 1e-9, &format!("{}: log(exp)", manifold.name()));
            assert_close(manifold.dist(x.view(), moved.view()).unwrap(), 3.0 * fraction, 1e-9, &format!("{}: dist(x, exp(x, v)) = |v|", manifold.name()));
        }
    }

    #[test]
    fn log_is_accurate_near_the_antipode(seed in any::<u64>(), exponent in -8.0_f64..-2.0) {
        // Near pi, sin(theta) must come from |y - <x, y> x|, not from theta.sin(), which carries pi's
        // representation error as a relative error 1e-16 / (pi - theta).
        let mut rng = rng(seed);
        let sphere = Sphere::new(3).unwrap();
        let x = point(&sphere, &mut rng);
        let direction = tangent(&sphere, &x, 1.0, &mut rng);
        let gap = 10f64.powf(exponent);
        let y = sphere.exp(x.view(), (&direction * (PI - gap)).view()).unwrap();
        let v = sphere.log(x.view(), y.view()).unwrap();
        assert_close(v.dot(&v).sqrt(), PI - gap, 1e-12, "length of the log near the antipode");
        assert_all_close(&(&v / (PI - gap)), &direction, 1e-15 / gap + 1e-12, "direction of the log near the antipode");
    }

    #[test]
    fn distances_match_closed_forms(seed in any::<u64>()) {
        let mut rng = rng(seed);
        let sphere = Sphere::new(4).unwrap();
        let (x, y) = (point(&sphere, &mut rng), point(&sphere, &mut rng));
        assert_close(sphere.dist(x.view(), y.view()).unwrap(), x.dot(&y).clamp(-1.0, 1.0).acos(), 1e-7, "sphere: arccos of the dot product");
        let torus = FlatTorus::new(3).unwrap();
        let (a, b) = (point(&torus, &mut rng), point(&torus, &mut rng));
        let wrapped: f64 = (&b - &a).iter().map(|d| { let d = d.abs() % (2.0 * PI); d.min(2.0 * PI - d).powi(2) }).sum();
        assert_close(torus.dist(a.view(), b.view()).unwrap(), wrapped.sqrt(), 1e-12, "torus: wrapped differences");
        let product = s2_t1();
        let (p, q) = (point(&product, &mut rng), point(&product, &mut rng));
        let sphere_part = p.slice(ndarray::s![0..3]).dot(&q.slice(ndarray::s![0..3])).clamp(-1.0, 1.0).acos();
        let angle_part = wrap_angle(q[3] - p[3]);
        assert_close(product.dist(p.view(), q.view()).unwrap(), sphere_part.hypot(angle_part), 1e-7, "product: root of summed squares");
        for manifold in manifolds() {
            let (x, y) = (point(manifold.as_ref(), &mut rng), point(manifold.as_ref(), &mut rng));
            assert_close(manifold.dist(x.view(), y.view()).unwrap(), manifold.dist(y.view(), x.view()).unwrap(), 1e-12, "symmetry");
            assert_close(manifold.dist(x.view(), x.view()).unwrap(), 0.0, 1e-12, "dist(x, x)");
        }
    }

    #[test]
    fn projections_are_orthogonal_and_idempotent(seed in any::<u64>(), scale in 0.1_f64..10.0) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let name = manifold.name();
            let x = point(manifold, &mut rng);
            let v = common::ambient(manifold.ambient_dim(), &mut rng) * scale;
            let p = manifold.project_tangent(x.view(), v.view()).unwrap();
            assert_all_close(&manifold.project_tangent(x.view(), p.view()).unwrap(), &p, 1e-12, &format!("{name}: P P v = P v"));
            // The removed part is normal: orthogonal to every tangent vector.
            let normal = &v - &p;
            let basis = manifold.tangent_basis(x.view()).unwrap();
            for e in basis.rows() {
                assert_close(normal.dot(&e), 0.0, 1e-11 * scale, &format!("{name}: v - P v is normal"));
            }
            // Projection of a perturbed point lands on the manifold, and projecting again changes nothing.
            let off = &x + &(common::ambient(manifold.ambient_dim(), &mut rng) * 0.1);
            let on = manifold.project(off.view()).unwrap();
            manifold.check_point(on.view(), 1e-12).unwrap();
            assert_all_close(&manifold.project(on.view()).unwrap(), &on, 1e-15, &format!("{name}: project is idempotent"));
        }
        // On the sphere the normal is the point itself.
        let sphere = Sphere::new(3).unwrap();
        let x = point(&sphere, &mut rng);
        let v = common::ambient(3, &mut rng) * scale;
        assert_close(sphere.project_tangent(x.view(), v.view()).unwrap().dot(&x), 0.0, 1e-12 * scale, "<P_x v, x> = 0");
    }

    #[test]
    fn tangent_bases_are_orthonormal_and_tangent(seed in any::<u64>()) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let x = point(manifold, &mut rng);
            let basis = manifold.tangent_basis(x.view()).unwrap();
            assert_eq!(basis.shape(), [manifold.intrinsic_dim(), manifold.ambient_dim()]);
            let gram = basis.dot(&basis.t());
            let worst = (&gram - &Array2::<f64>::eye(manifold.intrinsic_dim())).iter().fold(0.0_f64, |m, d| m.max(d.abs()));
            prop_assert!(worst < 1e-12, "{}: Gram matrix off by {worst}", manifold.name());
            for e in basis.rows() {
                assert_all_close(&manifold.project_tangent(x.view(), e).unwrap(), &e.to_owned(), 1e-12, "basis vectors are tangent");
            }
        }
    }

    #[test]
    fn geodesic_velocity_is_the_derivative_of_the_position(seed in any::<u64>(), s in -1.5_f64..1.5, fraction in 0.05_f64..0.95) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let x = point(manifold, &mut rng);
            let v = short(manifold, &x, fraction, &mut rng);
            let position = |s: f64| manifold.geodesic(x.view(), v.view(), s).unwrap().position;
            let at = manifold.geodesic(x.view(), v.view(), s).unwrap();
            assert_all_close(&at.position, &manifold.exp(x.view(), (&v * s).view()).unwrap(), 1e-12, "geodesic position = exp(x, s v)");
            let expected = velocity_by_differences(manifold, position, s);
            assert_all_close(&at.velocity, &expected, 1e-6, &format!("{}: geodesic velocity", manifold.name()));
            // The velocity is the parallel transport of v: tangent at the position, with the same length.
            assert_all_close(&manifold.project_tangent(at.position.view(), at.velocity.view()).unwrap(), &at.velocity, 1e-12, "velocity is tangent");
            assert_close(manifold.norm(at.position.view(), at.velocity.view()).unwrap(), 3.0 * fraction, 1e-12, "speed is |v|");
        }
    }

    #[test]
    fn log_differential_matches_finite_differences(seed in any::<u64>(), fraction in 0.0_f64..0.9) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let manifold = manifold.as_ref();
            let x = point(manifold, &mut rng);
            let y = manifold.exp(x.view(), short(manifold, &x, fraction, &mut rng).view()).unwrap();
            let w = tangent(manifold, &y, 1.0, &mut rng);
            let h = 1e-5;
            let log_along = |e: f64| manifold.log(x.view(), manifold.exp(y.view(), (&w * e).view()).unwrap().view()).unwrap();
            let expected = (log_along(h) - log_along(-h)) / (2.0 * h);
            let closed = manifold.log_differential(x.view(), y.view(), w.view()).unwrap();
            assert_all_close(&closed, &expected, 1e-7, &format!("{}: d log_x at y", manifold.name()));
        }
    }

    #[test]
    fn provided_methods_agree_with_the_closed_forms(seed in any::<u64>(), s in -1.0_f64..1.0, fraction in 0.05_f64..0.9) {
        let mut rng = rng(seed);
        for manifold in manifolds() {
            let plain = Plain(manifold.as_ref());
            let x = point(&plain, &mut rng);
            let y = point(&plain, &mut rng);
            let v = short(&plain, &x, fraction, &mut rng);
            let name = manifold.name();
            assert_close(plain.dist(x.view(), y.view()).unwrap(), manifold.dist(x.view(), y.view()).unwrap(), 1e-9, &format!("{name}: provided dist"));
            let provided = plain.geodesic(x.view(), v.view(), s).unwrap();
            let closed = manifold.geodesic(x.view(), v.view(), s).unwrap();
            assert_all_close(&provided.position, &closed.position, 1e-12, &format!("{name}: provided geodesic position"));
            assert_all_close(&provided.velocity, &closed.velocity, 1e-8, &format!("{name}: provided geodesic velocity"));
            let w = tangent(&plain, &y, 1.0, &mut rng);
            let near = manifold.exp(x.view(), v.view()).unwrap();
            assert_all_close(
                &plain.log_differential(x.view(), near.view(), w.view()).unwrap(),
                &manifold.log_differential(x.view(), near.view(), w.view()).unwrap(),
                1e-7,
                &format!("{name}: provided log differential"),
            );
            // Provided tangent basis: orthonormal and spanning the same space (same projector).
            let basis = plain.tangent_basis(x.view()).unwrap();
            let reference = manifold.tangent_basis(x.view()).unwrap();
            let (p1, p2) = (basis.t().dot(&basis), reference.t().dot(&reference));
            let worst = (&p1 - &p2).iter().fold(0.0_f64, |m, d| m.max(d.abs()));
            prop_assert!(worst < 1e-12, "{name}: provided tangent basis spans another space ({worst})");
        }
    }
}

/// A manifold that forwards only the required methods, so that the provided ones run.
struct Plain<'a>(&'a dyn Manifold);

impl Manifold for Plain<'_> {
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
    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        self.0.sample_uniform(n_samples, rng)
    }
}

#[test]
fn volumes_match_closed_forms() {
    let cases: [(Box<dyn Manifold>, f64); 6] = [
        (Box::new(Sphere::new(2).unwrap()), 2.0 * PI),
        (Box::new(Sphere::new(3).unwrap()), 4.0 * PI),
        (Box::new(Sphere::new(4).unwrap()), 2.0 * PI * PI),
        (Box::new(Sphere::new(5).unwrap()), 8.0 * PI * PI / 3.0),
        (Box::new(FlatTorus::new(2).unwrap()), 4.0 * PI * PI),
        (Box::new(s2_t1()), 8.0 * PI * PI),
    ];
    for (manifold, volume) in cases {
        assert_close(manifold.volume(), volume, 1e-12 * volume, &manifold.name());
        assert_close(
            manifold.log_uniform_density(),
            -volume.ln(),
            1e-13,
            &manifold.name(),
        );
    }
}

#[test]
fn uniform_samples_lie_on_the_manifold_with_the_right_moments() {
    let mut rng = rng(7);
    for manifold in manifolds() {
        let samples = manifold.sample_uniform(4000, &mut rng);
        manifold.check_points(samples.view(), 1e-12).unwrap();
    }
    // Uniform on S^2: mean 0, second moment I / 3 (standard error about 0.009 for the mean, 0.005 below).
    let sphere = Sphere::new(3).unwrap();
    let samples = sphere.sample_uniform(4000, &mut rng);
    let mean = samples.mean_axis(ndarray::Axis(0)).unwrap();
    assert!(mean.iter().all(|m| m.abs() < 0.05), "mean {mean}");
    let second = samples.t().dot(&samples) / 4000.0;
    let worst = (&second - &(Array2::<f64>::eye(3) / 3.0))
        .iter()
        .fold(0.0_f64, |m, d| m.max(d.abs()));
    assert!(worst < 0.03, "second moment off by {worst}");
    // Uniform on T^1: E[cos] = E[sin] = 0.
    let circle = FlatTorus::new(1).unwrap();
    let angles = circle.sample_uniform(4000, &mut rng);
    assert!(angles.iter().all(|a| (-PI..PI).contains(a)));
    assert!((angles.mapv(f64::cos).mean().unwrap()).abs() < 0.05);
}

#[test]
fn torus_cut_locus_takes_the_negative_way_round() {
    let torus = FlatTorus::new(2).unwrap();
    let x = array![0.0, 1.0];
    let y = array![PI, 1.0];
    // A coordinate difference of exactly pi wraps to -pi; exp(log) still returns y (as the same torus point).
    let v = torus.log(x.view(), array![-PI, 1.0].view()).unwrap();
    assert_eq!(v, array![-PI, 0.0]);
    let v = torus
        .log(array![-PI / 2.0, 0.0].view(), array![PI / 2.0, 0.0].view())
        .unwrap();
    assert_eq!(v, array![-PI, 0.0]);
    assert_close(
        torus.dist(x.view(), y.view()).unwrap(),
        PI,
        1e-15,
        "distance to the cut locus",
    );
    assert_eq!(wrap_angle(PI), -PI);
    assert_eq!(wrap_angle(-PI), -PI);
    assert!(wrap_angle(3.0 * PI - 1e-15) < PI);
}

#[test]
fn products_act_block_by_block() {
    let product = s2_t1();
    assert_eq!(product.name(), "S^2 x T^1");
    assert_eq!((product.ambient_dim(), product.intrinsic_dim()), (4, 3));
    assert_eq!(product.blocks(), &[0..3, 3..4]);
    let x = array![0.0, 0.0, 1.0, 3.0];
    let v = array![0.5, 0.0, 0.0, 0.5];
    let moved = product.exp(x.view(), v.view()).unwrap();
    let sphere_part = Sphere::new(3)
        .unwrap()
        .exp(x.slice(ndarray::s![0..3]), v.slice(ndarray::s![0..3]))
        .unwrap();
    assert_all_close(
        &moved.slice(ndarray::s![0..3]).to_owned(),
        &sphere_part,
        1e-15,
        "sphere block",
    );
    assert_close(moved[3], wrap_angle(3.5), 1e-15, "angle block wraps");
    let nested = Product::new(vec![Box::new(s2_t1()), Box::new(FlatTorus::new(1).unwrap())]).unwrap();
    assert_eq!(nested.name(), "S^2 x T^1 x T^1");
    assert_close(
        nested.volume(),
        8.0 * PI * PI * 2.0 * PI,
        1e-9,
        "nested product volume",
    );
}

#[test]
fn zero_vectors_are_handled() {
    for manifold in manifolds() {
        let mut rng = rng(3);
        let x = point(manifold.as_ref(), &mut rng);
        let zero = Array1::zeros(manifold.ambient_dim());
        assert_all_close(
            &manifold.exp(x.view(), zero.view()).unwrap(),
            &x,
            1e-15,
            "exp(x, 0) = x",
        );
        assert_all_close(
            &manifold.log(x.view(), x.view()).unwrap(),
            &zero,
            1e-15,
            "log(x, x) = 0",
        );
        let at_zero = manifold.geodesic(x.view(), zero.view(), 0.7).unwrap();
        assert_all_close(&at_zero.velocity, &zero, 0.0, "zero geodesic has zero velocity");
        assert_close(manifold.norm(x.view(), zero.view()).unwrap(), 0.0, 0.0, "|0| = 0");
    }
    // Tiny vectors on the sphere follow the small-norm limit without 0/0.
    let sphere = Sphere::new(3).unwrap();
    let x = array![1.0, 0.0, 0.0];
    for length in [1e-300, 1e-20, 1e-9, 1e-4] {
        let y = sphere.exp(x.view(), array![0.0, length, 0.0].view()).unwrap();
        assert_close(y[1], length.sin(), 1e-300_f64.max(4e-16 * length), "tiny exp");
        let v = sphere.log(x.view(), y.view()).unwrap();
        assert_close(v[1], length, 1e-15 * length, "tiny log");
    }
}

#[test]
fn tangent_bases_are_accurate_at_and_near_the_axes() {
    let sphere = Sphere::new(3).unwrap();
    for x in [
        array![0.0, 0.0, 1.0],
        array![-1.0, 0.0, 0.0],
        array![1e-9, -1e-9, 1.0],
        array![1e-300, 0.0, -1.0],
    ] {
        let x = sphere.project(x.view()).unwrap();
        let basis = sphere.tangent_basis(x.view()).unwrap();
        let gram = basis.dot(&basis.t());
        let worst = (&gram - &Array2::<f64>::eye(2))
            .iter()
            .fold(0.0_f64, |m, d| m.max(d.abs()));
        assert!(worst < 1e-15, "{x}: Gram matrix off by {worst}");
        assert!(
            basis.dot(&x).iter().all(|d| d.abs() < 1e-15),
            "{x}: basis not orthogonal to x"
        );
    }
}
