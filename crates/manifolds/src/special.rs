//! Special functions with their small-argument limits handled: the functions of an angle that the sphere's
//! exp, log and log-differential divide by, the log of `sinh(k) / k` and `k coth k` for the von Mises-Fisher
//! constants, log-gamma at half-integers for sphere volumes, and a stable log-sum-exp.
//!
//! The angle functions switch to their Taylor series below `2e-2`, truncated where the next term is below
//! `1e-16` relative. The hyperbolic ones are summed below `k = 1` as series of positive terms (no cancellation
//! at any small `k`) and use forms without overflow (`exp_m1` of `-2k`) above.

/// Below this angle (or concentration) the series are used.
const SERIES_BELOW: f64 = 2e-2;

/// `sin(t) / t`, with `sinc(0) = 1`.
pub(crate) fn sinc(t: f64) -> f64 {
    if t.abs() < SERIES_BELOW {
        let t2 = t * t;
        1.0 - t2 / 6.0 * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0))
    } else {
        t.sin() / t
    }
}

/// `t / sin(t)` for `t` in `[0, pi)`, with the value 1 at `t = 0`. The caller passes `sin t` computed from
/// its own data (on the sphere, `|y - <x, y> x|`): near pi, `t.sin()` would carry the absolute error of pi's
/// representation (`1.2e-16`) as a relative error `1e-16 / (pi - t)`.
pub(crate) fn t_over_sin(t: f64, sin_t: f64) -> f64 {
    if t < SERIES_BELOW {
        let t2 = t * t;
        1.0 + t2 / 6.0 + 7.0 * t2 * t2 / 360.0 + 31.0 * t2 * t2 * t2 / 15120.0
    } else {
        t / sin_t
    }
}

/// `(sin t cos t - t) / sin^3 t` for `t` in `[0, pi)`, with the limit `-2/3` at `t = 0`: the coefficient of the
/// radial part in the differential of the sphere's log map. `sin t` and `cos t` come from the caller, as for
/// [`t_over_sin`].
pub(crate) fn log_differential_coefficient(t: f64, sin_t: f64, cos_t: f64) -> f64 {
    if t < SERIES_BELOW {
        let t2 = t * t;
        -2.0 / 3.0 - t2 / 5.0 - 17.0 * t2 * t2 / 420.0 - 29.0 * t2 * t2 * t2 / 4200.0
    } else {
        (sin_t * cos_t - t) / (sin_t * sin_t * sin_t)
    }
}

/// Below this concentration the hyperbolic functions are summed as series of positive terms.
const HYPERBOLIC_SERIES_BELOW: f64 = 1.0;

/// `sinh(k) / k - 1 = sum_{n >= 1} k^{2n} / (2n + 1)!` for `0 <= k < 1`: positive terms, so no cancellation
/// however small `k` is (twelve terms reach `1e-16` relative at `k = 1`).
fn sinhc_minus_one_series(k: f64) -> f64 {
    let k2 = k * k;
    let mut term = 1.0;
    let mut sum = 0.0;
    for n in 1..=12 {
        term *= k2 / ((2 * n) as f64 * (2 * n + 1) as f64);
        sum += term;
    }
    sum
}

/// `ln(sinh(k) / k)` for `k >= 0`, exact for large `k` (no overflow) and small `k` (no cancellation).
pub(crate) fn ln_sinhc(k: f64) -> f64 {
    if k < HYPERBOLIC_SERIES_BELOW {
        sinhc_minus_one_series(k).ln_1p()
    } else {
        // sinh k = e^k (1 - e^{-2k}) / 2.
        k + (-(-2.0 * k).exp_m1()).ln() - std::f64::consts::LN_2 - k.ln()
    }
}

/// `ln(sinh(k) / k) - k` for `k >= 0`, without the cancellation of `k` against itself for large `k`.
pub(crate) fn ln_sinhc_minus_k(k: f64) -> f64 {
    if k < HYPERBOLIC_SERIES_BELOW {
        ln_sinhc(k) - k
    } else {
        (-(-2.0 * k).exp_m1()).ln() - std::f64::consts::LN_2 - k.ln()
    }
}

/// `k coth k = cosh k / (sinh(k) / k)` for `k >= 0`, with the limit 1 at `k = 0`.
pub(crate) fn k_coth_k(k: f64) -> f64 {
    if k < HYPERBOLIC_SERIES_BELOW {
        k.cosh() / (1.0 + sinhc_minus_one_series(k))
    } else {
        k / k.tanh()
    }
}

