//! The mode-seeking field in the solvers: lambda = 0 (or a time outside the window) reproduces plain
//! sampling bit for bit with every ODE method; a positive lambda moves the samples; normalisation bounds the
//! guidance term per sample.

use ferroflow_guidance::{
    DivergenceEstimator, ModeSeeking, ModeSeekingField, Normalize, ProbeDistribution, Schedule,
    normalize_gradient,
};
use ferroflow_models::{Mlp, MlpConfig, VelocityNet};
use ferroflow_solvers::{Method, OdeOptions, SolverError, solve};
use tch::{Device, Kind, Tensor};

fn net() -> Mlp {
    tch::manual_seed(17);
    Mlp::new(MlpConfig::benchmark(2), Device::Cpu).unwrap()
}

fn velocity(net: &Mlp) -> impl FnMut(&Tensor, f64) -> Tensor + '_ {
    move |x: &Tensor, t: f64| net.forward(x, &Tensor::from_slice(&[t as f32]))
}

fn start() -> Tensor {
    tch::manual_seed(5);
    Tensor::randn([64, 2], (Kind::Float, Device::Cpu))
}

fn options(method: Method, tolerance: f64) -> OdeOptions {
    if method.tableau().is_adaptive() {
        OdeOptions::adaptive(method, tolerance, tolerance)
    } else {
        OdeOptions::fixed(method, 20)
    }
}

fn plain(net: &Mlp, method: Method, tolerance: f64) -> Tensor {
    let mut v = velocity(net);
    let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(tch::no_grad(|| v(x, t))) };
    solve(&mut field, start(), 0.0, 1.0, &options(method, tolerance))
        .unwrap()
        .state
}

fn guided(net: &Mlp, method: Method, tolerance: f64, config: ModeSeeking) -> (Tensor, usize) {
    let mut field = ModeSeekingField::new(velocity(net), config).unwrap();
    let state = solve(&mut field, start(), 0.0, 1.0, &options(method, tolerance))
        .unwrap()
        .state;
    (state, field.stats().guided_evals)
}

#[test]
fn lambda_zero_is_bit_identical_to_plain_sampling_for_every_method() {
    let net = net();
    for method in Method::ALL {
        let reference = plain(&net, method, 1e-5);
        for config in [ModeSeeking::exact(0.0), ModeSeeking::hutchinson(0.0, 4, 1)] {
            let (state, guided_evals) = guided(&net, method, 1e-5, config);
            assert!(state.equal(&reference), "{method:?}");
            assert_eq!(guided_evals, 0);
        }
        // A positive strength outside its window does nothing either.
        let mut windowed = ModeSeeking::exact(0.5);
        windowed.schedule = Schedule::Window {
            t_start: 2.0 / 3.0,
            t_end: 2.0 / 3.0,
        };
        if !method.tableau().is_adaptive() {
            // No stage of 20 fixed steps lands on t = 2/3 exactly.
            assert!(
                guided(&net, method, 1e-5, windowed).0.equal(&reference),
                "{method:?} windowed"
            );
        }
    }
}

#[test]
fn positive_lambda_moves_samples_with_every_method() {
    let net = net();
    let hutchinson = DivergenceEstimator::Hutchinson {
        probes: 2,
        distribution: ProbeDistribution::Gaussian,
    };
    for method in Method::ALL {
        let reference = plain(&net, method, 1e-3);
        // Fresh probes at every evaluation make the field random: adaptive step control is only given the
        // exact estimator (as the field's documentation advises).
        let estimators = if method.tableau().is_adaptive() {
            vec![DivergenceEstimator::Exact]
        } else {
            vec![DivergenceEstimator::Exact, hutchinson]
        };
        for estimator in estimators {
            let mut config = ModeSeeking::exact(0.2);
            config.estimator = estimator;
            let (state, guided_evals) = guided(&net, method, 1e-3, config);
            assert!(guided_evals > 0);
            let moved = (&state - &reference).abs().max().double_value(&[]);
            assert!(
                moved > 1e-4 && state.isfinite().all().int64_value(&[]) == 1,
                "{method:?}: {moved}"
            );
        }
    }
}

