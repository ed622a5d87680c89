//! Schedulers: the coefficients `(alpha_t, sigma_t)` of an affine path `x_t = alpha_t x1 + sigma_t x0`.
//!
//! Convention (Lipman et al. 2024, "Flow Matching Guide and Code", section on affine conditional flows, and
//! Meta's `flow_matching` library): `t = 0` is the source (noise) and `t = 1` the data, so a scheduler has
//! `alpha_1 = 1`, `sigma_1 = 0`, and `alpha_t` increasing, `sigma_t` decreasing. The signal-to-noise ratio is
//! `snr(t) = alpha_t / sigma_t` (not squared, as in `flow_matching`), increasing from `snr(0)` to `+inf`,
//! so it can be inverted; [`Scheduler::snr_inverse`] is that inverse.
//!
//! [`Scheduler`] is the open family (implement it for a new schedule); [`SchedulerKind`] is the closed,
//! serde-friendly choice read from a configuration file and turned into a scheduler by
//! [`SchedulerKind::build`], which validates its parameters once.

use std::f64::consts::FRAC_PI_2;

use serde::{Deserialize, Serialize};

use crate::{PathsError, check};

/// The four numbers a scheduler gives at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerOutput {
    /// `alpha_t`, the weight of the data `x1`.
    pub alpha: f64,
    /// `sigma_t`, the weight of the source sample `x0`.
    pub sigma: f64,
    /// `d alpha_t / dt`.
    pub d_alpha: f64,
    /// `d sigma_t / dt`.
    pub d_sigma: f64,
}

/// A schedule `(alpha_t, sigma_t)` for `t` in `[0, 1]`, with `alpha_1 = 1`, `sigma_1 = 0` and an increasing SNR.
///
/// The required methods are total on `[0, 1]`: at a singular end a derivative may be infinite (for example
/// `d sigma / dt` of [`VpScheduler`] and [`LinearVpScheduler`] at `t = 1`); the paths built on a scheduler
/// check for that and return [`PathsError::SingularTime`].
pub trait Scheduler {
    /// A short name for messages.
    fn name(&self) -> &'static str;
    /// `alpha_t`.
    fn alpha(&self, t: f64) -> f64;
    /// `sigma_t`.
    fn sigma(&self, t: f64) -> f64;
    /// `d alpha_t / dt`.
    fn d_alpha(&self, t: f64) -> f64;
    /// `d sigma_t / dt`.
    fn d_sigma(&self, t: f64) -> f64;
    /// The time `t` with `alpha_t / sigma_t = snr`; `snr = +inf` maps to `t = 1`. A ratio outside the
    /// scheduler's range gives a time outside `[0, 1]` or NaN; [`Scheduler::time_for_snr`] checks that.
    fn snr_inverse(&self, snr: f64) -> f64;

    /// All four coefficients at `t`.
    fn evaluate(&self, t: f64) -> SchedulerOutput {
        SchedulerOutput {
            alpha: self.alpha(t),
            sigma: self.sigma(t),
            d_alpha: self.d_alpha(t),
            d_sigma: self.d_sigma(t),
        }
    }
    /// The signal-to-noise ratio `alpha_t / sigma_t` (`+inf` at `t = 1`).
    fn snr(&self, t: f64) -> f64 {
        self.alpha(t) / self.sigma(t)
    }
    /// `ln(alpha_t / sigma_t)`, the log-SNR (`-inf` where `alpha_t = 0`, `+inf` at `t = 1`).
    fn log_snr(&self, t: f64) -> f64 {
        self.alpha(t).ln() - self.sigma(t).ln()
    }
    /// [`Scheduler::snr_inverse`], refusing a ratio the scheduler cannot reach.
    fn time_for_snr(&self, snr: f64) -> Result<f64, PathsError> {
        // Round-off can put the inverse of an end value a few ulps outside [0, 1]; clamp only that.
        const SLACK: f64 = 1e-12;
        let t = self.snr_inverse(snr);
        if snr >= 0.0 && (-SLACK..=1.0 + SLACK).contains(&t) {
            Ok(t.clamp(0.0, 1.0))
        } else {
            Err(PathsError::SnrOutOfRange {
                snr,
                scheduler: self.name(),
            })
        }
    }
}

