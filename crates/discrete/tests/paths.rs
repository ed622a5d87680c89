//! The mixture path: the schedulers of `ferroflow-paths` as `kappa_t`, sampled `x_t` against the closed-form
//! marginal `p_t` by Monte Carlo (tolerance from the standard error), the exact marginal and posterior against
//! their definitions, and reproducibility under a seed.

mod common;

use common::{assert_close, fixed_table, from_scheduler, histogram, marginal_vector, paths, rng, schedules};
use ferroflow_discrete::{
    DataTable, KappaSchedule, MixturePath, Source, Token, all_sequences, conditional_support,
};
use ferroflow_paths::{CondOtScheduler, CosineScheduler, PolynomialScheduler};
use ndarray::{Array1, Axis, array};

#[test]
fn schedulers_of_the_paths_crate_give_the_documented_kappa() {
    let cond_ot = from_scheduler(CondOtScheduler);
    let cubic = from_scheduler(PolynomialScheduler::new(3.0).unwrap());
    let cosine = from_scheduler(CosineScheduler);
    for t in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
        assert_close(cond_ot.at(t).value, t, 1e-15, "CondOT kappa = t");
        assert_close(cond_ot.at(t).derivative, 1.0, 1e-15, "CondOT kappa' = 1");
        assert_close(cubic.at(t).value, t.powi(3), 1e-15, "polynomial(3) kappa = t^3");
        assert_close(
            cubic.at(t).derivative,
            3.0 * t * t,
            1e-14,
            "polynomial(3) kappa' = 3 t^2",
        );
        let angle = std::f64::consts::FRAC_PI_2 * t;
        assert_close(
            cosine.at(t).value,
            angle.sin(),
            1e-15,
            "cosine kappa = sin(pi t / 2)",
        );
        assert_close(
            cosine.at(t).derivative,
            std::f64::consts::FRAC_PI_2 * angle.cos(),
            1e-15,
            "cosine kappa'",
        );
    }
}

#[test]
fn sampled_x_t_follows_the_closed_form_marginal() {
    // x0 ~ p0, x1 ~ q, x_t ~ p_t(. | x0, x1): the histogram of x_t must match p_t = sum_x1 q(x1) p_t(x | x1)
    // within five standard errors per sequence.
    let table = fixed_table();
    let n_samples = 200_000;
    for path in paths(3) {
        for (name, schedule) in schedules() {
            for (seed, t) in [(1, 0.25), (2, 0.6)] {
                let mut rng = rng(seed);
                let x0 = path.sample_source(n_samples, table.length(), &mut rng);
                let x1 = table.sample(n_samples, &mut rng);
                let times = Array1::from_elem(n_samples, t);
                let x_t = path
                    .sample_x_t(&schedule, x0.view(), x1.view(), times.view(), &mut rng)
                    .unwrap();
                let empirical = histogram(x_t.view(), path.n_states());
                let exact = marginal_vector(&path, &schedule, &table, t);
                assert_close(exact.sum(), 1.0, 1e-12, "p_t sums to one");
                let mut worst: f64 = 0.0;
                for (found, expected) in empirical.iter().zip(&exact) {
                    let standard_error = (expected * (1.0 - expected) / n_samples as f64).sqrt();
                    assert!(
                        (found - expected).abs() <= 5.0 * standard_error + 1e-12,
                        "{:?} {name} t = {t}: empirical {found} vs p_t {expected} (standard error {standard_error})",
                        path.source()
                    );
                    worst = worst.max((found - expected).abs() / standard_error.max(1e-300));
                }
                eprintln!(
                    "{:?} {name} t = {t}: worst deviation {worst:.2} standard errors",
                    path.source()
                );
            }
        }
    }
}

#[test]
fn sampling_x_t_is_reproducible_and_hits_both_ends() {
    let path = MixturePath::new(5, Source::Uniform).unwrap();
    let schedule = from_scheduler(CondOtScheduler);
    let mut source_rng = rng(3);
    let x0 = path.sample_source(50, 7, &mut source_rng);
    let x1 = MixturePath::new(5, Source::Uniform)
        .unwrap()
        .sample_source(50, 7, &mut source_rng);
    let t = Array1::linspace(0.0, 1.0, 50);
    let first = path
        .sample_x_t(&schedule, x0.view(), x1.view(), t.view(), &mut rng(9))
        .unwrap();
    let second = path
        .sample_x_t(&schedule, x0.view(), x1.view(), t.view(), &mut rng(9))
        .unwrap();
    assert_eq!(first, second, "same seed, same x_t");
    assert_eq!(first.row(0), x0.row(0), "t = 0 is the source");
    assert_eq!(first.row(49), x1.row(49), "t = 1 is the data");
    // Every token comes from x0 or x1 at its position.
    for ((sample_idx, position), token) in first.indexed_iter() {
        assert!(*token == x0[[sample_idx, position]] || *token == x1[[sample_idx, position]]);
    }
}

