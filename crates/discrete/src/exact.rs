//! Exact ground truth for small problems: a data distribution given as a table of sequences with probabilities,
//! and by full enumeration the path's marginal `p_t(x)` and marginal posterior `p_{1|t}(x1^i = y | x_t)`.
//!
//! With data `q(x1)` and the factorised conditional `p_t(x | x1) = prod_i [kappa_t delta_{x1^i}(x^i) +
//! (1 - kappa_t) p0(x^i)]` (see [`crate::path`]),
//!
//! `p_t(x) = sum_{x1} q(x1) p_t(x | x1)`, and
//! `p_{1|t}(x1^i = y | x) = sum_{x1 : x1^i = y} q(x1) p_t(x | x1) / p_t(x)`.
//!
//! Both cost one pass over the table per sequence `x`; [`all_sequences`] enumerates the state space, so tests
//! can check the Kolmogorov forward equation, ELBOs and samplers against these numbers.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::path::kappa_at;
use crate::{DiscreteError, KappaSchedule, MixturePath, Result, Token, check};

/// A data distribution on sequences of `length` data tokens: rows of `sequences` with their `probabilities`.
/// A sequence may appear more than once; its probability is the sum over its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DataTable {
    vocab_size: usize,
    sequences: Array2<Token>,
    probabilities: Array1<f64>,
}

impl DataTable {
    /// A table over data tokens `0..vocab_size`: `sequences` `[n_entries, length]` with `n_entries, length >= 1`,
    /// `probabilities` `[n_entries]`, non-negative and summing to one within
    /// [`crate::PROBABILITY_TOLERANCE`] (they are then divided by their sum).
    pub fn new(vocab_size: usize, sequences: Array2<Token>, probabilities: Array1<f64>) -> Result<Self> {
        if sequences.nrows() == 0 {
            return Err(DiscreteError::Empty {
                what: "sequences",
                item: "sequence",
            });
        }
        if sequences.ncols() == 0 {
            return Err(DiscreteError::Empty {
                what: "sequences",
                item: "position per sequence",
            });
        }
        check::tokens("sequences", sequences.view(), vocab_size)?;
        check::shape(
            "probabilities",
            probabilities.shape(),
            &[sequences.nrows()],
            "[n_entries]",
        )?;
        check::probability_rows("probabilities", probabilities.view())?;
        let probabilities = &probabilities / probabilities.sum();
        Ok(Self {
            vocab_size,
            sequences,
            probabilities,
        })
    }

    /// The number of data tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The sequence length `L`.
    pub fn length(&self) -> usize {
        self.sequences.ncols()
    }

