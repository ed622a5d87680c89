//! Training losses of discrete flow matching with a posterior-parameterised model, on arrays, so that a tensor
//! implementation can be checked against them. Both take log-posteriors `log p_{1|t}(y | x_t)` of shape
//! `[n_samples, length, n_states]` (for example [`crate::log_softmax`] of a network's logits) and return one
//! value per position, `[n_samples, length]`; the caller chooses how to average.
//!
//! - [`cross_entropy`]: `-log p_{1|t}(x1^i | x_t)`, the posterior's cross-entropy against the data token (the
//!   training loss of Gat et al. 2024, "Discrete Flow Matching", summed over positions). It does not depend on
//!   `t` or `x_t` except through the posterior the model computed from them.
//! - [`generalized_kl`]: the generalized KL divergence between the conditional rate and the model's rate
//!   (Shaul et al. 2024, "Flow Matching with General Discrete Paths: A Kinetic-Optimal Perspective", section on
//!   the ELBO and the generalized KL loss; the `MixturePathGeneralizedKL` loss of `flow_matching`). For rates
//!   `u` (conditional, `u(y) = c [delta_{x1^i}(y) - delta_{x^i}(y)]`) and `u_theta` (the model's,
//!   `c [p_{1|t}(y | x) - delta_{x^i}(y)]`), `c = kappa'_t / (1 - kappa_t)`,
//!   `D(u, u_theta) = sum_{y != x^i} [u(y) log(u(y) / u_theta(y)) - u(y) + u_theta(y)]`, which works out to
//!
//!   `l^i = -c [p_{1|t}(x_t^i | x_t) - delta + (1 - delta) log p_{1|t}(x1^i | x_t)]`, `delta = delta_{x1^i}(x_t^i)`:
//!
//!   `c (1 - p_{1|t}(x_t^i))` at a position that already holds its data token, and
//!   `-c [p_{1|t}(x_t^i) + log p_{1|t}(x1^i)]` elsewhere. Each term is `>= 0`. Integrated over `t` and
//!   averaged over `x_t ~ p_t(. | x1)` it is the negative ELBO ([`crate::elbo()`]).

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView3};

use crate::path::jump_coefficient;
use crate::{KappaSchedule, MixturePath, Result, Token, check};

fn check_log_posterior(path: &MixturePath, log_probs: ArrayView3<f64>, x1: ArrayView2<Token>) -> Result<()> {
    let (n_samples, length) = x1.dim();
    check::tokens("x1", x1, path.vocab_size())?;
    check::shape(
        "log_probs",
        log_probs.shape(),
        &[n_samples, length, path.n_states()],
        "[n_samples, length, n_states]",
    )?;
    check::log_probability_rows("log_probs", log_probs)
}

/// `-log p_{1|t}(x1^i | x_t)` per position: `log_probs` `[n_samples, length, n_states]`, `x1`
/// `[n_samples, length]` (data tokens). `+inf` where the posterior gives the data token probability 0.
pub fn cross_entropy(
    path: &MixturePath,
    log_probs: ArrayView3<f64>,
    x1: ArrayView2<Token>,
) -> Result<Array2<f64>> {
    check_log_posterior(path, log_probs, x1)?;
    Ok(Array2::from_shape_fn(x1.dim(), |(sample_idx, position)| {
        -log_probs[[sample_idx, position, x1[[sample_idx, position]] as usize]]
    }))
}

/// The generalized KL loss of the mixture path per position (formula in the module documentation):
/// `log_probs` `[n_samples, length, n_states]`, `x_t` and `x1` `[n_samples, length]`, one time `t` in `[0, 1)`
/// per sample. `+inf` where a position that does not hold its data token gets posterior 0 on it.
pub fn generalized_kl<S: KappaSchedule + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    log_probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
    x1: ArrayView2<Token>,
    t: ArrayView1<f64>,
) -> Result<Array2<f64>> {
    check_log_posterior(path, log_probs, x1)?;
    check::tokens("x_t", x_t, path.n_states())?;
    check::shape("x_t", x_t.shape(), x1.shape(), "the shape of x1")?;
    check::shape("t", t.shape(), &[x1.nrows()], "[n_samples]")?;
    check::times_before_end("t", t)?;
    let mut losses = Array2::zeros(x1.dim());
    for ((sample_idx, position), loss) in losses.indexed_iter_mut() {
        let coefficient = jump_coefficient(schedule, t[sample_idx])?;
        let row = log_probs.slice(ndarray::s![sample_idx, position, ..]);
        *loss = position_loss(
            coefficient,
            row,
            x_t[[sample_idx, position]],
            x1[[sample_idx, position]],
        );
    }
    Ok(losses)
}

/// One position's generalized KL term; `log_probs` is one validated row.
pub(crate) fn position_loss(coefficient: f64, log_probs: ArrayView1<f64>, x_t: Token, x1: Token) -> f64 {
    if coefficient == 0.0 {
        // Neither the conditional nor the model's rate moves anything: the divergence is 0 (and 0 * inf
        // would be NaN where log p = -inf).
        return 0.0;
    }
    let stay = log_probs[x_t as usize].exp();
    if x_t == x1 {
        coefficient * (1.0 - stay).max(0.0)
    } else {
        -coefficient * (stay + log_probs[x1 as usize])
    }
}
