//! The continuous-time evidence lower bound of the mixture path for one sequence (Shaul et al. 2024, "Flow
//! Matching with General Discrete Paths: A Kinetic-Optimal Perspective", the ELBO of discrete flow matching, as
//! `flow_matching` evaluates it):
//!
//! `log p_1^theta(x1) >= ELBO(x1) = -int_0^1 E_{x_t ~ p_t(. | x1)} sum_i l^i(x_t, x1, t) dt`,
//!
//! with `l^i` the generalized KL term of [`crate::generalized_kl`]. It is minus the path-space KL divergence
//! between the conditional process (which starts at the source and ends at `x1`) and the model's CTMC started
//! at the source, so it needs `kappa_0 = 0` (the conditional path starts at the source) and `kappa_1 = 1` (it
//! ends at `x1`); other schedules are refused.
//!
//! The expectation over `x_t` is exact: `p_t(. | x1)` factorises and each position is either `x1^i` or a
//! source token, so the support has `2^L` sequences (masked source) or `V^L` (uniform source), all passed to the
//! posterior closure at once. The time integral is composite three-point Gauss-Legendre on the intervals of a
//! grid; its nodes are interior, so the rate's `1 / (1 - kappa_t)` is never evaluated at `t = 1`. With a uniform
//! source the integrand has a logarithmic singularity at `t = 1`; use a grid crowded there
//! ([`crate::graded_grid`]).
//!
//! The bound is tight with the exact posterior of a masked source (the marginal process reveals positions at
//! times independent of their values, so its bridge to `x1` is the conditional process), and not with a
//! uniform source, which can visit wrong tokens on its way: for one position and uniform data over `V` tokens
//! the exact-posterior ELBO is `-(V - 1) / V (ln V + 1)` for every schedule, against `ln q = -ln V`.

use ndarray::{Array2, Array3, ArrayView1, ArrayView2, s};

use crate::loss::position_loss;
use crate::path::{jump_coefficient, kappa_at};
use crate::rate::check_posterior;
use crate::{DiscreteError, KappaSchedule, MixturePath, Result, Source, Token, check};

/// Gauss-Legendre nodes and weights on `[-1, 1]`, three points: exact for polynomials of degree 5.
const GAUSS_LEGENDRE_3: [(f64, f64); 3] = [
    (-0.774_596_669_241_483_4, 5.0 / 9.0),
    (0.0, 8.0 / 9.0),
    (0.774_596_669_241_483_4, 5.0 / 9.0),
];

/// How far `kappa_0` and `kappa_1` may be from 0 and 1.
const END_TOLERANCE: f64 = 1e-12;

/// An ELBO of one sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Elbo {
    /// The lower bound on `ln p_1(x1)`, in nats (`-inf` when the posterior rules out `x1`).
    pub log_likelihood_bound: f64,
    /// The matching upper bound on the negative log-likelihood in bits per token,
    /// `-log_likelihood_bound / (L ln 2)`.
    pub bits_per_token: f64,
}

/// The support of `p_t(. | x1)` for `t` in `(0, 1)`: every sequence whose positions are `x1^i` or a source
/// token, `[n_support, length]`.
pub fn conditional_support(
    path: &MixturePath,
    x1: ArrayView1<Token>,
    max_states: usize,
) -> Result<Array2<Token>> {
    check::tokens("x1", x1, path.vocab_size())?;
    let per_position = match path.source() {
        Source::Masked => 2,
        Source::Uniform => path.vocab_size(),
    };
    let n_support =
        crate::exact::count_states(per_position, x1.len(), max_states, "the support of p_t(. | x1)")?;
    let digits = crate::all_sequences(per_position, x1.len(), max_states)?;
    Ok(match path.source() {
        Source::Masked => {
            let mask = path.vocab_size() as Token;
            Array2::from_shape_fn((n_support, x1.len()), |(row, position)| {
                if digits[[row, position]] == 0 {
                    x1[position]
                } else {
                    mask
                }
            })
        }
        Source::Uniform => digits,
    })
}

