//! Shared fixtures for the discrete suites: seeded random numbers, the schedules under test (the schedulers of
//! `ferroflow-paths` read as `kappa_t = alpha_t`), small data tables, the full generator of a factorised rate on
//! an enumerated state space, and distances between distributions.

#![allow(dead_code)]

use ferroflow_discrete::{
    DataTable, Kappa, MixturePath, Source, Token, all_sequences, marginal_rates, sequence_index,
};
use ferroflow_paths::{CondOtScheduler, CosineScheduler, PolynomialScheduler, Scheduler};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, Axis};
use proptest::test_runner::{Config, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A proptest configuration with a fixed seed and no persistence files, so every run checks the same cases.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x0d15_c7e7),
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A boxed schedule, so that lists of them can be iterated over.
pub type BoxedSchedule = Box<dyn Fn(f64) -> Kappa>;

/// A `ferroflow-paths` scheduler as a mixture schedule: `kappa_t = alpha_t`, `kappa'_t = d alpha_t / dt`.
pub fn from_scheduler<S: Scheduler + 'static>(scheduler: S) -> BoxedSchedule {
    Box::new(move |t| Kappa {
        value: scheduler.alpha(t),
        derivative: scheduler.d_alpha(t),
    })
}

/// The schedules under test, with names: CondOT (`kappa = t`), polynomial `t^2`, cosine.
pub fn schedules() -> Vec<(&'static str, BoxedSchedule)> {
    vec![
        ("cond_ot", from_scheduler(CondOtScheduler)),
        (
            "polynomial_2",
            from_scheduler(PolynomialScheduler::new(2.0).unwrap()),
        ),
        ("cosine", from_scheduler(CosineScheduler)),
    ]
}

pub fn cond_ot() -> BoxedSchedule {
    from_scheduler(CondOtScheduler)
}

/// Both sources over `vocab_size` tokens.
pub fn paths(vocab_size: usize) -> Vec<MixturePath> {
    vec![
        MixturePath::new(vocab_size, Source::Masked).unwrap(),
        MixturePath::new(vocab_size, Source::Uniform).unwrap(),
    ]
}

/// A random table over all `vocab_size^length` sequences: each kept with probability `keep`, weights uniform
/// in (0.05, 1), normalised (at least one sequence is always kept).
pub fn random_table(vocab_size: usize, length: usize, keep: f64, rng: &mut ChaCha8Rng) -> DataTable {
    let all = all_sequences(vocab_size, length, 1 << 20).unwrap();
    let mut rows = Vec::new();
    let mut weights = Vec::new();
    for (idx, row) in all.rows().into_iter().enumerate() {
        let kept = rng.random::<f64>() < keep || (idx == all.nrows() - 1 && rows.is_empty());
        if kept {
            rows.extend(row.iter().copied());
            weights.push(0.05 + 0.95 * rng.random::<f64>());
        }
    }
    let sequences = Array2::from_shape_vec((weights.len(), length), rows).unwrap();
    let weights = Array1::from(weights);
    let total = weights.sum();
    DataTable::new(vocab_size, sequences, weights / total).unwrap()
}

/// A fixed table over `V = 3`, `L = 2` with uneven weights and two sequences left out, used where a test
/// needs one concrete distribution.
pub fn fixed_table() -> DataTable {
    let sequences = ndarray::array![[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 2]];
    let weights = ndarray::array![0.05, 0.20, 0.10, 0.15, 0.30, 0.12, 0.08];
    DataTable::new(3, sequences, weights).unwrap()
}

/// The full generator `Q[x, z]` of the path's marginal rate at `t` on all `n_states^length` sequences, built
/// from the exact posterior: one position changes per jump, the diagonal makes rows sum to zero. Rows of
/// states with `p_t(x) = 0` are left zero (they carry no probability flux).
pub fn exact_generator(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> Kappa,
    table: &DataTable,
    t: f64,
    rates_of: impl Fn(ArrayView2<Token>, Array3<f64>) -> Array3<f64>,
) -> Array2<f64> {
    let states = all_sequences(path.n_states(), table.length(), 1 << 16).unwrap();
    let marginal = table.marginal(path, schedule, states.view(), t).unwrap();
    let n = states.nrows();
    let mut generator = Array2::zeros((n, n));
    for (idx, x) in states.rows().into_iter().enumerate() {
        if marginal[idx] == 0.0 {
            continue;
        }
        let x = x.insert_axis(Axis(0));
        let posterior = table.posterior(path, schedule, x, t).unwrap();
        let rates = rates_of(x, posterior);
        for position in 0..table.length() {
            for state in 0..path.n_states() {
                let rate = rates[[0, position, state]];
                if state as Token == x[[0, position]] {
                    generator[[idx, idx]] += rate;
                } else {
                    let mut z = x.row(0).to_owned();
                    z[position] = state as Token;
                    generator[[idx, sequence_index(z.view(), path.n_states())]] += rate;
                }
            }
        }
    }
    generator
}

/// The marginal rate's generator (see [`exact_generator`]).
pub fn marginal_generator(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> Kappa,
    table: &DataTable,
    t: f64,
) -> Array2<f64> {
    exact_generator(path, schedule, table, t, |x, posterior| {
        marginal_rates(path, schedule, posterior.view(), x, t).unwrap()
    })
}

/// `p_t` on all `n_states^length` sequences.
pub fn marginal_vector(
    path: &MixturePath,
    schedule: &dyn Fn(f64) -> Kappa,
    table: &DataTable,
    t: f64,
) -> Array1<f64> {
    let states = all_sequences(path.n_states(), table.length(), 1 << 16).unwrap();
    table.marginal(path, schedule, states.view(), t).unwrap()
}

/// The empirical distribution of the rows of `samples` over all `n_states^length` sequences.
pub fn histogram(samples: ArrayView2<Token>, n_states: usize) -> Array1<f64> {
    let n_sequences = n_states.pow(samples.ncols() as u32);
    let mut counts = Array1::zeros(n_sequences);
    for row in samples.rows() {
        counts[sequence_index(row, n_states)] += 1.0;
    }
    counts / samples.nrows() as f64
}

/// Total variation `0.5 sum |p - q|`.
pub fn total_variation(p: ArrayView1<f64>, q: ArrayView1<f64>) -> f64 {
    0.5 * (&p - &q).mapv(f64::abs).sum()
}

pub fn assert_close(found: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (found - expected).abs() <= tolerance,
        "{what}: found {found}, expected {expected} (difference {}, tolerance {tolerance})",
        (found - expected).abs()
    );
}
