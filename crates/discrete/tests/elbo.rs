//! The continuous-time ELBO with the exact posterior: a lower bound on `ln q(x)` for every sequence, tight for
//! the masked source (the conditional process is the marginal process's bridge) and with a measured gap for
//! the uniform one; a wrong posterior (the exact posterior of another table) bounds that table's likelihood
//! and loses at least the KL divergence on average; the quadrature converges.

mod common;

use common::{fixed_table, random_table, rng, schedules};
use ferroflow_discrete::{
    DataTable, DiscreteError, Elbo, Kappa, MixturePath, Source, all_sequences, elbo, graded_grid,
    uniform_grid,
};
use ferroflow_paths::{Scheduler, VpScheduler};
use ndarray::{Array1, ArrayView1};

const MAX_STATES: usize = 1 << 12;

fn exact_elbo(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> Kappa,
    model: &DataTable,
    x: ArrayView1<u32>,
    n_intervals: usize,
) -> Elbo {
    let grid = graded_grid(n_intervals, 3.0).unwrap();
    elbo(path, schedule, x, &grid, MAX_STATES, |x_t, t| {
        model.posterior(path, schedule, x_t, t)
    })
    .unwrap()
}

/// For every sequence in the table's support: `(ln q(x), ELBO(x))`.
fn bounds(path: &MixturePath, schedule: &dyn Fn(f64) -> Kappa, table: &DataTable) -> Vec<(f64, f64)> {
    let data = all_sequences(table.vocab_size(), table.length(), MAX_STATES).unwrap();
    data.rows()
        .into_iter()
        .filter(|x| table.probability(*x).unwrap() > 0.0)
        .map(|x| {
            (
                table.log_probability(x).unwrap(),
                exact_elbo(path, schedule, table, x, 64).log_likelihood_bound,
            )
        })
        .collect()
}

