//! Property suite for the conditional paths: `u_t` is the time derivative of `x_t` along the path, the
//! field forms of the velocities agree with it, and bad input is refused with the right error.

mod common;

use common::{assert_close, config, normal_matrix, paths, rng};
use ferroflow_paths::{
    AffinePath, CondOtScheduler, ConditionalPath, CosineScheduler, ExtraNoise, OneSidedGaussianPath,
    PathsError, SchrodingerBridgePath, TimeEnd, VariancePreservingPath,
};
use ndarray::{Array1, Array2, array};
use proptest::prelude::*;

const N_SAMPLES: usize = 5;
const DIM: usize = 3;

struct Inputs {
    x0: Array2<f64>,
    x1: Array2<f64>,
    noise: Array2<f64>,
}

fn inputs(seed: u64) -> Inputs {
    let mut rng = rng(seed);
    Inputs {
        x0: normal_matrix(&mut rng, N_SAMPLES, DIM),
        x1: normal_matrix(&mut rng, N_SAMPLES, DIM) * 2.0,
        noise: normal_matrix(&mut rng, N_SAMPLES, DIM),
    }
}

fn x_t(path: &dyn ConditionalPath, inputs: &Inputs, t: &Array1<f64>) -> Array2<f64> {
    path.sample(
        inputs.x0.view(),
        inputs.x1.view(),
        t.view(),
        ExtraNoise::Samples(inputs.noise.view()),
    )
    .unwrap()
    .x_t
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn velocity_is_the_time_derivative_along_the_path(seed in any::<u64>(), times in prop::collection::vec(0.02_f64..0.98, N_SAMPLES)) {
        let inputs = inputs(seed);
        let t = Array1::from(times);
        let h = 1e-4;
        for path in paths() {
            let sample = path
                .sample(inputs.x0.view(), inputs.x1.view(), t.view(), ExtraNoise::Samples(inputs.noise.view()))
                .unwrap();
            let shifted = |k: f64| x_t(path.as_ref(), &inputs, &(&t + k * h));
            // Fourth-order central difference in t, every row at its own time.
            let finite_difference = (shifted(-2.0) - shifted(-1.0) * 8.0 + shifted(1.0) * 8.0 - shifted(2.0)) / (12.0 * h);
            for ((u, fd), x) in sample.u_t.iter().zip(&finite_difference).zip(&sample.x_t) {
                prop_assert!(x.is_finite());
                assert_close(*u, *fd, 1e-7, &format!("path {}: u_t vs d x_t / dt", path.name()));
            }
        }
    }

    #[test]
    fn field_forms_of_the_velocity_agree_with_the_path(seed in any::<u64>(), times in prop::collection::vec(0.01_f64..0.99, N_SAMPLES)) {
        let inputs = inputs(seed);
        let t = Array1::from(times);
        // Lipman et al. 2023: u_t(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t) at x = x_t.
        for path in [OneSidedGaussianPath::new(0.05).unwrap(), OneSidedGaussianPath::linear()] {
            let sample = path.sample(inputs.x0.view(), inputs.x1.view(), t.view(), ExtraNoise::Zero).unwrap();
            let field = path.velocity_at(sample.x_t.view(), inputs.x1.view(), t.view()).unwrap();
            for (a, b) in field.iter().zip(&sample.u_t) {
                assert_close(*a, *b, 1e-10, "one-sided field form");
            }
        }
        // The sigma_min = 0 limit is (x1 - x) / (1 - t), written out independently.
        let x = normal_matrix(&mut rng(seed ^ 1), N_SAMPLES, DIM);
        let limit = OneSidedGaussianPath::linear().velocity_at(x.view(), inputs.x1.view(), t.view()).unwrap();
        for sample_idx in 0..N_SAMPLES {
            for j in 0..DIM {
                let expected = (inputs.x1[[sample_idx, j]] - x[[sample_idx, j]]) / (1.0 - t[sample_idx]);
                assert_close(limit[[sample_idx, j]], expected, 1e-12, "linear limit");
            }
        }
        // Tong et al. 2023: u = (1 - 2t) / (2t (1 - t)) (x_t - mu_t) + x1 - x0 along the bridge.
        let bridge = SchrodingerBridgePath::new(0.7).unwrap();
        let sample = bridge
            .sample(inputs.x0.view(), inputs.x1.view(), t.view(), ExtraNoise::Samples(inputs.noise.view()))
            .unwrap();
        let field = bridge.velocity_at(sample.x_t.view(), inputs.x0.view(), inputs.x1.view(), t.view()).unwrap();
        for (a, b) in field.iter().zip(&sample.u_t) {
            assert_close(*a, *b, 1e-9, "bridge field form");
        }
        // I-CFM: u = x1 - x0 whatever the noise; the trigonometric VP path is the cosine affine path.
        let icfm = AffinePath::new(CondOtScheduler, 0.3).unwrap();
        let sample = icfm
            .sample(inputs.x0.view(), inputs.x1.view(), t.view(), ExtraNoise::Samples(inputs.noise.view()))
            .unwrap();
        let expected = &inputs.x1 - &inputs.x0;
        for (a, b) in sample.u_t.iter().zip(&expected) {
            assert_close(*a, *b, 1e-14, "I-CFM velocity");
        }
        let trigonometric = VariancePreservingPath::new(0.25).unwrap();
        let cosine = AffinePath::new(CosineScheduler, 0.25).unwrap();
        let noise = ExtraNoise::Samples(inputs.noise.view());
        let a = trigonometric.sample(inputs.x0.view(), inputs.x1.view(), t.view(), noise).unwrap();
        let b = cosine.sample(inputs.x0.view(), inputs.x1.view(), t.view(), noise).unwrap();
        for (p, q) in a.x_t.iter().chain(&a.u_t).zip(b.x_t.iter().chain(&b.u_t)) {
            assert_close(*p, *q, 1e-14, "trigonometric VP vs cosine scheduler");
        }
    }
}