#[test]
fn masked_source_is_all_mask_and_uniform_source_is_uniform() {
    let masked = MixturePath::new(4, Source::Masked).unwrap();
    assert_eq!(masked.n_states(), 5);
    assert_eq!(masked.mask_token(), Some(4));
    assert!(
        masked
            .sample_source(10, 3, &mut rng(0))
            .iter()
            .all(|token| *token == 4)
    );
    let uniform = MixturePath::new(4, Source::Uniform).unwrap();
    assert_eq!((uniform.n_states(), uniform.mask_token()), (4, None));
    let n_samples = 40_000;
    let draws = uniform.sample_source(n_samples, 1, &mut rng(1));
    let frequencies = histogram(draws.view(), 4);
    for frequency in frequencies {
        let standard_error = (0.25 * 0.75 / n_samples as f64).sqrt();
        assert!(
            (frequency - 0.25).abs() < 5.0 * standard_error,
            "uniform source frequency {frequency}"
        );
    }
}

#[test]
fn exact_posterior_is_bayes_rule_over_the_table() {
    // Recompute p_{1|t}(x1^i = y | x) by brute force over all data sequences (not only the table's rows) and
    // compare with the table's posterior; also check that p_t is the posterior's normaliser.
    let table = fixed_table();
    let q = table.as_vector(3).unwrap();
    let data = all_sequences(3, 2, 100).unwrap();
    for path in paths(3) {
        for (name, schedule) in schedules() {
            let t = 0.45;
            let states = all_sequences(path.n_states(), 2, 100).unwrap();
            let marginal = table.marginal(&path, &schedule, states.view(), t).unwrap();
            for (state_idx, x) in states.rows().into_iter().enumerate() {
                let joint: Array1<f64> = data
                    .rows()
                    .into_iter()
                    .enumerate()
                    .map(|(idx, x1)| q[idx] * path.conditional_probability(&schedule, x, x1, t).unwrap())
                    .collect();
                assert_close(
                    joint.sum(),
                    marginal[state_idx],
                    1e-15,
                    "p_t(x) = sum q(x1) p_t(x | x1)",
                );
                if marginal[state_idx] == 0.0 {
                    continue;
                }
                let posterior = table
                    .posterior(&path, &schedule, x.insert_axis(Axis(0)), t)
                    .unwrap();
                for position in 0..2 {
                    for y in 0..path.n_states() {
                        let expected: f64 = data
                            .rows()
                            .into_iter()
                            .zip(&joint)
                            .filter(|(x1, _)| x1[position] as usize == y)
                            .map(|(_, w)| w / marginal[state_idx])
                            .sum();
                        assert_close(
                            posterior[[0, position, y]],
                            expected,
                            1e-14,
                            &format!(
                                "{:?} {name}: posterior of {x} at position {position}, token {y}",
                                path.source()
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn exact_marginal_starts_at_the_source_and_ends_at_the_data() {
    let table = fixed_table();
    for path in paths(3) {
        for (name, schedule) in schedules() {
            let at_source = marginal_vector(&path, &schedule, &table, 0.0);
            let source = path.source_distribution();
            let states = all_sequences(path.n_states(), 2, 100).unwrap();
            for (idx, x) in states.rows().into_iter().enumerate() {
                let p0: f64 = x.iter().map(|token| source[*token as usize]).product();
                assert_close(at_source[idx], p0, 1e-15, &format!("{name}: p_0 is the source"));
            }
            let at_data = marginal_vector(&path, &schedule, &table, 1.0);
            let q = table.as_vector(path.n_states()).unwrap();
            assert!(
                (&at_data - &q).iter().all(|d| d.abs() < 1e-15),
                "{name}: p_1 is the data"
            );
        }
    }
}

#[test]
fn conditional_support_lists_the_sequences_p_t_given_x1_can_reach() {
    let masked = MixturePath::new(3, Source::Masked).unwrap();
    let support = conditional_support(&masked, array![2, 0].view(), 100).unwrap();
    assert_eq!(support, array![[2, 0], [2, 3], [3, 0], [3, 3]]);
    let uniform = MixturePath::new(3, Source::Uniform).unwrap();
    assert_eq!(
        conditional_support(&uniform, array![2, 0].view(), 100)
            .unwrap()
            .nrows(),
        9
    );
    // The support carries all the mass of p_t(. | x1).
    let schedule = from_scheduler(CondOtScheduler);
    for path in [masked, uniform] {
        let x1 = array![2 as Token, 0];
        let support = conditional_support(&path, x1.view(), 100).unwrap();
        let mass: f64 = support
            .rows()
            .into_iter()
            .map(|x| {
                path.conditional_probability(&schedule, x, x1.view(), 0.3)
                    .unwrap()
            })
            .sum();
        assert_close(mass, 1.0, 1e-14, "support mass");
    }
}

#[test]
fn duplicate_rows_of_a_table_add_up() {
    let table = DataTable::new(2, array![[0, 1], [0, 1], [1, 1]], array![0.25, 0.25, 0.5]).unwrap();
    assert_close(
        table.probability(array![0, 1].view()).unwrap(),
        0.5,
        1e-15,
        "q(01)",
    );
    assert_eq!(
        table.log_probability(array![0, 0].view()).unwrap(),
        f64::NEG_INFINITY
    );
}
