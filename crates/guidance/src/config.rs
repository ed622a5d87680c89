//! Settings of mode-seeking and classifier-free guidance: serde structs with `deny_unknown_fields`, checked
//! once by `validate` (a bad value is refused with its key and the allowed range).
//!
//! In TOML:
//! ```toml
//! lambda = 0.1
//! estimator = { kind = "hutchinson", probes = 4, distribution = "rademacher" }
//! schedule = { kind = "window", t_start = 0.2, t_end = 0.9 }
//! normalize = { kind = "clip", scale = 1.0 }
//! seed = 0
//! ```

use ferroflow_models::ModelError;
use ferroflow_models::autograd::DivergenceEstimator;
use serde::{Deserialize, Serialize};

use crate::GuidanceError;

/// Mode-seeking guidance: the sampler follows `v + lambda(t) g` with `g = grad_x [-div v]` and
/// `lambda(t) = lambda * schedule(t)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSeeking {
    /// The guidance strength `lambda >= 0` (0 samples the plain flow, bit for bit).
    pub lambda: f64,
    /// How `g` is computed: exactly, or by Hutchinson's estimator with probes drawn afresh at every field
    /// evaluation.
    #[serde(default)]
    pub estimator: DivergenceEstimator,
    /// How the strength varies with time.
    #[serde(default)]
    pub schedule: Schedule,
    /// How `g` is scaled against `v`, per sample.
    #[serde(default)]
    pub normalize: Normalize,
    /// Seed of Hutchinson's probes (ChaCha8), so a guided solve is reproducible.
    #[serde(default)]
    pub seed: u64,
}

impl ModeSeeking {
    /// Constant strength `lambda`, exact gradient, no normalisation.
    pub fn exact(lambda: f64) -> Self {
        Self {
            lambda,
            estimator: DivergenceEstimator::Exact,
            schedule: Schedule::Constant,
            normalize: Normalize::None,
            seed: 0,
        }
    }

    /// Constant strength `lambda`, Hutchinson's estimator with `probes` Rademacher probes, no normalisation.
    pub fn hutchinson(lambda: f64, probes: usize, seed: u64) -> Self {
        Self {
            lambda,
            estimator: DivergenceEstimator::hutchinson(probes),
            schedule: Schedule::Constant,
            normalize: Normalize::None,
            seed,
        }
    }

    /// Checks every range.
    pub fn validate(&self) -> Result<(), GuidanceError> {
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            return invalid("lambda", format!("{} must be finite and >= 0", self.lambda));
        }
        self.estimator.validate().map_err(|err| match err {
            // The estimator's own key (`estimator.probes`) is the key of this setting too.
            ModelError::InvalidConfig { key, detail } => GuidanceError::InvalidConfig { key, detail },
            other => GuidanceError::Model(other),
        })?;
        self.schedule.validate()?;
        self.normalize.validate()
    }

    /// The strength at time `t`: `lambda * schedule(t)`.
    pub fn lambda_at(&self, t: f64) -> f64 {
        self.lambda * self.schedule.factor(t)
    }
}

/// How the guidance strength varies with time (a factor in `[0, 1]` for the given settings).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawSchedule")]
pub enum Schedule {
    /// The same strength at every time.
    #[default]
    Constant,
    /// Full strength for `t_start <= t <= t_end`, none elsewhere.
    Window {
        /// Start of the window, in `[0, 1]`.
        t_start: f64,
        /// End of the window, in `[t_start, 1]`.
        t_end: f64,
    },
    /// `(1 - t)^power`: strong early, while the modes are chosen, vanishing at the data end where the
    /// divergence of a sharp target blows up.
    Decay {
        /// The exponent, finite and `>= 0`.
        power: f64,
    },
}

impl Schedule {
    /// The factor at time `t`.
    pub fn factor(&self, t: f64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Window { t_start, t_end } => {
                if (t_start..=t_end).contains(&t) {
                    1.0
                } else {
                    0.0
                }
            }
            Schedule::Decay { power } => (1.0 - t).max(0.0).powf(power),
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), GuidanceError> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Window { t_start, t_end } => {
                if !(0.0..=1.0).contains(&t_start) {
                    return invalid("schedule.t_start", format!("{t_start} is outside [0, 1]"));
                }
                if !(0.0..=1.0).contains(&t_end) {
                    return invalid("schedule.t_end", format!("{t_end} is outside [0, 1]"));
                }
                if t_start > t_end {
                    return invalid(
                        "schedule.t_start",
                        format!("{t_start} is after schedule.t_end = {t_end}; need t_start <= t_end"),
                    );
                }
                Ok(())
            }
            Schedule::Decay { power } => {
                if !power.is_finite() || power < 0.0 {
                    return invalid("schedule.power", format!("{power} must be finite and >= 0"));
                }
                Ok(())
            }
        }
    }
}

