//! Bad settings are refused with typed errors that name the key: negative or non-finite lambda, zero probes,
//! a window that ends before it starts, bad scales and weights, and unknown keys.

use ferroflow_guidance::{
    ClassifierFree, DivergenceEstimator, GuidanceError, ModeSeeking, ModeSeekingField, Normalize,
    ProbeDistribution, Schedule,
};
use tch::Tensor;

fn key_of(result: Result<(), GuidanceError>) -> &'static str {
    match result {
        Err(GuidanceError::InvalidConfig { key, detail }) => {
            assert!(!detail.is_empty());
            key
        }
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

#[test]
fn bad_lambda_is_refused_naming_the_key() {
    for lambda in [-0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            key_of(ModeSeeking::exact(lambda).validate()),
            "lambda",
            "lambda = {lambda}"
        );
    }
    assert!(ModeSeeking::exact(0.0).validate().is_ok());
    // The field refuses it too, before any sampling.
    let field = |x: &Tensor, _t: f64| x.tanh();
    let err = ModeSeekingField::new(field, ModeSeeking::exact(-1.0))
        .err()
        .unwrap();
    assert!(err.to_string().contains("`lambda`"), "{err}");
}

#[test]
fn zero_probes_are_refused() {
    let mut config = ModeSeeking::hutchinson(0.1, 0, 0);
    assert_eq!(key_of(config.validate()), "estimator.probes");
    config.estimator = DivergenceEstimator::Hutchinson {
        probes: 1,
        distribution: ProbeDistribution::Gaussian,
    };
    assert!(config.validate().is_ok());
}

#[test]
fn bad_schedules_are_refused() {
    let mut config = ModeSeeking::exact(0.1);
    config.schedule = Schedule::Window {
        t_start: 0.8,
        t_end: 0.2,
    };
    assert_eq!(key_of(config.validate()), "schedule.t_start");
    config.schedule = Schedule::Window {
        t_start: -0.1,
        t_end: 0.2,
    };
    assert_eq!(key_of(config.validate()), "schedule.t_start");
    config.schedule = Schedule::Window {
        t_start: 0.1,
        t_end: f64::NAN,
    };
    assert_eq!(key_of(config.validate()), "schedule.t_end");
    config.schedule = Schedule::Decay { power: -1.0 };
    assert_eq!(key_of(config.validate()), "schedule.power");
    config.schedule = Schedule::Window {
        t_start: 0.3,
        t_end: 0.3,
    };
    assert!(config.validate().is_ok());
}

#[test]
fn bad_normalisation_and_cfg_weights_are_refused() {
    let mut config = ModeSeeking::exact(0.1);
    for normalize in [
        Normalize::Clip { scale: 0.0 },
        Normalize::Rescale { scale: f64::NAN },
    ] {
        config.normalize = normalize;
        assert_eq!(key_of(config.validate()), "normalize.scale");
    }
    for weight in [-0.5, f64::INFINITY] {
        assert_eq!(
            key_of(ClassifierFree { weight, class: 0 }.validate()),
            "cfg.weight"
        );
    }
}

#[test]
fn toml_form_parses_and_refuses_unknown_keys() {
    let config: ModeSeeking = toml::from_str(
        r#"
        lambda = 0.3
        estimator = { kind = "hutchinson", probes = 4, probe = "gaussian" }
        schedule = { kind = "window", t_start = 0.1, t_end = 0.9 }
        normalize = { kind = "rescale", scale = 0.5 }
        seed = 7
        "#,
    )
    .unwrap();
    assert_eq!(
        config.estimator,
        DivergenceEstimator::Hutchinson {
            probes: 4,
            distribution: ProbeDistribution::Gaussian
        }
    );
    assert!(config.validate().is_ok());
    let defaults: ModeSeeking = toml::from_str("lambda = 1.0").unwrap();
    assert_eq!(defaults, ModeSeeking::exact(1.0));
    for bad in [
        "lambda = 1.0\nlamda = 2.0",
        "lambda = 1.0\nestimator = { kind = \"exact\", probes = 3 }",
        "lambda = 1.0\nschedule = { kind = \"window\", t_start = 0.1, t_stop = 0.5 }",
        "lambda = 1.0\nnormalize = { kind = \"clamp\", scale = 1.0 }",
        "lambda = 1.0\nnormalize = { kind = \"none\", scale = 1.0 }",
        "lambda = 1.0\nschedule = { kind = \"constant\", power = 2.0 }",
        "lambda = 1.0\nestimator = { kind = \"hutchinson\" }",
    ] {
        assert!(toml::from_str::<ModeSeeking>(bad).is_err(), "{bad}");
    }
    // Parsed but out of range: refused at validation with the key.
    let parsed: ModeSeeking =
        toml::from_str("lambda = 1.0\nestimator = { kind = \"hutchinson\", probes = 0 }").unwrap();
    assert_eq!(key_of(parsed.validate()), "estimator.probes");
}