/// The Langevin function `coth k - 1/k` for `k >= 0` (the mean resultant length of a von Mises-Fisher
/// distribution on `S^2`), with the limit 0 at `k = 0`.
pub(crate) fn langevin(k: f64) -> f64 {
    if k < HYPERBOLIC_SERIES_BELOW {
        // coth k - 1/k = (k cosh k - sinh k) / (k sinh k) and k cosh k - sinh k = sum_{n >= 1} 2n k^{2n+1} /
        // (2n + 1)!, a series of positive terms: L(k) = k sum_n 2n k^{2n-2} / (2n + 1)! / (sinh(k) / k).
        let k2 = k * k;
        let mut term = 1.0 / 6.0;
        let mut sum = 0.0;
        for n in 1..=12 {
            sum += 2.0 * n as f64 * term;
            term *= k2 / ((2 * n + 2) as f64 * (2 * n + 3) as f64);
        }
        k * sum / (1.0 + sinhc_minus_one_series(k))
    } else {
        1.0 / k.tanh() - 1.0 / k
    }
}

/// `ln Gamma(n / 2)` for a positive integer `n`, exact up to round-off (a product over the recursion).
pub(crate) fn ln_gamma_half(n: usize) -> f64 {
    if n.is_multiple_of(2) {
        // Gamma(m) = (m - 1)!
        (1..n / 2).map(|k| (k as f64).ln()).sum()
    } else {
        // Gamma(m + 1/2) = sqrt(pi) prod_{k=1}^{m} (k - 1/2)
        0.5 * std::f64::consts::PI.ln() + (1..=n / 2).map(|k| (k as f64 - 0.5).ln()).sum::<f64>()
    }
}

/// `ln sum_i exp(values_i)`, shifted by the maximum so that nothing overflows; `-inf` for no values or all
/// `-inf`.
pub(crate) fn log_sum_exp(values: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.into_iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function with its name, for messages.
    type Named = (&'static str, fn(f64) -> f64);

    #[test]
    fn series_and_direct_formulas_agree_at_the_thresholds() {
        let angles: [Named; 3] = [
            ("sinc", sinc),
            ("t_over_sin", |t| t_over_sin(t, t.sin())),
            ("log_differential_coefficient", |t| {
                log_differential_coefficient(t, t.sin(), t.cos())
            }),
        ];
        let hyperbolic: [Named; 4] = [
            ("ln_sinhc", ln_sinhc),
            ("ln_sinhc_minus_k", ln_sinhc_minus_k),
            ("k_coth_k", k_coth_k),
            ("langevin", langevin),
        ];
        for (threshold, functions) in [
            (SERIES_BELOW, angles.as_slice()),
            (HYPERBOLIC_SERIES_BELOW, hyperbolic.as_slice()),
        ] {
            for (name, f) in functions {
                let (a, b) = (f(threshold * (1.0 - 1e-15)), f(threshold));
                assert!((a - b).abs() <= 1e-13 * b.abs(), "{name}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn hyperbolic_functions_have_the_right_small_argument_limits() {
        for k in [0.0, 1e-300, 1e-8, 1e-3] {
            let k2 = k * k;
            assert!(
                (ln_sinhc(k) - (k2 / 6.0 - k2 * k2 / 180.0 + k2 * k2 * k2 / 2835.0)).abs()
                    <= 1e-16 * k2.max(1e-300)
            );
            assert!(
                (langevin(k) - (k / 3.0 - k * k2 / 45.0 + 2.0 * k * k2 * k2 / 945.0)).abs()
                    <= 1e-16 * k.max(1e-300)
            );
            assert!((k_coth_k(k) - (1.0 + k2 / 3.0 - k2 * k2 / 45.0)).abs() <= 1e-15);
        }
        assert_eq!(langevin(0.0), 0.0);
    }

    #[test]
    fn ln_gamma_half_matches_known_values() {
        let pi = std::f64::consts::PI;
        assert!((ln_gamma_half(1) - pi.sqrt().ln()).abs() < 1e-15);
        assert!(ln_gamma_half(2).abs() < 1e-15);
        assert!((ln_gamma_half(3) - (pi.sqrt() / 2.0).ln()).abs() < 1e-15);
        assert!((ln_gamma_half(10) - 24f64.ln()).abs() < 1e-14);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp([1000.0, 1000.0]) - (1000.0 + std::f64::consts::LN_2)).abs() < 1e-12);
        assert_eq!(log_sum_exp([f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
