//! Property suite for the parameterisation conversions and the scheduler re-timing.

mod common;

use common::{assert_close, config, normal_matrix, paths, random_mixture, rng, schedulers};
use ferroflow_paths::{
    AffinePath, CondOtScheduler, ConditionalPath, ExtraNoise, GaussianCoefficients, MixtureMarginal,
    PathsError, Prediction, ScheduleTransform, Scheduler, TimeEnd, VpScheduler, convert,
};
use ndarray::{Array1, Array2, array};
use proptest::prelude::*;

/// The four parameterisations of one conditional sample `x_t = alpha x1 + sigma z`, known exactly.
fn known(c: &GaussianCoefficients, x1: f64, z: f64) -> (f64, [(Prediction, f64); 4]) {
    let x_t = c.alpha * x1 + c.sigma * z;
    (
        x_t,
        [
            (Prediction::Velocity, c.d_alpha * x1 + c.d_sigma * z),
            (Prediction::Target, x1),
            (Prediction::Epsilon, z),
            (Prediction::Score, -z / c.sigma),
        ],
    )
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn conversions_map_each_known_parameterisation_to_every_other(
        t in 0.02_f64..0.98, x1 in -3.0_f64..3.0, z in -3.0_f64..3.0, source_std in 0.5_f64..2.0,
    ) {
        for path in paths() {
            let c = path.gaussian_coefficients(t, source_std).unwrap();
            let (x_t, values) = known(&c, x1, z);
            for (from, from_value) in values {
                for (to, to_value) in values {
                    let conversion = c.conversion(from, to).unwrap();
                    assert_close(
                        conversion.apply(x_t, from_value), to_value, 1e-9,
                        &format!("{}: {from:?} -> {to:?} at t = {t}", path.name()),
                    );
                    // Round trip on an arbitrary value, not only on consistent ones.
                    let back = c.conversion(to, from).unwrap();
                    assert_close(back.apply(x_t, conversion.apply(x_t, 0.7)), 0.7, 1e-9, "round trip");
                }
            }
        }
    }

    #[test]
    fn batch_conversion_recovers_the_conditional_velocity(seed in any::<u64>(), times in prop::collection::vec(0.02_f64..0.98, 4)) {
        let mut rng = rng(seed);
        let source_std = 1.3;
        let x0 = normal_matrix(&mut rng, 4, 2) * source_std;
        let x1 = normal_matrix(&mut rng, 4, 2);
        let t = Array1::from(times);
        for scheduler in schedulers() {
            let path = AffinePath::without_noise(scheduler);
            let sample = path.sample(x0.view(), x1.view(), t.view(), ExtraNoise::Zero).unwrap();
            let velocity = convert(&path, source_std, Prediction::Target, Prediction::Velocity, x1.view(), sample.x_t.view(), t.view()).unwrap();
            let epsilon = convert(&path, source_std, Prediction::Velocity, Prediction::Epsilon, sample.u_t.view(), sample.x_t.view(), t.view()).unwrap();
            for ((v, u), (e, x0)) in velocity.iter().zip(&sample.u_t).zip(epsilon.iter().zip(&x0)) {
                assert_close(*v, *u, 1e-9, "target -> velocity");
                assert_close(*e * source_std, *x0, 1e-9, "velocity -> epsilon");
            }
        }
    }

    #[test]
    fn marginal_quantities_convert_like_conditional_ones(seed in any::<u64>(), t in 0.05_f64..0.95) {
        // Tweedie: E[x1 | x] and v*(x) are the score converted, because the conversions are affine.
        let mixture = random_mixture(seed, 3, 2);
        let x = normal_matrix(&mut rng(seed ^ 9), 3, 2) * 1.5;
        let times = Array1::from_elem(3, t);
        for path in paths() {
            let name = path.name();
            let marginal = MixtureMarginal::new(mixture.clone(), path, 0.8).unwrap();
            let score = marginal.score(x.view(), times.view()).unwrap();
            let from_score = |to| convert(marginal.path(), 0.8, Prediction::Score, to, score.view(), x.view(), times.view()).unwrap();
            let velocity = marginal.velocity(x.view(), times.view()).unwrap();
            let posterior = marginal.posterior_mean(x.view(), times.view()).unwrap();
            for (a, b) in from_score(Prediction::Velocity).iter().zip(&velocity) {
                assert_close(*a, *b, 1e-8, &format!("{name}: score -> velocity"));
            }
            for (a, b) in from_score(Prediction::Target).iter().zip(&posterior) {
                assert_close(*a, *b, 1e-8, &format!("{name}: score -> posterior mean"));
            }
        }
    }

    #[test]
    fn retimed_marginal_field_is_the_other_schedulers_marginal_field(seed in any::<u64>(), r in 0.02_f64..0.97) {
        let mixture = random_mixture(seed, 2, 2);
        let x = normal_matrix(&mut rng(seed ^ 3), 3, 2);
        let r_batch = Array1::from_elem(3, r);
        for original in schedulers() {
            for target in schedulers() {
                let names = format!("{} -> {}", original.name(), target.name());
                let transform = ScheduleTransform::new(&original, &target);
                let snr = target.snr(r);
                let original_marginal = MixtureMarginal::new(mixture.clone(), AffinePath::without_noise(&original), 1.0).unwrap();
                let retimed = transform.velocity(x.view(), r_batch.view(), |x, t| original_marginal.velocity(x, t));
                if snr < original.snr(0.0) {
                    // Below the original scheduler's SNR range (VP never reaches pure noise) there is no time.
                    prop_assert!(matches!(retimed, Err(PathsError::SnrOutOfRange { .. })), "{}: {:?}", names, retimed);
                    continue;
                }
                let retimed = retimed.unwrap();
                let direct = MixtureMarginal::new(mixture.clone(), AffinePath::without_noise(&target), 1.0)
                    .unwrap()
                    .velocity(x.view(), r_batch.view())
                    .unwrap();
                for (a, b) in retimed.iter().zip(&direct) {
                    assert_close(*a, *b, 1e-7, &format!("{names} at r = {r}"));
                }
                let retiming = transform.retime(r).unwrap();
                assert_close(original.snr(retiming.t), snr, 1e-9, "snr matched");
            }
        }
    }
}