    /// The table's sequences, `[n_entries, length]`.
    pub fn sequences(&self) -> ArrayView2<'_, Token> {
        self.sequences.view()
    }

    /// The table's probabilities, `[n_entries]`, summing to one.
    pub fn probabilities(&self) -> ArrayView1<'_, f64> {
        self.probabilities.view()
    }

    /// `q(x)`: the total probability of the rows equal to `x` (0 when there are none).
    pub fn probability(&self, x: ArrayView1<Token>) -> Result<f64> {
        check::shape("x", x.shape(), &[self.length()], "[length]")?;
        Ok(self
            .sequences
            .rows()
            .into_iter()
            .zip(&self.probabilities)
            .filter(|(row, _)| *row == x)
            .map(|(_, p)| p)
            .sum())
    }

    /// `ln q(x)` (`-inf` outside the support).
    pub fn log_probability(&self, x: ArrayView1<Token>) -> Result<f64> {
        Ok(self.probability(x)?.ln())
    }

    /// `n_samples` iid sequences from the table, `[n_samples, length]` (one uniform number per sample).
    pub fn sample<R: Rng + ?Sized>(&self, n_samples: usize, rng: &mut R) -> Array2<Token> {
        let mut samples = Array2::zeros((n_samples, self.length()));
        for mut row in samples.rows_mut() {
            let u: f64 = rng.random();
            let mut cumulative = 0.0;
            // The last row catches round-off in the cumulative sum.
            let mut entry = self.probabilities.len() - 1;
            for (idx, p) in self.probabilities.iter().enumerate() {
                cumulative += p;
                if u < cumulative {
                    entry = idx;
                    break;
                }
            }
            row.assign(&self.sequences.row(entry));
        }
        samples
    }

    /// The same distribution as a vector over all `n_states^length` sequences in the order of
    /// [`all_sequences`] (row `k` is the sequence whose digits in base `n_states` spell `k`).
    pub fn as_vector(&self, n_states: usize) -> Result<Array1<f64>> {
        let n_sequences = count_states(n_states, self.length(), usize::MAX, "the table's state space")?;
        check::tokens("sequences", self.sequences.view(), n_states)?;
        let mut vector = Array1::zeros(n_sequences);
        for (row, p) in self.sequences.rows().into_iter().zip(&self.probabilities) {
            vector[sequence_index(row, n_states)] += p;
        }
        Ok(vector)
    }

    fn check_path(&self, path: &MixturePath) -> Result<()> {
        if path.vocab_size() == self.vocab_size {
            Ok(())
        } else {
            Err(DiscreteError::InvalidParameter {
                name: "vocab_size",
                value: path.vocab_size() as f64,
                allowed: "the table's vocabulary size",
            })
        }
    }

    /// The unnormalised posterior weights `q(x1_j) p_t(x | x1_j)` of the table's rows.
    fn weights(&self, path: &MixturePath, kappa: f64, x: ArrayView1<Token>) -> Array1<f64> {
        Array1::from_iter(
            self.sequences
                .rows()
                .into_iter()
                .zip(&self.probabilities)
                .map(|(x1, q)| {
                    q * x
                        .iter()
                        .zip(x1)
                        .map(|(token, data)| path.position_probability(kappa, *token, *data))
                        .product::<f64>()
                }),
        )
    }

    fn check_sequences(&self, path: &MixturePath, x_t: ArrayView2<Token>) -> Result<()> {
        self.check_path(path)?;
        check::tokens("x_t", x_t, path.n_states())?;
        check::shape(
            "x_t",
            x_t.shape(),
            &[x_t.nrows(), self.length()],
            "[n_samples, length]",
        )
    }

    /// The path's marginal `p_t(x)` for each row of `x_t` (`[n_samples, length]`), `t` in `[0, 1]`.
    pub fn marginal<S: KappaSchedule + ?Sized>(
        &self,
        path: &MixturePath,
        schedule: &S,
        x_t: ArrayView2<Token>,
        t: f64,
    ) -> Result<Array1<f64>> {
        self.check_sequences(path, x_t)?;
        let kappa = kappa_at(schedule, check::time_closed("t", t)?)?.value;
        Ok(Array1::from_iter(
            x_t.rows().into_iter().map(|x| self.weights(path, kappa, x).sum()),
        ))
    }

    /// Writes `p_{1|t}(. | x)` into `out` (`[length, n_states]`, zeroed); `false` when `p_t(x) = 0`.
    fn posterior_row(
        &self,
        path: &MixturePath,
        kappa: f64,
        x: ArrayView1<Token>,
        mut out: ArrayViewMut2<f64>,
    ) -> bool {
        let weight = |x1: ArrayView1<Token>, q: f64| -> f64 {
            q * x
                .iter()
                .zip(x1)
                .map(|(token, data)| path.position_probability(kappa, *token, *data))
                .product::<f64>()
        };
        let rows = || self.sequences.rows().into_iter().zip(&self.probabilities);
        let total: f64 = rows().map(|(x1, q)| weight(x1, *q)).sum();
        if total <= 0.0 {
            return false;
        }
        for (x1, q) in rows() {
            let share = weight(x1, *q) / total;
            for (position, token) in x1.iter().enumerate() {
                out[[position, *token as usize]] += share;
            }
        }
        true
    }

    /// The exact marginal posterior `p_{1|t}(x1^i = y | x_t)` for each row of `x_t` (`[n_samples, length]`),
    /// as `[n_samples, length, n_states]` (zero on the mask). A row the path gives probability zero is refused
    /// ([`DiscreteError::ImpossibleState`]).
    pub fn posterior<S: KappaSchedule + ?Sized>(
        &self,
        path: &MixturePath,
        schedule: &S,
        x_t: ArrayView2<Token>,
        t: f64,
    ) -> Result<Array3<f64>> {
        self.check_sequences(path, x_t)?;
        let time = check::time_closed("t", t)?;
        let kappa = kappa_at(schedule, time)?.value;
        let mut posterior = Array3::zeros((x_t.nrows(), self.length(), path.n_states()));
        for (x, out) in x_t.rows().into_iter().zip(posterior.outer_iter_mut()) {
            if !self.posterior_row(path, kappa, x, out) {
                return Err(DiscreteError::ImpossibleState {
                    sequence: x.iter().map(|token| u64::from(*token)).collect(),
                    time,
                });
            }
        }
        Ok(posterior)
    }

    /// [`DataTable::posterior`], extended to sequences the path gives probability zero: at such a sequence
    /// every position keeps its token if it is a data token, and a masked position gets the table's
    /// per-position marginal. The Euler sampler can reach such sequences (two positions jumping in one step
    /// to tokens that are each possible but not jointly) and needs some valid rate there; the true process
    /// never visits them, so any choice keeps the sampler exact in the limit of small steps.
    pub fn posterior_for_sampling<S: KappaSchedule + ?Sized>(
        &self,
        path: &MixturePath,
        schedule: &S,
        x_t: ArrayView2<Token>,
        t: f64,
    ) -> Result<Array3<f64>> {
        self.check_sequences(path, x_t)?;
        let kappa = kappa_at(schedule, check::time_closed("t", t)?)?.value;
        let mut posterior = Array3::zeros((x_t.nrows(), self.length(), path.n_states()));
        for (x, mut out) in x_t.rows().into_iter().zip(posterior.outer_iter_mut()) {
            if self.posterior_row(path, kappa, x, out.view_mut()) {
                continue;
            }
            for (position, token) in x.iter().enumerate() {
                if (*token as usize) < self.vocab_size {
                    out[[position, *token as usize]] = 1.0;
                } else {
                    for (data, q) in self.sequences.column(position).iter().zip(&self.probabilities) {
                        out[[position, *data as usize]] += q;
                    }
                }
            }
        }
        Ok(posterior)
    }
}