impl<S: Scheduler + ?Sized> Scheduler for &S {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn alpha(&self, t: f64) -> f64 {
        (**self).alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        (**self).sigma(t)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        (**self).d_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        (**self).d_sigma(t)
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        (**self).snr_inverse(snr)
    }
    fn log_snr(&self, t: f64) -> f64 {
        (**self).log_snr(t)
    }
}

impl<S: Scheduler + ?Sized> Scheduler for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn alpha(&self, t: f64) -> f64 {
        (**self).alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        (**self).sigma(t)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        (**self).d_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        (**self).d_sigma(t)
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        (**self).snr_inverse(snr)
    }
    fn log_snr(&self, t: f64) -> f64 {
        (**self).log_snr(t)
    }
}

/// The conditional optimal-transport schedule `alpha_t = t`, `sigma_t = 1 - t`
/// (Lipman et al. 2023, "Flow Matching for Generative Modeling", section 4.1, example II, with
/// `sigma_min = 0`; Lipman et al. 2024, CondOT scheduler). `snr^-1(r) = r / (1 + r)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CondOtScheduler;

impl Scheduler for CondOtScheduler {
    fn name(&self) -> &'static str {
        "cond_ot"
    }
    fn alpha(&self, t: f64) -> f64 {
        t
    }
    fn sigma(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn d_alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn d_sigma(&self, _t: f64) -> f64 {
        -1.0
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        // 1 / (1 + 1/r) rather than r / (1 + r): it also maps r = +inf to 1.
        1.0 / (1.0 + 1.0 / snr)
    }
}

/// The polynomial schedule `alpha_t = t^n`, `sigma_t = 1 - t^n`, `n > 0`
/// (Lipman et al. 2024, polynomial convex scheduler). `snr^-1(r) = (r / (1 + r))^(1/n)`.
/// For `n < 1`, `d alpha / dt` is infinite at `t = 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialScheduler {
    exponent: f64,
}

impl PolynomialScheduler {
    /// A polynomial schedule with exponent `n` in `(0, inf)`.
    pub fn new(exponent: f64) -> Result<Self, PathsError> {
        check::parameter("exponent", exponent, "(0, inf)", |n| n > 0.0)?;
        Ok(Self { exponent })
    }
    /// The exponent `n`.
    pub fn exponent(&self) -> f64 {
        self.exponent
    }
}

impl Scheduler for PolynomialScheduler {
    fn name(&self) -> &'static str {
        "polynomial"
    }
    fn alpha(&self, t: f64) -> f64 {
        t.powf(self.exponent)
    }
    fn sigma(&self, t: f64) -> f64 {
        1.0 - t.powf(self.exponent)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        self.exponent * t.powf(self.exponent - 1.0)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -self.exponent * t.powf(self.exponent - 1.0)
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        (1.0 / (1.0 + 1.0 / snr)).powf(1.0 / self.exponent)
    }
}

/// The variance-preserving (VP) diffusion schedule with a linear noise rate `beta(s) = b + (B - b) s`.
///
/// Convention of `flow_matching`'s `VPScheduler` (Song et al. 2021 score SDE, written in flow-matching time as
/// in Lipman et al. 2023, section 4.1, example I, with their `1 - t` turned into our `t`):
/// `T(t) = int_0^{1-t} beta(s) ds = b (1 - t) + (B - b) (1 - t)^2 / 2`,
/// `alpha_t = exp(-T(t) / 2)`, `sigma_t = sqrt(1 - exp(-T(t)))`, so `alpha_t^2 + sigma_t^2 = 1`.
/// `t = 1` is exactly data (`T = 0`), but `t = 0` is only approximately noise: `alpha_0 = exp(-(b + B) / 4)`
/// (about 0.0066 for the defaults b = 0.1, B = 20). `d sigma / dt` is infinite at `t = 1`.
/// `snr^-1(r)`: `T = ln(1 + 1/r^2)`, then `1 - t` is the positive root of `(B - b) s^2 / 2 + b s - T = 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpScheduler {
    beta_min: f64,
    beta_max: f64,
}