#[test]
fn singular_conversions_name_the_end() {
    let path = AffinePath::without_noise(CondOtScheduler);
    let at_data = path.gaussian_coefficients(1.0, 1.0).unwrap();
    match at_data.conversion(Prediction::Target, Prediction::Velocity) {
        Err(PathsError::SingularTime {
            end: TimeEnd::Data,
            quantity,
            ..
        }) => {
            assert!(
                quantity.contains("target") && quantity.contains("velocity"),
                "{quantity}"
            )
        }
        other => panic!("target -> velocity at t = 1: {other:?}"),
    }
    // velocity -> target divides by d_alpha sigma - d_sigma alpha = 1 for CondOT: fine at both ends.
    assert!(
        at_data
            .conversion(Prediction::Velocity, Prediction::Target)
            .is_ok()
    );
    let at_source = path.gaussian_coefficients(0.0, 1.0).unwrap();
    assert!(matches!(
        at_source.conversion(Prediction::Epsilon, Prediction::Target),
        Err(PathsError::SingularTime {
            end: TimeEnd::Source,
            ..
        })
    ));
    let x = Array2::<f64>::zeros((1, 2));
    let bad = convert(
        &path,
        0.0,
        Prediction::Score,
        Prediction::Velocity,
        x.view(),
        x.view(),
        array![0.5].view(),
    );
    assert!(matches!(
        bad,
        Err(PathsError::InvalidParameter {
            name: "source_std",
            ..
        })
    ));
    // Re-timing cannot reach the data end, where sigma_r = 0.
    let transform = ScheduleTransform::new(VpScheduler::default(), CondOtScheduler);
    assert!(matches!(
        transform.retime(1.0),
        Err(PathsError::SingularTime {
            end: TimeEnd::Data,
            ..
        })
    ));
    // A field that returns the wrong shape is refused.
    let transform = ScheduleTransform::new(CondOtScheduler, CondOtScheduler);
    let wrong = transform.velocity(x.view(), array![0.5].view(), |_, _| Ok(Array2::zeros((2, 2))));
    assert!(matches!(
        wrong,
        Err(PathsError::ShapeMismatch {
            name: "field(x, t)",
            ..
        })
    ));
}
