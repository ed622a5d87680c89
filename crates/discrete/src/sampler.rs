//! Sampling the mixture path's CTMC with Euler steps (Gat et al. 2024, "Discrete Flow Matching", section 2.3;
//! Campbell et al. 2024): each position jumps independently during a step of size `h`,
//!
//! `P(x^i -> y) = h Q_t(y, x^i)` for `y != x^i`, `P(stay) = 1 - h sum_{y != x^i} Q_t(y, x^i)`,
//!
//! where `Q_t` is the marginal rate built from a posterior ([`crate::marginal_rates`]) plus, optionally, the
//! divergence-free corrector rate ([`crate::corrector_rates`]) with a coefficient schedule [`Corrector`].
//!
//! **Cap.** When the total jump probability `h lambda` (`lambda = sum_{y != x^i} Q_t(y, x^i)`) exceeds one, the
//! step jumps for sure and picks `y` with probability `Q_t(y, x^i) / lambda`: the jump probabilities are scaled
//! down to sum to one and the stay probability is 0. Without the corrector and with `kappa_t = t` (CondOT), the
//! last step from `1 - h` to 1 has `h kappa' / (1 - kappa) = 1`, so it draws every position from the posterior
//! exactly and ends on data tokens; schedules whose jump coefficient grows more slowly near `t = 1` (polynomial
//! with exponent above 1) leave a few source tokens at `t = 1`, an Euler error that vanishes with `h`.
//!
//! [`euler_step`] takes the posterior as an array (a network's softmax output), so the engine can call it;
//! [`sample`] runs the steps over a grid of times, asking a closure for the posterior at each.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, s};
use rand::Rng;

use crate::rate::check_posterior;
use crate::{KappaSchedule, MixturePath, Result, Token, check, corrector_rates, marginal_rates};

/// How much divergence-free corrector rate the sampler adds: a closed choice of coefficient schedules
/// `beta_t >= 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corrector {
    /// No corrector: the plain marginal rate.
    Off,
    /// `beta_t = scale t^t_exponent (1 - t)^one_minus_t_exponent`, the form of the corrector schedules of
    /// Gat et al. 2024 (section 2.3). The corrector rate divides by `kappa_t`, so to start sampling at `t = 0`
    /// (where `kappa_0 = 0`) `t_exponent` must be `> 0`, which makes `beta_0 = 0`. With `kappa_t = t` and both
    /// exponents 1, the corrector's jump coefficient is the constant `scale` for `t > 0`.
    Power {
        /// `scale >= 0`.
        scale: f64,
        /// The exponent of `t`, `>= 0`.
        t_exponent: f64,
        /// The exponent of `1 - t`, `>= 0`.
        one_minus_t_exponent: f64,
    },
}

impl Corrector {
    /// `beta_t` at `t` in `[0, 1]`.
    pub fn coefficient(&self, t: f64) -> Result<f64> {
        let t = check::time_closed("t", t)?;
        match *self {
            Self::Off => Ok(0.0),
            Self::Power {
                scale,
                t_exponent,
                one_minus_t_exponent,
            } => {
                let valid = |v: f64| v.is_finite() && v >= 0.0;
                check::parameter("scale", scale, "[0, inf)", valid)?;
                check::parameter("t_exponent", t_exponent, "[0, inf)", valid)?;
                check::parameter("one_minus_t_exponent", one_minus_t_exponent, "[0, inf)", valid)?;
                Ok(scale * t.powf(t_exponent) * (1.0 - t).powf(one_minus_t_exponent))
            }
        }
    }
}

/// `n_steps + 1` equally spaced times from 0 to 1 (the last exactly 1), `n_steps >= 1`.
pub fn uniform_grid(n_steps: usize) -> Result<Vec<f64>> {
    check::parameter("n_steps", n_steps as f64, "[1, inf)", |n| n >= 1.0)?;
    Ok((0..=n_steps)
        .map(|step| {
            if step == n_steps {
                1.0
            } else {
                step as f64 / n_steps as f64
            }
        })
        .collect())
}

/// `n_steps + 1` times from 0 to 1 crowded towards `t = 1`: `t_k = 1 - (1 - k / n_steps)^power`, `power` in
/// `(0, inf)` (1 is [`uniform_grid`]). The ELBO integrand of a uniform source has a logarithmic singularity at
/// `t = 1` (the posterior of a wrong token vanishes like `1 - kappa_t`), which a uniform grid resolves only to
/// `O(h log h)`; with `power = 3` the last interval shrinks to `n_steps^-3` and the quadrature converges fast.
pub fn graded_grid(n_steps: usize, power: f64) -> Result<Vec<f64>> {
    check::parameter("n_steps", n_steps as f64, "[1, inf)", |n| n >= 1.0)?;
    let power = check::parameter("power", power, "(0, inf)", |p| p > 0.0 && p.is_finite())?;
    let mut grid: Vec<f64> = (0..=n_steps)
        .map(|step| 1.0 - (1.0 - step as f64 / n_steps as f64).powf(power))
        .collect();
    // Round-off must not merge two points (strictly increasing) nor miss the ends.
    grid[0] = 0.0;
    grid[n_steps] = 1.0;
    check::grid(&grid)?;
    Ok(grid)
}