/// How `g` is scaled against the velocity, per sample, before it is multiplied by `lambda(t)`, so that one
/// `lambda` means the same across data sets and times.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawNormalize")]
pub enum Normalize {
    /// `g` as computed.
    #[default]
    None,
    /// `g` shrunk to norm at most `scale |v|` (left alone when already shorter).
    Clip {
        /// The ratio `|g| / |v|` allowed, finite and `> 0`.
        scale: f64,
    },
    /// `g` rescaled to norm exactly `scale |v|` (zero stays zero): only its direction is used.
    Rescale {
        /// The ratio `|g| / |v|`, finite and `> 0`.
        scale: f64,
    },
}

impl Normalize {
    /// Checks the scale.
    pub fn validate(&self) -> Result<(), GuidanceError> {
        match *self {
            Normalize::None => Ok(()),
            Normalize::Clip { scale } | Normalize::Rescale { scale } => {
                if !scale.is_finite() || scale <= 0.0 {
                    return invalid("normalize.scale", format!("{scale} must be finite and > 0"));
                }
                Ok(())
            }
        }
    }
}

/// Classifier-free guidance: `(1 + w) v(x, t | class) - w v(x, t | null)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierFree {
    /// The guidance weight `w >= 0` (0 samples the conditional model).
    pub weight: f64,
    /// The class to sample, in `0..num_classes`.
    pub class: usize,
}

impl ClassifierFree {
    /// Checks the weight (the class is checked against the model by [`crate::classifier_free_velocity`]).
    pub fn validate(&self) -> Result<(), GuidanceError> {
        if !self.weight.is_finite() || self.weight < 0.0 {
            return invalid("cfg.weight", format!("{} must be finite and >= 0", self.weight));
        }
        Ok(())
    }
}

// serde ignores unknown fields next to the tag of a unit variant (`{ kind = "constant", power = 2.0 }` would
// parse), so the enums are read through flat structs that refuse unknown keys and keys of another kind (as
// `DivergenceEstimator` is in the models crate).

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScheduleKind {
    Constant,
    Window,
    Decay,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: ScheduleKind,
    t_start: Option<f64>,
    t_end: Option<f64>,
    power: Option<f64>,
}

impl TryFrom<RawSchedule> for Schedule {
    type Error = String;

    fn try_from(raw: RawSchedule) -> Result<Self, String> {
        match (raw.kind, raw.t_start, raw.t_end, raw.power) {
            (ScheduleKind::Constant, None, None, None) => Ok(Schedule::Constant),
            (ScheduleKind::Window, Some(t_start), Some(t_end), None) => {
                Ok(Schedule::Window { t_start, t_end })
            }
            (ScheduleKind::Decay, None, None, Some(power)) => Ok(Schedule::Decay { power }),
            _ => Err(
                "allowed: { kind = \"constant\" }, { kind = \"window\", t_start = .., t_end = .. }, \
                      { kind = \"decay\", power = .. }"
                    .into(),
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum NormalizeKind {
    None,
    Clip,
    Rescale,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNormalize {
    kind: NormalizeKind,
    scale: Option<f64>,
}

impl TryFrom<RawNormalize> for Normalize {
    type Error = String;

    fn try_from(raw: RawNormalize) -> Result<Self, String> {
        match (raw.kind, raw.scale) {
            (NormalizeKind::None, None) => Ok(Normalize::None),
            (NormalizeKind::Clip, Some(scale)) => Ok(Normalize::Clip { scale }),
            (NormalizeKind::Rescale, Some(scale)) => Ok(Normalize::Rescale { scale }),
            _ => Err("allowed: { kind = \"none\" }, { kind = \"clip\", scale = .. }, \
                      { kind = \"rescale\", scale = .. }"
                .into()),
        }
    }
}

fn invalid(key: &'static str, detail: String) -> Result<(), GuidanceError> {
    Err(GuidanceError::InvalidConfig { key, detail })
}
