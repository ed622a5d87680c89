//! Property suite for the schedulers: boundary values, analytic derivatives against finite differences,
//! monotone SNR and the SNR inverse.

mod common;

use common::{assert_close, config, derivative, schedulers};
use ferroflow_paths::{PathsError, Scheduler, SchedulerKind, VpScheduler};
use proptest::prelude::*;

#[test]
fn boundary_values_follow_the_flow_matching_convention() {
    for scheduler in schedulers() {
        let name = scheduler.name();
        assert_eq!(scheduler.alpha(1.0), 1.0, "{name}: alpha_1");
        assert_eq!(scheduler.sigma(1.0), 0.0, "{name}: sigma_1");
        assert_eq!(scheduler.snr(1.0), f64::INFINITY, "{name}: snr(1)");
        if name == "vp" {
            // VP only approaches noise: alpha_0 = exp(-(b + B) / 4) and alpha^2 + sigma^2 = 1 everywhere.
            for t in [0.0, 0.3, 0.7, 1.0] {
                let (a, s) = (scheduler.alpha(t), scheduler.sigma(t));
                assert_close(a * a + s * s, 1.0, 1e-14, "vp variance preservation");
            }
        } else {
            assert_eq!(scheduler.alpha(0.0), 0.0, "{name}: alpha_0");
            assert_eq!(scheduler.sigma(0.0), 1.0, "{name}: sigma_0");
            assert_eq!(scheduler.snr(0.0), 0.0, "{name}: snr(0)");
        }
    }
    let vp = VpScheduler::default();
    assert_close(
        vp.alpha(0.0),
        (-(0.1_f64 + 20.0) / 4.0).exp(),
        1e-15,
        "vp alpha_0",
    );
}

#[test]
fn scheduler_kind_reads_configs_and_refuses_bad_parameters() {
    let kind: SchedulerKind = serde_json::from_str(r#"{"kind": "polynomial", "exponent": 2.0}"#).unwrap();
    assert_eq!(kind, SchedulerKind::Polynomial { exponent: 2.0 });
    let vp: SchedulerKind = serde_json::from_str(r#"{"kind": "vp"}"#).unwrap();
    assert_eq!(
        vp,
        SchedulerKind::Vp {
            beta_min: 0.1,
            beta_max: 20.0
        }
    );
    let text = serde_json::to_string(&SchedulerKind::LinearVp).unwrap();
    assert_eq!(text, r#"{"kind":"linear_vp"}"#);
    assert!(serde_json::from_str::<SchedulerKind>(r#"{"kind": "cond_ot", "typo": 1}"#).is_err());
    assert!(serde_json::from_str::<SchedulerKind>(r#"{"kind": "sigmoid"}"#).is_err());
    assert!(serde_json::from_str::<SchedulerKind>(r#"{"kind": "polynomial"}"#).is_err());
    assert!(serde_json::from_str::<SchedulerKind>(r#"{"kind": "cosine", "exponent": 2.0}"#).is_err());
    let refused = serde_json::from_str::<SchedulerKind>(r#"{"kind": "vp", "beta_min": 30.0}"#).unwrap_err();
    assert!(refused.to_string().contains("beta_max"), "{refused}");
    let round_trip: SchedulerKind = serde_json::from_str(&serde_json::to_string(&vp).unwrap()).unwrap();
    assert_eq!(round_trip, vp);
    for (bad, key) in [
        (SchedulerKind::Polynomial { exponent: 0.0 }, "exponent"),
        (SchedulerKind::Polynomial { exponent: f64::NAN }, "exponent"),
        (
            SchedulerKind::Vp {
                beta_min: -1.0,
                beta_max: 20.0,
            },
            "beta_min",
        ),
        (
            SchedulerKind::Vp {
                beta_min: 5.0,
                beta_max: 1.0,
            },
            "beta_max",
        ),
    ] {
        match bad.build() {
            Err(PathsError::InvalidParameter { name, .. }) => assert_eq!(name, key),
            other => panic!(
                "{bad:?} should be refused on `{key}`, got {:?}",
                other.map(|s| s.name())
            ),
        }
    }
    let built = SchedulerKind::Cosine.build().unwrap();
    assert_eq!(built.name(), "cosine");
}

#[test]
fn time_for_snr_refuses_ratios_outside_the_range() {
    let vp = VpScheduler::default();
    // VP's SNR at t = 0 is about 0.0066, so a smaller ratio has no time.
    assert!(matches!(
        vp.time_for_snr(1e-4),
        Err(PathsError::SnrOutOfRange { scheduler: "vp", .. })
    ));
    assert!(matches!(
        vp.time_for_snr(-1.0),
        Err(PathsError::SnrOutOfRange { .. })
    ));
    for scheduler in schedulers() {
        assert_eq!(
            scheduler.time_for_snr(f64::INFINITY).unwrap(),
            1.0,
            "{}",
            scheduler.name()
        );
        assert!(scheduler.time_for_snr(f64::NAN).is_err(), "{}", scheduler.name());
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn derivatives_match_finite_differences(t in 0.01_f64..0.99) {
        for scheduler in schedulers() {
            let name = scheduler.name();
            let h = 1e-4;
            assert_close(scheduler.d_alpha(t), derivative(|s| scheduler.alpha(s), t, h), 1e-8, &format!("{name} d_alpha at {t}"));
            assert_close(scheduler.d_sigma(t), derivative(|s| scheduler.sigma(s), t, h), 1e-8, &format!("{name} d_sigma at {t}"));
            let out = scheduler.evaluate(t);
            prop_assert_eq!(out.alpha, scheduler.alpha(t));
            prop_assert_eq!(out.d_sigma, scheduler.d_sigma(t));
        }
    }

    #[test]
    fn snr_is_strictly_increasing(a in 0.0_f64..1.0, b in 0.0_f64..1.0) {
        prop_assume!((a - b).abs() > 1e-6);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        for scheduler in schedulers() {
            let name = scheduler.name();
            prop_assert!(scheduler.snr(lo) < scheduler.snr(hi), "{}: snr({}) >= snr({})", name, lo, hi);
            prop_assert!(scheduler.log_snr(lo) < scheduler.log_snr(hi), "{}: log-snr not increasing", name);
            if lo > 0.0 {
                assert_close(scheduler.log_snr(lo), scheduler.snr(lo).ln(), 1e-12, &format!("{name} log_snr"));
            }
        }
    }

    #[test]
    fn snr_inverse_round_trips(t in 0.0_f64..1.0) {
        for scheduler in schedulers() {
            let name = scheduler.name();
            let snr = scheduler.snr(t);
            let back = scheduler.time_for_snr(snr).unwrap();
            assert_close(back, t, 1e-10, &format!("{name}: t -> snr -> t at {t}"));
            if t > 0.01 {
                assert_close(scheduler.snr(scheduler.snr_inverse(snr)), snr, 1e-9, &format!("{name}: snr round trip"));
            }
        }
    }
}
