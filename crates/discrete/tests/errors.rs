//! Bad input is refused with an error that names it, never a panic: token ids outside the vocabulary, shapes
//! that disagree, times outside [0, 1), rows that are not distributions, empty tables, bad schedules,
//! parameters and grids.

mod common;

use common::{cond_ot, fixed_table, rng};
use ferroflow_discrete::{
    Corrector, DataTable, DiscreteError, Kappa, MixturePath, Source, Token, all_sequences, corrector_rates,
    cross_entropy, generalized_kl, graded_grid, jump_probabilities, log_softmax, marginal_rates, softmax,
    uniform_grid,
};
use ndarray::{Array1, Array2, Array3, array};

fn masked() -> MixturePath {
    MixturePath::new(3, Source::Masked).unwrap()
}

fn uniform_probs(n_samples: usize, length: usize, n_states: usize) -> Array3<f64> {
    Array3::from_elem((n_samples, length, n_states), 1.0 / n_states as f64)
}

#[test]
fn tokens_outside_the_vocabulary_are_named() {
    let path = masked();
    let schedule = cond_ot();
    // The mask (3) is a valid state of x_t and x0 but not a data token.
    let x0 = array![[3 as Token, 3]];
    let err = path
        .sample_x_t(
            &schedule,
            x0.view(),
            array![[0, 3]].view(),
            array![0.5].view(),
            &mut rng(0),
        )
        .unwrap_err();
    assert_eq!(
        err,
        DiscreteError::TokenOutOfRange {
            what: "x1",
            index: vec![0, 1],
            token: 3,
            limit: 3
        }
    );
    let err = marginal_rates(
        &path,
        &schedule,
        uniform_probs(1, 2, 4).view(),
        array![[4 as Token, 0]].view(),
        0.5,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::TokenOutOfRange {
                what: "x_t",
                token: 4,
                limit: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("`x_t` holds token 4 at index [0, 0]"),
        "{err}"
    );
    let err = DataTable::new(3, array![[0, 5]], array![1.0]).unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::TokenOutOfRange {
                what: "sequences",
                token: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn shapes_that_disagree_are_named() {
    let path = masked();
    let schedule = cond_ot();
    let x_t = array![[0 as Token, 3]];
    // A posterior over V states instead of V + 1 (the mask forgotten).
    let err = marginal_rates(&path, &schedule, uniform_probs(1, 2, 3).view(), x_t.view(), 0.5).unwrap_err();
    assert!(
        matches!(err, DiscreteError::ShapeMismatch { what: "probs", ref found, .. } if found == &vec![1, 2, 3]),
        "{err}"
    );
    let err = generalized_kl(
        &path,
        &schedule,
        uniform_probs(1, 2, 4).mapv(f64::ln).view(),
        x_t.view(),
        array![[0 as Token, 1]].view(),
        array![0.5, 0.5].view(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DiscreteError::ShapeMismatch { what: "t", .. }),
        "{err}"
    );
    let err = fixed_table()
        .posterior(&path, &schedule, array![[0 as Token, 1, 2]].view(), 0.5)
        .unwrap_err();
    assert!(
        matches!(err, DiscreteError::ShapeMismatch { what: "x_t", .. }),
        "{err}"
    );
    let err = DataTable::new(3, array![[0, 1]], array![0.5, 0.5]).unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::ShapeMismatch {
                what: "probabilities",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn times_outside_the_open_interval_are_refused() {
    let path = masked();
    let schedule = cond_ot();
    let x_t = array![[0 as Token, 3]];
    let probs = uniform_probs(1, 2, 4);
    for t in [1.0, -0.1, f64::NAN] {
        let err = marginal_rates(&path, &schedule, probs.view(), x_t.view(), t).unwrap_err();
        assert!(
            matches!(err, DiscreteError::TimeOutOfRange { what: "t", .. }),
            "t = {t}: {err}"
        );
    }
    let err = generalized_kl(
        &path,
        &schedule,
        probs.mapv(f64::ln).view(),
        x_t.view(),
        array![[0 as Token, 1]].view(),
        array![1.0].view(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DiscreteError::TimeOutOfRange { time, .. } if time == 1.0),
        "{err}"
    );
}

#[test]
fn rows_that_are_not_distributions_are_named() {
    let path = masked();
    let schedule = cond_ot();
    let x_t = array![[0 as Token, 3]];
    let mut probs = uniform_probs(1, 2, 4);
    probs[[0, 1, 2]] = 0.5;
    let err = jump_probabilities(
        &path,
        &schedule,
        probs.view(),
        x_t.view(),
        0.2,
        0.1,
        &Corrector::Off,
    )
    .unwrap_err();
    assert!(
        matches!(err, DiscreteError::NotADistribution { what: "probs", ref index, .. } if index == &vec![0, 1]),
        "{err}"
    );
    let mut negative = uniform_probs(1, 2, 4);
    negative[[0, 0, 0]] = -0.25;
    negative[[0, 0, 1]] = 0.75;
    let err = marginal_rates(&path, &schedule, negative.view(), x_t.view(), 0.2).unwrap_err();
    assert!(
        matches!(err, DiscreteError::InvalidProbability { ref index, .. } if index == &vec![0, 0, 0]),
        "{err}"
    );
    // Logits passed where log-probabilities belong.
    let logits = Array3::from_elem((1, 2, 4), 0.3);
    let err = cross_entropy(&path, logits.view(), array![[0 as Token, 1]].view()).unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::InvalidProbability {
                what: "log_probs",
                ..
            }
        ),
        "{err}"
    );
    let err = DataTable::new(3, array![[0, 1], [1, 1]], array![0.5, 0.6]).unwrap_err();
    assert!(
        matches!(
            err,
            DiscreteError::NotADistribution {
                what: "probabilities",
                ..
            }
        ),
        "{err}"
    );
    let mut nan = uniform_probs(1, 2, 4);
    nan[[0, 1, 1]] = f64::NAN;
    let err = marginal_rates(&path, &schedule, nan.view(), x_t.view(), 0.2).unwrap_err();
    assert!(
        matches!(err, DiscreteError::NonFinite { ref index, .. } if index == &vec![0, 1, 1]),
        "{err}"
    );
}

#[test]
fn empty_tables_and_bad_parameters_are_refused() {
    assert!(matches!(
        DataTable::new(3, Array2::zeros((0, 2)), Array1::zeros(0)),
        Err(DiscreteError::Empty {
            what: "sequences",
            ..
        })
    ));
    assert!(matches!(
        DataTable::new(3, Array2::zeros((2, 0)), array![0.5, 0.5]),
        Err(DiscreteError::Empty { .. })
    ));
    assert!(matches!(
        MixturePath::new(0, Source::Uniform),
        Err(DiscreteError::InvalidParameter {
            name: "vocab_size",
            ..
        })
    ));
    let logits = array![[1.0, 2.0]];
    for temperature in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        assert!(matches!(
            softmax(logits.view(), temperature),
            Err(DiscreteError::InvalidParameter {
                name: "temperature",
                ..
            })
        ));
    }
    assert!(matches!(
        log_softmax(array![[f64::NEG_INFINITY, f64::NEG_INFINITY]].view(), 1.0),
        Err(DiscreteError::InvalidProbability { what: "logits", .. })
    ));
    assert!(matches!(
        uniform_grid(0),
        Err(DiscreteError::InvalidParameter { name: "n_steps", .. })
    ));
    assert!(matches!(
        graded_grid(4, 0.0),
        Err(DiscreteError::InvalidParameter { name: "power", .. })
    ));
    assert!(matches!(
        all_sequences(10, 30, 1 << 20),
        Err(DiscreteError::TooManyStates { .. })
    ));
    let corrector = Corrector::Power {
        scale: -1.0,
        t_exponent: 1.0,
        one_minus_t_exponent: 1.0,
    };
    assert!(matches!(
        corrector.coefficient(0.5),
        Err(DiscreteError::InvalidParameter { name: "scale", .. })
    ));
}

#[test]
fn bad_schedules_and_singular_correctors_are_refused() {
    let path = masked();
    let x_t = array![[3 as Token, 3]];
    let probs = fixed_table()
        .posterior(&path, &cond_ot(), x_t.view(), 0.0)
        .unwrap();
    let decreasing = |t: f64| Kappa {
        value: 1.0 - t,
        derivative: -1.0,
    };
    let err = marginal_rates(&path, &decreasing, probs.view(), x_t.view(), 0.5).unwrap_err();
    assert!(matches!(err, DiscreteError::InvalidKappa { .. }), "{err}");
    let beyond = |t: f64| Kappa {
        value: 2.0 * t,
        derivative: 2.0,
    };
    assert!(matches!(
        marginal_rates(&path, &beyond, probs.view(), x_t.view(), 0.75),
        Err(DiscreteError::InvalidKappa { .. })
    ));
    // A constant corrector coefficient at t = 0, where kappa = 0.
    let err = corrector_rates(&path, &cond_ot(), probs.view(), x_t.view(), 0.0, 1.0).unwrap_err();
    assert!(
        matches!(err, DiscreteError::SingularCorrector { time: 0.0, .. }),
        "{err}"
    );
    let constant = Corrector::Power {
        scale: 1.0,
        t_exponent: 0.0,
        one_minus_t_exponent: 0.0,
    };
    let err =
        jump_probabilities(&path, &cond_ot(), probs.view(), x_t.view(), 0.0, 0.1, &constant).unwrap_err();
    assert!(matches!(err, DiscreteError::SingularCorrector { .. }), "{err}");
    // The same corrector is fine once kappa > 0, and a t_exponent > 0 makes t = 0 fine too.
    jump_probabilities(&path, &cond_ot(), probs.view(), x_t.view(), 0.1, 0.1, &constant).unwrap();
    let vanishing = Corrector::Power {
        scale: 1.0,
        t_exponent: 1.0,
        one_minus_t_exponent: 1.0,
    };
    jump_probabilities(&path, &cond_ot(), probs.view(), x_t.view(), 0.0, 0.1, &vanishing).unwrap();
}

#[test]
fn impossible_states_have_no_posterior() {
    // [1, 2] is not in the fixed table, and with a masked source an unmasked token never changes.
    let path = masked();
    let err = fixed_table()
        .posterior(&path, &cond_ot(), array![[1 as Token, 2]].view(), 0.5)
        .unwrap_err();
    assert_eq!(
        err,
        DiscreteError::ImpossibleState {
            sequence: vec![1, 2],
            time: 0.5
        }
    );
    let extended = fixed_table()
        .posterior_for_sampling(&path, &cond_ot(), array![[1 as Token, 2]].view(), 0.5)
        .unwrap();
    assert_eq!(extended, array![[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]]);
}