/// `n_states^length`, refused above `limit` (and on overflow).
pub(crate) fn count_states(
    n_states: usize,
    length: usize,
    limit: usize,
    what: &'static str,
) -> Result<usize> {
    let states = (0..length).try_fold(1_u128, |acc, _| acc.checked_mul(n_states as u128));
    match states {
        Some(states) if states <= limit as u128 => Ok(states as usize),
        _ => Err(DiscreteError::TooManyStates {
            what,
            states: states.unwrap_or(u128::MAX),
            limit,
        }),
    }
}

/// The index of `x` in the order of [`all_sequences`]: the number whose base-`n_states` digits are `x`, the
/// first position most significant.
pub fn sequence_index(x: ArrayView1<Token>, n_states: usize) -> usize {
    x.iter().fold(0, |acc, token| acc * n_states + *token as usize)
}

/// Every sequence of `length` states from `0..n_states`, `[n_states^length, length]`, in lexicographic order
/// (row `k` spells `k` in base `n_states`); refused when there would be more than `limit` rows.
pub fn all_sequences(n_states: usize, length: usize, limit: usize) -> Result<Array2<Token>> {
    check::parameter("n_states", n_states as f64, "[1, 2^32 - 1]", |n| {
        n >= 1.0 && n <= f64::from(Token::MAX)
    })?;
    let n_sequences = count_states(n_states, length, limit, "all sequences")?;
    Ok(Array2::from_shape_fn((n_sequences, length), |(row, position)| {
        let digit_weight = n_states.pow((length - 1 - position) as u32);
        ((row / digit_weight) % n_states) as Token
    }))
}
