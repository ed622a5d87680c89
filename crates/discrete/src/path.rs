//! The factorised mixture path over token sequences (Gat et al. 2024, "Discrete Flow Matching", section 2.2):
//! for each position `i` independently,
//!
//! `p_t(x^i | x0, x1) = kappa_t delta_{x1^i}(x^i) + (1 - kappa_t) delta_{x0^i}(x^i)`,
//!
//! so `x_t^i` is the data token `x1^i` with probability `kappa_t` and the source token `x0^i` otherwise. With `x0`
//! drawn from the source `p0` independently of `x1`, `p_t(x^i | x1) = kappa_t delta_{x1^i} + (1 - kappa_t) p0`.
//!
//! Tokens are [`Token`] (`u32`): data tokens are `0..vocab_size`. Two sources ([`Source`]):
//! - [`Source::Masked`]: every source token is the mask token `vocab_size`, so the states a model sees are
//!   `0..=vocab_size` (`n_states = vocab_size + 1`); its posterior over `x1` puts no mass on the mask;
//! - [`Source::Uniform`]: source tokens are iid uniform over the data vocabulary (`n_states = vocab_size`).
//!
//! `kappa_t` comes from a [`KappaSchedule`], with `kappa_0 = 0` at the source and `kappa_1 = 1` at the data and
//! `kappa'_t >= 0`. The schedulers of `ferroflow-paths` serve as schedules through `kappa_t = alpha_t`,
//! `kappa'_t = d alpha_t / dt` (CondOT: `kappa_t = t`; polynomial with exponent `n`: `t^n`; cosine:
//! `sin(pi t / 2)`; linear VP: `t`). The VP scheduler has `alpha_0 > 0`, so its path does not start at the
//! source; the ELBO refuses it. This crate takes the schedule through its own one-method trait, implemented
//! for closures, so that it depends on no other workspace crate:
//!
//! ```
//! use ferroflow_discrete::{Kappa, KappaSchedule};
//! use ferroflow_paths::{CosineScheduler, Scheduler};
//!
//! let scheduler = CosineScheduler;
//! let schedule = |t: f64| Kappa { value: scheduler.alpha(t), derivative: scheduler.d_alpha(t) };
//! assert!((schedule.at(1.0 / 3.0).value - 0.5).abs() < 1e-12);
//! ```

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::Rng;

use crate::{DiscreteError, Result, check};

/// A token id. Data tokens are `0..vocab_size`; with a masked source the mask is `vocab_size`.
pub type Token = u32;

/// A schedule at one time: `kappa_t` (0 at the source, 1 at the data) and its time derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kappa {
    /// `kappa_t` in `[0, 1]`.
    pub value: f64,
    /// `d kappa_t / dt`, finite and `>= 0`.
    pub derivative: f64,
}

/// A mixture schedule `t -> (kappa_t, kappa'_t)` on `[0, 1]`; implemented for every `Fn(f64) -> Kappa`.
pub trait KappaSchedule {
    /// `kappa_t` and `d kappa_t / dt` at `t`.
    fn at(&self, t: f64) -> Kappa;
}

impl<F: Fn(f64) -> Kappa + ?Sized> KappaSchedule for F {
    fn at(&self, t: f64) -> Kappa {
        self(t)
    }
}

/// The schedule at `t`, refused unless `kappa` is in `[0, 1]` and its derivative finite and `>= 0` (a
/// decreasing `kappa` would need negative jump rates).
pub(crate) fn kappa_at<S: KappaSchedule + ?Sized>(schedule: &S, time: f64) -> Result<Kappa> {
    let kappa = schedule.at(time);
    let reason = if !(0.0..=1.0).contains(&kappa.value) {
        Some("kappa must lie in [0, 1]")
    } else if !kappa.derivative.is_finite() || kappa.derivative < 0.0 {
        Some("d kappa / dt must be finite and >= 0")
    } else {
        None
    };
    match reason {
        None => Ok(kappa),
        Some(reason) => Err(DiscreteError::InvalidKappa {
            time,
            value: kappa.value,
            derivative: kappa.derivative,
            reason,
        }),
    }
}

/// `kappa'_t / (1 - kappa_t)`, the jump coefficient of the mixture path, refused where `kappa_t = 1`.
pub(crate) fn jump_coefficient<S: KappaSchedule + ?Sized>(schedule: &S, time: f64) -> Result<f64> {
    let kappa = kappa_at(schedule, time)?;
    if kappa.value >= 1.0 {
        return Err(DiscreteError::InvalidKappa {
            time,
            value: kappa.value,
            derivative: kappa.derivative,
            reason: "rates divide by 1 - kappa, which is 0 here",
        });
    }
    Ok(kappa.derivative / (1.0 - kappa.value))
}

/// The source distribution of a mixture path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Every source token is the mask token `vocab_size` (an extra state).
    Masked,
    /// Source tokens are iid uniform over the data vocabulary `0..vocab_size`.
    Uniform,
}

/// A factorised mixture path over sequences of tokens from a vocabulary of `vocab_size` data tokens (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixturePath {
    vocab_size: usize,
    source: Source,
}

impl MixturePath {
    /// A path over `vocab_size >= 1` data tokens (`vocab_size + 1` must fit a [`Token`]) from `source`.
    pub fn new(vocab_size: usize, source: Source) -> Result<Self> {
        check::parameter("vocab_size", vocab_size as f64, "[1, 2^32 - 2]", |v| {
            v >= 1.0 && v < f64::from(Token::MAX)
        })?;
        Ok(Self { vocab_size, source })
    }

