//! Special functions with their small-argument limits handled: the functions of an angle that the sphere's
//! exp, log and log-differential divide by, and log-gamma at half-integers for sphere volumes.
//!
//! The angle functions switch to their Taylor series below `2e-2`, truncated where the next term is below
//! `1e-16` relative.

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
        for (threshold, functions) in [(SERIES_BELOW, angles.as_slice())] {
            for (name, f) in functions {
                let (a, b) = (f(threshold * (1.0 - 1e-15)), f(threshold));
                assert!((a - b).abs() <= 1e-13 * b.abs(), "{name}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn ln_gamma_half_matches_known_values() {
        let pi = std::f64::consts::PI;
        assert!((ln_gamma_half(1) - pi.sqrt().ln()).abs() < 1e-15);
        assert!(ln_gamma_half(2).abs() < 1e-15);
        assert!((ln_gamma_half(3) - (pi.sqrt() / 2.0).ln()).abs() < 1e-15);
        assert!((ln_gamma_half(10) - 24f64.ln()).abs() < 1e-14);
    }
}