#[test]
fn every_path_starts_at_the_source_and_ends_at_the_data() {
    let inputs = inputs(7);
    let zeros = Array1::zeros(N_SAMPLES);
    for path in paths() {
        let name = path.name();
        let end = path.coefficients(1.0);
        // Only Lipman's one-sided path keeps a source weight (sigma_min) at t = 1; checked below.
        if name != "one_sided_gaussian" {
            assert_eq!(end.source, 0.0, "{name}: a_1");
        }
        assert_eq!(end.target, 1.0, "{name}: b_1");
        let start = path.coefficients(0.0);
        if name != "vp" {
            assert_eq!(start.target, 0.0, "{name}: b_0");
            assert_eq!(start.source, 1.0, "{name}: a_0");
        }
        let sample = path.sample(inputs.x0.view(), inputs.x1.view(), zeros.view(), ExtraNoise::Zero);
        if start.d_target.is_finite() {
            let sample = sample.unwrap();
            for ((x, x0), x1) in sample.x_t.iter().zip(&inputs.x0).zip(&inputs.x1) {
                assert_close(*x, start.source * x0 + start.target * x1, 1e-14, name);
            }
        } else {
            // alpha = t^n with n < 1 has an infinite slope at the source end.
            assert!(
                matches!(
                    sample,
                    Err(PathsError::SingularTime {
                        end: TimeEnd::Source,
                        ..
                    })
                ),
                "{name}"
            );
        }
    }
    let lipman = OneSidedGaussianPath::new(0.05).unwrap();
    assert_close(
        lipman.coefficients(1.0).source,
        0.05,
        1e-15,
        "sigma_1 = sigma_min",
    );
    assert_eq!(OneSidedGaussianPath::linear().coefficients(1.0).source, 0.0);
}