impl Default for VpScheduler {
    /// `beta_min = 0.1`, `beta_max = 20`, the defaults of Song et al. 2021 and `flow_matching`.
    fn default() -> Self {
        Self {
            beta_min: 0.1,
            beta_max: 20.0,
        }
    }
}

impl VpScheduler {
    /// A VP schedule with `0 <= beta_min <= beta_max` and `beta_max > 0`.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self, PathsError> {
        check::parameter("beta_min", beta_min, "[0, inf)", |b| b >= 0.0)?;
        check::parameter("beta_max", beta_max, "[beta_min, inf) and > 0", |b| {
            b >= beta_min && b > 0.0
        })?;
        Ok(Self { beta_min, beta_max })
    }
    /// `beta_min` (the noise rate at the data end).
    pub fn beta_min(&self) -> f64 {
        self.beta_min
    }
    /// `beta_max` (the noise rate at the source end).
    pub fn beta_max(&self) -> f64 {
        self.beta_max
    }
    /// The integrated noise rate `T(t)`.
    fn integrated_rate(&self, t: f64) -> f64 {
        let s = 1.0 - t;
        self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s
    }
    /// `dT / dt = -beta(1 - t)`.
    fn d_integrated_rate(&self, t: f64) -> f64 {
        -(self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t))
    }
}

impl Scheduler for VpScheduler {
    fn name(&self) -> &'static str {
        "vp"
    }
    fn alpha(&self, t: f64) -> f64 {
        (-0.5 * self.integrated_rate(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        // -expm1(-T) keeps precision near t = 1 where T is tiny.
        (-(-self.integrated_rate(t)).exp_m1()).sqrt()
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -0.5 * self.d_integrated_rate(t) * self.alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        0.5 * self.d_integrated_rate(t) * (-self.integrated_rate(t)).exp() / self.sigma(t)
    }
    fn log_snr(&self, t: f64) -> f64 {
        let rate = self.integrated_rate(t);
        -0.5 * rate - 0.5 * (-(-rate).exp_m1()).ln()
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        let rate = (1.0 / (snr * snr)).ln_1p();
        if !rate.is_finite() {
            return f64::NEG_INFINITY;
        }
        // The root 2T / (b + sqrt(b^2 + 2 (B - b) T)) is the usual quadratic formula without its cancellation,
        // and it also covers B = b.
        let (b, spread) = (self.beta_min, self.beta_max - self.beta_min);
        let one_minus_t = 2.0 * rate / (b + (b * b + 2.0 * spread * rate).sqrt());
        1.0 - one_minus_t
    }
}

/// The linear variance-preserving schedule `alpha_t = t`, `sigma_t = sqrt(1 - t^2)`
/// (Lipman et al. 2024, `LinearVPScheduler` of `flow_matching`). `snr^-1(r) = r / sqrt(1 + r^2)`.
/// `d sigma / dt` is infinite at `t = 1`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinearVpScheduler;

impl Scheduler for LinearVpScheduler {
    fn name(&self) -> &'static str {
        "linear_vp"
    }
    fn alpha(&self, t: f64) -> f64 {
        t
    }
    fn sigma(&self, t: f64) -> f64 {
        ((1.0 - t) * (1.0 + t)).sqrt()
    }
    fn d_alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -t / self.sigma(t)
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        1.0 / (1.0 + 1.0 / (snr * snr)).sqrt()
    }
}

/// The cosine schedule `alpha_t = sin(pi t / 2)`, `sigma_t = cos(pi t / 2)`
/// (Lipman et al. 2024, `CosineScheduler` of `flow_matching`; the same path as the variance-preserving
/// interpolant of Tong et al. 2023). `snr^-1(r) = 2 atan(r) / pi`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CosineScheduler;

