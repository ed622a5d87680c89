//! Rates from posteriors: validity (non-negative jumps, rows summing to zero) for any posterior, the
//! Kolmogorov forward equation `d p_t / dt = p_t Q_t` for the marginal rate built from the exact posterior
//! (checked by central differences in t on the whole state space), and the zero probability flux of the
//! divergence-free corrector.

mod common;

use common::{
    config, exact_generator, fixed_table, marginal_generator, marginal_vector, paths, random_table, rng,
    schedules,
};
use ferroflow_discrete::{
    DiscreteError, MixturePath, Source, Token, corrector_rates, marginal_rates, validate_rates,
};
use ndarray::{Array2, Array3};
use proptest::prelude::*;
use rand::Rng;

/// A random posterior `[n_samples, length, n_states]`; some entries exactly zero.
fn random_posterior(n_samples: usize, length: usize, n_states: usize, rng: &mut impl Rng) -> Array3<f64> {
    let mut probs = Array3::from_shape_fn((n_samples, length, n_states), |_| {
        if rng.random::<f64>() < 0.2 {
            0.0
        } else {
            rng.random::<f64>()
        }
    });
    for mut row in probs.lanes_mut(ndarray::Axis(2)) {
        row[0] += 1e-3;
        let total = row.sum();
        row /= total;
    }
    probs
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn marginal_and_corrector_rates_are_valid_rates(seed in any::<u64>(), vocab_size in 1_usize..7, length in 1_usize..5, t in 0.001_f64..0.999, beta in 0.0_f64..5.0) {
        let mut rng = rng(seed);
        for path in paths(vocab_size) {
            for (name, schedule) in schedules() {
                let probs = random_posterior(3, length, path.n_states(), &mut rng);
                let x_t = Array2::from_shape_fn((3, length), |_| rng.random_range(0..path.n_states()) as Token);
                let rates = marginal_rates(&path, &schedule, probs.view(), x_t.view(), t).unwrap();
                validate_rates(rates.view(), x_t.view(), 1e-9).unwrap_or_else(|e| panic!("{name} marginal: {e}"));
                let corrector = corrector_rates(&path, &schedule, probs.view(), x_t.view(), t, beta).unwrap();
                validate_rates(corrector.view(), x_t.view(), 1e-9).unwrap_or_else(|e| panic!("{name} corrector: {e}"));
                // The marginal rate is the posterior mean of the conditional rate kappa'/(1-kappa)(delta_x1 - delta_x).
                let kappa = schedule(t);
                let c = kappa.derivative / (1.0 - kappa.value);
                for ((sample_idx, position), token) in x_t.indexed_iter() {
                    for y in 0..path.n_states() {
                        let stay = if y == *token as usize { 1.0 } else { 0.0 };
                        let expected = c * (probs[[sample_idx, position, y]] - stay);
                        prop_assert!((rates[[sample_idx, position, y]] - expected).abs() <= 1e-12 * (1.0 + c));
                    }
                }
            }
        }
    }
}

#[test]
fn validate_rates_refuses_negative_jumps_and_rows_that_do_not_sum_to_zero() {
    let x_t = ndarray::array![[0 as Token, 1]];
    let mut rates = Array3::zeros((1, 2, 3));
    rates[[0, 0, 1]] = 0.5;
    rates[[0, 0, 0]] = -0.5;
    validate_rates(rates.view(), x_t.view(), 1e-12).unwrap();
    rates[[0, 1, 2]] = -0.1;
    rates[[0, 1, 1]] = 0.1;
    assert!(matches!(
        validate_rates(rates.view(), x_t.view(), 1e-12),
        Err(DiscreteError::InvalidProbability { ref index, .. }) if index == &vec![0, 1, 2]
    ));
    rates[[0, 1, 2]] = 0.1;
    assert!(matches!(
        validate_rates(rates.view(), x_t.view(), 1e-12),
        Err(DiscreteError::NotADistribution { ref index, .. }) if index == &vec![0, 1]
    ));
}