#[test]
fn bad_input_is_refused_with_a_typed_error() {
    let path = AffinePath::without_noise(CondOtScheduler);
    let x0 = Array2::<f64>::zeros((3, 2));
    let x1 = Array2::<f64>::zeros((3, 2));
    let t = array![0.1, 0.5, 0.9];
    let short_t = array![0.1, 0.5];
    assert!(matches!(
        path.sample(x0.view(), x1.view(), short_t.view(), ExtraNoise::Zero),
        Err(PathsError::ShapeMismatch { name: "t", .. })
    ));
    let wide = Array2::<f64>::zeros((3, 3));
    assert!(matches!(
        path.sample(x0.view(), wide.view(), t.view(), ExtraNoise::Zero),
        Err(PathsError::ShapeMismatch { name: "x1", .. })
    ));
    assert!(matches!(
        path.sample(x0.view(), x1.view(), t.view(), ExtraNoise::Samples(wide.view())),
        Err(PathsError::ShapeMismatch { name: "noise", .. })
    ));
    let late = array![0.1, 1.5, 0.9];
    assert_eq!(
        path.sample(x0.view(), x1.view(), late.view(), ExtraNoise::Zero)
            .unwrap_err(),
        PathsError::TimeOutOfRange {
            t: 1.5,
            sample_idx: 1
        }
    );
    let mut nan = x0.clone();
    nan[[2, 1]] = f64::NAN;
    assert_eq!(
        path.sample(nan.view(), x1.view(), t.view(), ExtraNoise::Zero)
            .unwrap_err(),
        PathsError::NonFinite { name: "x0", index: 5 }
    );
    assert!(matches!(
        AffinePath::new(CondOtScheduler, -0.1),
        Err(PathsError::InvalidParameter {
            name: "noise_std",
            ..
        })
    ));
    assert!(matches!(
        OneSidedGaussianPath::new(1.0),
        Err(PathsError::InvalidParameter {
            name: "sigma_min",
            ..
        })
    ));
    assert!(matches!(
        SchrodingerBridgePath::new(f64::INFINITY),
        Err(PathsError::InvalidParameter { name: "sigma", .. })
    ));
}

#[test]
fn singular_ends_are_named() {
    let x = Array2::<f64>::ones((1, 2));
    let bridge = SchrodingerBridgePath::new(0.5).unwrap();
    for (t, end) in [(0.0, TimeEnd::Source), (1.0, TimeEnd::Data)] {
        let t = array![t];
        match bridge.sample(x.view(), x.view(), t.view(), ExtraNoise::Samples(x.view())) {
            Err(PathsError::SingularTime { end: found, .. }) => assert_eq!(found, end),
            other => panic!("bridge at {t}: expected a singular end, got {other:?}"),
        }
        match bridge.velocity_at(x.view(), x.view(), x.view(), t.view()) {
            Err(PathsError::SingularTime { end: found, .. }) => assert_eq!(found, end),
            other => panic!("bridge field at {t}: expected a singular end, got {other:?}"),
        }
        // Without noise the bridge velocity is x1 - x0 even at the ends.
        let sample = bridge
            .sample(x.view(), (&x * 3.0).view(), t.view(), ExtraNoise::Zero)
            .unwrap();
        assert_eq!(sample.u_t, Array2::from_elem((1, 2), 2.0));
    }
    let one = array![1.0];
    match OneSidedGaussianPath::linear().velocity_at(x.view(), x.view(), one.view()) {
        Err(PathsError::SingularTime {
            end: TimeEnd::Data, ..
        }) => {}
        other => panic!("linear limit at t = 1: {other:?}"),
    }
    // With sigma_min > 0 the one-sided field stays finite at t = 1.
    assert!(
        OneSidedGaussianPath::new(0.1)
            .unwrap()
            .velocity_at(x.view(), x.view(), one.view())
            .is_ok()
    );
    // VP's d sigma / dt is infinite at t = 1.
    let vp = AffinePath::without_noise(ferroflow_paths::VpScheduler::default());
    assert!(matches!(
        vp.sample(x.view(), x.view(), one.view(), ExtraNoise::Zero),
        Err(PathsError::SingularTime {
            end: TimeEnd::Data,
            ..
        })
    ));
}