impl Scheduler for CosineScheduler {
    fn name(&self) -> &'static str {
        "cosine"
    }
    fn alpha(&self, t: f64) -> f64 {
        (FRAC_PI_2 * t).sin()
    }
    fn sigma(&self, t: f64) -> f64 {
        // sin(pi (1 - t) / 2) rather than cos(pi t / 2): it is exactly 0 at t = 1 (cos(pi / 2) is 6e-17).
        (FRAC_PI_2 * (1.0 - t)).sin()
    }
    fn d_alpha(&self, t: f64) -> f64 {
        FRAC_PI_2 * (FRAC_PI_2 * t).cos()
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -FRAC_PI_2 * (FRAC_PI_2 * t).sin()
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        snr.atan() / FRAC_PI_2
    }
}

/// The closed set of schedulers a configuration can name, for example in TOML
/// `scheduler = { kind = "polynomial", exponent = 2.0 }` or `scheduler = { kind = "vp" }`.
///
/// Deserialisation refuses unknown keys, keys of another kind and out-of-range values (the message names the
/// key and its allowed range), so a deserialised value always [`SchedulerKind::build`]s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawSchedulerKind")]
pub enum SchedulerKind {
    /// [`CondOtScheduler`].
    CondOt,
    /// [`PolynomialScheduler`].
    Polynomial {
        /// The exponent `n > 0`.
        exponent: f64,
    },
    /// [`VpScheduler`].
    Vp {
        /// `beta_min >= 0` (default 0.1).
        beta_min: f64,
        /// `beta_max >= beta_min`, `> 0` (default 20).
        beta_max: f64,
    },
    /// [`LinearVpScheduler`].
    LinearVp,
    /// [`CosineScheduler`].
    Cosine,
}

/// The flat shape of a scheduler table, so that unknown keys and keys of another kind are refused (serde's
/// internally tagged enums silently accept extra keys on unit variants).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedulerKind {
    kind: RawKindName,
    exponent: Option<f64>,
    beta_min: Option<f64>,
    beta_max: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKindName {
    CondOt,
    Polynomial,
    Vp,
    LinearVp,
    Cosine,
}

impl TryFrom<RawSchedulerKind> for SchedulerKind {
    type Error = String;

    fn try_from(raw: RawSchedulerKind) -> Result<Self, String> {
        let RawSchedulerKind {
            kind,
            exponent,
            beta_min,
            beta_max,
        } = raw;
        let refuse_extra = |allowed: &[&str]| -> Result<(), String> {
            for (key, value) in [
                ("exponent", exponent),
                ("beta_min", beta_min),
                ("beta_max", beta_max),
            ] {
                if value.is_some() && !allowed.contains(&key) {
                    return Err(format!("key `{key}` does not apply to scheduler kind {kind:?}"));
                }
            }
            Ok(())
        };
        let scheduler = match kind {
            RawKindName::CondOt => refuse_extra(&[]).map(|()| Self::CondOt)?,
            RawKindName::LinearVp => refuse_extra(&[]).map(|()| Self::LinearVp)?,
            RawKindName::Cosine => refuse_extra(&[]).map(|()| Self::Cosine)?,
            RawKindName::Polynomial => {
                refuse_extra(&["exponent"])?;
                let exponent =
                    exponent.ok_or("scheduler kind `polynomial` needs the key `exponent` in (0, inf)")?;
                Self::Polynomial { exponent }
            }
            RawKindName::Vp => {
                refuse_extra(&["beta_min", "beta_max"])?;
                let default = VpScheduler::default();
                Self::Vp {
                    beta_min: beta_min.unwrap_or(default.beta_min),
                    beta_max: beta_max.unwrap_or(default.beta_max),
                }
            }
        };
        scheduler.build().map_err(|err| err.to_string())?;
        Ok(scheduler)
    }
}

impl SchedulerKind {
    /// Validates the parameters and builds the scheduler.
    pub fn build(&self) -> Result<Box<dyn Scheduler + Send + Sync>, PathsError> {
        Ok(match *self {
            Self::CondOt => Box::new(CondOtScheduler),
            Self::Polynomial { exponent } => Box::new(PolynomialScheduler::new(exponent)?),
            Self::Vp { beta_min, beta_max } => Box::new(VpScheduler::new(beta_min, beta_max)?),
            Self::LinearVp => Box::new(LinearVpScheduler),
            Self::Cosine => Box::new(CosineScheduler),
        })
    }
}
