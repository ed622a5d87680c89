//! Flag groups shared by several commands, declared once: ODE options (`--solver --steps --atol --rtol`) and
//! guidance options (`--guidance --lambda --estimator --probes --schedule --normalize --cfg --class`), each
//! turned into the engine's validated settings here, so the engine never sees a flag.

use anyhow::{Context, Result, bail};
use ferroflow_engine::RunConfig;
use ferroflow_engine::config::SolverOverrides;
use ferroflow_engine::guided::GuidanceSettings;
use ferroflow_guidance::{ClassifierFree, ModeSeeking, Normalize, Schedule};
use ferroflow_models::DivergenceEstimator;
use ferroflow_solvers::{Method, OdeOptions};

/// ODE options of a command that integrates a run's flow; each defaults to the run's `[sample]` section.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OdeArgs {
    /// ODE method (euler, midpoint, heun, rk4, bosh3, dopri5); default: the run's.
    #[arg(long, value_parser = parse_method)]
    pub solver: Option<Method>,
    /// Steps of a fixed-step method; default: the run's.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Absolute tolerance of an adaptive method; default: the run's.
    #[arg(long)]
    pub atol: Option<f64>,
    /// Relative tolerance of an adaptive method; default: the run's.
    #[arg(long)]
    pub rtol: Option<f64>,
}

impl OdeArgs {
    /// The engine's overrides of the run's `[sample]` solver keys.
    pub fn overrides(&self) -> SolverOverrides {
        SolverOverrides {
            solver: self.solver,
            steps: self.steps,
            atol: self.atol,
            rtol: self.rtol,
        }
    }

    /// Applies the flags to `config`'s `[sample]` section, validates the result and returns its solver
    /// options (a bad value is refused with the config key it overrides).
    pub fn apply(&self, config: &mut RunConfig) -> Result<OdeOptions> {
        self.overrides()
            .apply(config)
            .context("ODE options (--solver, --steps, --atol, --rtol)")
    }
}

/// The ODE method named `name` (case-insensitive), or an error listing the allowed names.
pub fn parse_method(name: &str) -> Result<Method> {
    Method::ALL
        .into_iter()
        .find(|m| format!("{m:?}").eq_ignore_ascii_case(name))
        .with_context(|| {
            format!("unknown --solver {name:?}; allowed: euler, midpoint, heun, rk4, bosh3, dopri5")
        })
}

/// Which guidance `ferroflow sample` applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GuidanceKind {
    /// No mode seeking (classifier-free guidance may still be on, with --cfg/--class).
    #[default]
    None,
    /// Divergence-based mode seeking: v + lambda(t) grad_x[-div v].
    Mode,
}

/// The divergence estimator named on the command line: `exact`, or `hutchinson` (one Rademacher probe; the
/// commands set the number of probes from `--probes`).
pub fn parse_estimator(name: &str) -> Result<DivergenceEstimator> {
    match name {
        "exact" => Ok(DivergenceEstimator::Exact),
        "hutchinson" => Ok(DivergenceEstimator::hutchinson(1)),
        other => bail!("unknown --estimator {other:?}; allowed: exact, hutchinson"),
    }
}

/// Guidance flags of `ferroflow sample`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GuidanceArgs {
    /// Guidance: none, or mode (divergence-based mode seeking; needs --lambda).
    #[arg(long, value_enum, default_value_t = GuidanceKind::None)]
    pub guidance: GuidanceKind,
    /// Mode-seeking strength lambda >= 0 (with --guidance mode).
    #[arg(long, allow_hyphen_values = true)]
    pub lambda: Option<f64>,
    /// Divergence-gradient estimator: exact (D vector-Jacobian products per evaluation) or hutchinson
    /// (--probes Rademacher probes); default exact.
    #[arg(long, value_parser = parse_estimator)]
    pub estimator: Option<DivergenceEstimator>,
    /// Probes per evaluation of Hutchinson's estimator (default 1).
    #[arg(long)]
    pub probes: Option<usize>,
    /// Strength over time: constant, window:T_START:T_END, or decay:POWER (lambda (1 - t)^POWER).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Per-sample normalisation of the gradient: none, clip:SCALE (|g| <= SCALE |v|) or rescale:SCALE.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Seed of Hutchinson's probes.
    #[arg(long, default_value_t = 0)]
    pub guidance_seed: u64,
    /// Classifier-free guidance weight w >= 0 (needs --class and a class-conditional model).
    #[arg(long, allow_hyphen_values = true)]
    pub cfg: Option<f64>,
    /// The class to sample (needs a class-conditional model).
    #[arg(long)]
    pub class: Option<usize>,
}