#[test]
fn the_exact_posterior_elbo_bounds_the_log_likelihood_and_the_masked_one_is_tight() {
    let mut tables = vec![fixed_table()];
    tables.extend((0..3).map(|seed| random_table(3, 2, 1.0, &mut rng(seed))));
    tables.push(random_table(2, 3, 0.8, &mut rng(7)));
    for (table_idx, table) in tables.iter().enumerate() {
        for source in [Source::Masked, Source::Uniform] {
            let path = MixturePath::new(table.vocab_size(), source).unwrap();
            let mut first_schedule: Option<Vec<(f64, f64)>> = None;
            for (name, schedule) in schedules() {
                // The ELBO is a path-space KL divergence, blind to a re-timing of both processes: every
                // schedule from 0 to 1 gives the same bound.
                let these = bounds(&path, &schedule, table);
                if let Some(first) = &first_schedule {
                    for ((_, a), (_, b)) in first.iter().zip(&these) {
                        assert!(
                            (a - b).abs() < 1e-6,
                            "table {table_idx} {source:?} {name}: ELBO {b} vs {a} under CondOT"
                        );
                    }
                } else {
                    first_schedule = Some(these);
                }
                let (mut largest_gap, mut smallest_gap): (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);
                for (log_p, bound) in bounds(&path, &schedule, table) {
                    let gap = log_p - bound;
                    largest_gap = largest_gap.max(gap);
                    smallest_gap = smallest_gap.min(gap);
                    assert!(
                        gap >= -1e-8,
                        "table {table_idx} {source:?} {name}: ELBO {bound} above ln q = {log_p}"
                    );
                    if source == Source::Masked {
                        assert!(gap < 1e-8, "table {table_idx} masked {name}: gap {gap}");
                    }
                }
                eprintln!(
                    "table {table_idx} {source:?} {name}: ln q - ELBO in [{smallest_gap:.3e}, {largest_gap:.3e}]"
                );
                if source == Source::Uniform {
                    // The uniform-source bound is not tight: the marginal process's bridge to x differs from the
                    // conditional path.
                    assert!(
                        largest_gap > 1e-4,
                        "table {table_idx} uniform {name}: gap {largest_gap}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_wrong_posterior_gives_a_strictly_lower_bound() {
    // The model is the exact posterior of another table q'. Its ELBO bounds ln q'(x) for every x, and averaged
    // over the data it is at most E_q ln q' = E_q ln q - KL(q || q'), strictly below the exact ELBO.
    let table = random_table(3, 2, 1.0, &mut rng(21));
    let wrong = random_table(3, 2, 1.0, &mut rng(22));
    let data = all_sequences(3, 2, MAX_STATES).unwrap();
    for source in [Source::Masked, Source::Uniform] {
        let path = MixturePath::new(3, source).unwrap();
        for (name, schedule) in schedules() {
            let (mut exact_mean, mut wrong_mean, mut kl) = (0.0, 0.0, 0.0);
            for x in data.rows() {
                let (q, q_wrong) = (table.probability(x).unwrap(), wrong.probability(x).unwrap());
                let bound_wrong = exact_elbo(&path, &schedule, &wrong, x, 64).log_likelihood_bound;
                assert!(
                    bound_wrong <= q_wrong.ln() + 1e-8,
                    "{source:?} {name}: ELBO {bound_wrong} > ln q' {}",
                    q_wrong.ln()
                );
                exact_mean += q * exact_elbo(&path, &schedule, &table, x, 64).log_likelihood_bound;
                wrong_mean += q * bound_wrong;
                kl += q * (q / q_wrong).ln();
            }
            eprintln!(
                "{source:?} {name}: E_q ELBO exact {exact_mean:.4}, wrong {wrong_mean:.4}, KL(q || q') {kl:.4}"
            );
            assert!(kl > 0.01, "the two tables differ");
            assert!(
                wrong_mean < exact_mean - 0.5 * kl,
                "{source:?} {name}: wrong {wrong_mean} vs exact {exact_mean}"
            );
        }
    }
}

#[test]
fn the_uniform_source_elbo_of_uniform_data_has_its_closed_form() {
    // One position, data uniform over V tokens: the marginal process jumps to each other token at rate
    // kappa' / V, and the expected generalized KL is kappa' (V - 1) / V [ln V - ln(1 - kappa)], whose integral
    // is (V - 1) / V (ln V + 1) for any schedule from 0 to 1. Positions of independent uniform data add up.
    for vocab_size in [2_usize, 3, 5] {
        for length in [1_usize, 2] {
            let data = all_sequences(vocab_size, length, MAX_STATES).unwrap();
            let n = data.nrows();
            let table = DataTable::new(vocab_size, data, Array1::from_elem(n, 1.0 / n as f64)).unwrap();
            let path = MixturePath::new(vocab_size, Source::Uniform).unwrap();
            let v = vocab_size as f64;
            let expected = -(length as f64) * (v - 1.0) / v * (v.ln() + 1.0);
            for (name, schedule) in schedules() {
                let x = table.sequences().row(n / 2).to_owned();
                let found = exact_elbo(&path, &schedule, &table, x.view(), 128).log_likelihood_bound;
                assert!(
                    (found - expected).abs() < 1e-6,
                    "V = {vocab_size} L = {length} {name}: {found} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn a_point_mass_has_elbo_zero_for_both_sources() {
    // With a single data sequence the posterior is certain, the model's process is the conditional process,
    // and the bound is ln 1 = 0.
    let table = DataTable::new(3, ndarray::array![[2, 0]], ndarray::array![1.0]).unwrap();
    for source in [Source::Masked, Source::Uniform] {
        let path = MixturePath::new(3, source).unwrap();
        for (name, schedule) in schedules() {
            let found =
                exact_elbo(&path, &schedule, &table, table.sequences().row(0), 32).log_likelihood_bound;
            assert!(found.abs() < 1e-12, "{source:?} {name}: {found}");
        }
    }
}

#[test]
fn the_quadrature_converges_and_bits_per_token_match_nats() {
    let table = fixed_table();
    let x = ndarray::array![1_u32, 1];
    for source in [Source::Masked, Source::Uniform] {
        let path = MixturePath::new(3, source).unwrap();
        for (name, schedule) in schedules() {
            let coarse = exact_elbo(&path, &schedule, &table, x.view(), 64);
            let fine = exact_elbo(&path, &schedule, &table, x.view(), 512);
            let difference = (coarse.log_likelihood_bound - fine.log_likelihood_bound).abs();
            let on_uniform_grid = |n| {
                elbo(
                    &path,
                    &schedule,
                    x.view(),
                    &uniform_grid(n).unwrap(),
                    MAX_STATES,
                    |x_t, t| table.posterior(&path, &schedule, x_t, t),
                )
                .unwrap()
                .log_likelihood_bound
            };
            let uniform_difference = (on_uniform_grid(64) - fine.log_likelihood_bound).abs();
            eprintln!(
                "{source:?} {name}: |ELBO(64) - ELBO(512)| on graded grids {difference:.2e}, 64 uniform intervals {uniform_difference:.2e}"
            );
            assert!(difference < 1e-6, "{source:?} {name}: {difference}");
            let bits = -fine.log_likelihood_bound / (2.0 * std::f64::consts::LN_2);
            assert!((fine.bits_per_token - bits).abs() < 1e-15);
        }
    }
}

#[test]
fn the_elbo_refuses_schedules_that_do_not_start_at_the_source_and_grids_that_do_not_span_zero_to_one() {
    let table = fixed_table();
    let path = MixturePath::new(3, Source::Uniform).unwrap();
    let x = ndarray::array![1_u32, 1];
    let vp = VpScheduler::default();
    let vp = move |t: f64| Kappa {
        value: vp.alpha(t),
        derivative: vp.d_alpha(t),
    };
    let err = elbo(
        &path,
        &vp,
        x.view(),
        &uniform_grid(4).unwrap(),
        MAX_STATES,
        |x_t, t| table.posterior(&path, &vp, x_t, t),
    )
    .unwrap_err();
    assert!(
        matches!(err, DiscreteError::InvalidKappa { time: 0.0, .. }),
        "{err}"
    );
    let cond_ot = common::cond_ot();
    let err = elbo(&path, &cond_ot, x.view(), &[0.0, 0.5], MAX_STATES, |x_t, t| {
        table.posterior(&path, &cond_ot, x_t, t)
    })
    .unwrap_err();
    assert!(matches!(err, DiscreteError::InvalidGrid { .. }), "{err}");
    let long = Array1::from_elem(20, 1_u32);
    let err = elbo(&path, &cond_ot, long.view(), &[0.0, 1.0], MAX_STATES, |x_t, t| {
        table.posterior(&path, &cond_ot, x_t, t)
    })
    .unwrap_err();
    assert!(matches!(err, DiscreteError::TooManyStates { .. }), "{err}");
}
