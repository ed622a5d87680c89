//! Guided sampling of trained runs: divergence-based mode seeking and classifier-free guidance, with any ODE
//! method, from validated [`GuidanceSettings`] (the program builds them from its flags; the studies build
//! them directly).

use anyhow::{Context, Result, bail};
use ferroflow_guidance::{ClassifierFree, ModeSeeking, ModeSeekingField, classifier_free_velocity};
use ferroflow_models::VelocityNet;
use ferroflow_paths::Prediction;
use ferroflow_solvers::{OdeOptions, Solution, SolverError};
use tch::Tensor;

use crate::sample::{TrainedFlow, integrate_unit_interval};

/// A velocity closure `(x, t) -> v` that records the autograd graph.
type BoxedVelocity<'a> = Box<dyn Fn(&Tensor, f64) -> Tensor + 'a>;

/// Validated guidance settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuidanceSettings {
    /// Mode seeking, when asked for.
    pub mode_seeking: Option<ModeSeeking>,
    /// Classifier-free guidance (or plain conditional sampling with weight 0), when a class was asked for.
    pub classifier_free: Option<ClassifierFree>,
}

/// Integrates `flow` from t = 0 to 1 from `x0` with the guidance of `settings` (plain sampling when there is
/// none); with `times`, also returns the states at those times.
pub fn sample_guided(
    flow: &TrainedFlow,
    x0: Tensor,
    options: &OdeOptions,
    times: Option<&[f64]>,
    settings: &GuidanceSettings,
) -> Result<Solution<Tensor>> {
    if settings == &GuidanceSettings::default() {
        return Ok(flow.integrate(x0, options, times)?);
    }
    if let Some(manifold) = &flow.config.data.manifold {
        bail!(
            "run {}: guidance is defined here for flows in R^d, not on {} (its fields would leave the manifold)",
            flow.run_dir.display(),
            manifold.name()
        );
    }
    // A guided evaluation is a forward and a backward pass at least (more with the divergence's products).
    let rows = x0
        .size()
        .first()
        .copied()
        .unwrap_or(0)
        .clamp(0, crate::sample::CHUNK_ROWS);
    flow.use_threads_for(rows as usize, 3);
    let params = flow.net.params().views();
    let velocity: BoxedVelocity<'_> = match settings.classifier_free {
        None => Box::new(|x: &Tensor, t: f64| flow.velocity_with_grad(x, t)),
        Some(cfg) => {
            let guided = classifier_free_velocity(&flow.net, &params, cfg)
                .with_context(|| format!("run {}", flow.run_dir.display()))?;
            if flow.config.flow.prediction != Prediction::Velocity {
                bail!(
                    "run {}: classifier-free guidance needs a velocity-predicting model (flow.prediction = \
                     \"velocity\")",
                    flow.run_dir.display()
                );
            }
            Box::new(guided)
        }
    };
    let solution = match &settings.mode_seeking {
        Some(config) => {
            let mut field = ModeSeekingField::new(&velocity, config.clone())?;
            integrate_unit_interval(&mut field, x0, options, times)?
        }
        None => {
            let mut field =
                |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(tch::no_grad(|| velocity(x, t))) };
            integrate_unit_interval(&mut field, x0, options, times)?
        }
    };
    Ok(solution)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ferroflow_guidance::{Normalize, Schedule};
    use ferroflow_models::DivergenceEstimator;
    use ferroflow_solvers::Method;

    use super::*;
    use crate::RunConfig;
    use crate::stream::Stream;

    /// A tiny run: 30 training steps on a 2-component mixture.
    fn tiny_run(dir: &Path) -> TrainedFlow {
        let text = format!(
            "[run]\nname = \"tiny\"\nout_dir = {:?}\n[data]\ntarget = {{ kind = \"mixture\", weights = [0.5, 0.5], \
             means = [[-2.0, 0.0], [2.0, 0.0]], covariances = [[[0.0225, 0.0], [0.0, 0.0225]], [[1.0, 0.0], [0.0, 1.0]]] }}\n\
             [train]\nsteps = 30\n[sample]\nn_samples = 64\nw2_samples = 32\nsteps = 10\n",
            dir.display().to_string()
        );
        let config = RunConfig::parse(&text, Path::new("tiny.toml")).unwrap();
        let run_dir = crate::run::train_new(&config, &mut [], None).unwrap();
        TrainedFlow::load(&run_dir).unwrap()
    }

    fn mode_seeking(lambda: f64) -> GuidanceSettings {
        GuidanceSettings {
            mode_seeking: Some(ModeSeeking {
                lambda,
                estimator: DivergenceEstimator::Exact,
                schedule: Schedule::Constant,
                normalize: Normalize::None,
                seed: 0,
            }),
            classifier_free: None,
        }
    }

    #[test]
    fn guided_sampling_of_a_run_matches_plain_at_lambda_zero_and_refuses_a_class() {
        let dir = std::env::temp_dir().join(format!("ferroflow-guided-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flow = tiny_run(&dir);
        let options = OdeOptions::fixed(Method::Heun, 10);
        let plain = flow
            .integrate(flow.source_points(50, Stream::Sample), &options, None)
            .unwrap()
            .state;
        let guided = |settings: &GuidanceSettings| {
            sample_guided(
                &flow,
                flow.source_points(50, Stream::Sample),
                &options,
                None,
                settings,
            )
        };
        assert!(guided(&GuidanceSettings::default()).unwrap().state.equal(&plain));
        // Plain sampling of an MLP runs in the fused kernel and guidance through libtorch: equal to rounding.
        assert!(
            guided(&mode_seeking(0.0))
                .unwrap()
                .state
                .allclose(&plain, 1e-5, 1e-5, false)
        );
        assert!(
            !guided(&mode_seeking(0.5))
                .unwrap()
                .state
                .allclose(&plain, 1e-3, 1e-3, false)
        );

        let class = GuidanceSettings {
            mode_seeking: None,
            classifier_free: Some(ClassifierFree {
                weight: 2.0,
                class: 1,
            }),
        };
        let err = guided(&class).err().unwrap();
        assert!(format!("{err:#}").contains("unconditional"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