impl GuidanceArgs {
    /// Checks the flags and builds the settings; a bad value is refused with its flag's name.
    pub fn settings(&self) -> Result<GuidanceSettings> {
        let mode_seeking = match self.guidance {
            GuidanceKind::None => {
                for (set, flag) in [
                    (self.lambda.is_some(), "--lambda"),
                    (self.estimator.is_some(), "--estimator"),
                    (self.probes.is_some(), "--probes"),
                    (self.schedule.is_some(), "--schedule"),
                    (self.normalize.is_some(), "--normalize"),
                ] {
                    if set {
                        bail!("{flag} needs --guidance mode");
                    }
                }
                None
            }
            GuidanceKind::Mode => {
                let lambda = self.lambda.context("--guidance mode needs --lambda")?;
                let estimator = match (self.estimator.unwrap_or_default(), self.probes) {
                    (DivergenceEstimator::Exact, Some(_)) => bail!("--probes needs --estimator hutchinson"),
                    (DivergenceEstimator::Exact, None) => DivergenceEstimator::Exact,
                    (DivergenceEstimator::Hutchinson { distribution, .. }, probes) => {
                        DivergenceEstimator::Hutchinson {
                            probes: probes.unwrap_or(1),
                            distribution,
                        }
                    }
                };
                let config = ModeSeeking {
                    lambda,
                    estimator,
                    schedule: parse_schedule(self.schedule.as_deref().unwrap_or("constant"))?,
                    normalize: parse_normalize(self.normalize.as_deref().unwrap_or("none"))?,
                    seed: self.guidance_seed,
                };
                config
                    .validate()
                    .context("guidance flags (--lambda, --probes, --schedule, --normalize)")?;
                Some(config)
            }
        };
        let classifier_free = match (self.cfg, self.class) {
            (Some(_), None) => bail!("--cfg needs --class (the class to guide towards)"),
            (weight, Some(class)) => {
                let config = ClassifierFree {
                    weight: weight.unwrap_or(0.0),
                    class,
                };
                config.validate().context("--cfg")?;
                Some(config)
            }
            (None, None) => None,
        };
        Ok(GuidanceSettings {
            mode_seeking,
            classifier_free,
        })
    }
}

/// Parses `constant`, `window:T_START:T_END` or `decay:POWER`.
pub fn parse_schedule(text: &str) -> Result<Schedule> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--schedule {text:?}: {s:?} is not a number"))
    };
    match parts.as_slice() {
        ["constant"] => Ok(Schedule::Constant),
        ["window", start, end] => Ok(Schedule::Window {
            t_start: number(start)?,
            t_end: number(end)?,
        }),
        ["decay", power] => Ok(Schedule::Decay {
            power: number(power)?,
        }),
        _ => bail!("--schedule {text:?}: allowed: constant, window:T_START:T_END, decay:POWER"),
    }
}

/// Parses `none`, `clip:SCALE` or `rescale:SCALE`.
pub fn parse_normalize(text: &str) -> Result<Normalize> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--normalize {text:?}: {s:?} is not a number"))
    };
    match parts.as_slice() {
        ["none"] => Ok(Normalize::None),
        ["clip", scale] => Ok(Normalize::Clip {
            scale: number(scale)?,
        }),
        ["rescale", scale] => Ok(Normalize::Rescale {
            scale: number(scale)?,
        }),
        _ => bail!("--normalize {text:?}: allowed: none, clip:SCALE, rescale:SCALE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(guidance: GuidanceKind) -> GuidanceArgs {
        GuidanceArgs {
            guidance,
            ..GuidanceArgs::default()
        }
    }

    #[test]
    fn flags_become_validated_settings() {
        let mut mode = args(GuidanceKind::Mode);
        mode.lambda = Some(0.2);
        mode.estimator = Some(parse_estimator("hutchinson").unwrap());
        mode.probes = Some(4);
        mode.schedule = Some("window:0.1:0.9".into());
        mode.normalize = Some("clip:2".into());
        let settings = mode.settings().unwrap();
        let config = settings.mode_seeking.unwrap();
        assert_eq!(config.lambda, 0.2);
        assert_eq!(
            config.schedule,
            Schedule::Window {
                t_start: 0.1,
                t_end: 0.9
            }
        );
        assert_eq!(config.normalize, Normalize::Clip { scale: 2.0 });
        assert!(settings.classifier_free.is_none());

        let mut bad = mode.clone();
        bad.lambda = Some(-1.0);
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`lambda`"));
        let mut bad = mode.clone();
        bad.probes = Some(0);
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`estimator.probes`"));
        let mut bad = mode.clone();
        bad.schedule = Some("window:0.9:0.1".into());
        assert!(format!("{:#}", bad.settings().unwrap_err()).contains("`schedule.t_start`"));
        let mut bad = mode.clone();
        bad.schedule = Some("linear".into());
        assert!(bad.settings().is_err());
        let mut no_lambda = mode.clone();
        no_lambda.lambda = None;
        assert!(no_lambda.settings().is_err());
        let mut stray = args(GuidanceKind::None);
        stray.lambda = Some(0.1);
        assert!(
            stray
                .settings()
                .unwrap_err()
                .to_string()
                .contains("--guidance mode")
        );
        let mut cfg_without_class = args(GuidanceKind::None);
        cfg_without_class.cfg = Some(1.0);
        assert!(cfg_without_class.settings().is_err());
        assert_eq!(
            args(GuidanceKind::None).settings().unwrap(),
            GuidanceSettings::default()
        );
    }
}