/// The ELBO of `x1` (data tokens, `[length]`) under the CTMC whose posterior is `posterior(x_t, t)`
/// (`[n_support, length, n_states]` probabilities for the `[n_support, length]` sequences it is given), by
/// composite Gauss-Legendre quadrature on `grid` (strictly increasing from 0 to 1). The enumeration of
/// `p_t(. | x1)` is refused above `max_states` sequences. Errors of the closure pass through unchanged.
pub fn elbo<S, F, E>(
    path: &MixturePath,
    schedule: &S,
    x1: ArrayView1<Token>,
    grid: &[f64],
    max_states: usize,
    mut posterior: F,
) -> Result<Elbo, E>
where
    S: KappaSchedule + ?Sized,
    F: FnMut(ArrayView2<Token>, f64) -> Result<Array3<f64>, E>,
    E: From<DiscreteError>,
{
    if x1.is_empty() {
        return Err(DiscreteError::Empty {
            what: "x1",
            item: "token",
        }
        .into());
    }
    check::grid(grid)?;
    if grid[0] != 0.0 || grid[grid.len() - 1] != 1.0 {
        return Err(DiscreteError::InvalidGrid {
            reason: format!(
                "the ELBO integrates over [0, 1], but the grid runs from {} to {}",
                grid[0],
                grid[grid.len() - 1]
            ),
        }
        .into());
    }
    check_ends(schedule)?;
    let support = conditional_support(path, x1, max_states)?;
    let mut integral = 0.0;
    for (time, weight) in quadrature_nodes(schedule, grid)? {
        let probs = posterior(support.view(), time)?;
        integral += weight * expected_loss(path, schedule, &support, x1, probs, time)?;
    }
    let log_likelihood_bound = -integral;
    Ok(Elbo {
        log_likelihood_bound,
        bits_per_token: -log_likelihood_bound / (x1.len() as f64 * std::f64::consts::LN_2),
    })
}

/// The nodes and weights `(t, w)` of the ELBO's time integral on `grid` (strictly increasing from 0 to 1):
/// composite three-point Gauss-Legendre, so `sum w f(t)` approximates `int_0^1 f(t) dt`, exact for polynomials
/// of degree 5 on each interval. Nodes where `kappa_t` has rounded to 1 before `t = 1` (cosine within about
/// `1e-8` of the end) are left out: their weight times the integrand there, `O(kappa' ln(1 - kappa))`, is below
/// what f64 resolves, and the rate's `1 / (1 - kappa_t)` is undefined. A Monte Carlo estimate of the ELBO on a
/// network's tensors (the engine's held-out evaluation) uses the same nodes.
pub fn quadrature_nodes<S: KappaSchedule + ?Sized>(schedule: &S, grid: &[f64]) -> Result<Vec<(f64, f64)>> {
    check::grid(grid)?;
    let mut nodes = Vec::with_capacity(3 * (grid.len() - 1));
    for pair in grid.windows(2) {
        let (start, width) = (pair[0], pair[1] - pair[0]);
        for (node, weight) in GAUSS_LEGENDRE_3 {
            let time = start + 0.5 * width * (1.0 + node);
            if kappa_at(schedule, time)?.value < 1.0 {
                nodes.push((time, 0.5 * width * weight));
            }
        }
    }
    Ok(nodes)
}

fn check_ends<S: KappaSchedule + ?Sized>(schedule: &S) -> Result<()> {
    for (time, expected) in [(0.0, 0.0), (1.0, 1.0)] {
        let kappa = kappa_at(schedule, time)?;
        if (kappa.value - expected).abs() > END_TOLERANCE {
            return Err(DiscreteError::InvalidKappa {
                time,
                value: kappa.value,
                derivative: kappa.derivative,
                reason: "the ELBO needs kappa_0 = 0 and kappa_1 = 1",
            });
        }
    }
    Ok(())
}

/// `E_{x_t ~ p_t(. | x1)} sum_i l^i(x_t, x1, t)` over the enumerated support.
fn expected_loss<S: KappaSchedule + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    support: &Array2<Token>,
    x1: ArrayView1<Token>,
    probs: Array3<f64>,
    time: f64,
) -> Result<f64> {
    check_posterior(path, probs.view(), support.view())?;
    let coefficient = jump_coefficient(schedule, time)?;
    let kappa = kappa_at(schedule, time)?.value;
    let log_probs = probs.mapv_into(f64::ln);
    let mut expectation = 0.0;
    for (state_idx, x_t) in support.rows().into_iter().enumerate() {
        let weight: f64 = x_t
            .iter()
            .zip(x1)
            .map(|(token, data)| path.position_probability(kappa, *token, *data))
            .product();
        if weight == 0.0 {
            continue;
        }
        let loss: f64 = x_t
            .iter()
            .zip(x1)
            .enumerate()
            .map(|(position, (token, data))| {
                position_loss(
                    coefficient,
                    log_probs.slice(s![state_idx, position, ..]),
                    *token,
                    *data,
                )
            })
            .sum();
        expectation += weight * loss;
    }
    Ok(expectation)
}