/// The per-position distribution of the next state after an Euler step of size `step_size` from `t`:
/// `[n_samples, length, n_states]`, each row a distribution (see the module documentation for the cap).
///
/// `probs` is the posterior `p_{1|t}(. | x_t)` (`[n_samples, length, n_states]`, rows summing to one),
/// `t` in `[0, 1)`, `step_size` in `(0, 1 - t]`.
pub fn jump_probabilities<S: KappaSchedule + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
    t: f64,
    step_size: f64,
    corrector: &Corrector,
) -> Result<Array3<f64>> {
    check_posterior(path, probs, x_t)?;
    let time = check::time_before_end("t", t)?;
    // A grid's last step may end a few ulps past 1.
    check::parameter("step_size", step_size, "(0, 1 - t]", |h| {
        h > 0.0 && time + h <= 1.0 + 1e-12
    })?;
    let mut rates = marginal_rates(path, schedule, probs, x_t, time)?;
    let beta = corrector.coefficient(time)?;
    if beta > 0.0 {
        rates += &corrector_rates(path, schedule, probs, x_t, time, beta)?;
    }
    for ((sample_idx, position), token) in x_t.indexed_iter() {
        let stay = *token as usize;
        let mut row = rates.slice_mut(s![sample_idx, position, ..]);
        // Off-diagonal rates are non-negative by construction; clamp the round-off of the subtraction anyway.
        row[stay] = 0.0;
        row.mapv_inplace(|rate| rate.max(0.0));
        let total = row.sum();
        if step_size * total <= 1.0 {
            row.mapv_inplace(|rate| step_size * rate);
            row[stay] = 1.0 - step_size * total;
        } else {
            row.mapv_inplace(|rate| rate / total);
        }
    }
    Ok(rates)
}

/// One Euler step: draws each position's next state from [`jump_probabilities`] (one uniform number per
/// position, row-major order, so a seeded `rng` reproduces the step). Returns the new states
/// `[n_samples, length]`.
#[allow(clippy::too_many_arguments)]
pub fn euler_step<S: KappaSchedule + ?Sized, R: Rng + ?Sized>(
    path: &MixturePath,
    schedule: &S,
    probs: ArrayView3<f64>,
    x_t: ArrayView2<Token>,
    t: f64,
    step_size: f64,
    corrector: &Corrector,
    rng: &mut R,
) -> Result<Array2<Token>> {
    let jumps = jump_probabilities(path, schedule, probs, x_t, t, step_size, corrector)?;
    let mut next = x_t.to_owned();
    for ((sample_idx, position), token) in next.indexed_iter_mut() {
        let u: f64 = rng.random();
        let mut cumulative = 0.0;
        // Round-off can leave the cumulative sum just below u; then the position stays.
        for (state, p) in jumps.slice(s![sample_idx, position, ..]).iter().enumerate() {
            cumulative += p;
            if u < cumulative {
                *token = state as Token;
                break;
            }
        }
    }
    Ok(next)
}

/// Runs [`euler_step`] over `grid` (strictly increasing in `[0, 1]`, at least two times) from `x_init`
/// (`[n_samples, length]`, usually [`MixturePath::sample_source`]), asking `posterior(x_t, t)` for
/// `p_{1|t}(. | x_t)` (`[n_samples, length, n_states]`) at the start of each step. Returns the states at the
/// grid's last time. Errors of the posterior closure pass through unchanged.
pub fn sample<S, R, F, E>(
    path: &MixturePath,
    schedule: &S,
    x_init: ArrayView2<Token>,
    grid: &[f64],
    corrector: &Corrector,
    mut posterior: F,
    rng: &mut R,
) -> Result<Array2<Token>, E>
where
    S: KappaSchedule + ?Sized,
    R: Rng + ?Sized,
    F: FnMut(ArrayView2<Token>, f64) -> Result<Array3<f64>, E>,
    E: From<crate::DiscreteError>,
{
    check::grid(grid)?;
    check::tokens("x_init", x_init, path.n_states())?;
    let mut x = x_init.to_owned();
    for pair in grid.windows(2) {
        let (t, step_size) = (pair[0], pair[1] - pair[0]);
        let probs = posterior(x.view(), t)?;
        x = euler_step(
            path,
            schedule,
            probs.view(),
            x.view(),
            t,
            step_size,
            corrector,
            rng,
        )?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graded_grids_crowd_towards_the_end_and_power_one_is_uniform() {
        let graded = graded_grid(8, 3.0).unwrap();
        assert_eq!((graded[0], graded[8]), (0.0, 1.0));
        let widths: Vec<f64> = graded.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(widths.windows(2).all(|pair| pair[1] < pair[0]), "{widths:?}");
        assert!((widths[7] - 8.0_f64.powi(-3)).abs() < 1e-15);
        let uniform = uniform_grid(8).unwrap();
        let power_one = graded_grid(8, 1.0).unwrap();
        assert!(uniform.iter().zip(&power_one).all(|(a, b)| (a - b).abs() < 1e-15));
    }
}