#[test]
fn window_and_decay_schedules_gate_the_strength() {
    let mut config = ModeSeeking::exact(2.0);
    config.schedule = Schedule::Window {
        t_start: 0.25,
        t_end: 0.5,
    };
    assert_eq!(config.lambda_at(0.1), 0.0);
    assert_eq!(config.lambda_at(0.25), 2.0);
    assert_eq!(config.lambda_at(0.6), 0.0);
    config.schedule = Schedule::Decay { power: 2.0 };
    assert!((config.lambda_at(0.5) - 0.5).abs() < 1e-15);
    assert_eq!(config.lambda_at(1.0), 0.0);

    // Fixed Euler steps at t = 0, 0.05, ...: a window over [0.24, 0.51] guides 6 of them (0.25 to 0.5).
    let net = net();
    let mut windowed = ModeSeeking::exact(0.3);
    windowed.schedule = Schedule::Window {
        t_start: 0.24,
        t_end: 0.51,
    };
    let mut field = ModeSeekingField::new(velocity(&net), windowed).unwrap();
    solve(
        &mut field,
        start(),
        0.0,
        1.0,
        &OdeOptions::fixed(Method::Euler, 20),
    )
    .unwrap();
    assert_eq!(field.stats().evals, 20);
    assert_eq!(field.stats().guided_evals, 6);
}

#[test]
fn normalisation_bounds_the_guidance_term_per_sample() {
    let gradient = Tensor::from_slice(&[3.0f32, 4.0, 0.3, 0.4, 0.0, 0.0]).reshape([3, 2]);
    let velocity = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 1.0, 1.0]).reshape([3, 2]);
    let norms =
        |t: &Tensor| Vec::<f32>::try_from(t.norm_scalaropt_dim(2.0, [1i64].as_slice(), false)).unwrap();
    let none = normalize_gradient(&gradient, &velocity, Normalize::None);
    assert!(none.equal(&gradient));
    let clipped = normalize_gradient(&gradient, &velocity, Normalize::Clip { scale: 0.5 });
    let clipped_norms = norms(&clipped);
    // |g| = 5 > 0.5 |v| = 0.5: shrunk; |g| = 0.5 <= 0.5 * 2 = 1: kept; zero stays zero.
    assert!((clipped_norms[0] - 0.5).abs() < 1e-6);
    assert!((clipped_norms[1] - 0.5).abs() < 1e-6);
    assert_eq!(clipped_norms[2], 0.0);
    let rescaled = normalize_gradient(&gradient, &velocity, Normalize::Rescale { scale: 0.5 });
    let rescaled_norms = norms(&rescaled);
    assert!((rescaled_norms[0] - 0.5).abs() < 1e-6);
    assert!((rescaled_norms[1] - 1.0).abs() < 1e-6);
    assert_eq!(rescaled_norms[2], 0.0);
    // The direction is kept.
    let cosine = (&rescaled.get(1) * &gradient.get(1))
        .sum(Kind::Float)
        .double_value(&[])
        / (1.0 * 0.5);
    assert!((cosine - 1.0).abs() < 1e-6);
}

#[test]
fn guided_field_works_on_image_shaped_batches() {
    // A per-sample nonlinear field on [batch, 1, 4, 4]: g is shaped like x.
    let field = |x: &Tensor, t: f64| (x * (1.0 + t)).tanh() * x;
    let mut config = ModeSeeking::hutchinson(0.1, 1, 3);
    config.normalize = Normalize::Clip { scale: 1.0 };
    let mut guided = ModeSeekingField::new(field, config).unwrap();
    let x = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
    let out = guided.guided_velocity(0.3, &x).unwrap();
    assert_eq!(out.size(), x.size());
    assert!(!out.requires_grad());
}
