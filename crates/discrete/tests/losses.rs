//! Losses and logits: the generalized KL loss against the definition `sum_{y != x} [u log(u / u_theta) - u +
//! u_theta]` evaluated on the rates themselves (proptest), its non-negativity, the exact posterior as the
//! minimiser of the expected loss, the cross-entropy, softmax with temperature and classifier-free guidance.

mod common;

use common::{assert_close, config, fixed_table, paths, rng, schedules};
use ferroflow_discrete::{
    DiscreteError, MixturePath, Source, Token, classifier_free_guidance, conditional_support, cross_entropy,
    generalized_kl, log_softmax, marginal_rates, softmax,
};
use ndarray::{Array1, Array2, Array3, Axis, array, s};
use proptest::prelude::*;
use rand::Rng;

fn random_logits(n_samples: usize, length: usize, n_states: usize, rng: &mut impl Rng) -> Array3<f64> {
    Array3::from_shape_fn((n_samples, length, n_states), |_| 4.0 * rng.random::<f64>() - 2.0)
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn generalized_kl_is_the_divergence_between_the_conditional_and_the_model_rates(seed in any::<u64>(), vocab_size in 2_usize..6, length in 1_usize..4, t in 0.0_f64..0.99) {
        let mut rng = rng(seed);
        for path in paths(vocab_size) {
            for (name, schedule) in schedules() {
                let n_samples = 3;
                let log_probs = log_softmax(random_logits(n_samples, length, path.n_states(), &mut rng).view(), 1.0).unwrap();
                let x1 = Array2::from_shape_fn((n_samples, length), |_| rng.random_range(0..vocab_size) as Token);
                // Half the positions hold their data token, as x_t does.
                let x_t = Array2::from_shape_fn((n_samples, length), |(b, i)| {
                    if rng.random::<bool>() { x1[[b, i]] } else { rng.random_range(0..path.n_states()) as Token }
                });
                let times = Array1::from_elem(n_samples, t);
                let losses = generalized_kl(&path, &schedule, log_probs.view(), x_t.view(), x1.view(), times.view()).unwrap();
                // The conditional rate is the marginal rate of a one-hot posterior on x1.
                let one_hot = Array3::from_shape_fn((n_samples, length, path.n_states()), |(b, i, y)| {
                    if y == x1[[b, i]] as usize { 1.0 } else { 0.0 }
                });
                let u = marginal_rates(&path, &schedule, one_hot.view(), x_t.view(), t).unwrap();
                let u_theta = marginal_rates(&path, &schedule, log_probs.mapv(f64::exp).view(), x_t.view(), t).unwrap();
                for ((b, i), token) in x_t.indexed_iter() {
                    let mut divergence = 0.0;
                    for y in (0..path.n_states()).filter(|y| *y != *token as usize) {
                        let (target, model) = (u[[b, i, y]], u_theta[[b, i, y]]);
                        let entropy_term = if target > 0.0 { target * (target / model).ln() } else { 0.0 };
                        divergence += entropy_term - target + model;
                    }
                    prop_assert!(losses[[b, i]] >= -1e-12, "{}: negative loss {}", name, losses[[b, i]]);
                    prop_assert!((losses[[b, i]] - divergence).abs() <= 1e-9 * (1.0 + divergence.abs()),
                        "{}: loss {} vs divergence {}", name, losses[[b, i]], divergence);
                }
            }
        }
    }

    #[test]
    fn cross_entropy_is_the_log_sum_exp_minus_the_data_logit(seed in any::<u64>(), temperature in 0.2_f64..5.0) {
        let mut rng = rng(seed);
        let path = MixturePath::new(5, Source::Masked).unwrap();
        let logits = random_logits(2, 3, path.n_states(), &mut rng);
        let x1 = Array2::from_shape_fn((2, 3), |_| rng.random_range(0..5) as Token);
        let log_probs = log_softmax(logits.view(), temperature).unwrap();
        let losses = cross_entropy(&path, log_probs.view(), x1.view()).unwrap();
        for ((b, i), token) in x1.indexed_iter() {
            let row = logits.slice(s![b, i, ..]).mapv(|l| l / temperature);
            let log_sum_exp = row.mapv(f64::exp).sum().ln();
            prop_assert!((losses[[b, i]] - (log_sum_exp - row[*token as usize])).abs() < 1e-12);
            prop_assert!(losses[[b, i]] > 0.0);
        }
    }

    #[test]
    fn softmax_rows_are_distributions_and_ignore_a_shift(seed in any::<u64>(), temperature in 0.1_f64..10.0, shift in -50.0_f64..50.0) {
        let mut rng = rng(seed);
        let logits = random_logits(3, 2, 6, &mut rng);
        let probs = softmax(logits.view(), temperature).unwrap();
        for row in probs.lanes(Axis(2)) {
            prop_assert!((row.sum() - 1.0).abs() < 1e-12 && row.iter().all(|p| *p > 0.0));
        }
        let shifted = softmax(logits.mapv(|l| l + shift).view(), temperature).unwrap();
        prop_assert!((&shifted - &probs).iter().all(|d| d.abs() < 1e-12));
        // A lower temperature moves mass towards the largest logit.
        let colder = softmax(logits.view(), temperature / 2.0).unwrap();
        for (row, cold_row) in probs.lanes(Axis(2)).into_iter().zip(colder.lanes(Axis(2))) {
            let argmax = row.iter().enumerate().fold(0, |best, (idx, p)| if *p > row[best] { idx } else { best });
            prop_assert!(cold_row[argmax] >= row[argmax] - 1e-15);
        }
    }

    #[test]
    fn guidance_is_a_distribution_and_matches_the_power_formula(seed in any::<u64>(), weight in -1.0_f64..4.0) {
        let mut rng = rng(seed);
        let cond = random_logits(2, 2, 4, &mut rng);
        let uncond = random_logits(2, 2, 4, &mut rng);
        let guided = classifier_free_guidance(cond.view(), uncond.view(), weight).unwrap().mapv(f64::exp);
        let p_cond = softmax(cond.view(), 1.0).unwrap();
        let p_uncond = softmax(uncond.view(), 1.0).unwrap();
        let mut power = Array3::from_shape_fn(cond.dim(), |index| p_cond[index].powf(1.0 + weight) / p_uncond[index].powf(weight));
        for mut row in power.lanes_mut(Axis(2)) {
            let total = row.sum();
            row /= total;
        }
        prop_assert!((&guided - &power).iter().all(|d| d.abs() < 1e-12));
        for row in guided.lanes(Axis(2)) {
            prop_assert!((row.sum() - 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn guidance_at_zero_weight_is_the_conditional_and_at_minus_one_the_unconditional() {
    let cond = array![[0.3, -1.0, 2.0, f64::NEG_INFINITY]];
    let uncond = array![[1.0, 0.5, -0.5, 0.0]];
    let at_zero = classifier_free_guidance(cond.view(), uncond.view(), 0.0).unwrap();
    let conditional = log_softmax(cond.view(), 1.0).unwrap();
    assert!(
        (&at_zero - &conditional)
            .iter()
            .all(|d| d.is_nan() || d.abs() < 1e-15)
    );
    assert_eq!(
        at_zero[[0, 3]],
        f64::NEG_INFINITY,
        "a ruled-out token stays ruled out"
    );
    let at_minus_one = classifier_free_guidance(cond.view(), uncond.view(), -1.0).unwrap();
    assert_eq!(at_minus_one[[0, 3]], f64::NEG_INFINITY);
    // Among the tokens the conditional allows, w = -1 gives the unconditional ratios.
    assert_close(
        at_minus_one[[0, 0]] - at_minus_one[[0, 1]],
        0.5,
        1e-12,
        "w = -1: unconditional log-ratio",
    );
    // A stronger weight sharpens towards the tokens the condition favours more than the prior does.
    let strong = classifier_free_guidance(cond.view(), uncond.view(), 3.0).unwrap();
    assert!(strong[[0, 2]] > at_zero[[0, 2]]);
    // The unconditional model ruling out a token the conditional allows is refused for w > 0.
    let err = classifier_free_guidance(uncond.view(), cond.view(), 1.0).unwrap_err();
    assert!(
        matches!(err, DiscreteError::InvalidProbability { what: "uncond_logits", ref index, .. } if index == &vec![0, 3]),
        "{err}"
    );
}

#[test]
fn the_exact_posterior_minimises_the_expected_generalized_kl() {
    // E_{x1 ~ q, x_t ~ p_t(. | x1)} sum_i l^i is a Bregman-type risk: the exact posterior beats any other.
    let table = fixed_table();
    for path in paths(3) {
        for (name, schedule) in schedules() {
            let t = 0.4;
            let expected_loss = |perturb: f64, rng: &mut rand_chacha::ChaCha8Rng| -> f64 {
                let mut risk = 0.0;
                for (x1, q) in table.sequences().rows().into_iter().zip(table.probabilities()) {
                    let support = conditional_support(&path, x1, 100).unwrap();
                    let mut probs = table.posterior(&path, &schedule, support.view(), t).unwrap();
                    probs.mapv_inplace(|p| p + perturb * rng.random::<f64>() * 0.3);
                    for mut row in probs.lanes_mut(Axis(2)) {
                        let total = row.sum();
                        row /= total;
                    }
                    let x1s = x1
                        .insert_axis(Axis(0))
                        .broadcast((support.nrows(), x1.len()))
                        .unwrap()
                        .to_owned();
                    let times = Array1::from_elem(support.nrows(), t);
                    let losses = generalized_kl(
                        &path,
                        &schedule,
                        probs.mapv(f64::ln).view(),
                        support.view(),
                        x1s.view(),
                        times.view(),
                    )
                    .unwrap();
                    for (row, x_t) in support.rows().into_iter().enumerate() {
                        let weight = path.conditional_probability(&schedule, x_t, x1, t).unwrap();
                        risk += q * weight * losses.row(row).sum();
                    }
                }
                risk
            };
            let mut rng = rng(3);
            let exact = expected_loss(0.0, &mut rng);
            for _ in 0..5 {
                let perturbed = expected_loss(1.0, &mut rng);
                assert!(
                    perturbed > exact + 1e-6,
                    "{:?} {name}: perturbed risk {perturbed} <= exact {exact}",
                    path.source()
                );
            }
        }
    }
}

#[test]
fn losses_are_infinite_only_where_the_posterior_rules_out_the_data() {
    let path = MixturePath::new(2, Source::Uniform).unwrap();
    let log_probs = array![[[0.0, f64::NEG_INFINITY]]];
    let schedule = common::cond_ot();
    let t = array![0.5];
    let ce = cross_entropy(&path, log_probs.view(), array![[1 as Token]].view()).unwrap();
    assert_eq!(ce[[0, 0]], f64::INFINITY);
    let at_data = generalized_kl(
        &path,
        &schedule,
        log_probs.view(),
        array![[0 as Token]].view(),
        array![[0 as Token]].view(),
        t.view(),
    )
    .unwrap();
    assert_eq!(
        at_data[[0, 0]],
        0.0,
        "posterior certain of the token already there: no loss"
    );
    let ruled_out = generalized_kl(
        &path,
        &schedule,
        log_probs.view(),
        array![[0 as Token]].view(),
        array![[1 as Token]].view(),
        t.view(),
    )
    .unwrap();
    assert_eq!(ruled_out[[0, 0]], f64::INFINITY);
}