/// The largest `|d p_t/dt - p_t Q_t|` over the state space, the derivative by central differences.
fn forward_equation_residual(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> ferroflow_discrete::Kappa,
    table: &ferroflow_discrete::DataTable,
    t: f64,
    generator: &Array2<f64>,
) -> f64 {
    let h = 1e-5;
    let derivative = (marginal_vector(path, schedule, table, t + h)
        - marginal_vector(path, schedule, table, t - h))
        / (2.0 * h);
    let flux = marginal_vector(path, schedule, table, t).dot(generator);
    (&derivative - &flux)
        .iter()
        .fold(0.0, |worst, d| f64::max(worst, d.abs()))
}

#[test]
fn the_exact_marginal_solves_the_kolmogorov_forward_equation() {
    let mut worst: f64 = 0.0;
    for (seed, vocab_size, length) in [(1, 3, 2), (2, 2, 3), (3, 4, 2)] {
        let table = random_table(vocab_size, length, 0.7, &mut rng(seed));
        for path in paths(vocab_size) {
            for (name, schedule) in schedules() {
                for t in [0.05, 0.3, 0.55, 0.8, 0.95] {
                    let generator = marginal_generator(&path, &schedule, &table, t);
                    let residual = forward_equation_residual(&path, &schedule, &table, t, &generator);
                    assert!(
                        residual < 1e-7,
                        "{:?} {name} V = {vocab_size} L = {length} t = {t}: KFE residual {residual}",
                        path.source()
                    );
                    worst = worst.max(residual);
                    // The same check fails for a rate that is slightly off: it is not vacuous.
                    let residual_of_wrong =
                        forward_equation_residual(&path, &schedule, &table, t, &(&generator * 1.05));
                    assert!(
                        residual_of_wrong > 1e-4,
                        "{name}: a 5% wrong rate passes the KFE ({residual_of_wrong})"
                    );
                }
            }
        }
    }
    eprintln!("largest Kolmogorov forward residual: {worst:e}");
}

#[test]
fn the_corrector_carries_no_probability_flux() {
    // p_t Q_corr = 0: adding the corrector keeps d p_t / dt = p_t (Q_t + beta Q_corr).
    let table = fixed_table();
    let mut worst: f64 = 0.0;
    for path in paths(3) {
        for (name, schedule) in schedules() {
            for t in [0.1, 0.5, 0.9] {
                let corrector = exact_generator(&path, &schedule, &table, t, |x, posterior| {
                    corrector_rates(&path, &schedule, posterior.view(), x, t, 1.0).unwrap()
                });
                let flux = marginal_vector(&path, &schedule, &table, t).dot(&corrector);
                let largest = flux.iter().fold(0.0, |worst: f64, f| worst.max(f.abs()));
                let scale = corrector.iter().fold(0.0, |worst: f64, q| worst.max(q.abs()));
                assert!(scale > 0.1, "{name}: the corrector is not trivially zero");
                assert!(
                    largest < 1e-14 * scale.max(1.0) * 10.0,
                    "{:?} {name} t = {t}: corrector flux {largest}",
                    path.source()
                );
                worst = worst.max(largest);
            }
        }
    }
    eprintln!("largest corrector flux: {worst:e}");
}

#[test]
fn masked_rates_never_remask_and_only_leave_the_mask() {
    // With a posterior that puts no mass on the mask, an unmasked token whose posterior is its own value has
    // zero rates; a masked position jumps to data tokens only.
    let path = MixturePath::new(3, Source::Masked).unwrap();
    let schedule = common::cond_ot();
    let table = fixed_table();
    let x_t = ndarray::array![[1 as Token, 3], [3, 3]];
    let probs = table.posterior(&path, &schedule, x_t.view(), 0.4).unwrap();
    let rates = marginal_rates(&path, &schedule, probs.view(), x_t.view(), 0.4).unwrap();
    for y in 0..4 {
        assert!(
            rates[[0, 0, y]].abs() < 1e-15,
            "unmasked position 0 of the first sequence stays"
        );
        assert!(
            rates[[0, 1, y]] >= 0.0 || y == 3,
            "a masked position jumps to data tokens"
        );
    }
    assert_eq!(
        rates[[0, 1, 3]],
        -1.0 / (1.0 - 0.4),
        "a masked position leaves the mask at rate kappa' / (1 - kappa)"
    );
    assert_eq!(rates[[1, 0, 3]], rates[[1, 1, 3]]);
}