    /// The number of data tokens `V`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The source distribution.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The number of states a position can be in, and the size of a model's output: `V + 1` with a masked
    /// source, `V` with a uniform one.
    pub fn n_states(&self) -> usize {
        match self.source {
            Source::Masked => self.vocab_size + 1,
            Source::Uniform => self.vocab_size,
        }
    }

    /// The mask token `V` with a masked source; `None` with a uniform one.
    pub fn mask_token(&self) -> Option<Token> {
        match self.source {
            Source::Masked => Some(self.vocab_size as Token),
            Source::Uniform => None,
        }
    }

    /// `p0(token)`, the source probability of one position's state (0 for ids `>= n_states`).
    pub fn source_probability(&self, token: usize) -> f64 {
        match self.source {
            Source::Masked if token == self.vocab_size => 1.0,
            Source::Masked => 0.0,
            Source::Uniform if token < self.vocab_size => 1.0 / self.vocab_size as f64,
            Source::Uniform => 0.0,
        }
    }

    /// The source distribution `p0` as a vector over the `n_states` states.
    pub fn source_distribution(&self) -> Array1<f64> {
        Array1::from_shape_fn(self.n_states(), |token| self.source_probability(token))
    }

    /// `n_samples` source sequences of `length` tokens, `[n_samples, length]`.
    pub fn sample_source<R: Rng + ?Sized>(
        &self,
        n_samples: usize,
        length: usize,
        rng: &mut R,
    ) -> Array2<Token> {
        match self.source {
            Source::Masked => Array2::from_elem((n_samples, length), self.vocab_size as Token),
            Source::Uniform => Array2::from_shape_simple_fn((n_samples, length), || {
                rng.random_range(0..self.vocab_size) as Token
            }),
        }
    }

    /// Samples `x_t ~ p_t(. | x0, x1)` for a batch: `x0` and `x1` of shape `[n_samples, length]` (`x0` holds
    /// states `< n_states`, `x1` data tokens `< vocab_size`), one time `t` in `[0, 1]` per sample. Each position
    /// draws one uniform number `u` (row-major order) and takes `x1` where `u < kappa_t`, so a seeded `rng`
    /// gives the same `x_t`.
    pub fn sample_x_t<S: KappaSchedule + ?Sized, R: Rng + ?Sized>(
        &self,
        schedule: &S,
        x0: ArrayView2<Token>,
        x1: ArrayView2<Token>,
        t: ArrayView1<f64>,
        rng: &mut R,
    ) -> Result<Array2<Token>> {
        check::tokens("x0", x0, self.n_states())?;
        check::tokens("x1", x1, self.vocab_size)?;
        check::shape("x1", x1.shape(), x0.shape(), "the shape of x0")?;
        check::shape("t", t.shape(), &[x0.nrows()], "[n_samples]")?;
        let mut x_t = x0.to_owned();
        for (sample_idx, mut row) in x_t.rows_mut().into_iter().enumerate() {
            let time = check::time_closed("t", t[sample_idx])?;
            let kappa = kappa_at(schedule, time)?.value;
            for (position, token) in row.iter_mut().enumerate() {
                if rng.random::<f64>() < kappa {
                    *token = x1[[sample_idx, position]];
                }
            }
        }
        Ok(x_t)
    }

    /// `p_t(x^i | x1^i)` for one position, the source already averaged out:
    /// `kappa delta_{x1^i}(x^i) + (1 - kappa) p0(x^i)`.
    pub(crate) fn position_probability(&self, kappa: f64, x: Token, x1: Token) -> f64 {
        let hit = if x == x1 { kappa } else { 0.0 };
        hit + (1.0 - kappa) * self.source_probability(x as usize)
    }

    /// `p_t(x | x1) = prod_i p_t(x^i | x1^i)` for one sequence, at schedule value `kappa`.
    pub fn conditional_probability<S: KappaSchedule + ?Sized>(
        &self,
        schedule: &S,
        x_t: ArrayView1<Token>,
        x1: ArrayView1<Token>,
        t: f64,
    ) -> Result<f64> {
        check::tokens("x_t", x_t, self.n_states())?;
        check::tokens("x1", x1, self.vocab_size)?;
        check::shape("x1", x1.shape(), x_t.shape(), "the shape of x_t")?;
        let kappa = kappa_at(schedule, check::time_closed("t", t)?)?.value;
        Ok(x_t
            .iter()
            .zip(x1)
            .map(|(x, y)| self.position_probability(kappa, *x, *y))
            .product())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_position_of_the_conditional_path_is_a_distribution_over_the_states() {
        for source in [Source::Masked, Source::Uniform] {
            let path = MixturePath::new(4, source).unwrap();
            assert!((path.source_distribution().sum() - 1.0).abs() < 1e-15);
            for kappa in [0.0, 0.3, 1.0] {
                for x1 in 0..4 {
                    let total: f64 = (0..path.n_states())
                        .map(|x| path.position_probability(kappa, x as Token, x1))
                        .sum();
                    assert!((total - 1.0).abs() < 1e-15, "{source:?} kappa = {kappa}: {total}");
                }
            }
        }
    }
}
