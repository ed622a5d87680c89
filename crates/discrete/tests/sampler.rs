//! The Euler CTMC sampler: jump probabilities are distributions for any posterior and step (proptest), the cap
//! when a step would jump with probability above one, the full sampler with the exact posterior reaching the
//! data distribution (total variation measured against the sampling-noise floor), with and without the
//! divergence-free corrector, and reproducibility under a seed.

mod common;

use common::{config, fixed_table, histogram, paths, rng, schedules, total_variation};
use ferroflow_discrete::{
    Corrector, DataTable, DiscreteError, MixturePath, Source, Token, euler_step, jump_probabilities, sample,
    uniform_grid,
};
use ndarray::{Array2, Array3, Axis, array};
use proptest::prelude::*;
use rand::Rng;

fn random_posterior(n_samples: usize, length: usize, n_states: usize, rng: &mut impl Rng) -> Array3<f64> {
    let mut probs = Array3::from_shape_fn((n_samples, length, n_states), |_| rng.random::<f64>().powi(2));
    for mut row in probs.lanes_mut(Axis(2)) {
        row[n_states - 1] += 1e-3;
        let total = row.sum();
        row /= total;
    }
    probs
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn jump_probabilities_are_distributions(seed in any::<u64>(), vocab_size in 1_usize..6, length in 1_usize..4, t in 0.0_f64..0.999, fraction in 0.001_f64..1.0, scale in 0.0_f64..4.0) {
        let mut rng = rng(seed);
        let step_size = fraction * (1.0 - t);
        let corrector = Corrector::Power { scale, t_exponent: 1.0, one_minus_t_exponent: 1.0 };
        for path in paths(vocab_size) {
            for (name, schedule) in schedules() {
                let probs = random_posterior(4, length, path.n_states(), &mut rng);
                let x_t = Array2::from_shape_fn((4, length), |_| rng.random_range(0..path.n_states()) as Token);
                for corrector in [Corrector::Off, corrector] {
                    if schedule(t).value == 0.0 && corrector != Corrector::Off && t > 0.0 {
                        continue;
                    }
                    let jumps = jump_probabilities(&path, &schedule, probs.view(), x_t.view(), t, step_size, &corrector).unwrap();
                    for row in jumps.lanes(Axis(2)) {
                        prop_assert!(row.iter().all(|p| *p >= 0.0), "{} {:?}: negative probability {}", name, corrector, row);
                        prop_assert!((row.sum() - 1.0).abs() < 1e-12, "{} {:?}: row sums to {}", name, corrector, row.sum());
                    }
                    // Below the cap, the jump probabilities are h times the rates.
                    if corrector == Corrector::Off {
                        let kappa = schedule(t);
                        let c = kappa.derivative / (1.0 - kappa.value);
                        for ((sample_idx, position), token) in x_t.indexed_iter() {
                            let leave = 1.0 - probs[[sample_idx, position, *token as usize]];
                            if step_size * c * leave <= 1.0 {
                                let stay = jumps[[sample_idx, position, *token as usize]];
                                prop_assert!((stay - (1.0 - step_size * c * leave)).abs() < 1e-12);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_step_that_would_jump_with_probability_above_one_jumps_in_proportion_to_the_rates() {
    // CondOT at t = 0.5, h = 0.5: h kappa' / (1 - kappa) = 1, so the step draws from the posterior itself;
    // with the corrector on top the total exceeds one and the cap scales the rates down.
    let path = MixturePath::new(3, Source::Uniform).unwrap();
    let schedule = common::cond_ot();
    let probs = array![[[0.2, 0.3, 0.5]]];
    let x_t = array![[0 as Token]];
    let plain = jump_probabilities(
        &path,
        &schedule,
        probs.view(),
        x_t.view(),
        0.5,
        0.5,
        &Corrector::Off,
    )
    .unwrap();
    assert!(
        (&plain - &probs).iter().all(|d| d.abs() < 1e-15),
        "last CondOT step samples the posterior: {plain}"
    );
    let corrector = Corrector::Power {
        scale: 2.0,
        t_exponent: 1.0,
        one_minus_t_exponent: 1.0,
    };
    let capped =
        jump_probabilities(&path, &schedule, probs.view(), x_t.view(), 0.5, 0.5, &corrector).unwrap();
    // Rates to 1 and 2: marginal 2 p(y); corrector (scale t(1-t)) / (t(1-t)) = 2 times
    // [0.5 p(y) + 0.5 / 3] (delta_0 is zero there) - both positive, so the stay probability is 0.
    let rate = |y: usize| 2.0 * probs[[0, 0, y]] + 2.0 * (0.5 * probs[[0, 0, y]] + 0.5 / 3.0);
    let total = rate(1) + rate(2);
    assert_eq!(capped[[0, 0, 0]], 0.0);
    assert!((capped[[0, 0, 1]] - rate(1) / total).abs() < 1e-15);
    assert!((capped[[0, 0, 2]] - rate(2) / total).abs() < 1e-15);
}

/// The TV distance of `n_samples` samples of the Euler sampler (exact posterior) from the table, and the TV
/// distance of as many iid draws from the table itself (the noise floor).
fn sampler_total_variation(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> ferroflow_discrete::Kappa,
    table: &DataTable,
    n_steps: usize,
    corrector: &Corrector,
    n_samples: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = rng(seed);
    let x0 = path.sample_source(n_samples, table.length(), &mut rng);
    let grid = uniform_grid(n_steps).unwrap();
    let samples = sample(
        path,
        schedule,
        x0.view(),
        &grid,
        corrector,
        |x_t, t| table.posterior_for_sampling(path, schedule, x_t, t),
        &mut rng,
    )
    .unwrap();
    let target = table.as_vector(path.n_states()).unwrap();
    let tv = total_variation(histogram(samples.view(), path.n_states()).view(), target.view());
    let floor = total_variation(
        histogram(table.sample(n_samples, &mut rng).view(), path.n_states()).view(),
        target.view(),
    );
    (tv, floor)
}

#[test]
fn the_sampler_with_the_exact_posterior_reaches_the_data() {
    let table = fixed_table();
    let n_samples = 20_000;
    for path in paths(3) {
        for (name, schedule) in schedules() {
            let (tv, floor) =
                sampler_total_variation(&path, &schedule, &table, 100, &Corrector::Off, n_samples, 11);
            eprintln!(
                "{:?} {name}, 100 Euler steps, {n_samples} samples: TV {tv:.4} (iid noise floor {floor:.4})",
                path.source()
            );
            assert!(tv < 0.03, "{:?} {name}: TV {tv} from the data", path.source());
        }
    }
}

#[test]
fn the_sampler_with_the_corrector_still_reaches_the_data() {
    let table = fixed_table();
    let n_samples = 20_000;
    let corrector = Corrector::Power {
        scale: 1.0,
        t_exponent: 1.0,
        one_minus_t_exponent: 1.0,
    };
    for path in paths(3) {
        let schedule = common::cond_ot();
        let (tv, floor) = sampler_total_variation(&path, &schedule, &table, 100, &corrector, n_samples, 12);
        eprintln!(
            "{:?} cond_ot with corrector: TV {tv:.4} (iid noise floor {floor:.4})",
            path.source()
        );
        assert!(
            tv < 0.03,
            "{:?} with corrector: TV {tv} from the data",
            path.source()
        );
    }
}

#[test]
fn too_few_steps_are_measurably_worse() {
    // The TV check can fail: two Euler steps of the uniform-source sampler leave a visible bias.
    let table = fixed_table();
    let path = MixturePath::new(3, Source::Uniform).unwrap();
    let (tv, floor) =
        sampler_total_variation(&path, &common::cond_ot(), &table, 2, &Corrector::Off, 20_000, 13);
    eprintln!("Uniform cond_ot, 2 Euler steps: TV {tv:.4} (floor {floor:.4})");
    assert!(
        tv > 3.0 * floor && tv > 0.03,
        "two steps give TV {tv}, noise floor {floor}"
    );
}

#[test]
fn sampling_is_reproducible_under_a_seed() {
    let table = fixed_table();
    let path = MixturePath::new(3, Source::Uniform).unwrap();
    let schedule = common::cond_ot();
    let run = |seed| {
        let mut rng = rng(seed);
        let x0 = path.sample_source(64, 2, &mut rng);
        sample(
            &path,
            &schedule,
            x0.view(),
            &uniform_grid(10).unwrap(),
            &Corrector::Off,
            |x_t, t| table.posterior_for_sampling(&path, &schedule, x_t, t),
            &mut rng,
        )
        .unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn the_sampler_passes_posterior_errors_through_and_refuses_bad_grids() {
    let path = MixturePath::new(3, Source::Masked).unwrap();
    let schedule = common::cond_ot();
    let x0 = path.sample_source(2, 2, &mut rng(0));
    let failing = |_: ndarray::ArrayView2<Token>, t: f64| -> Result<Array3<f64>, DiscreteError> {
        Err(DiscreteError::TimeOutOfRange {
            what: "from the closure",
            time: t,
            allowed: "nowhere",
        })
    };
    let err = sample(
        &path,
        &schedule,
        x0.view(),
        &[0.0, 1.0],
        &Corrector::Off,
        failing,
        &mut rng(0),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DiscreteError::TimeOutOfRange {
            what: "from the closure",
            ..
        }
    ));
    for grid in [vec![0.0], vec![0.0, 0.5, 0.5, 1.0], vec![0.0, 1.5]] {
        let err = sample(
            &path,
            &schedule,
            x0.view(),
            &grid,
            &Corrector::Off,
            failing,
            &mut rng(0),
        )
        .unwrap_err();
        assert!(
            matches!(err, DiscreteError::InvalidGrid { .. }),
            "{grid:?}: {err}"
        );
    }
    // A single Euler step refuses a step past t = 1.
    let probs = fixed_table().posterior(&path, &schedule, x0.view(), 0.5).unwrap();
    let err = euler_step(
        &path,
        &schedule,
        probs.view(),
        x0.view(),
        0.5,
        0.6,
        &Corrector::Off,
        &mut rng(0),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::InvalidParameter {
                name: "step_size",
                ..
            }
        ),
        "{err}"
    );
}
