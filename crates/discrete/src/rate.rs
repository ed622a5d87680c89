//! From posteriors to CTMC rates, per position (Gat et al. 2024, "Discrete Flow Matching", theorem 3 and
//! section 2.3; Campbell et al. 2024 for the factorised CTMC).
//!
//! A factorised rate changes one position at a time; `rates[b, i, y]` is the rate at which position `i` of
//! sequence `b` jumps from its current state `x^i` to `y`, and the diagonal entry `rates[b, i, x^i]` is minus the
//! sum of the others, so that each row sums to zero.
//!
//! - **Marginal rate** of the mixture path, from the posterior `p_{1|t}(. | x)` over data tokens:
//!   `u_t(y, x^i) = kappa'_t / (1 - kappa_t) [p_{1|t}(y | x) - delta_{x^i}(y)]`. It is the posterior mean of the
//!   conditional rate `kappa'_t / (1 - kappa_t) [delta_{x1^i}(y) - delta_{x^i}(y)]`, which generates the
//!   conditional path for any source.
//! - **Divergence-free corrector rate**: the conditional path is also generated, backwards in time, by
//!   `v_t(y, x^i | x1) = kappa'_t / kappa_t [delta_{x^i}(y) - p0(y)]` (not a valid rate on its own). The
//!   difference of the forward and the backward generators has zero probability flux, and its posterior mean is
//!   `kappa'_t / (kappa_t (1 - kappa_t)) [kappa_t p_{1|t}(y | x) + (1 - kappa_t) p0(y) - delta_{x^i}(y)]`,
//!   a valid rate (the same term as the divergence-free part of `flow_matching`'s mixture Euler solver). The
//!   corrector adds `beta_t` times it: sampling with it keeps the marginal `p_t` for every `beta_t >= 0`.

use ndarray::{Array3, ArrayView2, ArrayView3};

use crate::path::{jump_coefficient, kappa_at};
use crate::{DiscreteError, KappaSchedule, MixturePath, Result, Token, check};

/// Checks a batch of posteriors `[n_samples, length, n_states]` against a batch of states `[n_samples, length]`.
pub(crate) fn check_posterior(
    path: &MixturePath,
    probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
) -> Result<()> {
    let (n_samples, length) = x_t.dim();
    check::tokens("x_t", x_t, path.n_states())?;
    check::shape(
        "probs",
        probs.shape(),
        &[n_samples, length, path.n_states()],
        "[n_samples, length, n_states]",
    )?;
    check::probability_rows("probs", probs)
}

/// `rates[b, i, y] = scale [target[b, i, y] - delta_{x^i}(y)]`, where `target` rows are distributions.
fn rates_towards(scale: f64, target: &Array3<f64>, x_t: ArrayView2<Token>) -> Array3<f64> {
    let mut rates = target * scale;
    for ((sample_idx, position), token) in x_t.indexed_iter() {
        rates[[sample_idx, position, *token as usize]] -= scale;
    }
    rates
}

/// The marginal rates `u_t(y, x^i)` of the mixture path from posteriors `probs` (`[n_samples, length,
/// n_states]`, rows summing to one) at states `x_t` (`[n_samples, length]`), time `t` in `[0, 1)`.
pub fn marginal_rates<S: KappaSchedule + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
    t: f64,
) -> Result<Array3<f64>> {
    check_posterior(path, probs, x_t)?;
    let coefficient = jump_coefficient(schedule, check::time_before_end("t", t)?)?;
    Ok(rates_towards(coefficient, &probs.to_owned(), x_t))
}

/// The divergence-free corrector rates at coefficient `beta` `>= 0` (see the module documentation):
/// `beta kappa'_t / (kappa_t (1 - kappa_t)) [kappa_t p_{1|t}(y | x) + (1 - kappa_t) p0(y) - delta_{x^i}(y)]`.
/// `beta = 0` gives zero rates at every time; `beta > 0` is refused where `kappa_t = 0`
/// ([`DiscreteError::SingularCorrector`]).
pub fn corrector_rates<S: KappaSchedule + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
    t: f64,
    beta: f64,
) -> Result<Array3<f64>> {
    check_posterior(path, probs, x_t)?;
    let time = check::time_before_end("t", t)?;
    let beta = check::parameter("beta", beta, "[0, inf)", |b| b.is_finite() && b >= 0.0)?;
    if beta == 0.0 {
        return Ok(Array3::zeros(probs.raw_dim()));
    }
    let coefficient = jump_coefficient(schedule, time)?;
    let kappa = kappa_at(schedule, time)?.value;
    if kappa <= 0.0 {
        return Err(DiscreteError::SingularCorrector {
            time,
            coefficient: beta,
        });
    }
    let source = path.source_distribution();
    let target = probs.mapv(|p| kappa * p) + &source * (1.0 - kappa);
    Ok(rates_towards(beta * coefficient / kappa, &target, x_t))
}

/// Checks that `rates` (`[n_samples, length, n_states]`) are a valid factorised rate at `x_t`: every
/// off-diagonal entry `>= -tolerance`, every row summing to zero within `tolerance`. Returns the first violation
/// as [`DiscreteError::InvalidProbability`] (a negative jump rate) or [`DiscreteError::NotADistribution`] (a row
/// sum, reported as `1 + sum`).
pub fn validate_rates(rates: ArrayView3<f64>, x_t: ArrayView2<Token>, tolerance: f64) -> Result<()> {
    let (n_samples, length) = x_t.dim();
    let n_states = rates.shape().get(2).copied().unwrap_or(0);
    check::shape(
        "rates",
        rates.shape(),
        &[n_samples, length, n_states],
        "[n_samples, length, n_states]",
    )?;
    check::tokens("x_t", x_t, n_states)?;
    check::finite("rates", rates, false)?;
    let tolerance = check::parameter("tolerance", tolerance, "[0, inf)", |t| t >= 0.0)?;
    for ((sample_idx, position), token) in x_t.indexed_iter() {
        let row = rates.slice(ndarray::s![sample_idx, position, ..]);
        for (state, rate) in row.iter().enumerate() {
            if state != *token as usize && *rate < -tolerance {
                return Err(DiscreteError::InvalidProbability {
                    what: "rates",
                    index: vec![sample_idx, position, state],
                    value: *rate,
                    reason: "a negative off-diagonal jump rate",
                });
            }
        }
        let sum = row.sum();
        if sum.abs() > tolerance {
            return Err(DiscreteError::NotADistribution {
                what: "rates (each row plus 1)",
                index: vec![sample_idx, position],
                sum: 1.0 + sum,
                tolerance,
            });
        }
    }
    Ok(())
}
